//! A copy of each audit line to the local syslog socket as it is written (`audit.syslog`):
//! journald, rsyslog or syslog-ng receive it where the host's logs go, off the daemon's disk.
//!
//! Each line is one datagram on the unix socket (default `/dev/log`) in the frame glibc's
//! `syslog(3)` sends there (RFC 3164 as written locally): `<PRI>Mmm dd hh:mm:ss
//! kpki-audit[PID]: LINE`, with the timestamp in UTC and PRI the configured facility at
//! severity `info`. The copy never holds up the audit trail: the socket is non-blocking, and a
//! datagram the receiver cannot take (absent, restarting, full) is dropped and counted — the
//! file stays the record.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

/// The syslog tag of audit lines.
pub const TAG: &str = "kpki-audit";

/// Severity `info`.
const INFO: u8 = 6;

/// Facilities by name, with their codes (RFC 5424 table 1).
const FACILITIES: &[(&str, u8)] = &[
    ("user", 1),
    ("daemon", 3),
    ("auth", 4),
    ("authpriv", 10),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// The code of facility `name`, or an error listing the names.
pub fn facility(name: &str) -> Result<u8, String> {
    FACILITIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, code)| *code)
        .ok_or_else(|| {
            format!(
                "unknown syslog facility {name:?} (one of {})",
                FACILITIES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// The datagram for `line` at `now`: `<PRI>Mmm dd hh:mm:ss kpki-audit[PID]: LINE`.
pub fn frame(facility: u8, now: OffsetDateTime, pid: u32, line: &[u8]) -> Vec<u8> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = now.to_offset(time::UtcOffset::UTC);
    let month = MONTHS[usize::from(u8::from(t.month()) - 1)];
    let mut out = format!(
        "<{}>{month} {:>2} {:02}:{:02}:{:02} {TAG}[{pid}]: ",
        u16::from(facility) * 8 + u16::from(INFO),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
    .into_bytes();
    out.extend_from_slice(line);
    out
}

/// The sender of copies.
#[derive(Debug)]
pub struct SyslogCopy {
    socket: UnixDatagram,
    path: PathBuf,
    facility: u8,
    pid: u32,
    dropped: AtomicU64,
}

impl SyslogCopy {
    /// A sender to the syslog socket `path` with `facility` (a name of [`facility`]); refuses
    /// a path that is not a socket.
    pub fn new(path: &Path, facility_name: &str) -> Result<SyslogCopy, String> {
        let what = |e: String| format!("audit.syslog_socket {}: {e}", path.display());
        let facility =
            facility(facility_name).map_err(|e| format!("audit.syslog_facility: {e}"))?;
        let meta = std::fs::metadata(path).map_err(|e| what(e.to_string()))?;
        if !meta.file_type().is_socket() {
            return Err(what("not a socket".into()));
        }
        let socket = UnixDatagram::unbound().map_err(|e| what(e.to_string()))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| what(e.to_string()))?;
        Ok(SyslogCopy {
            socket,
            path: path.to_path_buf(),
            facility,
            pid: std::process::id(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Sends `line` (without its LF); a copy the receiver cannot take now is dropped, counted
    /// and logged (the first, then every 1000th).
    pub fn send(&self, line: &[u8]) {
        let datagram = frame(self.facility, OffsetDateTime::now_utc(), self.pid, line);
        if let Err(e) = self.socket.send_to(&datagram, &self.path) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                tracing::warn!(
                    socket = %self.path.display(),
                    error = %e,
                    dropped = n,
                    "audit line not copied to syslog"
                );
            }
        }
    }

    /// Copies dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_what_syslog_3_sends_locally() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_341_605).unwrap(); // 2026-11-22 10:00:05
        let rows: [(&str, &[u8], &str); 3] = [
            (
                "authpriv",
                b"{\"seq\":1}",
                "<86>Nov 22 10:00:05 kpki-audit[42]: {\"seq\":1}",
            ),
            ("local0", b"x", "<134>Nov 22 10:00:05 kpki-audit[42]: x"),
            ("user", b"", "<14>Nov 22 10:00:05 kpki-audit[42]: "),
        ];
        for (name, line, want) in rows {
            let f = frame(facility(name).unwrap(), t, 42, line);
            assert_eq!(String::from_utf8(f).unwrap(), want);
        }
        // Single-digit days are padded with a space, as RFC 3164 writes them.
        let t = OffsetDateTime::from_unix_timestamp(1_767_312_000).unwrap(); // 2026-01-02
        let f = String::from_utf8(frame(1, t, 7, b"x")).unwrap();
        assert!(f.starts_with("<14>Jan  2 00:00:00 "), "{f}");
        let e = facility("kern").unwrap_err();
        assert!(
            e.contains("unknown syslog facility \"kern\" (one of user, daemon"),
            "{e}"
        );
    }

    #[test]
    fn copies_arrive_and_a_missing_receiver_drops_them() {
        let dir = std::env::temp_dir().join(format!("kpki-syslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let copy = SyslogCopy::new(&path, "authpriv").unwrap();
        copy.send(b"{\"seq\":1}");
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(got.starts_with("<86>"), "{got}");
        assert!(
            got.ends_with(&format!(
                " kpki-audit[{}]: {{\"seq\":1}}",
                std::process::id()
            )),
            "{got}"
        );
        drop(receiver);
        copy.send(b"lost");
        assert_eq!(copy.dropped(), 1);
        // Not a socket: refused up front.
        let file = dir.join("file");
        std::fs::write(&file, "").unwrap();
        let e = SyslogCopy::new(&file, "authpriv").unwrap_err();
        assert_eq!(
            e,
            format!("audit.syslog_socket {}: not a socket", file.display())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
