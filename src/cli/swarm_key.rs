//! `ghcache swarm-key`: a new private swarm key in the usual format
//! (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits, each on its own
//! line), which `libp2p::pnet::PreSharedKey` and other libp2p
//! implementations read.
//!
//! - The 32 bytes come from the operating system's generator (ring's
//!   `SystemRandom`).
//! - A file is created with mode 0600 from the start (never written first
//!   and narrowed after), and an existing file is refused unless `--force`.
//!   With `--force` the key goes to a new 0600 file in the same directory,
//!   renamed over the old one, so a reader sees the old key or the new,
//!   never half of one, and the old file's mode does not carry over.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{Failure, SwarmKeyArgs, EXIT_FAILED};

/// A new key's text.
pub fn generate() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| "the system's random generator failed".to_string())?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n"))
}

/// Writes `text` to a new file at `path`, mode 0600; fails if it exists.
fn create_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Writes `text` over `path` through a temporary file beside it.
fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = create_new(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Runs `ghcache swarm-key`.
pub fn run(args: &SwarmKeyArgs) -> Result<(), Failure> {
    let failed = |message: String| Failure {
        code: EXIT_FAILED,
        message,
    };
    let text = generate().map_err(failed)?;
    let Some(path) = &args.out else {
        print!("{text}");
        return Ok(());
    };
    let written = if args.force {
        replace(path, &text)
    } else {
        create_new(path, &text)
    };
    written.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            failed(format!("{} exists; not replaced (--force replaces it)", path.display()))
        } else {
            failed(format!("cannot write {}: {e}", path.display()))
        }
    })?;
    eprintln!(
        "wrote a new swarm key to {} (mode 0600); give every member the same file: ghcache daemon --swarm-key-file {}",
        path.display(),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_in_the_usual_format_and_differ() {
        let a = generate().unwrap();
        let lines: Vec<&str> = a.lines().collect();
        assert_eq!(lines[..2], ["/key/swarm/psk/1.0.0/", "/base16/"]);
        assert_eq!(lines[2].len(), 64);
        assert!(lines[2]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(a.ends_with('\n') && lines.len() == 3);
        assert_ne!(a, generate().unwrap());
        crate::daemon::p2p::parse_psk(&a).unwrap();
    }
}
