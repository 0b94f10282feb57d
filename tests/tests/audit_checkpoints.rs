//! Signed audit checkpoints: `kpki serve` with `audit.checkpoint_key` on a SoftHSM token
//! signs the chain head every `checkpoint_every` lines and in its close record, and
//! `kpki audit verify --key CERT|PUBKEY` catches what the hash chain alone cannot: a line
//! edited with every later hash recomputed, a log cut after a checkpoint, the last checkpoint
//! dropped, checkpoints re-signed with another key — each named by line. The decision lines
//! name the policy rule that allowed or refused them. An untouched 100,000-line log verifies
//! within the time bound.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kpki_e2e::load::Connection;
use kpki_e2e::serve::ServeFixture;
use kpki_e2e::{kpki, openssl, openssl_csr, text};
use kpki_serve::audit::checkpoint::message;
use kpki_serve::audit::{AuditLog, Caller, Checkpointer, Decision, Event, Record, SyncMode};
use serde_json::{Value, json};

const KAC: &str = "kubernetes.io/kube-apiserver-client";

const POLICY: &str = r#"
[[policy]]
name = "devs"
callers = { orgs = ["dev"] }
signers = ["kubernetes.io/kube-apiserver-client"]
cn = "[a-z0-9-]+"
orgs = ["dev"]
"#;

/// Lines between checkpoints in the daemon test.
const EVERY: usize = 4;

/// Runs `kpki audit verify FILE ARGS…`: (exit code, stdout, stderr).
fn verify(path: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["audit", "verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = kpki(&args);
    let (stdout, stderr) = text(&out);
    (out.status.code().unwrap(), stdout, stderr)
}

/// `verify` that must fail: its one stderr line.
fn refused(path: &Path, extra: &[&str]) -> String {
    let (code, stdout, stderr) = verify(path, extra);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr.trim_end().to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// Gives lines `from..` the `seq` of their position, the `prev` of the line before and a
/// recomputed `hash`: what a forger who can write the file does after changing a line.
fn rechain(lines: &mut [String], from: usize) {
    for i in from..lines.len() {
        let prev = if i == 0 {
            "0".repeat(64)
        } else {
            sha256_hex(lines[i - 1].as_bytes())
        };
        let line = &lines[i];
        let at = line.find(",\"prev\":\"").unwrap();
        let rest = &line[at + 9 + 64..];
        let body = format!("{{\"seq\":{},\"prev\":\"{prev}{rest}", i + 1);
        // Re-hash: the line minus its 64 hex digits and `"}`, with the digest of the line as
        // it reads with `"hash":""`.
        let head = &body[..body.len() - 66];
        let own = sha256_hex(format!("{head}\"}}").as_bytes());
        lines[i] = format!("{head}{own}\"}}");
    }
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

fn field(line: &str, name: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap();
    v[name].clone()
}

/// A self-signed certificate for a new key at `key` (`kpki ca create`): the certificate a
/// verifier is given.
fn key_with_cert(dir: &Path, name: &str, key: &str) -> PathBuf {
    let out = kpki(&[
        "ca",
        "create",
        name,
        "--key",
        key,
        "-a",
        "ECDSA-P256",
        "--out-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "kpki ca create: {:?}", text(&out));
    dir.join(format!("{name}.crt"))
}

async fn post(conn: &mut Connection, dir: &Path, i: usize, subj: &str) -> (u16, Value) {
    let csr = openssl_csr(dir, &format!("r{i}"), "p256", subj, &[]);
    let body = json!({ "csr": csr, "signer_name": KAC }).to_string();
    let reply = conn.post("/v1/sign", body.into_bytes()).await.unwrap();
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_checkpoints_catch_rewrites_that_the_hash_chain_does_not() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let dir = f.dir.path();
    let cp_uri = f.token.key_uri("audit-checkpoints");
    let cert = key_with_cert(dir, "audit-checkpoints", &cp_uri);
    let config = std::fs::read_to_string(&f.config).unwrap();
    let audit_line = format!("path = \"{}\"\n", f.audit.display());
    assert!(config.contains(&audit_line));
    std::fs::write(
        &f.config,
        config.replace(
            &audit_line,
            &format!("{audit_line}checkpoint_key = \"{cp_uri}\"\ncheckpoint_every = {EVERY}\n"),
        ),
    )
    .unwrap();

    let mut daemon = f.start();
    let csrs = dir.join("csrs");
    std::fs::create_dir_all(&csrs).unwrap();
    let mut dev = Connection::connect(&f.target(f.identity("jane", Some("dev"))))
        .await
        .unwrap();
    let mut stranger = Connection::connect(&f.target(f.identity("nobody", None)))
        .await
        .unwrap();
    // (who, subject, status, code, rule): allowed, refused by the rule that matched the
    // caller, refused with no rule.
    let mut asked = Vec::new();
    for i in 0..14 {
        let (conn, subj, status, code, rule) = match i % 7 {
            5 => (
                &mut dev,
                "/CN=jane/O=ops",
                403,
                Some("org_not_allowed"),
                Some("devs"),
            ),
            6 => (
                &mut stranger,
                "/CN=nobody",
                403,
                Some("policy_denied"),
                None,
            ),
            _ => (&mut dev, "/CN=jane/O=dev", 200, None, Some("devs")),
        };
        let (got, reply) = post(conn, &csrs, i, subj).await;
        assert_eq!(got, status, "request {i}: {reply}");
        asked.push((code, rule));
    }
    drop((dev, stranger));
    assert!(daemon.terminate().success(), "{}", daemon.log_text());

    let original: Vec<String> = std::fs::read_to_string(&f.audit)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // open, 14 decisions with a checkpoint after every 4 lines, the signed close.
    let decisions: Vec<&String> = original
        .iter()
        .filter(|l| field(l, "event") == "decision")
        .collect();
    assert_eq!(decisions.len(), 14);
    for (line, (code, rule)) in decisions.iter().zip(&asked) {
        assert_eq!(field(line, "code").as_str(), *code, "{line}");
        assert_eq!(field(line, "rule").as_str(), *rule, "{line}");
    }
    let checkpoints: Vec<usize> = (0..original.len())
        .filter(|i| field(&original[*i], "event") == "checkpoint")
        .map(|i| i + 1)
        .collect();
    assert_eq!(checkpoints, vec![5, 10, 15], "{original:#?}");
    let last = original.len();
    assert_eq!(last, 19);
    assert_eq!(field(&original[last - 1], "event"), "close");
    let key_id = field(&original[last - 1], "checkpoint")["key"].clone();
    assert_eq!(key_id, field(&original[4], "checkpoint")["key"]);

    // Untouched: verifies with the certificate and with its public key (from openssl).
    let (code, stdout, stderr) = verify(&f.audit, &["--key", cert.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.ends_with("\n4 checkpoints signed by the given key; every line is anchored\n"),
        "{stdout}"
    );
    let pubkey = dir.join("audit-checkpoints.pub");
    let out = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"]);
    assert!(out.status.success());
    std::fs::write(&pubkey, &out.stdout).unwrap();
    let (code, stdout, stderr) =
        verify(&f.audit, &["--key", pubkey.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["lines"].clone(), v["checkpoints"].clone()),
        (json!(19), json!(4))
    );
    assert_eq!(v["key"], key_id);
    assert!(v.get("unanchored_from").is_none(), "{v}");

    let key = ["--key", cert.to_str().unwrap()];
    let forged = dir.join("forged.jsonl");

    // 1. Line 7 (a decision) edited and every later hash recomputed: the chain alone
    //    verifies; the checkpoint at line 10 does not.
    let mut lines = original.clone();
    assert_eq!(field(&lines[6], "decision"), "allow");
    lines[6] = lines[6].replace("\"decision\":\"allow\"", "\"decision\":\"deny\"");
    rechain(&mut lines, 6);
    write_lines(&forged, &lines);
    let (code, stdout, stderr) = verify(&forged, &[]);
    assert_eq!(
        code, 0,
        "the hash chain alone is rewritten: {stdout}{stderr}"
    );
    let e = refused(&forged, &key);
    assert!(
        e.ends_with("line 10: the checkpoint's signature does not verify: a line of lines 6-10 was changed after it was signed, or the checkpoint was forged"),
        "{e}"
    );

    // 2. Cut after the checkpoint at line 15: no close record; a forged unsigned close
    //    after more forged lines is not signed.
    let cut = original[..15].to_vec();
    write_lines(&forged, &cut);
    let e = refused(&forged, &key);
    assert!(
        e.ends_with("line 15: the log ends without a close record (truncated, or the daemon did not shut down cleanly)"),
        "{e}"
    );
    let mut lines = cut.clone();
    lines.push(original[11].clone()); // a decision
    // An unsigned close: `time` and `event` only.
    let time = field(&original[last - 1], "time");
    lines.push(format!(
        "{{\"seq\":0,\"prev\":\"{}\",\"time\":{time},\"event\":\"close\",\"hash\":\"{}\"}}",
        "0".repeat(64),
        "0".repeat(64)
    ));
    rechain(&mut lines, 15);
    write_lines(&forged, &lines);
    let e = refused(&forged, &key);
    assert!(
        e.ends_with("line 17: the close record is not signed with the checkpoint key; lines 16-17 after the last checkpoint are not signed"),
        "{e}"
    );

    // 3. The last checkpoint dropped: the signed close, or the one before it (the lines
    //    after renumbered and re-hashed).
    write_lines(&forged, &original[..last - 1]);
    let e = refused(&forged, &key);
    assert!(
        e.ends_with("line 18: the log ends without a close record (truncated, or the daemon did not shut down cleanly); lines 16-18 after the last checkpoint are not signed"),
        "{e}"
    );
    let mut lines = original.clone();
    lines.remove(14);
    rechain(&mut lines, 14);
    write_lines(&forged, &lines);
    let (code, _, stderr) = verify(&forged, &[]);
    assert_eq!(code, 0, "{stderr}");
    let e = refused(&forged, &key);
    assert!(
        e.ends_with("line 18: the checkpoint's signature does not verify: a line of lines 11-18 was changed after it was signed, or the checkpoint was forged"),
        "{e}"
    );

    // 4. Every checkpoint re-signed with another key: consistent under that key, refused
    //    under the real one at the first checkpoint.
    let other_uri = format!("file:{}/other.key", dir.display());
    let other_cert = key_with_cert(dir, "other", &other_uri);
    let other = kpki_pki::keystore::KeyStore::default()
        .open(&other_uri.parse().unwrap())
        .unwrap();
    let other = Checkpointer::new(other, 1);
    let mut lines = original.clone();
    for i in 0..lines.len() {
        rechain(&mut lines, i);
        let event = field(&lines[i], "event");
        let event = match event.as_str().unwrap() {
            "checkpoint" => Event::Checkpoint,
            "close" => Event::Close,
            _ => continue,
        };
        let prev = field(&lines[i], "prev");
        let time = field(&lines[i], "time");
        let cp = other
            .sign(
                event,
                i as u64 + 1,
                prev.as_str().unwrap(),
                time.as_str().unwrap(),
            )
            .unwrap();
        lines[i] = format!(
            "{{\"seq\":{},\"prev\":{prev},\"time\":{time},\"event\":\"{event}\",\"checkpoint\":{{\"key\":\"{}\",\"sig\":\"{}\"}},\"hash\":\"{}\"}}",
            i + 1,
            cp.key,
            cp.sig,
            "0".repeat(64)
        );
        rechain(&mut lines, i);
    }
    write_lines(&forged, &lines);
    let (code, stdout, stderr) = verify(&forged, &["--key", other_cert.to_str().unwrap()]);
    assert_eq!(
        code, 0,
        "self-consistent under the forger's key: {stdout}{stderr}"
    );
    let e = refused(&forged, &key);
    assert!(
        e.contains("line 5: the checkpoint is signed by key "),
        "{e}"
    );
    assert!(e.contains("(the checkpoint key was swapped)"), "{e}");

    // A checkpoint's message is what the verifier recomputes (seq, prev, time, event).
    assert!(
        String::from_utf8(message(Event::Checkpoint, 5, "p", "t"))
            .unwrap()
            .contains("seq=5\nprev=p\ntime=t\n")
    );
}

#[test]
fn a_log_still_open_reports_its_unsigned_tail_and_bad_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key_uri = format!("file:{}/cp.key", dir.path().display());
    let cert = key_with_cert(dir.path(), "cp", &key_uri);
    let signer = kpki_pki::keystore::KeyStore::default()
        .open(&key_uri.parse().unwrap())
        .unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, SyncMode::Flush)
        .unwrap()
        .with_checkpoints(Checkpointer::new(Arc::clone(&signer), 3));
    for i in 0..7 {
        log.append(decision(i)).unwrap();
    }
    drop(log); // still open: 1 open + 7 decisions + checkpoints at 4 and 8, 3 tail lines

    let (code, stdout, stderr) = verify(&path, &["--allow-open", "--key", cert.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.ends_with(
            "\n2 checkpoints signed by the given key; lines 9-10 are not anchored by a checkpoint\n"
        ),
        "{stdout}"
    );
    let e = refused(&path, &["--key", cert.to_str().unwrap()]);
    assert!(
        e.ends_with("line 10: the log ends without a close record (truncated, or the daemon did not shut down cleanly); lines 9-10 after the last checkpoint are not signed"),
        "{e}"
    );

    // Bad --key values: one line naming the file, exit 1.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem").unwrap();
    let key_file = dir.path().join("cp.key");
    for (file, want) in [
        (junk.as_path(), "not PEM"),
        (
            key_file.as_path(),
            "expected a CERTIFICATE or PUBLIC KEY PEM block",
        ),
        (dir.path(), "not a regular file"),
    ] {
        let e = refused(&path, &["--allow-open", "--key", file.to_str().unwrap()]);
        assert!(
            e.starts_with(&format!("kpki: error: --key {}: ", file.display())) && e.contains(want),
            "{e}"
        );
    }
}

fn decision(i: u64) -> Record {
    let allow = !i.is_multiple_of(5);
    Record {
        caller: Some(Caller {
            cn: format!("system:node:worker-{i}"),
            orgs: vec!["system:nodes".into()],
        }),
        remote: Some("10.0.12.7:51234".into()),
        endpoint: Some("/v1/sign".into()),
        request_sha256: Some(sha256_hex(&i.to_be_bytes())),
        signer_name: Some("kubernetes.io/kubelet-serving".into()),
        subject: Some(format!("O=system:nodes, CN=system:node:worker-{i}")),
        sans: vec![
            format!("DNS:worker-{i}.nodes.example.com"),
            format!("IP:10.0.{}.{}", (i / 250) % 250, i % 250),
        ],
        decision: Some(if allow {
            Decision::Allow
        } else {
            Decision::Deny
        }),
        rule: Some("kubelets".into()),
        code: (!allow).then(|| "san_not_allowed".into()),
        reason: (!allow).then(|| "rule \"kubelets\": DNS SAN outside the allowed suffixes".into()),
        serial: allow.then(|| format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15)),
        not_after: allow.then(|| "2026-11-30T20:00:00Z".into()),
        key_uri: Some("pkcs11:token=kpki;object=kubernetes-ca".into()),
        ..Record::new(Event::Decision)
    }
}

/// The bound on verifying an untouched 100,000-line log (with checkpoints every 1000 lines),
/// in CPU time of the `kpki` process, debug or release build (the debug build needs about
/// 1.5 s on this project's CI machine, a release build a small fraction of that).
const VERIFY_100K_BOUND: Duration = Duration::from_secs(2);

#[test]
fn an_untouched_100k_line_log_verifies_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let key_uri = format!("file:{}/cp.key", dir.path().display());
    let cert = key_with_cert(dir.path(), "cp", &key_uri);
    let signer = kpki_pki::keystore::KeyStore::default()
        .open(&key_uri.parse().unwrap())
        .unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, SyncMode::Flush)
        .unwrap()
        .with_checkpoints(Checkpointer::new(signer, 1000));
    let mut i = 0;
    while log.append(decision(i)).unwrap().seq < 99_999 {
        i += 1;
    }
    let closed = log.close().unwrap();
    assert_eq!(closed.seq, 100_000);
    let bytes = std::fs::metadata(&path).unwrap().len();

    // Run under bash so that `times` reports the CPU time of the verification itself: the
    // wall time of one process on a shared, loaded machine says more about the load.
    let start = Instant::now();
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            "\"$0\" \"$@\"; status=$?; times >&2; exit $status",
            kpki_e2e::kpki_bin().to_str().unwrap(),
            "audit",
            "verify",
            path.to_str().unwrap(),
            "--key",
            cert.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let wall = start.elapsed();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(": 100000 lines, "), "{stdout}");
    assert!(
        stdout.ends_with("100 checkpoints signed by the given key; every line is anchored\n"),
        "{stdout}"
    );
    // `times`: the shell's user and system time, then its children's ("0m1.234s 0m0.010s").
    let children = stderr.lines().last().unwrap();
    let cpu: f64 = children
        .split_whitespace()
        .map(|t| {
            let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
            m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
        })
        .sum();
    let cpu = Duration::from_secs_f64(cpu);
    eprintln!(
        "verified 100000 lines ({:.1} MB) with --key: {:.3} s CPU, {:.3} s wall ({} build)",
        bytes as f64 / 1e6,
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    assert!(
        cpu < VERIFY_100K_BOUND,
        "100000 lines took {cpu:?} of CPU (bound {VERIFY_100K_BOUND:?})"
    );
}
