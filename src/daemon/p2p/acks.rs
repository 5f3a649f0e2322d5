//! Acks of fleet-wide invalidations, sent to their origin directly.
//!
//! A member that applied an invalidation tells the origin so with a
//! [`wire::Request::Ack`] over `/ghcache/entry/1`, the request-response
//! protocol asks use: one message to one peer, where an ack published on
//! gossipsub would reach every member once per mesh neighbour (N acks of
//! one invalidation, N² copies fleet-wide). The request dials the origin
//! on demand from the addresses its announcements gave (like an ask), and
//! the connection closes once idle (`Limits::idle_timeout`).
//!
//! When the direct send fails (the origin is not dialable from here, it is
//! at its connection limit, or it is a node of the previous version that
//! does not know the message and closes the stream), the ack is published
//! on gossipsub instead ([`gossip::Ack`], which every node still accepts),
//! so an ack is lost only when both paths fail; the origin then names the
//! member as not answering, which is the call's contract.
//!
//! Invariants: these are event-loop methods (the loop alone owns the
//! swarm), each bounded by the request timeout; an ack counts for the
//! origin only from the peer the connection authenticated (`peer` of the
//! request, like the signed source of a gossip ack), and only for an
//! invalidation this node published ([`Epochs::acked`](super::invalidation::Epochs::acked)
//! ignores other ids).

use std::collections::HashMap;

use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::PeerId;

use super::event_loop::EventLoop;
use super::gossip::{self, Message};
use super::wire;
use crate::sync::Ordering;

/// An ack on its way to its origin: where it goes and what it says, so a
/// failed send can go out on gossipsub.
#[derive(Clone, Copy, Debug)]
pub(super) struct AckSent {
    origin: PeerId,
    id: u64,
    epoch: u64,
}

/// The acks sent directly and not answered yet.
pub(super) type AcksInFlight = HashMap<OutboundRequestId, AckSent>;

impl EventLoop {
    /// Acks invalidation `id` of `origin` (applied here, this node now at
    /// `epoch`) directly; on gossipsub if that fails
    /// ([`EventLoop::ack_failed`]).
    /// Dialled on demand like an ask ([`EventLoop::send_request`]).
    pub(super) fn send_ack(&mut self, origin: PeerId, id: u64, epoch: u64) {
        let request = self.send_request(origin, wire::Request::Ack { id, epoch });
        self.acks_in_flight.insert(request, AckSent { origin, id, epoch });
    }

    /// An ack from `peer` arrived: count it, and answer.
    pub(super) fn ack_received(&mut self, peer: PeerId, id: u64, channel: ResponseChannel<wire::Response>) {
        self.epochs.acked(id, peer);
        let _ = self
            .swarm
            .behaviour_mut()
            .rr
            .send_response(channel, wire::Response::Acked);
    }

    /// `request` was answered: if it was an ack of this node, it is done.
    pub(super) fn ack_answered(&mut self, request: &OutboundRequestId) {
        if self.acks_in_flight.remove(request).is_some() {
            self.metrics.acks_direct.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `request` failed: if it was an ack of this node, publish it on
    /// gossipsub instead.
    pub(super) fn ack_failed(&mut self, request: &OutboundRequestId, error: &dyn std::fmt::Display) {
        let Some(ack) = self.acks_in_flight.remove(request) else {
            return;
        };
        tracing::debug!(origin = %ack.origin, id = ack.id, %error, "direct ack failed; acking on gossip");
        self.metrics.acks_gossiped.fetch_add(1, Ordering::Relaxed);
        self.publish(&Message::Ack(gossip::Ack {
            id: ack.id,
            origin: ack.origin.to_string(),
            epoch: ack.epoch,
        }));
    }
}
