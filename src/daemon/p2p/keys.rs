//! The swarm key and the node's identity.
//!
//! Invariants: the GitHub token never leaves this node (only an HKDF output
//! under [`KDF_CONTEXT`] is used as the pre-shared key, and only its
//! fingerprint is logged); the identity file is created mode 0600 and
//! replaced atomically (write to a temporary file, sync, rename), so a crash
//! never leaves a half-written key and the Peer ID survives restarts.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use sha2::Sha256;

use crate::daemon::config::Config;

/// Context string of the token-derived swarm key.
pub const KDF_CONTEXT: &str = "ghcache swarm key v1";
/// Identity key file in the data directory.
pub const IDENTITY_FILE: &str = "p2p-identity.key";

/// Where the swarm key came from (never the key itself in logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `--swarm-key-file`.
    File,
    /// `GHCACHE_SWARM_KEY`.
    Env,
    /// Derived from the GitHub token.
    Token,
}

/// Derives the swarm key from the GitHub token: HKDF-SHA256 with the salt
/// [`KDF_CONTEXT`], so the key says nothing about the token and no other
/// use of the token yields the same bytes.
pub fn derive_psk(token: &str) -> PreSharedKey {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(KDF_CONTEXT.as_bytes()), token.as_bytes());
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit (255 * 32): cannot fail.
    let _ = hk.expand(b"libp2p pnet psk", &mut out);
    PreSharedKey::new(out)
}

/// Parses a swarm key: the file format (`/key/swarm/psk/1.0.0/`,
/// `/base16/`, 64 hex digits) or the 64 hex digits alone.
pub fn parse_psk(text: &str) -> Result<PreSharedKey, String> {
    let text = text.trim();
    let full = if text.starts_with("/key/swarm/") {
        text.to_string()
    } else {
        format!("/key/swarm/psk/1.0.0/\n/base16/\n{text}")
    };
    full.parse::<PreSharedKey>()
        .map_err(|e| format!("invalid swarm key: {e}"))
}

/// Loads the node's ed25519 identity from `dir`, or creates it (mode 0600),
/// so the Peer ID survives restarts.
pub fn load_or_create_identity(dir: &Path) -> io::Result<Keypair> {
    let path = dir.join(IDENTITY_FILE);
    match fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::daemon::private_fs::create_dir(dir)?;
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| io::Error::other(e.to_string()))?;
            let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// The swarm key the config asks for: the key file, else
/// `GHCACHE_SWARM_KEY`, else derived from the GitHub token. `Ok(None)`: no
/// key and no token.
pub fn resolve_key(config: &Config) -> Result<Option<(PreSharedKey, KeySource)>, String> {
    if let Some(path) = &config.swarm_key_file {
        let text = fs::read_to_string(path).map_err(|e| format!("swarm key file {}: {e}", path.display()))?;
        return parse_psk(&text)
            .map(|k| Some((k, KeySource::File)))
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    if let Some(text) = &config.swarm_key.0 {
        return parse_psk(text)
            .map(|k| Some((k, KeySource::Env)))
            .map_err(|e| format!("GHCACHE_SWARM_KEY: {e}"));
    }
    Ok(config
        .github_token
        .0
        .as_deref()
        .map(|t| (derive_psk(t), KeySource::Token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn token_key_is_domain_separated_and_stable() {
        let a = derive_psk("ghp_secret");
        assert_eq!(
            a.fingerprint().to_string(),
            derive_psk("ghp_secret").fingerprint().to_string()
        );
        assert_ne!(
            a.fingerprint().to_string(),
            derive_psk("ghp_other").fingerprint().to_string()
        );
        // Not the token's bytes themselves, nor a plain hash of them.
        let plain: [u8; 32] = Sha256::digest(b"ghp_secret").into();
        assert_ne!(
            a.fingerprint().to_string(),
            PreSharedKey::new(plain).fingerprint().to_string()
        );
    }

    #[test]
    fn swarm_key_file_format_and_bare_hex() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let file = format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n");
        assert_eq!(
            parse_psk(&file).unwrap().fingerprint().to_string(),
            parse_psk(hex).unwrap().fingerprint().to_string()
        );
        assert!(parse_psk("nothex").is_err());
        assert!(parse_psk(&hex[..60]).is_err());
    }

    #[test]
    fn identity_survives_and_is_private() {
        let dir = std::env::temp_dir().join(format!("ghcache-p2p-id-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = load_or_create_identity(&dir).unwrap();
        let b = load_or_create_identity(&dir).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(IDENTITY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }
}
