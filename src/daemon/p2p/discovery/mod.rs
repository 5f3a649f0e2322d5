//! Discovery: where a node finds its first peers, besides `--bootstrap`
//! and mDNS.
//!
//! - [`dns`]: a DNS seed (`--bootstrap-dns NAME[:PORT]`): the name's A and
//!   AAAA records (dialled at the seed's port) and its TXT records, each a
//!   multiaddr (optionally with `/p2p/ID`), as a Kubernetes headless
//!   service or a cloud DNS name lists a fleet.
//! - [`github`]: a registry on GitHub (`--discovery-github OWNER/REPO`):
//!   each node keeps its addresses in a repository Actions variable and
//!   reads the others', so a fleet that shares only a token needs no other
//!   configuration.
//!
//! Each source runs in its own task beside the event loop and hands the
//! addresses it found to it as a dial request (`Client::dial`); the
//! event loop alone touches the swarm. Once a node reaches one member,
//! gossip tells it of every other one, so a source is consulted only while
//! the node is short of members ([`short_of_members`]): at start, then
//! after 1 s, doubling to [`RETRY_MAX`]; a node that has its members looks
//! again only when it loses them (checked every [`RETRY_MAX`]).
//!
//! Invariants: a source never holds a lock and never touches the swarm; a
//! failure (a name that does not resolve, GitHub down) is logged and
//! retried, never fatal; a source's task ends when the event loop does
//! (the registry's after deleting this node's entry, which the host's stop
//! waits for, bounded).

pub mod dns;
pub mod github;

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

pub use dns::DnsSeed;
pub use github::GithubRegistry;

use super::client::Client;
use super::event_loop::TARGET_DEGREE;

/// The discovery sources a node runs (none by default).
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// DNS seeds to resolve.
    pub dns: Vec<DnsSeed>,
    /// The GitHub registry, if opted in.
    pub github: Option<GithubRegistry>,
    /// The port dialled at a seed's A/AAAA addresses when the seed names
    /// none: this node's own P2P port (a fleet usually listens on one port).
    pub default_port: u16,
}

impl Discovery {
    /// Whether any source is configured (a node with none, no bootstrap
    /// and no mDNS is alone by configuration).
    pub fn is_configured(&self) -> bool {
        !self.dns.is_empty() || self.github.is_some()
    }
}

/// The port dialled at a DNS seed's addresses when it names none: the TCP
/// port of `listen`, or [`DEFAULT_P2P_PORT`] when that is 0 (any port).
pub fn default_port(listen: &Multiaddr) -> u16 {
    listen
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) if port != 0 => Some(port),
            _ => None,
        })
        .unwrap_or(DEFAULT_P2P_PORT)
}

/// The default of `--p2p-listen`'s port.
pub const DEFAULT_P2P_PORT: u16 = 9100;

/// First wait between two looks at a source while short of members.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two looks while short of members, and how often a
/// node with its members checks whether it still has them.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Spawns a task per configured source on the current runtime; returns
/// the registry's task, which a stopping host waits for (it deletes this
/// node's entry once the event loop has ended).
pub(in crate::daemon::p2p) fn spawn(discovery: Discovery, client: Client) -> Option<tokio::task::JoinHandle<()>> {
    for seed in discovery.dns {
        tokio::spawn(dns::run(seed, discovery.default_port, client.clone()));
    }
    discovery
        .github
        .map(|registry| tokio::spawn(github::run(registry, client)))
}

/// Whether the node should look at a source again: it has no member, or
/// fewer than the source listed (up to the gossip degree: beyond that,
/// gossip brings the rest).
pub fn short_of_members(members: usize, listed_others: usize) -> bool {
    members == 0 || members < listed_others.min(TARGET_DEGREE)
}

/// Waits between looks at a source: [`RETRY_FIRST`] doubling to
/// [`RETRY_MAX`] while short of members; a node with its members checks
/// every [`RETRY_MAX`] whether it still has them, and looks at once (then
/// quickly again) when it does not.
pub(in crate::daemon::p2p) struct Pace {
    wait: Duration,
    satisfied: bool,
}

impl Pace {
    pub(in crate::daemon::p2p) fn new() -> Pace {
        Pace {
            wait: RETRY_FIRST,
            satisfied: false,
        }
    }

    /// The wait before the next look, were the node still short then.
    pub(in crate::daemon::p2p) fn next_wait(&self) -> Duration {
        self.wait
    }

    /// Sleeps until the next look is due; false once the event loop is
    /// gone.
    pub(in crate::daemon::p2p) async fn until_due(&mut self, client: &Client, listed_others: usize) -> bool {
        loop {
            tokio::select! {
                _ = client.stopped() => return false,
                _ = tokio::time::sleep(self.wait) => {}
            }
            if short_of_members(client.members().len(), listed_others) {
                self.wait = if self.satisfied {
                    RETRY_FIRST
                } else {
                    (self.wait * 2).min(RETRY_MAX)
                };
                self.satisfied = false;
                return true;
            }
            self.satisfied = true;
            self.wait = RETRY_MAX;
        }
    }
}

/// This node's own addresses (so a source never dials the node itself).
pub(in crate::daemon::p2p) fn is_own(client: &Client, addr: &Multiaddr) -> bool {
    let own = client.local_peer_id();
    let bare: Multiaddr = addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
    addr.iter().any(|p| p == Protocol::P2p(own)) || client.listen_addrs().contains(&bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_of_members_until_the_listed_or_the_degree() {
        assert!(short_of_members(0, 0), "alone: look again");
        assert!(short_of_members(0, 5));
        assert!(short_of_members(1, 2));
        assert!(!short_of_members(2, 2));
        assert!(!short_of_members(1, 0), "has a member, the source listed none");
        assert!(short_of_members(5, 100));
        assert!(!short_of_members(TARGET_DEGREE, 100), "gossip brings the rest");
    }

    #[test]
    fn default_port_is_the_listen_port_unless_any() {
        assert_eq!(default_port(&"/ip4/0.0.0.0/tcp/9200".parse().unwrap()), 9200);
        assert_eq!(default_port(&"/ip4/0.0.0.0/tcp/0".parse().unwrap()), DEFAULT_P2P_PORT);
    }
}
