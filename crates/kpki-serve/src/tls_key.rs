//! The mTLS listener's own key held by a key backend (a token, through the same session pool
//! as the CA keys): a [`rustls::sign::SigningKey`] over a [`kpki_signer::Signer`], so no
//! private key file needs to exist on the host. ECDSA P-256/P-384 sign with their curve's
//! scheme; RSA keys sign `rsa_pss_rsae_sha256` when the backend offers RSASSA-PSS (TLS 1.3
//! and 1.2) and `rsa_pkcs1_sha256` (TLS 1.2).

use std::sync::Arc;

use kpki_signer::{KeyAlgorithm, Signer};
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::{SignatureAlgorithm, SignatureScheme};

/// A TLS signing key whose private half stays with its backend.
#[derive(Debug)]
pub(crate) struct BackendKey {
    key: Arc<dyn Signer>,
}

impl BackendKey {
    /// The TLS key for `key`.
    pub(crate) fn new(key: Arc<dyn Signer>) -> BackendKey {
        BackendKey { key }
    }

    /// True when the key can sign a TLS 1.3 handshake (ECDSA, or RSA with RSASSA-PSS).
    pub(crate) fn supports_tls13(&self) -> bool {
        !self.key.algorithm().is_rsa() || self.key.supports_rsa_pss()
    }

    /// The schemes this key signs, best first.
    fn schemes(&self) -> Vec<SignatureScheme> {
        schemes(self.key.algorithm(), self.key.supports_rsa_pss())
    }
}

/// The TLS signature schemes a key of `algorithm` signs, best first (`pss`: the backend
/// offers RSASSA-PSS).
fn schemes(algorithm: KeyAlgorithm, pss: bool) -> Vec<SignatureScheme> {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => vec![SignatureScheme::ECDSA_NISTP256_SHA256],
        KeyAlgorithm::EcdsaP384 => vec![SignatureScheme::ECDSA_NISTP384_SHA384],
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            let mut s = Vec::with_capacity(2);
            if pss {
                s.push(SignatureScheme::RSA_PSS_SHA256);
            }
            s.push(SignatureScheme::RSA_PKCS1_SHA256);
            s
        }
    }
}

impl rustls::sign::SigningKey for BackendKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        let scheme = self.schemes().into_iter().find(|s| offered.contains(s))?;
        Some(Box::new(HandshakeSigner {
            key: Arc::clone(&self.key),
            scheme,
        }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.key.public_key_spki()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        if self.key.algorithm().is_rsa() {
            SignatureAlgorithm::RSA
        } else {
            SignatureAlgorithm::ECDSA
        }
    }
}

/// One handshake's signature with the scheme rustls chose.
#[derive(Debug)]
struct HandshakeSigner {
    key: Arc<dyn Signer>,
    scheme: SignatureScheme,
}

impl HandshakeSigner {
    fn sign_now(&self, message: &[u8]) -> kpki_signer::Result<Vec<u8>> {
        if self.scheme == SignatureScheme::RSA_PSS_SHA256 {
            self.key.sign_rsa_pss_sha256(message)
        } else {
            self.key.sign(message)
        }
    }
}

impl rustls::sign::Signer for HandshakeSigner {
    /// Signs on the calling thread: a token round trip. On a worker of the multi-threaded
    /// runtime the worker's other tasks are moved off first (`block_in_place`), so a slow
    /// or unreachable token holds only this handshake.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let result = if multi_thread {
            tokio::task::block_in_place(|| self.sign_now(message))
        } else {
            self.sign_now(message)
        };
        result.map_err(|e| {
            tracing::warn!(key = %self.key.uri(), error = %e, "TLS handshake signature failed");
            rustls::Error::General(format!("listen.key {}: {e}", self.key.uri()))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    const SCHEMES: &[(KeyAlgorithm, bool, &[SignatureScheme])] = &[
        (KeyAlgorithm::EcdsaP256, false, &[SignatureScheme::ECDSA_NISTP256_SHA256]),
        (KeyAlgorithm::EcdsaP384, true, &[SignatureScheme::ECDSA_NISTP384_SHA384]),
        (KeyAlgorithm::Rsa2048, true, &[SignatureScheme::RSA_PSS_SHA256, SignatureScheme::RSA_PKCS1_SHA256]),
        (KeyAlgorithm::Rsa4096, false, &[SignatureScheme::RSA_PKCS1_SHA256]),
    ];

    #[test]
    fn each_key_signs_only_its_own_schemes() {
        for (algorithm, pss, want) in SCHEMES {
            assert_eq!(schemes(*algorithm, *pss), *want, "{algorithm} pss={pss}");
        }
    }

    /// A software key behind the adapter signs what its public key verifies, for every
    /// scheme it offers, and declines schemes it cannot make.
    #[test]
    fn signatures_verify_with_the_public_key() {
        use rustls::sign::SigningKey;
        use x509_parser::prelude::FromDer;
        for algorithm in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa2048,
        ] {
            let (key, _pem) = kpki_soft::SoftKey::generate(
                kpki_signer::KeyUri::file("/in-memory.key"),
                algorithm,
            )
            .expect("generate key");
            let key: Arc<dyn Signer> = Arc::new(key);
            let tls = BackendKey::new(Arc::clone(&key));
            assert!(tls.supports_tls13());
            assert!(
                tls.choose_scheme(&[SignatureScheme::ED25519]).is_none(),
                "{algorithm}"
            );
            for scheme in schemes(algorithm, true) {
                let signer = tls.choose_scheme(&[scheme]).expect("scheme chosen");
                let sig = signer.sign(b"handshake transcript").expect("signs");
                let verify: &dyn aws_lc_rs::signature::VerificationAlgorithm = match scheme {
                    SignatureScheme::ECDSA_NISTP256_SHA256 => {
                        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1
                    }
                    SignatureScheme::ECDSA_NISTP384_SHA384 => {
                        &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1
                    }
                    SignatureScheme::RSA_PSS_SHA256 => {
                        &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256
                    }
                    _ => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                };
                let spki = tls.public_key().expect("spki");
                let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
                    .expect("SPKI parses");
                aws_lc_rs::signature::UnparsedPublicKey::new(verify, info.subject_public_key.data)
                    .verify(b"handshake transcript", &sig)
                    .unwrap_or_else(|_| panic!("{algorithm} {scheme:?} verifies"));
            }
        }
    }
}
