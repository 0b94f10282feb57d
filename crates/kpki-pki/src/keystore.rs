//! Picks the key backend for a key URI: `file:` → software keys, `pkcs11:` → tokens.

use std::sync::Arc;

use kpki_pkcs11::Pkcs11Backend;
use kpki_signer::{KeyAlgorithm, KeyBackend, KeyInfo, KeyUri, Result, Signer};
use kpki_soft::SoftBackend;

/// Key backends configured for this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyStore {
    soft: SoftBackend,
    pkcs11: Pkcs11Backend,
}

impl KeyStore {
    /// A key store whose tokens use `pool_size` signing sessions.
    pub fn with_pool_size(pool_size: usize) -> KeyStore {
        KeyStore {
            soft: SoftBackend,
            pkcs11: Pkcs11Backend::with_pool_size(pool_size),
        }
    }

    /// The backend that handles `uri`.
    pub fn backend(&self, uri: &KeyUri) -> &dyn KeyBackend {
        match uri {
            KeyUri::File(_) => &self.soft,
            KeyUri::Pkcs11(_) => &self.pkcs11,
        }
    }

    /// Creates a key at `uri`.
    pub fn create(&self, uri: &KeyUri, algorithm: KeyAlgorithm) -> Result<Arc<dyn Signer>> {
        self.backend(uri).create(uri, algorithm)
    }

    /// Opens the key at `uri`.
    pub fn open(&self, uri: &KeyUri) -> Result<Arc<dyn Signer>> {
        self.backend(uri).open(uri)
    }

    /// Describes the key at `uri`.
    pub fn describe(&self, uri: &KeyUri) -> Result<KeyInfo> {
        self.backend(uri).describe(uri)
    }

    /// Lists the keys under `uri`.
    pub fn list(&self, uri: &KeyUri) -> Result<Vec<KeyInfo>> {
        self.backend(uri).list(uri)
    }
}
