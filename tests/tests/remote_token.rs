//! A token served by `p11-kit server` and used through `p11-kit-client.so`: signs; with the
//! server stopped a sign fails within 5 s with a clear error; after a restart the next sign
//! succeeds on the same backend instance (re-login, key found again by id/label).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kpki_e2e::hsm;
use kpki_e2e::p11kit::{self, start_server, stop_server};
use kpki_pkcs11::Pkcs11Backend;
use kpki_signer::{KeyAlgorithm, KeyBackend, spki};

#[test]
fn remote_token_survives_server_restart() {
    p11kit::require();
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let socket: PathBuf = dir.path().join("p11-kit.sock");
    let server = start_server(&socket, &token.label);
    p11kit::use_server(&socket);

    let uri = p11kit::key_uri(&token, "remote-ca");
    let backend = Pkcs11Backend::default();
    let key = backend
        .create(&uri.parse().unwrap(), KeyAlgorithm::EcdsaP256)
        .expect("create key through p11-kit");
    let sig = key.sign(b"before").unwrap();
    spki::verify(key.public_key_spki(), b"before", &sig).unwrap();

    stop_server(server);
    let started = Instant::now();
    let err = key
        .sign(b"during")
        .expect_err("sign must fail while the server is down");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "failing took {took:?}");
    assert!(
        err.is_unavailable(),
        "expected an unavailable-token error, got: {err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&token.label) && !message.contains('\n'),
        "unclear error: {message}"
    );
    assert!(
        !key.is_available(),
        "readiness must be false while the server is down"
    );

    let server = start_server(&socket, &token.label);
    let sig = key.sign(b"after").expect("sign after the server came back");
    spki::verify(key.public_key_spki(), b"after", &sig).unwrap();
    assert!(key.is_available());
    stop_server(server);
}
