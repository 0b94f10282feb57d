//! The token matrix: one acceptance suite run against every PKCS#11 implementation the
//! `hsm-test` fixtures bring up (SoftHSMv2, Kryoptic, openCryptoki, TPM 2.0, NSS softokn).
//! Each function here takes a [`TokenKind`], starts a private token and drives the real
//! `kpki` binary against it; `tests/tests/token_matrix.rs` generates one test per token.

use std::process::Output;

use crate::hsm::matrix::{Token, TokenKind};
use crate::{kpki, text};

pub mod cluster;
pub mod conformance;
pub mod contention;
pub mod jwt;
pub mod lookup;
pub mod outage;

/// The algorithm a token's CAs and leaves use in the cluster tests: ECDSA-P256 where the
/// token has EC, else RSA-2048.
pub fn cluster_algorithm(kind: TokenKind) -> &'static str {
    if kind.supported().contains(&"ECDSA-P256") {
        "ECDSA-P256"
    } else {
        "RSA-2048"
    }
}

/// `kpki keys create <uri> -a <algorithm>`.
pub fn create_key(uri: &str, algorithm: &str) -> Output {
    kpki(&["keys", "create", uri, "-a", algorithm])
}

/// `kpki keys create`, panicking with kpki's output unless it succeeds.
pub fn must_create_key(token: &Token, uri: &str, algorithm: &str) {
    let out = create_key(uri, algorithm);
    assert!(
        out.status.success(),
        "{}: kpki keys create {algorithm}: {:?}",
        token.kind().name(),
        text(&out)
    );
}

/// The labels `kpki keys list` shows for the token, sorted.
pub fn listed_labels(token: &Token) -> Vec<String> {
    let out = kpki(&["keys", "list", &token.token_uri(), "-o", "json"]);
    assert!(
        out.status.success(),
        "{}: kpki keys list: {:?}",
        token.kind().name(),
        text(&out)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut labels: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["label"].as_str().unwrap_or_default().to_string())
        .collect();
    labels.sort();
    labels
}

/// Panics unless `stderr` is kpki's single error line with no panic and no claim that the
/// token is unavailable.
pub fn assert_one_clean_error_line(what: &str, stderr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one error line expected:\n{stderr}");
    assert!(lines[0].starts_with("kpki: error: "), "{what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}
