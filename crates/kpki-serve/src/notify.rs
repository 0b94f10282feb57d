//! systemd readiness (`Type=notify`): `READY=1` on the datagram socket named by
//! `$NOTIFY_SOCKET`, sent once the daemon's listeners and socket are bound, so that units
//! ordered after it (`Before=kubelet.service`) start only when the token signer's socket
//! accepts connections. Without `$NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells systemd the daemon is ready; a failure is logged, never fatal (the service still
/// runs, and systemd reports the unit as failing to start after `TimeoutStartSec`).
pub fn ready() {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    match send(&target.to_string_lossy(), b"READY=1") {
        Ok(()) => tracing::debug!(socket = %target.to_string_lossy(), "notified systemd: ready"),
        Err(e) => tracing::warn!(
            socket = %target.to_string_lossy(),
            error = %e,
            "cannot notify systemd"
        ),
    }
}

/// The address `$NOTIFY_SOCKET` names: a path, or an abstract socket (`@name`).
fn address(target: &str) -> std::io::Result<SocketAddr> {
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None if target.starts_with('/') => SocketAddr::from_pathname(target),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor @abstract",
        )),
    }
}

fn send(target: &str, message: &[u8]) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(message, &address(target)?)?;
    if sent != message.len() {
        return Err(std::io::Error::other("short datagram"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(
            address("/run/systemd/notify")
                .unwrap()
                .as_pathname()
                .is_some()
        );
        use std::os::linux::net::SocketAddrExt;
        assert_eq!(
            address("@/org/freedesktop/systemd1/notify/1")
                .unwrap()
                .as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify/1"[..])
        );
        for bad in ["", "relative/path", "run/notify"] {
            assert!(address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ready_reaches_a_listening_socket() {
        let path = std::env::temp_dir().join(format!("kpki-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), b"READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        // No listener: an error, not a panic.
        drop(listener);
        assert!(send(path.to_str().unwrap(), b"READY=1").is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
