//! Owner choice: rendezvous (highest-random-weight) hashing.
//!
//! Each candidate scores `sha256(peer id ‖ 0 ‖ key)`; the highest wins,
//! ties broken by the larger peer id bytes. Invariants: the result depends
//! only on the key and the *set* of candidates (not their order, nor on
//! which member computes it), so members with the same view agree; when a
//! candidate joins or leaves, only the keys it wins or won move.

use libp2p::PeerId;
use sha2::{Digest, Sha256};

fn score(peer: &PeerId, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(peer.to_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The owner of `key` among `local` and `peers` (rendezvous hashing).
pub fn owner_of(key: &str, local: &PeerId, peers: &[PeerId]) -> PeerId {
    let mut best = (*local, score(local, key));
    for p in peers {
        let s = score(p, key);
        if s > best.1 || (s == best.1 && p.to_bytes() > best.0.to_bytes()) {
            best = (*p, s);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_moves_few_keys() {
        let ids: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        let keys: Vec<String> = (0..1000).map(|i| format!("repo:repo=o/r{i}")).collect();
        let all: Vec<_> = keys.iter().map(|k| owner_of(k, &ids[0], &ids[1..])).collect();
        // Every member computes the same owner whatever its own position.
        for k in &keys {
            let a = owner_of(k, &ids[0], &ids[1..]);
            let mut others: Vec<PeerId> = ids.iter().filter(|p| **p != ids[3]).copied().collect();
            others.reverse();
            assert_eq!(a, owner_of(k, &ids[3], &others));
        }
        // Removing one peer moves only the keys it owned.
        let without: Vec<_> = keys.iter().map(|k| owner_of(k, &ids[0], &ids[1..4])).collect();
        for (a, b) in all.iter().zip(&without) {
            assert!(a == b || *a == ids[4]);
        }
        // Spread: each of 5 owns a fair share.
        for p in &ids {
            let n = all.iter().filter(|o| *o == p).count();
            assert!((100..=300).contains(&n), "{n}");
        }
    }
}
