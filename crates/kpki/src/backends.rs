//! The key backends this program is built with, registered by URI scheme where the program
//! is assembled: software keys (`file:`, always) and PKCS#11 tokens (`pkcs11:`).

use std::sync::Arc;

use kpki_pkcs11::Pkcs11Backend;
use kpki_pki::keystore::KeyStore;

/// The key store of a CLI command (the PKCS#11 backend's default session pool).
pub(crate) fn key_store() -> KeyStore {
    KeyStore::default().with("pkcs11", Arc::new(Pkcs11Backend::default()))
}

/// The key store with `pool_size` signing sessions per token (the daemon's
/// `signing.pool_size`).
pub(crate) fn key_store_with_pool(pool_size: usize) -> KeyStore {
    KeyStore::default().with(
        "pkcs11",
        Arc::new(Pkcs11Backend::with_pool_size(pool_size.max(1))),
    )
}
