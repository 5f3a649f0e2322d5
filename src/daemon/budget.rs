//! The per-request upstream budget: how many GitHub requests one HTTP
//! request may cause.
//!
//! A JSON-RPC batch of thousands of `gh_api` calls, or one call asking for
//! a thousand items, must not spend the fleet's quota on its own. The HTTP
//! layer runs each request inside [`scope`] with `max_upstream_per_request`
//! units; [`App::read`](super::App::read) charges the pages a fetch may need
//! *before* it leads a flight, so a refused read never holds a flight that
//! other callers follow. Reads outside any scope (a peer's ask, start-up)
//! are not limited here.
//!
//! The budget is a task-local: the read path runs in the request's task,
//! so no handle has to be threaded through the tools.

use std::cell::Cell;
use std::future::Future;

tokio::task_local! {
    static LEFT: Cell<u32>;
}

/// Runs `fut` with `units` upstream requests to spend.
pub async fn scope<F: Future>(units: u32, fut: F) -> F::Output {
    LEFT.scope(Cell::new(units), fut).await
}

/// Takes `units` from the current request's budget. `Err(left)` when fewer
/// remain (nothing is taken then); always `Ok` outside a [`scope`].
pub fn charge(units: u32) -> Result<(), u32> {
    LEFT.try_with(|left| {
        let have = left.get();
        if have < units {
            Err(have)
        } else {
            left.set(have - units);
            Ok(())
        }
    })
    .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_is_spent_once_and_outside_is_free() {
        assert_eq!(charge(1_000), Ok(()));
        scope(3, async {
            assert_eq!(charge(2), Ok(()));
            assert_eq!(charge(2), Err(1));
            assert_eq!(charge(1), Ok(()));
            assert_eq!(charge(1), Err(0));
        })
        .await;
    }
}
