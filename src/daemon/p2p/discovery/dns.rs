//! The DNS seed: `--bootstrap-dns NAME[:PORT]`.
//!
//! A round resolves NAME with the system's resolver configuration
//! (`/etc/resolv.conf`, read again every round, so a changed nameserver is
//! followed) and dials what it lists:
//! - **A / AAAA** records: `/ip4|ip6/ADDR/tcp/PORT`, where PORT is the
//!   seed's (`NAME:PORT`) or else this node's own P2P port (members of a
//!   fleet usually listen on one port; 9100 when this node listens on
//!   port 0). A Kubernetes headless service lists its pods this way.
//! - **TXT** records: each one a multiaddr, optionally ending in
//!   `/p2p/ID` and optionally prefixed `dnsaddr=` (the `_dnsaddr`
//!   convention); strings that do not parse are skipped.
//!
//! Invariants: a name that does not resolve is logged (`DNS seed NAME did
//! not resolve ...; retrying in N s`) and retried, never fatal; the node's
//! own addresses are never dialled; at most [`MAX_ADDRS`] addresses are
//! taken from one round.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use hickory_resolver::TokioResolver;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

use super::{is_own, Pace};
use crate::daemon::p2p::client::Client;

/// Most addresses taken from one round (a huge record set is cut here).
pub const MAX_ADDRS: usize = 64;

/// A DNS name to resolve, and the port to dial at its A/AAAA addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSeed {
    /// The name, as given.
    pub name: String,
    /// The port given as `NAME:PORT`, if any.
    pub port: Option<u16>,
}

impl fmt::Display for DnsSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl FromStr for DnsSeed {
    type Err = String;

    /// `NAME` or `NAME:PORT`; NAME is a host name (letters, digits, `-`,
    /// `_`, dots; at most 253 characters, labels at most 63).
    fn from_str(s: &str) -> Result<DnsSeed, String> {
        let (name, port) = match s.rsplit_once(':') {
            Some((name, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("expected NAME or NAME:PORT (port 1-65535), got {s:?}"))?;
                (name, Some(port))
            }
            None => (s, None),
        };
        let bare = name.strip_suffix('.').unwrap_or(name);
        let label_ok = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if bare.is_empty() || name.len() > 253 || !bare.split('.').all(label_ok) {
            return Err(format!("expected a DNS name like fleet.example.com[:9100], got {s:?}"));
        }
        Ok(DnsSeed {
            name: name.to_string(),
            port,
        })
    }
}

/// Resolves `seed` at start and again while the node is short of members
/// (see [`super::Pace`]), dialling what it lists.
pub(in crate::daemon::p2p) async fn run(seed: DnsSeed, default_port: u16, client: Client) {
    let port = seed.port.unwrap_or(default_port);
    let mut pace = Pace::new();
    loop {
        let listed_others = match resolve(&seed.name, port).await {
            Ok(addrs) => {
                let addrs: Vec<Multiaddr> = addrs.into_iter().filter(|a| !is_own(&client, a)).collect();
                tracing::debug!(seed = %seed, ?addrs, "DNS seed resolved");
                let listed = addrs.len();
                client.dial(addrs).await;
                listed
            }
            Err(error) => {
                tracing::warn!(
                    "DNS seed {seed} did not resolve ({error}); retrying in {} s",
                    pace.next_wait().as_secs()
                );
                0
            }
        };
        if !pace.until_due(&client, listed_others).await {
            return;
        }
    }
}

/// One round: the addresses `name` lists (A/AAAA at `port`, then TXT), or
/// why none (both lookups failed or found nothing).
pub async fn resolve(name: &str, port: u16) -> Result<Vec<Multiaddr>, String> {
    // A fresh resolver per round: /etc/resolv.conf is read again, and no
    // answer is kept past this round (the records are the fleet's list).
    let resolver = TokioResolver::builder_tokio()
        .map_err(|e| format!("system resolver configuration: {e}"))?
        .build()
        .map_err(|e| format!("resolver: {e}"))?;
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    match resolver.lookup_ip(name).await {
        Ok(ips) => addrs.extend(ips.iter().map(|ip| ip_addr(ip, port))),
        Err(e) => errors.push(lookup_error("A/AAAA", &e)),
    }
    match resolver.txt_lookup(name).await {
        Ok(lookup) => {
            for record in lookup.answers() {
                if let hickory_resolver::proto::rr::RData::TXT(txt) = &record.data {
                    let text: Vec<u8> = txt.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                    match std::str::from_utf8(&text).ok().and_then(txt_multiaddr) {
                        Some(addr) => addrs.push(addr),
                        None => {
                            tracing::debug!(name, text = %String::from_utf8_lossy(&text), "TXT record is not a multiaddr; skipped")
                        }
                    }
                }
            }
        }
        Err(e) => errors.push(lookup_error("TXT", &e)),
    }
    addrs.dedup();
    addrs.truncate(MAX_ADDRS);
    if addrs.is_empty() {
        if errors.is_empty() {
            errors.push("no A, AAAA or TXT record holding an address".into());
        }
        return Err(errors.join("; "));
    }
    Ok(addrs)
}

/// A failed lookup in one line: the resolver's own text for a missing
/// name or record set repeats the whole query.
fn lookup_error(kind: &str, e: &hickory_resolver::net::NetError) -> String {
    if e.is_nx_domain() {
        format!("{kind}: no such name")
    } else if e.is_no_records_found() {
        format!("{kind}: no record")
    } else {
        format!("{kind}: {e}")
    }
}

/// `/ip4|ip6/ADDR/tcp/PORT`.
pub fn ip_addr(ip: IpAddr, port: u16) -> Multiaddr {
    Multiaddr::from(ip).with(Protocol::Tcp(port))
}

/// A TXT string as a multiaddr: `/ip4/…/tcp/…[/p2p/ID]`, optionally
/// prefixed `dnsaddr=`; None when it is not one with a TCP port.
pub fn txt_multiaddr(text: &str) -> Option<Multiaddr> {
    let text = text.trim();
    let text = text.strip_prefix("dnsaddr=").unwrap_or(text);
    let addr: Multiaddr = text.parse().ok()?;
    addr.iter().any(|p| matches!(p, Protocol::Tcp(_))).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_with_and_without_a_port() {
        let s: DnsSeed = "fleet.example.com".parse().unwrap();
        assert_eq!((s.name.as_str(), s.port), ("fleet.example.com", None));
        let s: DnsSeed = "ghcache.ns.svc.cluster.local:9200".parse().unwrap();
        assert_eq!((s.name.as_str(), s.port), ("ghcache.ns.svc.cluster.local", Some(9200)));
        assert_eq!(s.to_string(), "ghcache.ns.svc.cluster.local:9200");
        assert!("fleet.test.".parse::<DnsSeed>().is_ok(), "a fully qualified name");
        for bad in [
            "",
            ":9100",
            "fleet:0",
            "fleet:x",
            "fle et",
            "a..b",
            "/ip4/1.2.3.4/tcp/1",
            "fleet:70000",
        ] {
            assert!(bad.parse::<DnsSeed>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn txt_strings_are_multiaddrs_with_a_tcp_port() {
        let id = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
        let with_id = format!("/ip4/10.0.0.2/tcp/9100/p2p/{id}");
        assert_eq!(txt_multiaddr(&with_id).unwrap().to_string(), with_id);
        assert_eq!(
            txt_multiaddr("dnsaddr=/ip6/::1/tcp/9100").unwrap().to_string(),
            "/ip6/::1/tcp/9100"
        );
        assert_eq!(txt_multiaddr("v=spf1 -all"), None);
        assert_eq!(
            txt_multiaddr("/ip4/10.0.0.2/udp/9100"),
            None,
            "no TCP: not dialable here"
        );
    }

    #[test]
    fn addresses_get_the_port() {
        assert_eq!(
            ip_addr("10.0.0.2".parse().unwrap(), 9100).to_string(),
            "/ip4/10.0.0.2/tcp/9100"
        );
        assert_eq!(
            ip_addr("fd00::2".parse().unwrap(), 9100).to_string(),
            "/ip6/fd00::2/tcp/9100"
        );
    }
}
