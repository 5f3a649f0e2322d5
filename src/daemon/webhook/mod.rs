//! GitHub webhooks as a source of invalidations: signature verification,
//! delivery deduplication and the event table ([`events`]).
//!
//! The HTTP side (`POST /webhook`, its size and time bounds, the answers)
//! is [`http::webhook`](crate::daemon::http::webhook); this module holds
//! what does not need a request.
//!
//! **Authentication is the signature.** GitHub cannot send the MCP bearer
//! token, so `/webhook` is outside the token guard; instead every delivery
//! must carry `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the
//! raw body under the configured secret, checked in constant time
//! (`ring::hmac::verify`). Without a configured secret the endpoint is off.
//!
//! **Deduplication** is by `X-GitHub-Delivery` over the last
//! [`REMEMBERED_DELIVERIES`] ids (a set plus a FIFO of the same ids, so
//! memory is bounded): a redelivered id is answered without applying
//! anything again. An id is claimed before its event is applied and
//! released when the delivery turns out malformed, so a corrected
//! redelivery is not refused.
//!
//! Lock: [`Deliveries`] has one mutex, a leaf held only to test and update
//! the set (no I/O, no call out, never across `.await`).

pub mod events;

use std::collections::{HashSet, VecDeque};

use crate::sync::{lock, Mutex};

/// GitHub caps a delivery's payload at 25 MB; a larger body is refused
/// (413) before it is read whole. This route's own bound, not
/// `max_body_bytes`.
pub const MAX_DELIVERY_BYTES: usize = 25 * 1024 * 1024;

/// How many delivery ids are remembered for deduplication.
pub const REMEMBERED_DELIVERIES: usize = 10_000;

/// The longest `X-GitHub-Delivery` accepted (GitHub sends a 36-character
/// GUID).
pub const MAX_DELIVERY_ID_LEN: usize = 128;

/// The outcome of one delivery: the `result` label of
/// `ghcache_webhook_deliveries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Verified, known, applied (200).
    Accepted,
    /// A delivery id seen before (200, nothing applied).
    Duplicate,
    /// An event not in the table (202).
    Ignored,
    /// Missing or wrong `X-Hub-Signature-256` (401).
    BadSignature,
    /// Body over [`MAX_DELIVERY_BYTES`] (413).
    TooLarge,
    /// Missing headers, or a payload the table cannot read (400), or a
    /// body that did not arrive in time (408).
    Malformed,
    /// No secret configured: the endpoint is off (404).
    Disabled,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::Ignored,
        Outcome::BadSignature,
        Outcome::TooLarge,
        Outcome::Malformed,
        Outcome::Disabled,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::BadSignature => "bad_signature",
            Outcome::TooLarge => "too_large",
            Outcome::Malformed => "malformed",
            Outcome::Disabled => "disabled",
        }
    }
}

/// The webhook receiver's state: the secret's HMAC key and the recent
/// delivery ids. Present in [`App`](crate::daemon::App) when a secret is
/// configured.
pub struct Webhook {
    key: ring::hmac::Key,
    /// Recent delivery ids.
    pub deliveries: Deliveries,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").finish_non_exhaustive()
    }
}

impl Webhook {
    /// A receiver verifying with `secret`.
    pub fn new(secret: &str) -> Webhook {
        Webhook {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
            deliveries: Deliveries::new(REMEMBERED_DELIVERIES),
        }
    }

    /// Is `header` (the `X-Hub-Signature-256` value) `sha256=` and the hex
    /// HMAC-SHA256 of `body` under the secret? Constant time in the
    /// comparison.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> bool {
        header
            .and_then(|h| h.strip_prefix(b"sha256="))
            .and_then(decode_hex)
            .is_some_and(|tag| ring::hmac::verify(&self.key, body, &tag).is_ok())
    }
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    hex.chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

/// The last `capacity` delivery ids (module docs).
#[derive(Debug)]
pub struct Deliveries {
    seen: Mutex<Seen>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Deliveries {
    /// Remembers at most `capacity` ids.
    pub fn new(capacity: usize) -> Deliveries {
        Deliveries {
            seen: Mutex::new(Seen::default()),
            capacity: capacity.max(1),
        }
    }

    /// Claims `id`: true when it was not remembered (it is now, and the
    /// oldest id is forgotten when over capacity), false for a duplicate.
    pub fn claim(&self, id: &str) -> bool {
        let mut seen = lock(&self.seen);
        if seen.ids.contains(id) {
            return false;
        }
        seen.ids.insert(id.to_string());
        seen.order.push_back(id.to_string());
        while seen.order.len() > self.capacity {
            if let Some(old) = seen.order.pop_front() {
                seen.ids.remove(&old);
            }
        }
        true
    }

    /// Forgets a claimed `id` (its delivery was not applied).
    pub fn release(&self, id: &str) {
        let mut seen = lock(&self.seen);
        if seen.ids.remove(id) {
            seen.order.retain(|o| o != id);
        }
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        lock(&self.seen).ids.len()
    }

    /// Are none remembered?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&key, body);
        format!(
            "sha256={}",
            tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    #[test]
    fn signatures() {
        let hook = Webhook::new("It's a Secret to Everybody");
        // GitHub's documented example (docs: "Validating webhook deliveries").
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign("It's a Secret to Everybody", body), good);
        assert!(hook.verify(Some(good.as_bytes()), body));
        assert!(hook.verify(
            Some(good.to_ascii_uppercase().replace("SHA256=", "sha256=").as_bytes()),
            body
        ));
        assert!(!hook.verify(Some(good.as_bytes()), b"Hello, World?"));
        assert!(!hook.verify(None, body));
        assert!(!hook.verify(Some(&good.as_bytes()[..70]), body));
        assert!(!hook.verify(Some(good.replace("sha256=", "sha1=").as_bytes()), body));
        assert!(!hook.verify(Some(sign("other", body).as_bytes()), body));
        assert!(!hook.verify(
            Some(b"sha256=zz57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1"),
            body
        ));
    }

    #[test]
    fn deliveries_are_bounded_and_released() {
        let d = Deliveries::new(3);
        assert!(d.claim("a"));
        assert!(!d.claim("a"));
        for id in ["b", "c", "d"] {
            assert!(d.claim(id));
        }
        assert_eq!(d.len(), 3);
        assert!(d.claim("a"), "the oldest id is forgotten past capacity");
        d.release("a");
        assert!(d.claim("a"), "a released id can be claimed again");
        assert_eq!(d.len(), 3);
    }
}
