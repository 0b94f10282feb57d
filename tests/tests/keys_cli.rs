//! `kpki keys` from the command line: the happy paths and every kind of bad input, each
//! with one clear line and a non-zero exit.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use kpki_e2e::{hsm, kpki, text};

fn refused(args: &[&str], expect: &str) {
    let out = kpki(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should fail with exit 1; stdout={stdout} stderr={stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: exactly one error line expected, got:\n{stderr}"
    );
    assert!(lines[0].starts_with("kpki: error: "), "{args:?}: {stderr}");
    assert!(
        stderr.contains(expect),
        "{args:?}: expected {expect:?} in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn create_list_show_on_files_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pki/ca.key");
    let uri = format!("file:{}", key.display());
    let out = kpki(&["keys", "create", &uri, "--algorithm", "ECDSA-P256"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = kpki(&["keys", "show", &uri, "-o", "json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["algorithm"], "ECDSA-P256");
    assert_eq!(info["spki_sha256"].as_str().unwrap().len(), 64);

    let token = hsm::token();
    let key_uri = token.key_uri("cli-ca");
    let out = kpki(&["keys", "create", &key_uri, "-a", "RSA-2048"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = kpki(&["keys", "show", &key_uri, "-o", "json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["algorithm"], "RSA-2048");
    assert_eq!(info["protection"]["sensitive"], true);
    assert_eq!(info["protection"]["extractable"], false);
    assert_eq!(info["protection"]["always_sensitive"], true);
    assert_eq!(info["protection"]["never_extractable"], true);
    let (show_text, _) = text(&kpki(&["keys", "show", &key_uri]));
    assert!(show_text.contains("never-extractable: true"), "{show_text}");
    let out = kpki(&["keys", "list", &token.token_uri(), "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["label"], "cli-ca");
    // The PIN never shows up in any output.
    let inline = token.key_uri_with_pin("cli-ca", "1234");
    let (o, e) = text(&kpki(&["keys", "show", &inline]));
    assert!(
        !o.contains("pin-value") && !e.contains("pin-value"),
        "{o}{e}"
    );
}

#[test]
fn bad_input_is_refused_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let token = hsm::token();
    let module = hsm::module();
    let m = module.display();

    refused(
        &["keys", "show", "pkcs11:token=x;id=%zz"],
        "bad percent-encoding",
    );
    refused(&["keys", "show", "gopher:key"], "invalid key URI");
    refused(
        &[
            "keys",
            "create",
            &format!("file:{}/k.key", dir.path().display()),
            "-a",
            "RSA-1024",
        ],
        "unknown key algorithm \"RSA-1024\"",
    );
    refused(
        &[
            "keys",
            "show",
            "pkcs11:token=t;object=o?module-path=/nonexistent/libpkcs11.so&pin-value=1",
        ],
        "/nonexistent/libpkcs11.so: file not found",
    );
    refused(
        &[
            "keys",
            "show",
            &format!("pkcs11:token=no-such-token;object=o?module-path={m}&pin-value=1234"),
        ],
        "no token with label \"no-such-token\"",
    );
    refused(
        &["keys", "show", &token.key_uri_with_pin("x", "9999")],
        "wrong PIN",
    );
    refused(
        &["keys", "show", &token.key_uri("absent")],
        "object \"absent\" on token",
    );

    // Key file with mode 0644.
    let lax = dir.path().join("lax.key");
    assert!(
        kpki(&[
            "keys",
            "create",
            &format!("file:{}", lax.display()),
            "-a",
            "ECDSA-P256"
        ])
        .status
        .success()
    );
    std::fs::set_permissions(&lax, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(
        &["keys", "show", &format!("file:{}", lax.display())],
        "mode 0644); fix with: chmod 600",
    );

    // Key file not owned by root, while running as root.
    assert!(
        rustix_euid_is_root(),
        "this test checks the root-ownership rule and must run as root (CI does)"
    );
    let foreign = dir.path().join("foreign.key");
    assert!(
        kpki(&[
            "keys",
            "create",
            &format!("file:{}", foreign.display()),
            "-a",
            "ECDSA-P256"
        ])
        .status
        .success()
    );
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    refused(
        &["keys", "show", &format!("file:{}", foreign.display())],
        "not root; fix with: chown root:root",
    );

    // PEM that is not a key.
    let cert = dir.path().join("cert.key");
    kpki_e2e::write_pem(&cert, "CERTIFICATE", &[0x30, 0x03, 0x02, 0x01, 0x01]);
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &["keys", "show", &format!("file:{}", cert.display())],
        "not a private key",
    );

    // Truncated DER inside a well-formed PEM.
    let good = dir.path().join("good.key");
    assert!(
        kpki(&[
            "keys",
            "create",
            &format!("file:{}", good.display()),
            "-a",
            "RSA-2048"
        ])
        .status
        .success()
    );
    let block = pem::parse(std::fs::read(&good).unwrap()).unwrap();
    let truncated = dir.path().join("truncated.key");
    kpki_e2e::write_pem(
        &truncated,
        "RSA PRIVATE KEY",
        &block.contents()[..block.contents().len() / 2],
    );
    std::fs::set_permissions(&truncated, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &["keys", "show", &format!("file:{}", truncated.display())],
        "malformed or truncated",
    );

    // Garbage that is not PEM at all, and a missing file.
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "hello\n").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &["keys", "show", &format!("file:{}", garbage.display())],
        "not a PEM private key",
    );
    refused(
        &[
            "keys",
            "show",
            &format!("file:{}/missing.key", dir.path().display()),
        ],
        "No such file",
    );

    // Nothing was written by the refused create.
    assert!(!dir.path().join("k.key").exists());
}

fn rustix_euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
