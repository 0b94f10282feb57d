//! The key backends of this process by URI scheme: a registry the program fills where it is
//! assembled (the `kpki` binary registers the PKCS#11 backend), so this library depends on no
//! token code. `file:` keys (software keys, kubeadm's layout) are always there.

use std::collections::BTreeMap;
use std::sync::Arc;

use kpki_signer::{KeyAlgorithm, KeyBackend, KeyError, KeyInfo, KeyUri, Result, Signer};
use kpki_soft::SoftBackend;

/// Key backends by URI scheme.
#[derive(Clone)]
pub struct KeyStore {
    backends: BTreeMap<&'static str, Arc<dyn KeyBackend>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("schemes", &self.backends.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for KeyStore {
    /// Software keys (`file:`) only.
    fn default() -> KeyStore {
        KeyStore::default_with_files()
    }
}

impl KeyStore {
    fn default_with_files() -> KeyStore {
        let mut backends: BTreeMap<&'static str, Arc<dyn KeyBackend>> = BTreeMap::new();
        backends.insert("file", Arc::new(SoftBackend));
        KeyStore { backends }
    }

    /// This store with `backend` handling URIs of `scheme` (replacing any other).
    pub fn with(mut self, scheme: &'static str, backend: Arc<dyn KeyBackend>) -> KeyStore {
        self.backends.insert(scheme, backend);
        self
    }

    /// The backend that handles `uri`.
    pub fn backend(&self, uri: &KeyUri) -> Result<&dyn KeyBackend> {
        self.backends
            .get(uri.scheme())
            .map(|b| b.as_ref())
            .ok_or_else(|| {
                KeyError::Unsupported(format!(
                    "no backend for {}: keys: this program handles {}",
                    uri.scheme(),
                    self.backends.keys().copied().collect::<Vec<_>>().join(", ")
                ))
            })
    }

    /// Creates a key at `uri`.
    pub fn create(&self, uri: &KeyUri, algorithm: KeyAlgorithm) -> Result<Arc<dyn Signer>> {
        self.backend(uri)?.create(uri, algorithm)
    }

    /// Opens the key at `uri`.
    pub fn open(&self, uri: &KeyUri) -> Result<Arc<dyn Signer>> {
        self.backend(uri)?.open(uri)
    }

    /// Describes the key at `uri`.
    pub fn describe(&self, uri: &KeyUri) -> Result<KeyInfo> {
        self.backend(uri)?.describe(uri)
    }

    /// Lists the keys under `uri`.
    pub fn list(&self, uri: &KeyUri) -> Result<Vec<KeyInfo>> {
        self.backend(uri)?.list(uri)
    }
}
