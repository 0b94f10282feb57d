//! Private key material in transit from a key file to a token (the one-time import of a key
//! that already exists, e.g. a cluster's `sa.key`). Every secret byte is zeroized on drop.

use zeroize::Zeroizing;

use crate::KeyAlgorithm;

/// A private key read from a file, ready to be created on a token.
pub enum KeyMaterial {
    /// RSA: the PKCS#1 `RSAPrivateKey` DER.
    Rsa {
        /// Its size.
        algorithm: KeyAlgorithm,
        /// PKCS#1 DER.
        pkcs1_der: Zeroizing<Vec<u8>>,
    },
    /// ECDSA: the private scalar and the public point.
    Ec {
        /// Its curve.
        algorithm: KeyAlgorithm,
        /// Big-endian private scalar.
        scalar: Zeroizing<Vec<u8>>,
        /// Uncompressed public point (`04 || X || Y`).
        point: Vec<u8>,
    },
}

impl KeyMaterial {
    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            KeyMaterial::Rsa { algorithm, .. } | KeyMaterial::Ec { algorithm, .. } => *algorithm,
        }
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({}, <secret>)", self.algorithm())
    }
}
