//! Several processes on one token at once: 4 processes × 10 `kpki sign` with the CA key on
//! the token, and 4 concurrent `kpki keys create`. Each run succeeds or fails with a clear
//! busy error (after kpki's own retries); none reports the token unavailable, and no create
//! leaves a partial key behind.

use std::path::Path;
use std::process::Output;

use super::{cluster_algorithm, listed_labels};
use crate::hsm::matrix::{Token, TokenKind};
use crate::{init_cluster, kpki, openssl_csr, text};

const PROCESSES: usize = 4;
const SIGNS_PER_PROCESS: usize = 10;

/// Checks one run: success, or exit 1 with one line saying the token is busy.
/// Returns true on success.
fn judge(name: &str, what: &str, out: &Output) -> bool {
    let (stdout, stderr) = text(out);
    assert!(
        !stderr.contains("unavailable") && !stdout.contains("unavailable"),
        "{name}: {what} reported the token unavailable: {stderr}"
    );
    if out.status.success() {
        return true;
    }
    assert_eq!(out.status.code(), Some(1), "{name}: {what}: {stderr}");
    super::assert_one_clean_error_line(&format!("{name}: {what}"), &stderr);
    assert!(
        stderr.contains("busy"),
        "{name}: {what} failed with something other than a busy error: {stderr}"
    );
    false
}

/// 4 processes × 10 `kpki sign` on a fresh token.
pub fn concurrent_sign(kind: TokenKind) {
    let token = Token::start(kind);
    let name = kind.name();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("k8s");
    let key = format!("ca={}", token.key_uri("busy-ca"));
    init_cluster(
        &root,
        "127.0.0.1",
        &[
            "--encryption-algorithm",
            cluster_algorithm(kind),
            "--key",
            &key,
        ],
    );
    let csr = dir.path().join("jane.csr");
    std::fs::write(
        &csr,
        openssl_csr(dir.path(), "jane", "p256", "/CN=jane/O=dev", &[]),
    )
    .unwrap();
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PROCESSES)
            .map(|_| {
                s.spawn(|| {
                    (0..SIGNS_PER_PROCESS)
                        .map(|_| sign(&csr, &root, &key))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let ok = outputs
        .iter()
        .filter(|o| judge(name, "kpki sign", o))
        .count();
    eprintln!(
        "{name}: {ok} of {} concurrent kpki sign runs issued, the rest busy",
        outputs.len()
    );
    for o in outputs.iter().filter(|o| o.status.success()) {
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with("-----BEGIN CERTIFICATE-----"),
            "{name}"
        );
    }
}

fn sign(csr: &Path, root: &Path, key: &str) -> Output {
    kpki(&[
        "sign",
        csr.to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
        "--key",
        key,
    ])
}

/// 4 concurrent `kpki keys create` on a fresh token.
pub fn concurrent_create(kind: TokenKind) {
    let token = Token::start(kind);
    let name = kind.name();
    let algorithm = cluster_algorithm(kind);
    let uris: Vec<String> = (0..PROCESSES)
        .map(|i| token.key_uri(&format!("busy-{i}")))
        .collect();
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = uris
            .iter()
            .map(|u| s.spawn(move || kpki(&["keys", "create", u, "-a", algorithm])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut created: Vec<String> = Vec::new();
    for (i, o) in outputs.iter().enumerate() {
        if judge(name, "kpki keys create", o) {
            created.push(format!("busy-{i}"));
        }
    }
    eprintln!(
        "{name}: {} of {PROCESSES} concurrent kpki keys create runs created a key, the rest busy",
        created.len()
    );
    assert_eq!(
        listed_labels(&token),
        created,
        "{name}: exactly the created keys exist"
    );
}
