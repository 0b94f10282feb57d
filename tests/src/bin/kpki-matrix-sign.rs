//! `kpki-matrix-sign URI`: opens the key at a `pkcs11:` URI through kpki's PKCS#11 backend,
//! signs the bytes read from stdin and prints one JSON object: the algorithm, the public key
//! (SubjectPublicKeyInfo DER) and the signature (X.509 form), both base64. The token matrix
//! tests use it to reopen a key in a process of its own, so the test process itself never
//! loads a token's module (a loaded module holds sessions and caches state).
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kpki_pkcs11::Pkcs11Backend;
use kpki_signer::{KeyBackend, KeyUri};

fn run() -> anyhow::Result<()> {
    let uri = std::env::args()
        .nth(1)
        .context("usage: kpki-matrix-sign URI < message")?;
    let uri: KeyUri = uri.parse().map_err(|e| anyhow::anyhow!("key URI: {e}"))?;
    let mut message = Vec::new();
    std::io::stdin()
        .read_to_end(&mut message)
        .context("reading the message from stdin")?;
    let key = Pkcs11Backend::default()
        .open(&uri)
        .map_err(|e| anyhow::anyhow!("open: {e}"))?;
    let signature = key
        .sign(&message)
        .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
    println!(
        "{}",
        serde_json::json!({
            "algorithm": key.algorithm().name(),
            "spki": STANDARD.encode(key.public_key_spki()),
            "signature": STANDARD.encode(signature),
        })
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kpki-matrix-sign: {e:#}");
            ExitCode::FAILURE
        }
    }
}
