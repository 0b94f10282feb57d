//! Reading a key file's private material for a one-time import onto a token: the file must
//! pass the same permission checks as any key file, and must parse as a key kpki supports.

use std::path::Path;

use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};
use kpki_signer::{KeyAlgorithm, KeyError, KeyMaterial, Result};
use zeroize::Zeroizing;

use crate::keyfile::{self, KeyEncoding};
use crate::softkey::ec_signing;

/// Reads `path` (PKCS#1, SEC1 or PKCS#8 PEM) into [`KeyMaterial`].
pub fn read_key_material(path: &Path) -> Result<KeyMaterial> {
    keyfile::check_key_file_permissions(path)?;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| KeyError::io(path, e))?);
    let (encoding, der) = keyfile::decode_private_key_pem(path, &text)?;
    let bad = |what: &str| KeyError::key_file(path, format!("{what} is malformed or truncated"));
    let rsa = |pkcs1: Zeroizing<Vec<u8>>| -> Result<KeyMaterial> {
        let pair = rsa::KeyPair::from_der(&pkcs1).map_err(|_| bad("RSA PRIVATE KEY"))?;
        let bits = pair.public_modulus_len() * 8;
        let algorithm = KeyAlgorithm::from_rsa_bits(bits).ok_or_else(|| {
            KeyError::key_file(
                path,
                format!("RSA-{bits} (kpki supports RSA-2048/3072/4096)"),
            )
        })?;
        Ok(KeyMaterial::Rsa {
            algorithm,
            pkcs1_der: pkcs1,
        })
    };
    match encoding {
        KeyEncoding::Pkcs1 => rsa(der),
        KeyEncoding::Pkcs8 if rsa::KeyPair::from_pkcs8(&der).is_ok() => {
            rsa(keyfile::pkcs8_to_pkcs1(&der)?)
        }
        KeyEncoding::Sec1 | KeyEncoding::Pkcs8 => {
            for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
                let Some(alg) = ec_signing(algorithm) else {
                    continue;
                };
                let pair = match encoding {
                    KeyEncoding::Sec1 => EcdsaKeyPair::from_private_key_der(alg, &der),
                    _ => EcdsaKeyPair::from_pkcs8(alg, &der),
                };
                if let Ok(pair) = pair {
                    let scalar: EcPrivateKeyBin<'static> = pair
                        .private_key()
                        .as_be_bytes()
                        .map_err(|_| bad("EC PRIVATE KEY"))?;
                    return Ok(KeyMaterial::Ec {
                        algorithm,
                        scalar: Zeroizing::new(scalar.as_ref().to_vec()),
                        point: pair.public_key().as_ref().to_vec(),
                    });
                }
            }
            Err(KeyError::key_file(
                path,
                "not an RSA-2048/3072/4096 or ECDSA P-256/P-384 private key",
            ))
        }
    }
}
