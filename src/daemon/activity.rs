//! Recent events an operator wants to see on the dashboard: invalidations
//! and webhook deliveries. A bounded log, newest last.
//!
//! Anything may [`record`](Activity::record) an event: `App::invalidate`
//! records every invalidation; the webhook handler records each delivery.
//! Each event gets a sequence number that only grows, so a reader can tell
//! new events from ones it has shown.
//!
//! # Invariants
//! - **Bounded**: at most `capacity` events, each detail at most
//!   [`MAX_DETAIL`] bytes (cut at a character boundary). A flood of events
//!   pushes the oldest out; it never grows memory.
//! - **One leaf lock**, held to push or to copy; nothing is awaited or
//!   called under it.
//! - The detail is plain text (it may hold outside input, e.g. a webhook's
//!   repository name): whoever shows it escapes it. The dashboard page
//!   puts it in `textContent`.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::sync::{lock, Mutex};

/// The longest detail kept (bytes).
pub const MAX_DETAIL: usize = 300;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Cached entries were dropped (the tool, a write through the proxy, a
    /// webhook).
    Invalidation,
    /// A GitHub webhook delivery arrived.
    Webhook,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Grows by one per event, from 1.
    pub seq: u64,
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
    /// What.
    pub kind: Kind,
    /// A line of plain text.
    pub detail: String,
}

#[derive(Debug)]
struct Log {
    events: VecDeque<Event>,
    next_seq: u64,
}

/// The log (module docs).
#[derive(Debug)]
pub struct Activity {
    capacity: usize,
    log: Mutex<Log>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new(100)
    }
}

impl Activity {
    /// A log of at most `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Activity {
        Activity {
            capacity: capacity.max(1),
            log: Mutex::new(Log {
                events: VecDeque::new(),
                next_seq: 1,
            }),
        }
    }

    /// Records an event now.
    pub fn record(&self, kind: Kind, detail: impl Into<String>) {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut log = lock(&self.log);
        let seq = log.next_seq;
        log.next_seq += 1;
        log.events.push_back(Event {
            seq,
            at_unix_ms,
            kind,
            detail,
        });
        while log.events.len() > self.capacity {
            log.events.pop_front();
        }
    }

    /// The events kept, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        lock(&self.log).events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_newest_last_with_growing_numbers() {
        let a = Activity::new(3);
        for i in 0..5 {
            a.record(Kind::Invalidation, format!("e{i}"));
        }
        a.record(Kind::Webhook, "push o/r");
        let r = a.recent();
        let seen: Vec<(u64, &str)> = r.iter().map(|e| (e.seq, e.detail.as_str())).collect();
        assert_eq!(seen, [(4, "e3"), (5, "e4"), (6, "push o/r")]);
        assert_eq!(r[2].kind, Kind::Webhook);
        assert_eq!(serde_json::to_value(r[2].kind).unwrap(), "webhook");
    }

    #[test]
    fn long_details_are_cut_at_a_character() {
        let a = Activity::new(1);
        a.record(Kind::Webhook, "é".repeat(MAX_DETAIL));
        let d = &a.recent()[0].detail;
        assert!(d.len() <= MAX_DETAIL + '…'.len_utf8(), "{}", d.len());
        assert!(d.ends_with('…'));
    }
}
