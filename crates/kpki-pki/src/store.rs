//! Writing the PKI to disk with kubeadm's modes, atomically (see `kpki_atomic`).

use std::path::Path;

use kpki_atomic::{self as atomic, Existing};

use crate::PkiError;

/// Mode of certificates.
pub const CERT_MODE: u32 = 0o644;
/// Mode of private keys, `sa.pub` and kubeconfigs.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of directories kpki creates.
pub(crate) const DIR_MODE: u32 = 0o755;

/// Writes `bytes` to `path` (creating parent directories 0755) with `mode`, never replacing
/// an existing file.
pub fn create(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    write(path, bytes, mode, Existing::Keep)
}

/// Writes `bytes` to `path` with `mode`, replacing it atomically if it exists.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    write(path, bytes, mode, Existing::Replace)
}

/// Creates `path`'s parent directories (0755), then writes `bytes` to it with `mode`.
fn write(path: &Path, bytes: &[u8], mode: u32, existing: Existing) -> Result<(), PkiError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        atomic::create_dir_all(dir, DIR_MODE).map_err(|e| PkiError::io(dir, e))?;
    }
    atomic::write(path, bytes, mode, existing).map_err(|e| PkiError::io(path, e))
}
