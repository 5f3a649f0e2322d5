//! Readiness: telling whoever started the daemon where it listens, once it
//! does — the ready file (`--ready-file PATH`) and sd_notify `READY=1` /
//! `STATUS=`.
//!
//! # When
//! The daemon is ready once the HTTP listener is bound **and** the P2P side
//! has settled its first start: either the P2P listener is bound and has
//! reported its address (so `/tcp/0` shows the port the kernel chose), or
//! P2P is known not to run (off by configuration or for lack of a key, its
//! first start failed and it is backing off, or it degraded to
//! local-only). A daemon whose P2P port is taken still serves locally, so
//! it is ready; the file says `"p2p": "retrying"` and why. When the P2P
//! state changes later (a retry succeeds, or the retries give up) the file
//! is replaced and `STATUS=` sent again, so the file always names the
//! current addresses.
//!
//! # The file
//! One JSON object, written to a temporary file in the same directory and
//! renamed over `PATH`, so a reader sees the whole of one version or no
//! file, never a partial one:
//!
//! ```json
//! {"pid": 4242, "http": "127.0.0.1:41234", "p2p": "listening",
//!  "p2p_listen": ["/ip4/127.0.0.1/tcp/40111"], "peer_id": "12D3Koo...", "p2p_error": null}
//! ```
//!
//! `p2p` is one of `listening`, `off`, `retrying`, `degraded`; `peer_id`
//! is null unless listening; `p2p_error` says why P2P does not run. A file
//! left by an earlier run is removed at start ([`clear_stale`]), and the
//! file is removed on a clean shutdown ([`remove`]), so its presence means
//! a daemon (the one with `pid`) is up. The start log lines that name the
//! addresses (`ghcache daemon listening`, `P2P listening`, `Peer ID: <id>`)
//! stay as a fallback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::json;
use tokio::sync::watch;

use super::shutdown;

/// The P2P side as readiness reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum P2pReady {
    /// Its first start has not finished: not ready yet.
    Starting,
    /// Listening on these addresses, as bound.
    Listening {
        /// This node's Peer ID.
        peer_id: String,
        /// Multiaddrs, e.g. `/ip4/127.0.0.1/tcp/40111`.
        addrs: Vec<String>,
    },
    /// Not running: `state` is `off`, `retrying` or `degraded`; `error`
    /// says why.
    NotRunning {
        /// `off`, `retrying` or `degraded`.
        state: &'static str,
        /// Why.
        error: String,
    },
}

impl P2pReady {
    /// The ready file's JSON for a daemon whose HTTP listener is `http`.
    pub fn to_json(&self, http: SocketAddr) -> serde_json::Value {
        let (state, addrs, peer_id, error) = match self {
            P2pReady::Starting => ("starting", &[][..], None, None),
            P2pReady::Listening { peer_id, addrs } => ("listening", &addrs[..], Some(peer_id), None),
            P2pReady::NotRunning { state, error } => (*state, &[][..], None, Some(error)),
        };
        json!({
            "pid": std::process::id(),
            "http": http.to_string(),
            "p2p": state,
            "p2p_listen": addrs,
            "peer_id": peer_id,
            "p2p_error": error,
        })
    }

    /// The sd_notify `STATUS=` text: `listening on <http addr>; P2P ...`.
    pub fn status(&self, http: SocketAddr) -> String {
        match self {
            P2pReady::Starting => format!("listening on {http}; P2P starting"),
            P2pReady::Listening { peer_id, addrs } => {
                format!("listening on {http}; P2P on {} as {peer_id}", addrs.join(" "))
            }
            P2pReady::NotRunning { state, error } => format!("listening on {http}; P2P {state}: {error}"),
        }
    }
}

/// Writes `text` to `path` atomically: a temporary file in the same
/// directory, then a rename over `path`.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"))?;
    let tmp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes a ready file left by an earlier run (killed without a clean
/// shutdown), so that the file's presence means this run is ready.
pub fn clear_stale(path: Option<&Path>) {
    if let Some(path) = path {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a ready file left by an earlier run"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove an old ready file"),
        }
    }
}

/// Removes the ready file on a clean shutdown (best effort).
pub fn remove(path: Option<&Path>) {
    if let Some(path) = path {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the ready file");
            }
        }
    }
}

/// Announces readiness once `p2p` has settled (module docs), then again on
/// every later change, until the sender is dropped: writes the ready file
/// when `path` is set and sends `READY=1` (the first time) and `STATUS=`.
/// The HTTP listener is already bound at `http`.
pub async fn announce(path: Option<PathBuf>, http: SocketAddr, mut p2p: watch::Receiver<P2pReady>) {
    let mut first = true;
    loop {
        let state = match p2p.wait_for(|s| *s != P2pReady::Starting).await {
            Ok(s) => s.clone(),
            Err(_) => return,
        };
        if let Some(path) = &path {
            let text = state.to_json(http).to_string() + "\n";
            let target = path.clone();
            match tokio::task::spawn_blocking(move || write_atomically(&target, &text)).await {
                Ok(Ok(())) => tracing::info!(path = %path.display(), p2p = ?state, "ready file written"),
                Ok(Err(e)) => tracing::warn!(path = %path.display(), error = %e, "cannot write the ready file"),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot write the ready file"),
            }
        }
        let status = state.status(http);
        shutdown::notify(&if first {
            format!("READY=1\nSTATUS={status}")
        } else {
            format!("STATUS={status}")
        });
        first = false;
        if p2p.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_the_bound_addresses_and_replaces_whole() {
        let dir = std::env::temp_dir().join(format!("ghcache-ready-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ready.json");
        let http: SocketAddr = "127.0.0.1:41234".parse().unwrap();
        let up = P2pReady::Listening {
            peer_id: "12D3KooWtest".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/40111".into()],
        };
        write_atomically(&path, &up.to_json(http).to_string()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["http"], "127.0.0.1:41234");
        assert_eq!(v["p2p"], "listening");
        assert_eq!(v["p2p_listen"], json!(["/ip4/127.0.0.1/tcp/40111"]));
        assert_eq!(v["peer_id"], "12D3KooWtest");
        assert_eq!(v["pid"], std::process::id());
        let down = P2pReady::NotRunning {
            state: "retrying",
            error: "Address already in use".into(),
        };
        write_atomically(&path, &down.to_json(http).to_string()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!((v["p2p"].as_str(), v["peer_id"].is_null()), (Some("retrying"), true));
        assert_eq!(v["p2p_listen"], json!([]));
        // Only the file itself is left: no temporary beside it.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ready.json")]);
        remove(Some(&path));
        assert!(!path.exists());
        assert!(write_atomically(Path::new("/"), "x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
