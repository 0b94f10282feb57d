//! Offline issuance leaves an audit trail: with `--audit-file`, `KPKI__AUDIT_FILE` or
//! `audit_file` in kpki.toml, `kpki sign`, `kubeconfig user`, `certs renew`, `node add` and
//! `ca create` (CA key on SoftHSM) each append a run (open, one decision per certificate, a
//! refusal as an error line, close) in the daemon's chain format; `kpki audit verify`
//! accepts the file, and concurrent runs on one file still form one chain.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use kpki_e2e::{hsm, init_cluster, kpki, openssl, openssl_csr, text};
use serde_json::Value;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{:?}", text(&out));
    text(&out).0
}

/// The serial (lowercase hex, no leading zeros stripped) and subject of a PEM certificate,
/// as openssl reads them.
fn serial_of(pem_path: &Path) -> String {
    let out = openssl(&[
        "x509",
        "-in",
        pem_path.to_str().unwrap(),
        "-noout",
        "-serial",
    ]);
    let s = ok(out);
    s.trim().strip_prefix("serial=").unwrap().to_lowercase()
}

#[test]
fn offline_issuance_is_audited_in_one_verified_chain() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("k8s");
    let ca_key = token.key_uri("cluster-ca");
    init_cluster(
        &root,
        "127.0.0.1",
        &[
            "--encryption-algorithm",
            "ECDSA-P256",
            "--key",
            &format!("ca={ca_key}"),
        ],
    );
    let audit = dir.path().join("cli-audit.jsonl");
    let root_s = root.to_str().unwrap();
    let audit_s = audit.to_str().unwrap();

    // kpki sign --audit-file.
    let csr = dir.path().join("jane.csr");
    std::fs::write(
        &csr,
        openssl_csr(dir.path(), "jane", "p256", "/CN=jane/O=dev", &[]),
    )
    .unwrap();
    let crt = dir.path().join("jane.crt");
    let pem = ok(kpki(&[
        "sign",
        csr.to_str().unwrap(),
        "--dir",
        root_s,
        "--audit-file",
        audit_s,
    ]));
    std::fs::write(&crt, &pem).unwrap();

    // kubeconfig user through KPKI__AUDIT_FILE.
    let out = Command::new(kpki_e2e::kpki_bin())
        .args([
            "kubeconfig",
            "user",
            "--client-name",
            "bob",
            "--org",
            "ops",
            "--dir",
            root_s,
        ])
        .env("KPKI__AUDIT_FILE", audit_s)
        .output()
        .unwrap();
    ok(out);

    // certs renew through kpki.toml's audit_file.
    let toml = dir.path().join("kpki.toml");
    std::fs::write(&toml, format!("audit_file = \"{audit_s}\"\n")).unwrap();
    ok(kpki(&[
        "certs",
        "renew",
        "apiserver",
        "--dir",
        root_s,
        "--config",
        toml.to_str().unwrap(),
    ]));

    // node add and ca create.
    ok(kpki(&[
        "node",
        "add",
        "w1",
        "--address",
        "10.0.0.5",
        "--dir",
        root_s,
        "--audit-file",
        audit_s,
    ]));
    let mesh_key = format!("file:{}/mesh.key", dir.path().display());
    ok(kpki(&[
        "ca",
        "create",
        "mesh",
        "--key",
        &mesh_key,
        "-a",
        "ECDSA-P256",
        "--out-dir",
        dir.path().to_str().unwrap(),
        "--audit-file",
        audit_s,
    ]));

    // A refusal is recorded too.
    let masters = dir.path().join("root.csr");
    std::fs::write(
        &masters,
        openssl_csr(dir.path(), "root", "p256", "/CN=root/O=system:masters", &[]),
    )
    .unwrap();
    let out = kpki(&[
        "sign",
        masters.to_str().unwrap(),
        "--dir",
        root_s,
        "--audit-file",
        audit_s,
    ]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));

    let (code_out, stdout) = {
        let out = kpki(&["audit", "verify", audit_s]);
        (out.status.code(), text(&out))
    };
    assert_eq!(code_out, Some(0), "{stdout:?}");
    let all = lines(&audit);
    // Six runs: open … close each.
    let events: Vec<&str> = all.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        events.iter().filter(|e| **e == "open").count(),
        6,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| **e == "close").count(),
        6,
        "{events:?}"
    );
    let decisions: Vec<&Value> = all.iter().filter(|l| l["event"] == "decision").collect();
    let summary: Vec<(&str, &str, &str)> = decisions
        .iter()
        .map(|d| {
            (
                d["endpoint"].as_str().unwrap(),
                d["decision"].as_str().unwrap(),
                d["subject"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("kpki sign", "allow", "CN=jane, O=dev"),
            ("kpki kubeconfig user", "allow", "O=ops, CN=bob"),
            ("kpki certs renew", "allow", "CN=kube-apiserver"),
            (
                "kpki node add",
                "allow",
                "O=system:nodes, CN=system:node:w1"
            ),
            (
                "kpki node add",
                "allow",
                "O=system:nodes, CN=system:node:w1"
            ),
            ("kpki ca create", "allow", "CN=mesh"),
            ("kpki sign", "error", ""),
        ]
    );
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    for d in &decisions {
        assert_eq!(d["caller"]["cn"], format!("uid:{}", uid.trim()), "{d}");
    }
    // The sign line names the certificate it issued, the signer and the token key.
    let sign = decisions[0];
    assert_eq!(
        sign["serial"].as_str().unwrap().trim_start_matches('0'),
        serial_of(&crt).trim_start_matches('0')
    );
    assert_eq!(sign["signer_name"], "kubernetes.io/kube-apiserver-client");
    let key = sign["key_uri"].as_str().unwrap();
    assert!(
        key.starts_with("pkcs11:") && key.contains("object=cluster-ca"),
        "{key}"
    );
    assert!(!key.contains("pin-value"), "{key}");
    // The renewed apiserver certificate's SANs and the node's serving address.
    let sans = |d: &Value| -> Vec<String> {
        d["sans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        sans(decisions[2]).contains(&"IP:127.0.0.1".to_string()),
        "{}",
        decisions[2]
    );
    assert!(
        sans(decisions[3]).contains(&"IP:10.0.0.5".to_string()),
        "{}",
        decisions[3]
    );
    let refusal = decisions[6];
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains("system:masters"),
        "{refusal}"
    );

    // Concurrent runs on one file: one chain, every run complete.
    let before = all.len();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let csr = dir.path().join(format!("c{i}.csr"));
            std::fs::write(
                &csr,
                openssl_csr(
                    dir.path(),
                    &format!("c{i}"),
                    "p256",
                    &format!("/CN=user-{i}/O=dev"),
                    &[],
                ),
            )
            .unwrap();
            Command::new(kpki_e2e::kpki_bin())
                .args([
                    "sign",
                    csr.to_str().unwrap(),
                    "--dir",
                    root_s,
                    "--audit-file",
                    audit_s,
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ok(kpki(&["audit", "verify", audit_s]));
    let all = lines(&audit);
    assert_eq!(all.len(), before + 8 * 3);
    // Each run's three lines are together: open, its decision, close.
    for run in all[before..].chunks(3) {
        let events: Vec<&str> = run.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["open", "decision", "close"]);
    }

    // Without any audit file, nothing is written anywhere new.
    let len = std::fs::metadata(&audit).unwrap().len();
    ok(kpki(&["sign", csr.to_str().unwrap(), "--dir", root_s]));
    assert_eq!(std::fs::metadata(&audit).unwrap().len(), len);
}

#[test]
fn an_audit_file_that_cannot_be_written_stops_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mesh_key = format!("file:{}/mesh.key", dir.path().display());
    let bad = dir.path().join("no-such-dir").join("audit.jsonl");
    let out = kpki(&[
        "ca",
        "create",
        "mesh",
        "--key",
        &mesh_key,
        "--out-dir",
        dir.path().to_str().unwrap(),
        "--audit-file",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let (_, stderr) = text(&out);
    assert!(
        stderr.starts_with(&format!(
            "kpki: error: audit log {}: cannot open",
            bad.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Nothing was made.
    assert!(!dir.path().join("mesh.crt").exists());
    assert!(!dir.path().join("mesh.key").exists());
}
