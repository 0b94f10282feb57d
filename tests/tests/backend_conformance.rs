//! One conformance suite run against both key backends for all five algorithms: create,
//! reopen by URI in a new backend instance, sign, and verify independently (aws-lc-rs and
//! `openssl dgst -verify` on the exported public key).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use kpki_e2e::{hsm, openssl_verify_signature};
use kpki_pkcs11::Pkcs11Backend;
use kpki_signer::{KeyAlgorithm, KeyBackend, KeyUri, spki};
use kpki_soft::SoftBackend;

fn digest_of(a: KeyAlgorithm) -> &'static str {
    if a == KeyAlgorithm::EcdsaP384 {
        "sha384"
    } else {
        "sha256"
    }
}

fn conformance(
    make_backend: &dyn Fn() -> Box<dyn KeyBackend>,
    uri_for: &dyn Fn(KeyAlgorithm) -> String,
) {
    let dir = tempfile::tempdir().unwrap();
    for algorithm in KeyAlgorithm::ALL {
        let uri: KeyUri = uri_for(algorithm).parse().unwrap();
        let created = make_backend()
            .create(&uri, algorithm)
            .unwrap_or_else(|e| panic!("create {algorithm}: {e}"));
        assert_eq!(created.algorithm(), algorithm);
        assert_eq!(
            spki::algorithm_of(created.public_key_spki()).unwrap(),
            algorithm
        );

        // Creating again at the same place is refused.
        assert!(
            make_backend().create(&uri, algorithm).is_err(),
            "{algorithm}: second create must be refused"
        );

        let reopened = make_backend()
            .open(&uri)
            .unwrap_or_else(|e| panic!("reopen {algorithm}: {e}"));
        assert_eq!(reopened.algorithm(), algorithm);
        assert_eq!(
            reopened.public_key_spki(),
            created.public_key_spki(),
            "{algorithm}: same public key after reopen"
        );

        let message = format!("kpki conformance message for {algorithm}").into_bytes();
        let signature = reopened
            .sign(&message)
            .unwrap_or_else(|e| panic!("sign {algorithm}: {e}"));
        spki::verify(reopened.public_key_spki(), &message, &signature)
            .unwrap_or_else(|e| panic!("aws-lc-rs verify {algorithm}: {e}"));
        assert!(
            openssl_verify_signature(
                dir.path(),
                reopened.public_key_spki(),
                digest_of(algorithm),
                &message,
                &signature
            ),
            "{algorithm}: openssl dgst -verify rejected the signature"
        );
        let mut tampered = message.clone();
        tampered[0] ^= 1;
        assert!(
            spki::verify(reopened.public_key_spki(), &tampered, &signature).is_err(),
            "{algorithm}: tampered message verified"
        );

        let info = make_backend().describe(&uri).unwrap();
        assert_eq!(info.algorithm, algorithm);
        assert_eq!(
            info.spki_sha256,
            spki::sha256_hex(created.public_key_spki())
        );
    }
}

#[test]
fn software_backend_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    conformance(&|| Box::new(SoftBackend), &|a| {
        format!("file:{}/{}.key", base.display(), a.name().to_lowercase())
    });
    // Keys are written as kubeadm writes them.
    for a in KeyAlgorithm::ALL {
        let path = base.join(format!("{}.key", a.name().to_lowercase()));
        let text = std::fs::read_to_string(&path).unwrap();
        let tag = if a.is_rsa() {
            "RSA PRIVATE KEY"
        } else {
            "EC PRIVATE KEY"
        };
        assert!(
            text.starts_with(&format!("-----BEGIN {tag}-----\n")),
            "{a}: {}",
            text.lines().next().unwrap_or("")
        );
        assert!(!text.contains('\r'), "{a}: CR in key file");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let check = kpki_e2e::openssl(&["pkey", "-in", path.to_str().unwrap(), "-check", "-noout"]);
        assert!(
            check.status.success(),
            "{a}: openssl pkey -check: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn pkcs11_backend_conformance() {
    let token = hsm::token();
    conformance(&|| Box::new(Pkcs11Backend::default()), &|a| {
        token.key_uri(&format!("conf-{}", a.name().to_lowercase()))
    });
    let listed = Pkcs11Backend::default()
        .list(&token.token_uri().parse().unwrap())
        .unwrap();
    assert_eq!(
        listed.len(),
        KeyAlgorithm::ALL.len(),
        "list shows every key on the token"
    );
    assert!(listed.iter().all(|k| {
        k.protection
            .is_some_and(|p| p.sensitive && !p.extractable && p.never_extractable)
    }));
}

#[test]
fn software_backend_loads_pkcs8_written_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in [
        (
            "rsa.key",
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
        ),
        (
            "p256.key",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
        ),
        (
            "p384.key",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
            ],
        ),
    ] {
        let path = dir.path().join(name);
        let mut a = args.clone();
        a.extend(["-out", path.to_str().unwrap()]);
        assert!(kpki_e2e::openssl(&a).status.success());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let key = SoftBackend
            .open(&KeyUri::file(&path))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let sig = key.sign(b"hello").unwrap();
        spki::verify(key.public_key_spki(), b"hello", &sig).unwrap();
    }
}
