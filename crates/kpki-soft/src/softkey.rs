//! A software private key (aws-lc-rs) implementing [`Signer`].

use std::fmt;
use std::path::Path;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{self, KeySize};
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, KeyPair,
};
use kpki_signer::{KeyAlgorithm, KeyError, KeyUri, Result, Signer};
use zeroize::Zeroizing;

use crate::keyfile::{self, KeyEncoding};

enum Key {
    Rsa(rsa::KeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key held in process memory (aws-lc frees it with cleansing).
pub struct SoftKey {
    uri: KeyUri,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    key: Key,
}

impl fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftKey")
            .field("uri", &self.uri.to_string())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The first curve kpki knows (P-256, then P-384) on which `read` reads the key.
fn ec_pair(
    read: impl Fn(&'static EcdsaSigningAlgorithm) -> Option<EcdsaKeyPair>,
) -> Option<(KeyAlgorithm, EcdsaKeyPair)> {
    [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384]
        .into_iter()
        .find_map(|algorithm| Some((algorithm, read(ec_signing(algorithm)?)?)))
}

pub(crate) fn ec_signing(algorithm: KeyAlgorithm) -> Option<&'static EcdsaSigningAlgorithm> {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => Some(&ECDSA_P256_SHA256_ASN1_SIGNING),
        KeyAlgorithm::EcdsaP384 => Some(&ECDSA_P384_SHA384_ASN1_SIGNING),
        _ => None,
    }
}

fn crypto(what: &str) -> impl Fn(aws_lc_rs::error::Unspecified) -> KeyError + '_ {
    move |_| KeyError::Crypto(what.to_string())
}

impl SoftKey {
    /// Generates a new key; returns it with its kubeadm-format PEM (PKCS#1 or SEC1).
    pub fn generate(uri: KeyUri, algorithm: KeyAlgorithm) -> Result<(SoftKey, Zeroizing<String>)> {
        if let Some(bits) = algorithm.rsa_bits() {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                _ => KeySize::Rsa4096,
            };
            let pair = rsa::KeyPair::generate(size).map_err(crypto("RSA key generation failed"))?;
            let pkcs8: Pkcs8V1Der<'static> =
                pair.as_der().map_err(crypto("RSA key export failed"))?;
            let pkcs1 = keyfile::pkcs8_to_pkcs1(pkcs8.as_ref())?;
            let pem = keyfile::encode_private_key_pem(KeyEncoding::Pkcs1, &pkcs1);
            return Ok((Self::from_rsa(uri, pair)?, pem));
        }
        let alg =
            ec_signing(algorithm).ok_or_else(|| KeyError::Unsupported(algorithm.to_string()))?;
        let pair = EcdsaKeyPair::generate(alg).map_err(crypto("EC key generation failed"))?;
        let sec1 = pair
            .private_key()
            .as_der()
            .map_err(crypto("EC key export failed"))?;
        let pem = keyfile::encode_private_key_pem(KeyEncoding::Sec1, sec1.as_ref());
        Ok((Self::from_ec(uri, algorithm, pair)?, pem))
    }

    /// Parses a PEM private key (PKCS#1, SEC1 or PKCS#8). `path` names the file in errors.
    pub fn from_pem(uri: KeyUri, path: &Path, text: &str) -> Result<SoftKey> {
        let (encoding, der) = keyfile::decode_private_key_pem(path, text)?;
        let unreadable =
            |what: &str| KeyError::key_file(path, format!("{what} is malformed or truncated"));
        match encoding {
            KeyEncoding::Pkcs1 => {
                let pair =
                    rsa::KeyPair::from_der(&der).map_err(|_| unreadable("RSA PRIVATE KEY"))?;
                Self::from_rsa(uri, pair)
            }
            KeyEncoding::Sec1 => {
                let read = |alg| EcdsaKeyPair::from_private_key_der(alg, &der).ok();
                if let Some((algorithm, pair)) = ec_pair(read) {
                    return Self::from_ec(uri, algorithm, pair);
                }
                Err(KeyError::key_file(
                    path,
                    "EC PRIVATE KEY is malformed, truncated, or not on P-256/P-384",
                ))
            }
            KeyEncoding::Pkcs8 => {
                if let Ok(pair) = rsa::KeyPair::from_pkcs8(&der) {
                    return Self::from_rsa(uri, pair);
                }
                if let Some((algorithm, pair)) =
                    ec_pair(|alg| EcdsaKeyPair::from_pkcs8(alg, &der).ok())
                {
                    return Self::from_ec(uri, algorithm, pair);
                }
                Err(KeyError::key_file(
                    path,
                    "PRIVATE KEY is malformed, truncated, or not RSA-2048/3072/4096 or ECDSA P-256/P-384",
                ))
            }
        }
    }

    fn from_rsa(uri: KeyUri, pair: rsa::KeyPair) -> Result<SoftKey> {
        let bits = pair.public_modulus_len() * 8;
        let algorithm = KeyAlgorithm::from_rsa_bits(bits).ok_or_else(|| {
            KeyError::Unsupported(format!(
                "RSA-{bits} key (kpki supports RSA-2048, RSA-3072, RSA-4096)"
            ))
        })?;
        let spki = pair
            .public_key()
            .as_der()
            .map_err(crypto("RSA public key export failed"))?
            .as_ref()
            .to_vec();
        Ok(SoftKey {
            uri,
            algorithm,
            spki,
            key: Key::Rsa(pair),
        })
    }

    fn from_ec(uri: KeyUri, algorithm: KeyAlgorithm, pair: EcdsaKeyPair) -> Result<SoftKey> {
        let spki = pair
            .public_key()
            .as_der()
            .map_err(crypto("EC public key export failed"))?
            .as_ref()
            .to_vec();
        Ok(SoftKey {
            uri,
            algorithm,
            spki,
            key: Key::Ec(pair),
        })
    }
}

impl Signer for SoftKey {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    fn uri(&self) -> &KeyUri {
        &self.uri
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(crypto("RSA signing failed"))?;
                Ok(sig)
            }
            Key::Ec(pair) => Ok(pair
                .sign(&rng, message)
                .map_err(crypto("ECDSA signing failed"))?
                .as_ref()
                .to_vec()),
        }
    }

    fn supports_rsa_pss(&self) -> bool {
        matches!(self.key, Key::Rsa(_))
    }

    fn sign_rsa_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>> {
        let Key::Rsa(pair) = &self.key else {
            return Err(KeyError::Unsupported(format!(
                "{}: RSASSA-PSS needs an RSA key",
                self.uri
            )));
        };
        let mut sig = vec![0u8; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PSS_SHA256,
            &SystemRandom::new(),
            message,
            &mut sig,
        )
        .map_err(crypto("RSA-PSS signing failed"))?;
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key as `generate` writes it reads back as the same key, whatever the algorithm; a
    /// key of one curve is never read as the other.
    #[test]
    fn written_keys_read_back() {
        for algorithm in [
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
        ] {
            let uri = KeyUri::file("/k.key");
            let (key, pem) = SoftKey::generate(uri.clone(), algorithm).expect("generate");
            let read = SoftKey::from_pem(uri, Path::new("/k.key"), &pem).expect("read back");
            assert_eq!(read.algorithm(), algorithm);
            assert_eq!(read.public_key_spki(), key.public_key_spki(), "{algorithm}");
        }
    }
}
