//! `kpki ca create`: a self-signed CA whose key is made on a SoftHSM token or in a file,
//! with no OpenSSL engine: the certificate verifies, leaves `kpki sign` issues under it pass
//! `openssl verify`, a second run changes nothing, and a certificate that does not match
//! its key, or has no key, is refused with nothing written.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kpki_e2e::{hsm, kpki, openssl, openssl_csr, text};

fn create(name: &str, key: &str, out_dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "ca",
        "create",
        name,
        "--key",
        key,
        "--out-dir",
        out_dir.to_str().unwrap(),
    ];
    args.extend(extra);
    kpki(&args)
}

fn verify(ca: &Path, cert: &Path) {
    let out = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
}

/// Signs a request for `jane` with the CA at `<root>/pki/ca.crt` and key `key`; returns the
/// certificate's path.
fn sign_under(root: &Path, key: &str) -> std::path::PathBuf {
    let csr = root.join("jane.csr");
    std::fs::write(
        &csr,
        openssl_csr(root, "jane", "p256", "/CN=jane/O=dev", &[]),
    )
    .unwrap();
    let out = kpki(&[
        "sign",
        csr.to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
        "--key",
        &format!("ca={key}"),
    ]);
    assert!(out.status.success(), "kpki sign: {:?}", text(&out));
    let crt = root.join("jane.crt");
    std::fs::write(&crt, &out.stdout).unwrap();
    crt
}

#[test]
fn a_ca_on_a_token_signs_leaves_that_verify_and_a_second_run_changes_nothing() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let key = token.key_uri("made-ca");
    let out = create(
        "ca",
        &key,
        &pki,
        &[
            "--cn",
            "kubernetes",
            "-a",
            "ECDSA-P256",
            "--validity",
            "3650d",
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.contains("ca created"), "{:?}", text(&out));
    let crt = pki.join("ca.crt");
    verify(&crt, &crt);
    // Only the certificate was written: the key stayed on the token.
    let files: Vec<_> = std::fs::read_dir(&pki)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(files, ["ca.crt"], "{files:?}");
    assert_eq!(
        std::fs::metadata(&crt).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let shown = openssl(&[
        "x509",
        "-in",
        crt.to_str().unwrap(),
        "-noout",
        "-subject",
        "-dates",
        "-ext",
        "basicConstraints",
    ]);
    let shown = text(&shown).0;
    assert!(
        shown.contains("CN = kubernetes") && shown.contains("CA:TRUE"),
        "{shown}"
    );

    // A leaf issued under it verifies.
    let leaf = sign_under(dir.path(), &key);
    verify(&crt, &leaf);

    // Again: nothing changes (JSON output says so).
    let before = std::fs::read(&crt).unwrap();
    let out = kpki(&[
        "ca",
        "create",
        "ca",
        "--key",
        &key,
        "--out-dir",
        pki.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["action"], "exists", "{v}");
    assert_eq!(std::fs::read(&crt).unwrap(), before);

    // The same key under another name: a new certificate for the existing key.
    let out = create("again", &key, &pki, &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.contains("created with the existing key"),
        "{:?}",
        text(&out)
    );
    verify(&pki.join("again.crt"), &pki.join("again.crt"));
}

#[test]
fn a_ca_with_a_file_key_and_the_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("mesh");
    let key_path = dir.path().join("mesh-ca.key");
    let key = format!("file:{}", key_path.display());
    let out = create("mesh-ca", &key, &out_dir, &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let crt = out_dir.join("mesh-ca.crt");
    verify(&crt, &crt);

    // Another CA's certificate in place of mesh-ca's: a mismatch, nothing written.
    let other_key = format!("file:{}", dir.path().join("other.key").display());
    assert!(create("other", &other_key, &out_dir, &[]).status.success());
    let other = std::fs::read(out_dir.join("other.crt")).unwrap();
    std::fs::write(&crt, &other).unwrap();
    let out = create("mesh-ca", &key, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    let err = text(&out).1;
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(std::fs::read(&crt).unwrap(), other);

    // A certificate whose key is gone: refused, no new key made.
    let gone = format!("file:{}", dir.path().join("gone.key").display());
    let out = create("other", &gone, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("its key"), "{:?}", text(&out));
    assert!(!dir.path().join("gone.key").exists());

    // Bad input: one line, exit 1 or 2, nothing written.
    for (args, code) in [
        (vec!["ca", "create", "x/y", "--key", key.as_str()], 1),
        (vec!["ca", "create", "x", "--key", "nope:abc"], 1),
        (
            vec![
                "ca",
                "create",
                "x",
                "--key",
                key.as_str(),
                "--validity",
                "ten",
            ],
            2,
        ),
        (
            vec!["ca", "create", "x", "--key", key.as_str(), "-a", "DSA"],
            2,
        ),
    ] {
        let out = kpki(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {:?}", text(&out));
    }
    assert!(!Path::new("x.crt").exists());
}
