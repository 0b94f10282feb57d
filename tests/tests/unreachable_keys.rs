//! A CA key that is configured (flag, kpki.toml) or recorded by `init` but cannot be opened
//! fails every command that needs it — `certs renew`, `sign`, `kubeconfig user`, `node add`,
//! an `init` re-run — with exit 1, one line naming the key and the reason, and nothing
//! written. kubeadm's external-CA mode ("can't be renewed", exit 0) stays only where it
//! applies: no key configured or recorded and no `ca.key`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use kpki_e2e::p11kit::{self, start_server, stop_server};
use kpki_e2e::{hsm, init_cluster, kpki, openssl_csr, snapshot, text};

/// Runs every command that signs with the cluster CA on the PKI under `root`, with `extra`
/// flags; each must fail with one line naming `key_part` (the key) and `reason`, and write
/// nothing.
fn every_signing_command_fails(root: &Path, extra: &[&str], key_part: &str, reason: &str) {
    let r = root.to_str().unwrap();
    let csr = root.join("jane.csr");
    if !csr.exists() {
        std::fs::write(
            &csr,
            openssl_csr(root, "jane", "p256", "/CN=jane/O=dev", &[]),
        )
        .unwrap();
    }
    let csr = csr.to_str().unwrap().to_string();
    let commands: [Vec<&str>; 5] = [
        vec!["certs", "renew", "apiserver", "--dir", r],
        vec!["sign", &csr, "--dir", r],
        vec!["kubeconfig", "user", "--client-name", "jane", "--dir", r],
        vec!["node", "add", "w1", "--address", "10.0.0.21", "--dir", r],
        vec![
            "init",
            "--dir",
            r,
            "--node-name",
            "cp1",
            "--advertise-address",
            "10.0.0.10",
        ],
    ];
    for mut args in commands {
        args.extend_from_slice(extra);
        let before = snapshot::tree(root);
        let out = kpki(&args);
        let (stdout, stderr) = text(&out);
        let what = format!("kpki {}", args[..2].join(" "));
        assert_eq!(out.status.code(), Some(1), "{what}: {stdout:?} {stderr:?}");
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr:?}");
        assert!(stderr.starts_with("kpki: error: "), "{what}: {stderr:?}");
        assert!(
            stderr.contains("ca key") && stderr.contains(key_part),
            "{what}: the key is not named: {stderr:?}"
        );
        assert!(
            stderr.contains(reason),
            "{what}: the reason {reason:?} is not given: {stderr:?}"
        );
        assert!(
            !stderr.contains(hsm::USER_PIN) && !stderr.contains("pin-value"),
            "{what}: {stderr:?}"
        );
        assert!(!stdout.contains("renewed"), "{what}: {stdout:?}");
        snapshot::assert_same(&what, &before, &snapshot::tree(root));
    }
}

fn init_with_token_ca(root: &Path, ca: &str) {
    init_cluster(root, "10.0.0.10", &["--key", &format!("ca={ca}")]);
}

#[test]
fn a_configured_label_that_is_not_on_the_token_is_an_error() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_with_token_ca(&root, &token.key_uri("cluster-ca"));
    let wrong = token.key_uri("no-such-ca");
    every_signing_command_fails(
        &root,
        &["--key", &format!("ca={wrong}")],
        "object=no-such-ca",
        "not found",
    );
}

#[test]
fn a_wrong_pin_is_an_error() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_with_token_ca(&root, &token.key_uri("cluster-ca"));
    let wrong = token.key_uri_with_pin("cluster-ca", "999999");
    every_signing_command_fails(
        &root,
        &["--key", &format!("ca={wrong}")],
        "object=cluster-ca",
        "wrong PIN",
    );
}

#[test]
fn a_recorded_token_key_whose_token_directory_is_gone_is_an_error() {
    let tokens = hsm::softhsm().dir().join("tokens");
    let listing = |d: &Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .map(|r| r.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let before = listing(&tokens);
    let token = hsm::token();
    let token_dir = listing(&tokens)
        .into_iter()
        .find(|p| !before.contains(p))
        .expect("the new token's directory");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_with_token_ca(&root, &token.key_uri("cluster-ca"));
    std::fs::remove_dir_all(&token_dir).unwrap();
    // No flag: the key comes from <cert_dir>/kpki-keys.toml.
    every_signing_command_fails(
        &root,
        &[],
        &format!("token={}", token.label),
        "token not found",
    );
}

#[test]
fn a_recorded_key_behind_a_stopped_p11_kit_server_is_an_error() {
    p11kit::require();
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("p11.sock");
    p11kit::use_server(&socket);
    let server = start_server(&socket, &token.label);
    let root = dir.path().join("n");
    init_with_token_ca(&root, &p11kit::key_uri(&token, "remote-ca"));
    stop_server(server);
    every_signing_command_fails(
        &root,
        &[],
        "module-path=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
        "token not found",
    );
}

#[test]
fn a_recorded_key_file_that_is_gone_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = keys.join("cluster-ca.key");
    let root = dir.path().join("n");
    init_with_token_ca(&root, &format!("file:{}", key.display()));
    std::fs::remove_file(&key).unwrap();
    every_signing_command_fails(
        &root,
        &[],
        &format!("file:{}", key.display()),
        "does not exist",
    );
    // The same file named by a flag instead of the record.
    std::fs::remove_file(root.join("pki/kpki-keys.toml")).unwrap();
    every_signing_command_fails(
        &root,
        &["--key", &format!("ca=file:{}", key.display())],
        &format!("file:{}", key.display()),
        "does not exist",
    );
}

#[test]
fn kubeadm_external_ca_mode_stays_where_it_applies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_cluster(&root, "10.0.0.10", &[]);
    assert!(!root.join("pki/kpki-keys.toml").exists());
    std::fs::remove_file(root.join("pki/ca.key")).unwrap();
    let r = root.to_str().unwrap();
    let before = snapshot::tree(&root);
    let out = kpki(&["certs", "renew", "apiserver", "--dir", r]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.contains("Detected external ca"),
        "{:?}",
        text(&out)
    );
    snapshot::assert_same("external renew", &before, &snapshot::tree(&root));
    // The other CAs still renew their certificates.
    let out = kpki(&["certs", "renew", "front-proxy-client", "--dir", r]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("renewed"), "{:?}", text(&out));
}
