//! Key algorithms, named exactly as kubeadm's `encryptionAlgorithm` values.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::KeyError;

/// A key algorithm kpki can create and sign with; the names are kubeadm's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// RSA with a 2048-bit modulus (kubeadm's default).
    #[default]
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
    /// RSA with a 4096-bit modulus.
    Rsa4096,
    /// ECDSA on NIST P-256, signing with SHA-256.
    EcdsaP256,
    /// ECDSA on NIST P-384, signing with SHA-384.
    EcdsaP384,
}

impl KeyAlgorithm {
    /// Every algorithm, in kubeadm's order.
    pub const ALL: [KeyAlgorithm; 5] = [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
    ];

    /// kubeadm's name for the algorithm (`RSA-2048`, `ECDSA-P256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "RSA-2048",
            KeyAlgorithm::Rsa3072 => "RSA-3072",
            KeyAlgorithm::Rsa4096 => "RSA-4096",
            KeyAlgorithm::EcdsaP256 => "ECDSA-P256",
            KeyAlgorithm::EcdsaP384 => "ECDSA-P384",
        }
    }

    /// True for the RSA algorithms.
    pub fn is_rsa(self) -> bool {
        self.rsa_bits().is_some()
    }

    /// The RSA modulus size in bits, or `None` for ECDSA.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyAlgorithm::Rsa2048 => Some(2048),
            KeyAlgorithm::Rsa3072 => Some(3072),
            KeyAlgorithm::Rsa4096 => Some(4096),
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => None,
        }
    }

    /// The RSA algorithm with this modulus size, if kpki supports it.
    pub fn from_rsa_bits(bits: usize) -> Option<KeyAlgorithm> {
        Self::ALL.into_iter().find(|a| a.rsa_bits() == Some(bits))
    }

    /// The DER encoding of the named-curve OID (an `ECParameters` value), or `None` for RSA.
    pub fn ec_params_der(self) -> Option<&'static [u8]> {
        match self {
            KeyAlgorithm::EcdsaP256 => {
                Some(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07])
            }
            KeyAlgorithm::EcdsaP384 => Some(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
            _ => None,
        }
    }

    /// The algorithm whose curve has this `ECParameters` DER, if supported.
    pub fn from_ec_params_der(der: &[u8]) -> Option<KeyAlgorithm> {
        Self::ALL
            .into_iter()
            .find(|a| a.ec_params_der() == Some(der))
    }

    /// Length in bytes of one ECDSA scalar (r or s), or `None` for RSA.
    pub fn ec_scalar_len(self) -> Option<usize> {
        match self {
            KeyAlgorithm::EcdsaP256 => Some(32),
            KeyAlgorithm::EcdsaP384 => Some(48),
            _ => None,
        }
    }

    /// The X.509 signature algorithm a key of this algorithm signs with:
    /// RSA PKCS#1 v1.5 SHA-256, ECDSA P-256 SHA-256, ECDSA P-384 SHA-384.
    pub(crate) fn rcgen_signature_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                &rcgen::PKCS_RSA_SHA256
            }
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }

    /// The JWS `alg` name of signatures made with this key (`RS256`, `ES256`, `ES384`).
    pub fn jws_name(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => "RS256",
            KeyAlgorithm::EcdsaP256 => "ES256",
            KeyAlgorithm::EcdsaP384 => "ES384",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| KeyError::UnknownAlgorithm(s.to_string()))
    }
}

impl Serialize for KeyAlgorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for KeyAlgorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_default_is_rsa2048() {
        for a in KeyAlgorithm::ALL {
            assert_eq!(a.name().parse::<KeyAlgorithm>().ok(), Some(a));
        }
        assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::Rsa2048);
        assert!("RSA-1024".parse::<KeyAlgorithm>().is_err());
        assert!("rsa-2048".parse::<KeyAlgorithm>().is_err());
    }
}
