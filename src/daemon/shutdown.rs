//! Signals and systemd readiness.
//!
//! [`Signals::install`] takes over SIGTERM and SIGINT (do it before telling
//! systemd `READY=1`: a SIGTERM that arrives earlier would otherwise kill the
//! process without a clean stop); [`Signals::recv`] resolves on the first. [`notify`] sends an
//! `sd_notify` datagram (`READY=1`, `STOPPING=1`, ...) to `$NOTIFY_SOCKET`
//! when systemd set one; it is a single `sendto` on a Unix datagram socket,
//! written here rather than pulled in as a crate.

use std::os::unix::net::UnixDatagram;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM and SIGINT handlers, installed.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; returns the signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Sends `state` to systemd if `$NOTIFY_SOCKET` is set. Returns whether a
/// datagram was sent. Abstract sockets (`@name`) are supported on Linux.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = if let Some(name) = path.strip_prefix('@') {
        send_abstract(&socket, name, state)
    } else {
        socket.send_to(state.as_bytes(), &path).is_ok()
    };
    if !sent {
        tracing::warn!(socket = %path, "sd_notify failed");
    }
    sent
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &str, state: &str) -> bool {
    use std::os::linux::net::SocketAddrExt;
    match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
        Ok(addr) => socket.send_to_addr(state.as_bytes(), &addr).is_ok(),
        Err(_) => false,
    }
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> bool {
    false
}
