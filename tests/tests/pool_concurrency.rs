//! 1,000 signatures from 50 tokio tasks through a 2-session pool, all verifying.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use kpki_e2e::hsm;
use kpki_pkcs11::{Pkcs11Backend, Pkcs11Key};
use kpki_signer::{AsyncSign, KeyAlgorithm, Signer, spki};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_signatures_from_fifty_tasks_through_two_sessions() {
    let token = hsm::token();
    let uri: kpki_signer::KeyUri = token.key_uri("pool").parse().unwrap();
    let kpki_signer::KeyUri::Pkcs11(p11) = &uri else {
        panic!()
    };
    let key: Pkcs11Key = Pkcs11Backend::with_pool_size(2)
        .create_key(p11, KeyAlgorithm::EcdsaP256)
        .unwrap();
    let pool = Arc::clone(key.token());
    assert_eq!(pool.pool_size(), 2);
    let signer: Arc<dyn Signer> = Arc::new(key);
    let mut tasks = Vec::new();
    for t in 0..50 {
        let signer = Arc::clone(&signer);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..20 {
                let msg = format!("task {t} message {i}").into_bytes();
                let sig = signer.sign_async(msg.clone()).await.unwrap();
                out.push((msg, sig));
            }
            out
        }));
    }
    let mut verified = 0;
    for t in tasks {
        for (msg, sig) in t.await.unwrap() {
            spki::verify(signer.public_key_spki(), &msg, &sig).unwrap();
            verified += 1;
        }
    }
    assert_eq!(verified, 1000);
    assert!(
        pool.sessions_peak() <= 2,
        "pool used {} sessions",
        pool.sessions_peak()
    );
    assert_eq!(pool.sessions_in_use(), 0);
}
