//! Signatures per second of the software backend per algorithm, then, for every token of
//! the matrix (SoftHSMv2, Kryoptic, openCryptoki, TPM 2.0, NSS softokn), of the PKCS#11
//! backend next to a raw cryptoki `C_Sign` loop on the same token key in the same run, with
//! the ratio (target: at least 95%). `KPKI_BENCH_SECS` sets the time per cell (default 3);
//! `KPKI_BENCH_TOKENS` picks tokens (comma-separated names, default all). Run with
//! `scripts/bench sign`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use kpki_e2e::hsm::matrix::{Token, TokenKind};
use kpki_pkcs11::Pkcs11Backend;
use kpki_signer::{KeyAlgorithm, KeyBackend, Signer};
use kpki_soft::SoftBackend;

/// DER prefix of a SHA-256 DigestInfo (PKCS#1 v1.5), for tokens without `CKM_SHA256_RSA_PKCS`.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Alternations of backend and raw measurement per cell.
const ROUNDS: usize = 4;

fn rate(secs: f64, mut op: impl FnMut()) -> f64 {
    for _ in 0..5 {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        op();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn algorithm(name: &str) -> KeyAlgorithm {
    name.parse().unwrap()
}

/// A session on the slot that holds private key `label`, with the key's handle (slots are
/// searched by object, not by token info, which not every token reports in a form cryptoki
/// parses).
fn find_key(ctx: &Pkcs11, pin: &str, label: &str) -> (Session, ObjectHandle) {
    for slot in ctx.get_slots_with_token().unwrap() {
        let Ok(session) = ctx.open_ro_session(slot) else {
            continue;
        };
        // Already logged in through the backend's session on the same token: fine.
        let _ = session.login(UserType::User, Some(&AuthPin::new(pin.into())));
        if let Ok(found) = session.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ]) && let Some(h) = found.first()
        {
            return (session, *h);
        }
    }
    panic!("private key {label} not found on any slot");
}

/// A raw signing operation and the mechanism it uses.
type RawOp = (&'static str, Box<dyn FnMut()>);

/// The raw operations on one key: first the mechanism kpki picks for the token
/// (`CKM_SHA256_RSA_PKCS`, else `CKM_RSA_PKCS` over a software DigestInfo; for EC keys
/// `CKM_ECDSA_SHA256`/`CKM_ECDSA_SHA384` when the token has it, else a software hash then
/// `CKM_ECDSA`), then, for EC keys hashed on the token, the software-hash alternative.
fn raw_ops(ctx: &Pkcs11, token: &Token, label: &str, alg: KeyAlgorithm) -> Vec<RawOp> {
    let (session, key) = find_key(ctx, &token.pin(), label);
    let session = Rc::new(session);
    let message = Rc::new(vec![0x5au8; 1024]);
    let slot = session.get_session_info().unwrap().slot_id();
    let mechanisms = ctx.get_mechanism_list(slot).unwrap();
    let (s, m) = (session.clone(), message.clone());
    match alg {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            let (on_token, mech, name, d) = if alg == KeyAlgorithm::EcdsaP384 {
                (
                    MechanismType::ECDSA_SHA384,
                    Mechanism::EcdsaSha384,
                    "CKM_ECDSA_SHA384",
                    &digest::SHA384,
                )
            } else {
                (
                    MechanismType::ECDSA_SHA256,
                    Mechanism::EcdsaSha256,
                    "CKM_ECDSA_SHA256",
                    &digest::SHA256,
                )
            };
            let software: RawOp = (
                "sw hash + CKM_ECDSA",
                Box::new(move || {
                    let h = digest::digest(d, &m);
                    s.sign(&Mechanism::Ecdsa, key, h.as_ref()).unwrap();
                }),
            );
            if mechanisms.contains(&on_token) {
                let on: RawOp = (
                    name,
                    Box::new(move || {
                        session.sign(&mech, key, &message).unwrap();
                    }),
                );
                vec![on, software]
            } else {
                vec![software]
            }
        }
        _ if mechanisms.contains(&MechanismType::SHA256_RSA_PKCS) => vec![(
            "CKM_SHA256_RSA_PKCS",
            Box::new(move || {
                s.sign(&Mechanism::Sha256RsaPkcs, key, &m).unwrap();
            }),
        )],
        _ => vec![(
            "sw DigestInfo + CKM_RSA_PKCS",
            Box::new(move || {
                let h = digest::digest(&digest::SHA256, &m);
                let mut info = SHA256_DIGEST_INFO.to_vec();
                info.extend_from_slice(h.as_ref());
                s.sign(&Mechanism::RsaPkcs, key, &info).unwrap();
            }),
        )],
    }
}

fn main() {
    let secs: f64 = std::env::var("KPKI_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let wanted: Vec<String> = std::env::var("KPKI_BENCH_TOKENS")
        .map(|s| s.split(',').map(|t| t.trim().to_string()).collect())
        .unwrap_or_default();
    let message = vec![0x5au8; 1024]; // about the size of a TBSCertificate
    let dir = tempfile::tempdir().unwrap();

    println!("{:<12} {:>14}", "algorithm", "soft sig/s");
    for alg in KeyAlgorithm::ALL {
        let soft: Arc<dyn Signer> = SoftBackend
            .create(
                &format!("file:{}/{}.key", dir.path().display(), alg.name())
                    .parse()
                    .unwrap(),
                alg,
            )
            .unwrap();
        let soft_rate = rate(secs, || {
            soft.sign(&message).unwrap();
        });
        println!("{:<12} {:>14.0}", alg.name(), soft_rate);
    }
    println!();
    println!(
        "{:<13} {:<12} {:>13} {:>13} {:>9}  {:<29} other raw sig/s",
        "token", "algorithm", "pkcs11 sig/s", "raw C_Sign/s", "p11/raw", "raw mechanism (kpki's)"
    );
    for kind in TokenKind::ALL {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == kind.name()) {
            continue;
        }
        let token = Token::start(kind);
        for name in kind.supported() {
            let alg = algorithm(name);
            let label = format!("bench-{}", name.to_lowercase());
            let p11: Arc<dyn Signer> = Pkcs11Backend::with_pool_size(1)
                .create(&token.key_uri(&label).parse().unwrap(), alg)
                .unwrap_or_else(|e| panic!("{}: create {name}: {e}", kind.name()));
            // The backend initialised the module (with its init arguments, if any); this
            // context shares it.
            let ctx = Pkcs11::new(token.module()).unwrap();
            let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
            let mut ops = raw_ops(&ctx, &token, &label, alg);
            // Interleaved rounds, so drift (other load, thermal) hits all alike.
            let mut p11_rate = 0.0;
            let mut raw = vec![0.0; ops.len()];
            for _ in 0..ROUNDS {
                p11_rate += rate(secs / ROUNDS as f64, || {
                    p11.sign(&message).unwrap();
                }) / ROUNDS as f64;
                for (i, (_, op)) in ops.iter_mut().enumerate() {
                    raw[i] += rate(secs / ROUNDS as f64, op) / ROUNDS as f64;
                }
            }
            let alt = raw
                .get(1)
                .map(|r| format!("{r:.0} ({})", ops[1].0))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<13} {:<12} {:>13.0} {:>13.0} {:>8.1}%  {:<29} {}",
                kind.name(),
                name,
                p11_rate,
                raw[0],
                100.0 * p11_rate / raw[0],
                ops[0].0,
                alt
            );
        }
    }
}
