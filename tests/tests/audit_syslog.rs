//! `audit.syslog = true`: `kpki serve` sends every audit line, as it writes it, to the syslog
//! socket as one datagram in the frame `syslog(3)` uses on `/dev/log`
//! (`<PRI>Mmm dd hh:mm:ss kpki-audit[PID]: LINE`). The test binds that socket itself (a unix
//! datagram socket at `audit.syslog_socket`, as journald's and rsyslog's are) and reads the
//! frames: the same lines, in the same order, as the file. A path that is not a socket, an
//! unknown facility or a checkpoint interval of 0 stops the daemon before it writes anything.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use kpki_e2e::load::Connection;
use kpki_e2e::openssl_csr;
use kpki_e2e::serve::ServeFixture;
use kpki_e2e::text;
use serde_json::json;

const POLICY: &str = r#"
[[policy]]
name = "devs"
callers = { orgs = ["dev"] }
signers = ["kubernetes.io/kube-apiserver-client"]
orgs = ["dev"]
"#;

/// Adds `extra` lines to the fixture's `[audit]` section.
fn with_audit(f: &ServeFixture, extra: &str) {
    let config = std::fs::read_to_string(&f.config).unwrap();
    let line = format!("path = \"{}\"\n", f.audit.display());
    assert!(config.contains(&line));
    std::fs::write(
        &f.config,
        config.replace(&line, &format!("{line}{extra}\n")),
    )
    .unwrap();
}

/// Splits a frame into (PRI, timestamp, tag with pid, line).
fn parse(frame: &str) -> (u16, String, String, String) {
    let rest = frame.strip_prefix('<').unwrap();
    let (pri, rest) = rest.split_once('>').unwrap();
    let (stamp, rest) = rest.split_at(15);
    let rest = rest.strip_prefix(' ').unwrap();
    let (tag, line) = rest.split_once(": ").unwrap();
    (pri.parse().unwrap(), stamp.into(), tag.into(), line.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audit_line_reaches_the_syslog_socket_as_written() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let socket = f.dir.path().join("dev-log");
    let receiver = UnixDatagram::bind(&socket).unwrap();
    receiver.set_nonblocking(true).unwrap();
    with_audit(
        &f,
        &format!(
            "syslog = true\nsyslog_socket = \"{}\"\nsyslog_facility = \"local3\"",
            socket.display()
        ),
    );
    let mut daemon = f.start();
    let pid = daemon.pid();
    let mut conn = Connection::connect(&f.target(f.identity("jane", Some("dev"))))
        .await
        .unwrap();
    for (i, subj) in ["/CN=jane/O=dev", "/CN=jane/O=ops", "/CN=jane/O=dev"]
        .iter()
        .enumerate()
    {
        let csr = openssl_csr(f.dir.path(), &format!("r{i}"), "p256", subj, &[]);
        let body = json!({ "csr": csr, "signer_name": "kubernetes.io/kube-apiserver-client" });
        conn.post("/v1/sign", body.to_string().into_bytes())
            .await
            .unwrap();
    }
    drop(conn);
    assert!(daemon.terminate().success(), "{}", daemon.log_text());

    let file: Vec<String> = std::fs::read_to_string(&f.audit)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(file.len(), 5, "open, 3 decisions, close");
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 64 * 1024];
    while frames.len() < file.len() {
        match receiver.recv(&mut buf) {
            Ok(n) => frames.push(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "{} of {} frames",
                    frames.len(),
                    file.len()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
    for (frame, line) in frames.iter().zip(&file) {
        let (pri, stamp, tag, copied) = parse(frame);
        assert_eq!(pri, 19 * 8 + 6, "local3.info: {frame}");
        assert_eq!(tag, format!("kpki-audit[{pid}]"), "{frame}");
        // `Mmm dd hh:mm:ss`.
        let b = stamp.as_bytes();
        assert!(
            b[3] == b' ' && b[6] == b' ' && b[9] == b':' && b[12] == b':',
            "{stamp}"
        );
        assert_eq!(&copied, line, "the line exactly as written to the file");
    }
    assert!(
        receiver.recv(&mut buf).is_err(),
        "no more frames than lines"
    );
}

#[test]
fn bad_syslog_and_checkpoint_settings_stop_the_daemon_before_it_writes() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let not_socket = f.dir.path().join("plain-file");
    std::fs::write(&not_socket, "").unwrap();
    with_audit(
        &f,
        &format!(
            "syslog = true\nsyslog_socket = \"{}\"",
            not_socket.display()
        ),
    );
    let out = Command::new(kpki_e2e::kpki_bin())
        .args(["serve", "--config", f.config.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.trim_end().ends_with(&format!(
            "kpki: error: audit.syslog_socket {}: not a socket",
            not_socket.display()
        )),
        "{stderr}"
    );
    assert!(!f.audit.exists(), "nothing written");
    // And an unknown facility is named.
    with_audit(&f, "syslog_facility = \"kern\"");
    let out = Command::new(kpki_e2e::kpki_bin())
        .args(["serve", "--config", f.config.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("audit.syslog_facility: unknown syslog facility \"kern\""),
        "{stderr}"
    );
    // A checkpoint interval of 0 is refused, not bent.
    with_audit(&f, "checkpoint_every = 0");
    let out = Command::new(kpki_e2e::kpki_bin())
        .args(["serve", "--config", f.config.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.ends_with("audit.checkpoint_every: must be at least 1\n"),
        "{stderr}"
    );
    assert!(!f.audit.exists(), "nothing written");
}
