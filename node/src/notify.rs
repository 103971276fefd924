/*!
The systemd notify protocol, so that a service manager (or a test) learns
from a signal, not from log text, when the node is ready and when it stops.

A state such as `READY=1` goes as one datagram to the Unix socket named by
`NOTIFY_SOCKET`: a path, or an abstract name when it starts with `@`. With
no `NOTIFY_SOCKET` nothing is sent. See `sd_notify(3)`.
*/

use std::future::Future;
use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `READY=1` once `started` resolves to true: every role of the node
/// has started.
pub async fn ready_when(started: impl Future<Output = bool>) {
    if started.await {
        tracing::info!("Node ready: every role has started");
        send_state("READY=1");
    }
}

/// Sends `STOPPING=1`: a graceful stop has begun.
pub fn stopping() {
    send_state("STOPPING=1");
}

/// Sends `state` to the socket named by `NOTIFY_SOCKET`, if set. A failure
/// is logged, never fatal: the node works the same without a manager.
fn send_state(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = socket.to_string_lossy();
    if let Err(e) = send(&socket, state) {
        tracing::warn!(socket = %socket, state, error = %e, "Cannot notify the service manager");
    }
}

/// Sends one datagram `state` to the notify socket `socket`.
fn send(socket: &str, state: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    match socket.strip_prefix('@') {
        Some(name) => send_abstract(&sender, name, state),
        None => sender.send_to(state.as_bytes(), socket).map(drop),
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sender: &UnixDatagram, name: &str, state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(state.as_bytes(), &addr).map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_state_reaches_a_socket_named_by_path() {
        let dir = std::env::temp_dir().join(format!("conveyor-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        assert_eq!(receive(&socket), "READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_state_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("conveyor-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        assert_eq!(receive(&socket), "STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        assert!(send("/nonexistent/conveyor/notify.sock", "READY=1").is_err());
    }
}
