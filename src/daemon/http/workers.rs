//! The threads that run HTTP connections: one single-threaded tokio
//! runtime per core, each driven by a thread of its own, the way nginx
//! runs one worker process per core.
//!
//! Why not the daemon's work-stealing runtime: a cached read costs a few
//! microseconds, and on a work-stealing runtime a good share of that goes
//! to the scheduler (waking a parked worker, stealing, cross-thread
//! wakeups). Here a connection lives on one thread from its first byte to
//! its close: its reads, writes and timers, and whatever its requests
//! spawn, run on that thread. `ci/bench-daemon` measures the difference.
//!
//! The accept loop ([`serve`](super::serve)) runs on the daemon's runtime,
//! admits a connection, and hands it to the next thread in turn
//! ([`Workers::spawn`]).
//!
//! Invariants:
//! - **A socket is registered with the runtime that serves it**: it
//!   crosses threads as a std socket, before any runtime registers it.
//! - **Nothing here blocks a thread**: a request handler that blocked
//!   would stall every connection of its thread (there is no stealing);
//!   the read path awaits and never blocks, and blocking work goes to
//!   `spawn_blocking`, as on any tokio runtime.
//! - **Dropping [`Workers`] stops every thread**: each runtime then drops
//!   the connections and tasks it still holds (the accept loop has
//!   drained them gracefully before, within the caller's bound).

use std::future::Future;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The connection threads (module docs).
#[derive(Debug)]
pub struct Workers {
    runtimes: Vec<Handle>,
    next: usize,
    /// Dropping one ends its thread's runtime.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `count` threads (at least one), named `ghcache-http-<i>`.
    pub async fn start(count: usize) -> std::io::Result<Workers> {
        let count = count.max(1);
        let mut workers = Workers {
            runtimes: Vec::with_capacity(count),
            next: 0,
            _stops: Vec::with_capacity(count),
        };
        for i in 0..count {
            // Each runtime is built, run and dropped on its own thread
            // (a runtime cannot be dropped inside another's context). It
            // drives sockets and timers; signals are the main runtime's.
            let (stop, stopped) = oneshot::channel::<()>();
            let (started, runtime) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("ghcache-http-{i}"))
                .spawn(
                    move || match Builder::new_current_thread().enable_io().enable_time().build() {
                        Ok(runtime) => {
                            let _ = started.send(Ok(runtime.handle().clone()));
                            let _ = runtime.block_on(stopped);
                            runtime.shutdown_background();
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                        }
                    },
                )?;
            // Should one fail, dropping `workers` stops those running.
            workers._stops.push(stop);
            let runtime = runtime
                .await
                .map_err(|_| std::io::Error::other("an HTTP thread ended at start"))??;
            workers.runtimes.push(runtime);
        }
        Ok(workers)
    }

    /// One per core the process may use.
    pub async fn per_core() -> std::io::Result<Workers> {
        Workers::start(std::thread::available_parallelism().map_or(1, |n| n.get())).await
    }

    /// Runs `task` on the next thread in turn.
    pub fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let runtime = &self.runtimes[self.next];
        self.next = (self.next + 1) % self.runtimes.len();
        runtime.spawn(task);
    }
}
