//! Conformance per token: every algorithm the token supports is created by `kpki keys
//! create`, reopened by URI in other processes (`kpki keys show`, and `kpki-matrix-sign`
//! through the PKCS#11 backend), reads back sensitive and never-extractable, signs, and the
//! signature verifies with aws-lc-rs and `openssl dgst -verify`. Every algorithm the token
//! cannot do is refused up front in one line naming the token, the algorithm and the missing
//! mechanism or key-size range, with exit 1 and nothing created (checked with `kpki keys
//! list` and, independently, `pkcs11-tool --list-objects` or NSS's `certutil -K`).

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kpki_signer::spki;

use super::{assert_one_clean_error_line, create_key, listed_labels, must_create_key};
use crate::hsm::matrix::{Token, TokenKind};
use crate::{kpki, openssl_verify_signature, text};

fn object_for(algorithm: &str) -> String {
    format!("conf-{}", algorithm.to_lowercase())
}

fn digest_of(algorithm: &str) -> &'static str {
    if algorithm == "ECDSA-P384" {
        "sha384"
    } else {
        "sha256"
    }
}

/// Runs the conformance suite on a fresh token of `kind`.
pub fn run(kind: TokenKind) {
    let token = Token::start(kind);
    let name = kind.name();
    let dir = tempfile::tempdir().unwrap();
    let mut shown = Vec::new();
    for algorithm in kind.supported() {
        let uri = token.key_uri(&object_for(algorithm));
        must_create_key(&token, &uri, algorithm);

        // Creating again at the same place is refused.
        let again = create_key(&uri, algorithm);
        assert_eq!(
            again.status.code(),
            Some(1),
            "{name} {algorithm}: second create must be refused: {:?}",
            text(&again)
        );

        // Reopened by URI in a new process.
        let out = kpki(&["keys", "show", &uri, "-o", "json"]);
        assert!(
            out.status.success(),
            "{name} {algorithm}: kpki keys show: {:?}",
            text(&out)
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["algorithm"], algorithm, "{name}: {info}");
        for (attribute, want) in [
            ("sensitive", true),
            ("extractable", false),
            ("always_sensitive", true),
            ("never_extractable", true),
        ] {
            assert_eq!(
                info["protection"][attribute], want,
                "{name} {algorithm}: {attribute} read back: {info}"
            );
        }

        shown.push((algorithm, uri, info));
    }

    // Reopened in yet another process (neither creator nor shower) through the PKCS#11
    // backend, which signs; the signature is verified here.
    for (algorithm, uri, info) in shown {
        let message = format!("kpki token matrix on {name}, {algorithm}").into_bytes();
        let (opened, spki_der, signature) = sign_in_new_process(&uri, &message);
        assert_eq!(opened, algorithm, "{name}: algorithm of the reopened key");
        assert_eq!(
            info["spki_sha256"].as_str().unwrap(),
            spki::sha256_hex(&spki_der),
            "{name} {algorithm}: the public key kpki keys show saw"
        );
        spki::verify(&spki_der, &message, &signature)
            .unwrap_or_else(|e| panic!("{name} {algorithm}: aws-lc-rs verify: {e}"));
        assert!(
            openssl_verify_signature(
                dir.path(),
                &spki_der,
                digest_of(algorithm),
                &message,
                &signature
            ),
            "{name} {algorithm}: openssl dgst -verify rejected the signature"
        );
        let mut tampered = message.clone();
        tampered[0] ^= 1;
        assert!(
            spki::verify(&spki_der, &tampered, &signature).is_err(),
            "{name} {algorithm}: a tampered message verified"
        );
    }

    for (algorithm, missing) in kind.unsupported() {
        let uri = token.key_uri(&object_for(algorithm));
        let out = create_key(&uri, algorithm);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name} {algorithm}: must be refused with exit 1: {stdout}{stderr}"
        );
        assert_one_clean_error_line(&format!("{name} {algorithm}"), &stderr);
        eprintln!("{name} {algorithm} refused: {}", stderr.trim_end());
        for needle in [token.label(), algorithm, missing] {
            assert!(
                stderr.contains(needle),
                "{name} {algorithm}: the refusal must name {needle:?}: {stderr}"
            );
        }
        assert!(
            !stderr.contains("unavailable"),
            "{name} {algorithm}: a refusal is not an outage: {stderr}"
        );
    }

    // Exactly the supported keys exist: refused creates left nothing behind.
    let mut want: Vec<String> = kind.supported().into_iter().map(object_for).collect();
    want.sort();
    assert_eq!(listed_labels(&token), want, "{name}: kpki keys list");
    assert_eq!(
        independent_private_key_count(&token),
        want.len(),
        "{name}: private keys seen by the token's own tools"
    );
}

/// Private keys on the token as counted by a tool that does not share kpki's code:
/// `certutil -K` for NSS (whose module needs init arguments pkcs11-tool cannot pass),
/// `pkcs11-tool --list-objects` for the others.
pub fn independent_private_key_count(token: &Token) -> usize {
    crate::hsm::require_tool("pkcs11-tool");
    let out = if token.kind() == TokenKind::Nss {
        let pw = token.dir().join("db.pw");
        token
            .command("certutil")
            .arg("-K")
            .arg("-d")
            .arg(format!("sql:{}", token.dir().join("db").display()))
            .arg("-f")
            .arg(pw)
            .output()
            .unwrap()
    } else {
        token
            .command("pkcs11-tool")
            .arg("--module")
            .arg(token.module())
            .args(["--token-label", token.label(), "--login", "--pin"])
            .arg(token.pin())
            .args(["--list-objects", "--type", "privkey"])
            .output()
            .unwrap()
    };
    let (stdout, stderr) = text(&out);
    if token.kind() == TokenKind::Nss {
        if stderr.contains("no keys found") {
            return 0;
        }
        assert!(out.status.success(), "certutil -K: {stdout}{stderr}");
        stdout.lines().filter(|l| l.starts_with('<')).count()
    } else {
        assert!(out.status.success(), "pkcs11-tool: {stdout}{stderr}");
        stdout
            .lines()
            .filter(|l| l.starts_with("Private Key Object"))
            .count()
    }
}

/// Opens `uri` and signs `message` in a new `kpki-matrix-sign` process; returns the key's
/// algorithm, its public key (SPKI DER) and the signature.
pub fn sign_in_new_process(uri: &str, message: &[u8]) -> (String, Vec<u8>, Vec<u8>) {
    let bin = crate::kpki_bin().with_file_name("kpki-matrix-sign");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p kpki-e2e --bins`",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .arg(uri)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kpki-matrix-sign: {:?}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["algorithm"].as_str().unwrap().to_string(),
        STANDARD.decode(v["spki"].as_str().unwrap()).unwrap(),
        STANDARD.decode(v["signature"].as_str().unwrap()).unwrap(),
    )
}
