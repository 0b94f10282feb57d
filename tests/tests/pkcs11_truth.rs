//! The PKCS#11 layer tells the truth on SoftHSMv2: concurrent `kpki sign` and
//! `kpki keys create` processes against one token all succeed (SoftHSM's file store shows
//! the token uninitialised to a process that starts while another logs in); readiness
//! signs, so a key that cannot sign is not ready although the token answers; a token that
//! is not there is reported with the tokens that are; keys of two tokens of one module sign
//! again, each with its own key, after the module is finalised and initialised again.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use kpki_e2e::{init_cluster, kpki, kpki_bin, openssl_csr, text};
use kpki_pkcs11::Pkcs11Backend;
use kpki_signer::{KeyAlgorithm, KeyBackend, Signer};

/// Runs `n` processes of `kpki args(i)` at once and returns their outputs.
fn at_once(n: usize, args: impl Fn(usize) -> Vec<String>) -> Vec<Output> {
    let children: Vec<_> = (0..n)
        .map(|i| {
            Command::new(kpki_bin())
                .args(args(i))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn kpki")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait kpki"))
        .collect()
}

fn failures(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| text(o).1)
        .collect()
}

#[test]
fn four_processes_signing_at_once_all_succeed() {
    let token = kpki_e2e::hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let ca = format!("ca={}", token.key_uri("ca"));
    init_cluster(&root, "10.0.0.10", &["--key", &ca]);
    let csr = dir.path().join("jane.csr");
    std::fs::write(
        &csr,
        openssl_csr(dir.path(), "jane", "p256", "/CN=jane/O=dev", &[]),
    )
    .unwrap();
    let args = |_| {
        vec![
            "sign".to_string(),
            csr.to_str().unwrap().to_string(),
            "--dir".to_string(),
            root.to_str().unwrap().to_string(),
            "--key".to_string(),
            ca.clone(),
        ]
    };
    let mut failed = Vec::new();
    let mut runs = 0;
    for _round in 0..10 {
        let outputs = at_once(4, args);
        runs += outputs.len();
        failed.extend(failures(&outputs));
    }
    assert_eq!(runs, 40);
    assert!(
        failed.is_empty(),
        "{} of 40 failed: {failed:#?}",
        failed.len()
    );
}

#[test]
fn four_key_creations_at_once_all_succeed() {
    let token = kpki_e2e::hsm::token();
    for round in 0..2 {
        let outputs = at_once(4, |i| {
            vec![
                "keys".into(),
                "create".into(),
                token.key_uri(&format!("cc-{round}-{i}")),
                "--algorithm".into(),
                "ECDSA-P256".into(),
            ]
        });
        let failed = failures(&outputs);
        assert!(failed.is_empty(), "round {round}: {failed:#?}");
    }
    let listed = kpki(&["keys", "list", &token.token_uri()]);
    let (stdout, stderr) = text(&listed);
    assert!(listed.status.success(), "{stderr}");
    assert_eq!(stdout.matches("object=cc-").count(), 8, "{stdout}");
}

/// Destroys the private key `label` through a separate cryptoki context.
fn destroy_private_key(token_label: &str, label: &str) {
    let ctx = Pkcs11::new(kpki_e2e::hsm::module()).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|t| t.label() == token_label)
                .unwrap_or(false)
        })
        .expect("token slot");
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(
        UserType::User,
        Some(&AuthPin::new(kpki_e2e::hsm::USER_PIN.into())),
    ) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e:?}"),
    }
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1, "one private key {label}");
    session.destroy_object(found[0]).unwrap();
}

#[test]
fn readiness_signs_so_a_key_that_cannot_sign_is_not_ready() {
    let token = kpki_e2e::hsm::token();
    let backend = Pkcs11Backend::default();
    let uri = token.key_uri("probe-ec").parse().unwrap();
    backend.create(&uri, KeyAlgorithm::EcdsaP256).unwrap();
    let key: Arc<dyn Signer> = backend.open(&uri).unwrap();
    assert!(key.is_available(), "a key that signs is ready");

    // The token still answers (sessions, login, slot and token info) but the key is gone.
    destroy_private_key(&token.label, "probe-ec");
    // Inside the probe window the last result is reused.
    assert!(key.is_available(), "result reused within the window");
    std::thread::sleep(kpki_pkcs11::key::PROBE_WINDOW + Duration::from_millis(100));
    assert!(!key.is_available(), "a key that cannot sign is not ready");
    assert!(key.sign(b"x").is_err());
}

#[test]
fn a_missing_token_is_reported_with_the_tokens_present() {
    let token = kpki_e2e::hsm::token();
    let wrong = token
        .token_uri()
        .replace(&format!("token={}", token.label), "token=no-such-token");
    let out = kpki(&["keys", "list", &wrong]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no token with label \"no-such-token\"")
            && stderr.contains(&format!("\"{}\"", token.label)),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn keys_of_other_tokens_survive_a_module_reinitialisation() {
    use kpki_pkcs11::context::{self, ModuleId};
    let a = kpki_e2e::hsm::token();
    let b = kpki_e2e::hsm::token();
    let backend = Pkcs11Backend::default();
    let keys: Vec<Arc<dyn Signer>> = [(&a, "reinit-a"), (&b, "reinit-b")]
        .into_iter()
        .map(|(t, label)| {
            let uri = t.key_uri(label).parse().unwrap();
            backend.create(&uri, KeyAlgorithm::EcdsaP256).unwrap();
            backend.open(&uri).unwrap()
        })
        .collect();
    for k in &keys {
        let sig = k.sign(b"before").unwrap();
        kpki_signer::spki::verify(k.public_key_spki(), b"before", &sig).unwrap();
    }
    // C_Finalize + C_Initialize of the module under both tokens (what recovery does for a
    // token that keeps failing): every session and handle of the process is gone, and
    // handle numbers may be handed out again.
    let id = ModuleId::plain(kpki_e2e::hsm::module());
    let epoch = context::module(&id).unwrap().epoch;
    let fresh = context::reinitialize(&id, epoch).unwrap();
    assert_eq!(fresh.epoch, epoch + 1);
    // Both keys sign again, each with its own key (the signatures verify), without being
    // opened again.
    for round in 0..3 {
        for k in &keys {
            let msg = format!("after {round}");
            let sig = k.sign(msg.as_bytes()).unwrap();
            kpki_signer::spki::verify(k.public_key_spki(), msg.as_bytes(), &sig).unwrap();
        }
    }
    assert!(keys.iter().all(|k| k.is_available()));
}
