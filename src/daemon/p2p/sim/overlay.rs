//! What libp2p gives the fleet, modelled: connections with a per-link
//! latency, gossipsub's mesh on the fleet topic, and how one message
//! spreads over them.
//!
//! # The model
//! - **Connections** are undirected links between two node indices, at most
//!   one per pair, each remembering who dialled (`outbound` at the dialler)
//!   and when it last carried a request (`last_used`).
//! - **Latency** is one-way, fixed per pair, drawn uniformly from the
//!   configured range by hashing the pair (no table of N² entries).
//! - **The mesh** is a flag on a link, set on both ends at once (the GRAFT
//!   or PRUNE control message's own latency is not modelled). It follows
//!   gossipsub 0.50: a peer whose subscription arrives while the mesh is
//!   below [`MESH_LOW`] is grafted at once; each heartbeat grafts connected
//!   peers up to [`TARGET_DEGREE`] when the mesh is below [`MESH_LOW`],
//!   grafts outbound peers while fewer than [`MESH_OUTBOUND_MIN`] are in it,
//!   and prunes random peers (outbound ones last) down to
//!   [`TARGET_DEGREE`] above [`MESH_HIGH`]; a GRAFT from a peer that
//!   dialled us is refused when our mesh is at [`MESH_HIGH`]. Peer scores
//!   and the 60 s prune backoff are not modelled.
//! - **A message** ([`Overlay::spread`]) leaves its publisher on every
//!   connection (gossipsub's flood publishing); a node that receives it for
//!   the first time forwards it to its mesh peers except the one it came
//!   from and the publisher; later copies are dropped by message id but
//!   counted (each costs the real node a signature check). A connected
//!   peer outside the mesh learns it from gossip instead: at the holder's
//!   next heartbeat (IHAVE), then IWANT and the message, three latencies
//!   (gossipsub sends IHAVE to 6 random non-mesh peers; here to all of
//!   them). First arrival times are shortest paths over these edges
//!   (Dijkstra), taken over the links as they are when the message is
//!   published (the mesh does not change within one spread).
//!
//! Invariants: `links[a]` holds `b` exactly when `links[b]` holds `a`, with
//! the same `mesh` flag and opposite `outbound` flags; no self-links.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::super::event_loop::TARGET_DEGREE;
use super::super::lifecycle::{MESH_HIGH, MESH_LOW};
use super::Rng;

/// gossipsub's default `mesh_outbound_min`: outbound peers a mesh keeps.
pub const MESH_OUTBOUND_MIN: usize = 2;
/// gossipsub's default heartbeat period.
pub const HEARTBEAT_US: u64 = 1_000_000;

/// One end of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// The node at the other end.
    pub peer: u32,
    /// This end dialled.
    pub outbound: bool,
    /// Both ends have the other in their gossip mesh.
    pub mesh: bool,
    /// When a request last crossed it (or it opened), in µs.
    pub last_used: u64,
}

/// Connections and the mesh of every node, plus scratch space for spreads.
pub struct Overlay {
    /// Per node, its connections.
    pub links: Vec<Vec<Link>>,
    latency: (u64, u64),
    salt: u64,
    arrival: Vec<u64>,
    parent: Vec<u32>,
    hops: Vec<u16>,
    lazy: Vec<bool>,
    reached: Vec<u32>,
}

/// Where one message got to: `(node, arrival µs, hops)` for every node it
/// reached, the publisher first.
pub struct Spread<'a> {
    /// Reached nodes, in no particular order after the publisher.
    pub reached: &'a [u32],
    arrival: &'a [u64],
    hops: &'a [u16],
}

impl Spread<'_> {
    /// When `node` first received it.
    pub fn arrival(&self, node: u32) -> u64 {
        self.arrival[node as usize]
    }
    /// Links crossed on the first path to `node`.
    pub fn hops(&self, node: u32) -> u16 {
        self.hops[node as usize]
    }
}

impl Overlay {
    /// No nodes; latencies in `[lo, hi]` µs, drawn from `salt`.
    pub fn new(latency: (u64, u64), salt: u64) -> Overlay {
        Overlay {
            links: Vec::new(),
            latency,
            salt,
            arrival: Vec::new(),
            parent: Vec::new(),
            hops: Vec::new(),
            lazy: Vec::new(),
            reached: Vec::new(),
        }
    }

    /// Room for one more node; returns its index.
    pub fn add_node(&mut self) -> u32 {
        self.links.push(Vec::new());
        self.arrival.push(u64::MAX);
        self.parent.push(u32::MAX);
        self.hops.push(0);
        self.lazy.push(false);
        (self.links.len() - 1) as u32
    }

    /// One-way latency between `a` and `b`, µs (the same both ways).
    pub fn latency(&self, a: u32, b: u32) -> u64 {
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let h = super::mix(self.salt ^ (lo << 32 | hi));
        self.latency.0 + h % (self.latency.1 - self.latency.0 + 1)
    }

    /// `a` and `b` are connected.
    pub fn connected(&self, a: u32, b: u32) -> bool {
        self.links[a as usize].iter().any(|l| l.peer == b)
    }

    /// Connections of `a`.
    pub fn degree(&self, a: u32) -> usize {
        self.links[a as usize].len()
    }

    /// Mesh peers of `a`.
    pub fn mesh_degree(&self, a: u32) -> usize {
        self.links[a as usize].iter().filter(|l| l.mesh).count()
    }

    /// `a` dialled `b` and the connection is up.
    pub fn connect(&mut self, a: u32, b: u32, now: u64) {
        debug_assert!(a != b && !self.connected(a, b));
        let link = |peer, outbound| Link {
            peer,
            outbound,
            mesh: false,
            last_used: now,
        };
        self.links[a as usize].push(link(b, true));
        self.links[b as usize].push(link(a, false));
    }

    /// Closes the connection between `a` and `b` (if any).
    pub fn disconnect(&mut self, a: u32, b: u32) {
        self.links[a as usize].retain(|l| l.peer != b);
        self.links[b as usize].retain(|l| l.peer != a);
    }

    /// Closes every connection of `a` (it died); returns its former peers.
    pub fn drop_all(&mut self, a: u32) -> Vec<u32> {
        let peers: Vec<u32> = self.links[a as usize].drain(..).map(|l| l.peer).collect();
        for &p in &peers {
            self.links[p as usize].retain(|l| l.peer != a);
        }
        peers
    }

    /// A request crossed the connection between `a` and `b`.
    pub fn touch(&mut self, a: u32, b: u32, now: u64) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(l) = self.links[x as usize].iter_mut().find(|l| l.peer == y) {
                l.last_used = now;
            }
        }
    }

    fn set_mesh(&mut self, a: u32, b: u32, on: bool, now: u64) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(l) = self.links[x as usize].iter_mut().find(|l| l.peer == y) {
                l.mesh = on;
                l.last_used = now;
            }
        }
    }

    /// `a` sends GRAFT to `b`: true when `b` took it (both now in each
    /// other's mesh).
    pub fn graft(&mut self, a: u32, b: u32, now: u64) -> bool {
        let Some(at_b) = self.links[b as usize].iter().find(|l| l.peer == a).copied() else {
            return false;
        };
        // `b` refuses a peer that dialled it once its mesh is full.
        if self.mesh_degree(b) >= MESH_HIGH && !at_b.outbound {
            return false;
        }
        self.set_mesh(a, b, true, now);
        true
    }

    /// `b`'s subscription reached `a`: gossipsub grafts it at once when
    /// `a`'s mesh is short.
    pub fn subscribed(&mut self, a: u32, b: u32, now: u64) {
        if self.mesh_degree(a) < MESH_LOW {
            self.graft(a, b, now);
        }
    }

    /// `a`'s gossipsub heartbeat: mesh maintenance (see the module doc).
    pub fn heartbeat(&mut self, a: u32, rng: &mut Rng, now: u64) {
        let mesh = self.mesh_degree(a);
        if mesh < MESH_LOW {
            let mut candidates: Vec<u32> = self.links[a as usize]
                .iter()
                .filter(|l| !l.mesh)
                .map(|l| l.peer)
                .collect();
            rng.shuffle(&mut candidates);
            let mut have = mesh;
            for b in candidates {
                if have >= TARGET_DEGREE {
                    break;
                }
                if self.graft(a, b, now) {
                    have += 1;
                }
            }
        } else if mesh > MESH_HIGH {
            let links = &self.links[a as usize];
            let mut inbound: Vec<u32> = links.iter().filter(|l| l.mesh && !l.outbound).map(|l| l.peer).collect();
            let mut outbound: Vec<u32> = links.iter().filter(|l| l.mesh && l.outbound).map(|l| l.peer).collect();
            rng.shuffle(&mut inbound);
            rng.shuffle(&mut outbound);
            // Prune inbound peers first, then outbound ones above the minimum.
            let spare_out = outbound.len().saturating_sub(MESH_OUTBOUND_MIN);
            let victims: Vec<u32> = inbound
                .into_iter()
                .chain(outbound.into_iter().take(spare_out))
                .take(mesh - TARGET_DEGREE)
                .collect();
            for b in victims {
                self.set_mesh(a, b, false, now);
            }
        }
        let out = self.links[a as usize].iter().filter(|l| l.mesh && l.outbound).count();
        if out < MESH_OUTBOUND_MIN {
            let candidates: Vec<u32> = self.links[a as usize]
                .iter()
                .filter(|l| !l.mesh && l.outbound)
                .map(|l| l.peer)
                .take(MESH_OUTBOUND_MIN - out)
                .collect();
            for b in candidates {
                self.graft(a, b, now);
            }
        }
    }

    /// Spreads one message published by `origin` at `t0` (µs); `copies[n]`
    /// grows by every copy node `n` receives; `heartbeat_phase[n]` is when
    /// (mod [`HEARTBEAT_US`]) node `n`'s heartbeat runs.
    pub fn spread(&mut self, origin: u32, t0: u64, heartbeat_phase: &[u64], copies: &mut [u64]) -> Spread<'_> {
        for &n in &self.reached {
            self.arrival[n as usize] = u64::MAX;
            self.lazy[n as usize] = false;
        }
        self.reached.clear();
        let o = origin as usize;
        self.arrival[o] = t0;
        self.parent[o] = origin;
        self.hops[o] = 0;
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((t0, origin)));
        while let Some(Reverse((t, u))) = heap.pop() {
            if t > self.arrival[u as usize] {
                continue;
            }
            self.reached.push(u);
            let parent = self.parent[u as usize];
            for i in 0..self.links[u as usize].len() {
                let l = self.links[u as usize][i];
                let v = l.peer;
                if v == origin {
                    continue;
                }
                let lat = self.latency(u, v);
                let (w, lazy) = if u == origin || l.mesh {
                    if v == parent && u != origin {
                        continue;
                    }
                    (lat, false)
                } else {
                    // IHAVE at u's next heartbeat, then IWANT and the message.
                    let phase = heartbeat_phase[u as usize] % HEARTBEAT_US;
                    let next = t + (phase + HEARTBEAT_US - t % HEARTBEAT_US) % HEARTBEAT_US;
                    (next - t + 3 * lat, true)
                };
                let at = t + w;
                if at < self.arrival[v as usize] {
                    self.arrival[v as usize] = at;
                    self.parent[v as usize] = u;
                    self.hops[v as usize] = self.hops[u as usize] + 1;
                    self.lazy[v as usize] = lazy;
                    heap.push(Reverse((at, v)));
                }
            }
        }
        // Copies: the publisher sends on every link; every other node
        // forwards to its mesh but the peer it got the message from and the
        // publisher; a node reached by gossip fetched one copy.
        for &u in &self.reached {
            let parent = self.parent[u as usize];
            for l in &self.links[u as usize] {
                if u == origin || (l.mesh && l.peer != parent && l.peer != origin) {
                    copies[l.peer as usize] += 1;
                }
            }
            if self.lazy[u as usize] {
                copies[u as usize] += 1;
            }
        }
        Spread {
            reached: &self.reached,
            arrival: &self.arrival,
            hops: &self.hops,
        }
    }
}
