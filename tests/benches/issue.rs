//! Certificates issued per second by `kpki sign`'s library path (PoP check, signer rules,
//! certificate built and signed) with an RSA-2048 CA on SoftHSM, for 1,000 P-256 CSRs, next to
//! a raw cryptoki `C_Sign` loop of 1,000 signatures on the same token key in the same run.
//! `KPKI_BENCH_CSRS` sets the count (default 1000).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Instant;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use kpki_e2e::hsm;
use kpki_pkcs11::Pkcs11Backend;
use kpki_pki::csr::{self, Authority, SignRequest};
use kpki_pki::x509::{self, CaSigner};
use kpki_signer::{KeyAlgorithm, KeyBackend};

fn main() {
    let n: usize = std::env::var("KPKI_BENCH_CSRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let token = hsm::token_with_label("issue-bench");
    let ca_key = Pkcs11Backend::with_pool_size(1)
        .create(&token.key_uri("ca").parse().unwrap(), KeyAlgorithm::Rsa2048)
        .unwrap();
    let start = time::OffsetDateTime::now_utc();
    let ca_cert = x509::self_sign(
        x509::ca_params(
            "kubernetes",
            ca_key.public_key_spki(),
            start,
            std::time::Duration::from_secs(87600 * 3600),
        )
        .unwrap(),
        ca_key.clone(),
    )
    .unwrap();
    let signer = CaSigner::new(&ca_cert.der, ca_key).unwrap();
    let authority = Authority {
        signer: &signer,
        max_validity: std::time::Duration::from_secs(8760 * 3600),
    };

    let requests: Vec<SignRequest> = (0..n)
        .map(|i| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = rcgen::CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, "dev");
            p.distinguished_name
                .push(rcgen::DnType::CommonName, format!("user-{i}"));
            let der = p.serialize_request(&key).unwrap().der().to_vec();
            SignRequest {
                csr_der: der,
                signer_name: csr::KUBE_APISERVER_CLIENT.into(),
                usages: vec![],
                expiration_seconds: None,
                allow_system_masters: false,
            }
        })
        .collect();

    let t = Instant::now();
    for r in &requests {
        csr::sign(r, &authority, time::OffsetDateTime::now_utc()).unwrap();
    }
    let kpki_rate = n as f64 / t.elapsed().as_secs_f64();

    let ctx = Pkcs11::new(hsm::module()).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|i| i.label() == token.label)
                .unwrap_or(false)
        })
        .unwrap();
    let session = ctx.open_ro_session(slot).unwrap();
    let handle = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ca".to_vec()),
        ])
        .unwrap()[0];
    let message = vec![0x5au8; 700]; // about the size of a client certificate's TBSCertificate
    let t = Instant::now();
    for _ in 0..n {
        session
            .sign(&Mechanism::Sha256RsaPkcs, handle, &message)
            .unwrap();
    }
    let raw_rate = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>12} {:>14} {:>8}",
        "CA on SoftHSM", "kpki certs/s", "raw C_Sign/s", "ratio"
    );
    println!(
        "{:<34} {:>12.0} {:>14.0} {:>7.1}%",
        format!("RSA-2048, {n} P-256 CSRs"),
        kpki_rate,
        raw_rate,
        100.0 * kpki_rate / raw_rate
    );
}
