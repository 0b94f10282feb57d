//! `kpki init` records where each CA key lives (`<cert_dir>/kpki-keys.toml`, never a PIN
//! value), and every later command on that directory finds the keys without `--key`:
//! check-expiration sees the token CAs as managed, renew and sign use them; a flag still wins.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use kpki_e2e::{hsm, kpki, openssl, openssl_csr, text};

#[test]
fn later_commands_find_the_keys_init_was_given() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let r = root.to_str().unwrap();
    let ca = token.key_uri("rec-ca");
    let etcd = token.key_uri_with_pin("rec-etcd", hsm::USER_PIN);
    let out = kpki(&[
        "init",
        "--dir",
        r,
        "--node-name",
        "cp1",
        "--advertise-address",
        "10.0.0.10",
        "--key",
        &format!("ca={ca}"),
        "--key",
        &format!("etcd-ca={etcd}"),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let record = std::fs::read_to_string(root.join("pki/kpki-keys.toml")).unwrap();
    assert!(record.contains("object=rec-ca"), "{record}");
    assert!(record.contains("object=rec-etcd"), "{record}");
    assert!(
        !record.contains("pin-value") && !record.contains(hsm::USER_PIN),
        "{record}"
    );
    assert!(
        !record.contains("front-proxy-ca ="),
        "file keys at kubeadm's paths: {record}"
    );

    // No --key: the token CAs are found, not "externally managed".
    let out = kpki(&["certs", "check-expiration", "--dir", r]);
    assert!(out.status.success(), "{:?}", text(&out));
    let shown = text(&out).0;
    for ca in ["ca", "etcd-ca", "front-proxy-ca"] {
        let line = shown
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ca))
            .unwrap_or_else(|| panic!("{ca} not listed: {shown}"));
        assert_eq!(line.split_whitespace().last(), Some("no"), "{line}");
    }

    // Renew with the recorded CA key.
    let before = std::fs::read(root.join("pki/apiserver.crt")).unwrap();
    let out = kpki(&["certs", "renew", "apiserver", "--dir", r]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("renewed"), "{:?}", text(&out));
    assert_ne!(
        std::fs::read(root.join("pki/apiserver.crt")).unwrap(),
        before
    );
    let v = openssl(&[
        "verify",
        "-CAfile",
        root.join("pki/ca.crt").to_str().unwrap(),
        root.join("pki/apiserver.crt").to_str().unwrap(),
    ]);
    assert!(v.status.success(), "{:?}", text(&v));

    // Sign with it.
    let csr = dir.path().join("jane.csr");
    std::fs::write(
        &csr,
        openssl_csr(dir.path(), "jane", "p256", "/CN=jane/O=dev", &[]),
    )
    .unwrap();
    let out = kpki(&["sign", csr.to_str().unwrap(), "--dir", r]);
    assert!(out.status.success(), "{:?}", text(&out));

    // A flag still wins over the record.
    let out = kpki(&[
        "certs",
        "renew",
        "apiserver",
        "--dir",
        r,
        "--key",
        &format!("ca=file:{}", dir.path().join("nope.key").display()),
    ]);
    assert!(
        !text(&out)
            .0
            .contains("certificate for serving the Kubernetes API renewed"),
        "{:?}",
        text(&out)
    );
}
