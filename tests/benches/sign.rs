//! Signatures per second for each backend and algorithm, with a raw cryptoki `C_Sign` loop
//! on the same token key in the same run as the baseline. `KPKI_BENCH_SECS` sets the time
//! per cell (default 3). Run with `scripts/bench`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use kpki_e2e::hsm;
use kpki_pkcs11::Pkcs11Backend;
use kpki_signer::{KeyAlgorithm, KeyBackend, Signer};
use kpki_soft::SoftBackend;

fn rate(secs: f64, mut op: impl FnMut()) -> f64 {
    for _ in 0..20 {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        for _ in 0..10 {
            op();
        }
        n += 10;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::var("KPKI_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let message = vec![0x5au8; 1024]; // about the size of a TBSCertificate
    let token = hsm::token_with_label("bench");
    let dir = tempfile::tempdir().unwrap();

    let ctx = Pkcs11::new(hsm::module()).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));

    println!(
        "{:<12} {:>14} {:>14} {:>14} {:>9}",
        "algorithm", "soft sig/s", "pkcs11 sig/s", "raw C_Sign/s", "p11/raw"
    );
    for algorithm in KeyAlgorithm::ALL {
        let soft: Arc<dyn Signer> = SoftBackend
            .create(
                &format!("file:{}/{}.key", dir.path().display(), algorithm.name())
                    .parse()
                    .unwrap(),
                algorithm,
            )
            .unwrap();
        let label = format!("bench-{}", algorithm.name().to_lowercase());
        let p11: Arc<dyn Signer> = Pkcs11Backend::with_pool_size(1)
            .create(&token.key_uri(&label).parse().unwrap(), algorithm)
            .unwrap();

        let soft_rate = rate(secs, || {
            soft.sign(&message).unwrap();
        });
        let p11_rate = rate(secs, || {
            p11.sign(&message).unwrap();
        });

        // Raw loop: one session, the same key handle, the same mechanism choice as the backend
        // on SoftHSM (CKM_SHA256_RSA_PKCS; software hash + CKM_ECDSA).
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|t| t.label() == token.label)
                    .unwrap_or(false)
            })
            .unwrap();
        let session = ctx.open_ro_session(slot).unwrap();
        let handle = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap()[0];
        let raw_rate = match algorithm {
            KeyAlgorithm::EcdsaP256 => rate(secs, || {
                let d = digest::digest(&digest::SHA256, &message);
                session.sign(&Mechanism::Ecdsa, handle, d.as_ref()).unwrap();
            }),
            KeyAlgorithm::EcdsaP384 => rate(secs, || {
                let d = digest::digest(&digest::SHA384, &message);
                session.sign(&Mechanism::Ecdsa, handle, d.as_ref()).unwrap();
            }),
            _ => rate(secs, || {
                session
                    .sign(&Mechanism::Sha256RsaPkcs, handle, &message)
                    .unwrap();
            }),
        };
        println!(
            "{:<12} {:>14.0} {:>14.0} {:>14.0} {:>8.1}%",
            algorithm.name(),
            soft_rate,
            p11_rate,
            raw_rate,
            100.0 * p11_rate / raw_rate
        );
    }
}
