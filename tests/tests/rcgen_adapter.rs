//! The rcgen adapter: a self-signed CA and a leaf signed by a SoftHSM-held CA key pass
//! `openssl verify`; a P-384 CA signs with ECDSA-SHA384 on P-384.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use kpki_e2e::{hsm, openssl};
use kpki_pkcs11::Pkcs11Backend;
use kpki_signer::{KeyAlgorithm, KeyBackend, RcgenSigner};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, SanType,
};

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    p.not_before = rcgen::date_time_ymd(2026, 1, 1);
    p.not_after = rcgen::date_time_ymd(2036, 1, 1);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x1a, 0x2b, 0x3c]));
    p
}

#[test]
fn hsm_ca_signs_self_signed_and_leaf_certificates_that_openssl_verifies() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    for algorithm in [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
    ] {
        let uri = token
            .key_uri(&format!("ca-{}", algorithm.name().to_lowercase()))
            .parse()
            .unwrap();
        let signer = Pkcs11Backend::default().create(&uri, algorithm).unwrap();
        let ca_key = RcgenSigner::new(Arc::clone(&signer)).unwrap();
        let params = ca_params("kubernetes");
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, &ca_key);

        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::new(vec!["kubernetes.default.svc".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress("10.96.0.1".parse().unwrap()));
        leaf.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        leaf.not_before = rcgen::date_time_ymd(2026, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2027, 1, 1);
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let ca_path = dir.path().join(format!("{algorithm}-ca.crt"));
        let leaf_path = dir.path().join(format!("{algorithm}-leaf.crt"));
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        std::fs::write(&leaf_path, leaf_cert.pem()).unwrap();
        let out = openssl(&[
            "verify",
            "-attime",
            "1780000000",
            "-CAfile",
            ca_path.to_str().unwrap(),
            ca_path.to_str().unwrap(),
            leaf_path.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{algorithm}: openssl verify failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.matches(": OK").count(), 2, "{algorithm}: {stdout}");

        let text = String::from_utf8_lossy(
            &openssl(&["x509", "-in", ca_path.to_str().unwrap(), "-noout", "-text"]).stdout,
        )
        .into_owned();
        match algorithm {
            KeyAlgorithm::EcdsaP384 => {
                assert!(
                    text.contains("ecdsa-with-SHA384"),
                    "P-384 CA must sign with SHA-384:\n{text}"
                );
                assert!(
                    text.contains("secp384r1") && text.contains("384 bit"),
                    "P-384 curve:\n{text}"
                );
            }
            KeyAlgorithm::EcdsaP256 => assert!(
                text.contains("ecdsa-with-SHA256") && text.contains("prime256v1"),
                "{text}"
            ),
            _ => assert!(
                text.contains("sha256WithRSAEncryption") && text.contains("2048 bit"),
                "{text}"
            ),
        }
        // The SPKI in the certificate is the token's public key.
        let spki_from_cert = openssl(&[
            "x509",
            "-in",
            ca_path.to_str().unwrap(),
            "-noout",
            "-pubkey",
        ]);
        let pem_block = pem::parse(&spki_from_cert.stdout).unwrap();
        assert_eq!(pem_block.contents(), signer.public_key_spki());
    }
}
