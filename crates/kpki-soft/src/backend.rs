//! [`SoftBackend`]: creates, opens and lists software keys named by `file:` URIs.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use kpki_signer::{KeyAlgorithm, KeyBackend, KeyError, KeyInfo, KeyUri, Result, Signer, spki};
use zeroize::Zeroizing;

use crate::keyfile::check_key_file_permissions;
use crate::softkey::SoftKey;
use kpki_atomic::{self as atomic, Existing};

/// The software key backend. Stateless: every call works on the file the URI names.
#[derive(Debug, Default, Clone, Copy)]
pub struct SoftBackend;

fn file_path(uri: &KeyUri) -> Result<&Path> {
    uri.as_file().ok_or_else(|| KeyError::InvalidUri {
        uri: uri.to_string(),
        problem: "the software backend takes file: URIs".into(),
    })
}

impl SoftBackend {
    /// Generates a key and writes it to `path` (mode 0600, never replacing a file).
    pub(crate) fn create_file(&self, path: &Path, algorithm: KeyAlgorithm) -> Result<SoftKey> {
        let (key, pem) = SoftKey::generate(KeyUri::file(path), algorithm)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            atomic::create_dir_all(dir, 0o700).map_err(|e| KeyError::io(dir, e))?;
        }
        atomic::write(path, pem.as_bytes(), 0o600, Existing::Keep).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => {
                KeyError::AlreadyExists(format!("key file {}", path.display()))
            }
            _ => KeyError::io(path, e),
        })?;
        Ok(key)
    }

    /// Loads the key at `path` after checking its mode and owner.
    pub fn open_file(&self, path: &Path) -> Result<SoftKey> {
        check_key_file_permissions(path)?;
        let text = Zeroizing::new(fs::read(path).map_err(|e| KeyError::io(path, e))?);
        let text = std::str::from_utf8(&text)
            .map_err(|_| KeyError::key_file(path, "not a PEM file (binary data)"))?;
        SoftKey::from_pem(KeyUri::file(path), path, text)
    }

    fn info(key: &SoftKey) -> KeyInfo {
        KeyInfo {
            uri: key.uri().clone(),
            algorithm: key.algorithm(),
            spki_sha256: spki::sha256_hex(key.public_key_spki()),
            label: None,
            id: None,
            protection: None,
        }
    }
}

impl KeyBackend for SoftBackend {
    fn create(&self, uri: &KeyUri, algorithm: KeyAlgorithm) -> Result<Arc<dyn Signer>> {
        Ok(Arc::new(self.create_file(file_path(uri)?, algorithm)?))
    }

    fn open(&self, uri: &KeyUri) -> Result<Arc<dyn Signer>> {
        Ok(Arc::new(self.open_file(file_path(uri)?)?))
    }

    fn describe(&self, uri: &KeyUri) -> Result<KeyInfo> {
        Ok(Self::info(&self.open_file(file_path(uri)?)?))
    }

    /// Lists the `*.key` files of a directory (or the one file) that load as keys.
    fn list(&self, uri: &KeyUri) -> Result<Vec<KeyInfo>> {
        let path = file_path(uri)?;
        if !path.is_dir() {
            return Ok(vec![self.describe(uri)?]);
        }
        let mut out = Vec::new();
        let entries = fs::read_dir(path).map_err(|e| KeyError::io(path, e))?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "key"))
            .collect();
        paths.sort();
        for p in paths {
            out.push(Self::info(&self.open_file(&p)?));
        }
        Ok(out)
    }
}
