//! `kpki audit verify` accepts a cleanly closed audit log written by the daemon's
//! `AuditLog`, and names the line of a removed or edited line in one stderr line with exit 1.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use kpki_e2e::{kpki, text};
use kpki_serve::audit::{AuditLog, Caller, Decision, Event, Record, SyncMode};

fn decision(i: u64, allow: bool) -> Record {
    Record {
        caller: Some(Caller {
            cn: format!("user-{i}"),
            orgs: vec!["dev".into()],
        }),
        remote: Some("10.0.0.7:51234".into()),
        endpoint: Some("/v1/sign".into()),
        signer_name: Some("kubernetes.io/kube-apiserver-client".into()),
        subject: Some(format!("O=dev, CN=user-{i}")),
        sans: vec![format!("DNS:user-{i}.example")],
        decision: Some(if allow {
            Decision::Allow
        } else {
            Decision::Deny
        }),
        code: (!allow).then(|| "policy_denied".into()),
        serial: allow.then(|| format!("{i:x}")),
        ..Record::new(Event::Decision)
    }
}

/// Runs `kpki audit verify` on `path` and returns (exit code, stdout, stderr).
fn verify(path: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["audit", "verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = kpki(&args);
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap(), stdout, stderr)
}

fn write_lines(path: &Path, lines: &[&str]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[test]
fn audit_verify_accepts_a_closed_log_and_names_damaged_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, SyncMode::Flush).unwrap();
    for i in 0..10 {
        log.append(decision(i, !i.is_multiple_of(4))).unwrap();
    }
    log.close().unwrap();
    drop(log);

    let (code, stdout, stderr) = verify(&path, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        format!(
            "audit log {}: 12 lines, 10 decisions (7 allowed), chain intact, closed cleanly\n",
            path.display()
        )
    );
    assert_eq!(stderr, "");

    let (code, stdout, stderr) = verify(&path, &["-o", "json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["lines"], 12);
    assert_eq!(v["closed"], true);

    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let broken = dir.path().join("broken.log");

    // Line 5 removed: line 5 now holds seq 6.
    let mut cut = lines.clone();
    cut.remove(4);
    write_lines(&broken, &cut);
    let (code, stdout, stderr) = verify(&broken, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "kpki: error: audit log {}: line 5: seq 6 where 5 was expected (a line is missing or out of order)\n",
            broken.display()
        )
    );

    // Line 10 edited: a denial turned into an approval.
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    assert!(edited[9].contains("\"decision\":\"deny\""), "{}", edited[9]);
    edited[9] = edited[9].replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1);
    let edited: Vec<&str> = edited.iter().map(String::as_str).collect();
    write_lines(&broken, &edited);
    let (code, stdout, stderr) = verify(&broken, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "kpki: error: audit log {}: line 10: the line does not match its \"hash\" (the line was changed)\n",
            broken.display()
        )
    );

    // The close record removed: accepted only with --allow-open.
    write_lines(&broken, &lines[..lines.len() - 1]);
    let (code, _, stderr) = verify(&broken, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(": line 11: the log ends without a close record"),
        "{stderr}"
    );
    let (code, stdout, stderr) = verify(&broken, &["--allow-open"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.ends_with(
            ": 11 lines, 10 decisions (7 allowed), chain intact, not closed (still open)\n"
        ),
        "{stdout}"
    );
}
