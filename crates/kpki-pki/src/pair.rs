//! Replacing a key and its certificate so that a crash never leaves them mismatched once the
//! next run has started.
//!
//! Both new files are first written beside the old ones as `<file>.kpki-new` (atomically, with
//! final modes): the key, then the certificate. Then the key is renamed over the old key and
//! the certificate over the old certificate. [`recover`] finishes or discards what a killed
//! run left: both staged → rename both; only the certificate staged → the key was already
//! renamed, rename the certificate; only the key staged → the certificate was never complete,
//! discard the key. Every path ends with a matching pair.

use std::fs;
use std::path::{Path, PathBuf};

use kpki_atomic::{self as atomic, Existing};

use crate::PkiError;
use crate::store::{CERT_MODE, PRIVATE_MODE};

/// Suffix of staged files.
pub(crate) const STAGED: &str = ".kpki-new";

fn staged(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(STAGED);
    path.with_file_name(name)
}

fn sync_dir(dir: &Path) -> Result<(), PkiError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PkiError::io(dir, e))
}

/// Replaces `key`/`crt` with new contents as described in the module documentation.
pub fn replace(key: &Path, key_pem: &[u8], crt: &Path, crt_pem: &[u8]) -> Result<(), PkiError> {
    let (key_new, crt_new) = (staged(key), staged(crt));
    atomic::write(&key_new, key_pem, PRIVATE_MODE, Existing::Replace)
        .map_err(|e| PkiError::io(&key_new, e))?;
    atomic::write(&crt_new, crt_pem, CERT_MODE, Existing::Replace)
        .map_err(|e| PkiError::io(&crt_new, e))?;
    fs::rename(&key_new, key).map_err(|e| PkiError::io(key, e))?;
    fs::rename(&crt_new, crt).map_err(|e| PkiError::io(crt, e))?;
    sync_dir(crt.parent().unwrap_or(Path::new(".")))
}

/// Completes or discards staged replacements in `dir`; returns the pairs it completed.
pub fn recover(dir: &Path) -> Result<Vec<PathBuf>, PkiError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PkiError::io(dir, e)),
    };
    let mut bases: Vec<PathBuf> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.strip_suffix(STAGED)?;
            let stem = base
                .strip_suffix(".key")
                .or_else(|| base.strip_suffix(".crt"))?;
            Some(dir.join(stem))
        })
        .collect();
    bases.sort();
    bases.dedup();
    let mut completed = Vec::new();
    for base in bases {
        let (key, crt) = (base.with_extension("key"), base.with_extension("crt"));
        let (key_new, crt_new) = (staged(&key), staged(&crt));
        match (key_new.exists(), crt_new.exists()) {
            (true, true) => {
                fs::rename(&key_new, &key).map_err(|e| PkiError::io(&key, e))?;
                fs::rename(&crt_new, &crt).map_err(|e| PkiError::io(&crt, e))?;
                completed.push(crt);
            }
            (false, true) => {
                fs::rename(&crt_new, &crt).map_err(|e| PkiError::io(&crt, e))?;
                completed.push(crt);
            }
            (true, false) => fs::remove_file(&key_new).map_err(|e| PkiError::io(&key_new, e))?,
            (false, false) => {}
        }
    }
    sync_dir(dir)?;
    Ok(completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_finishes_or_discards() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let w = |p: &str, s: &str| fs::write(d.join(p), s);
        w("a.key", "old-a")?;
        w("a.crt", "old-a")?;
        w("a.key.kpki-new", "new-a")?;
        w("a.crt.kpki-new", "new-a")?;
        w("b.key", "new-b")?;
        w("b.crt", "old-b")?;
        w("b.crt.kpki-new", "new-b")?;
        w("c.key", "old-c")?;
        w("c.crt", "old-c")?;
        w("c.key.kpki-new", "new-c")?;
        recover(d)?;
        let r = |p: &str| fs::read_to_string(d.join(p)).unwrap_or_default();
        assert_eq!((r("a.key"), r("a.crt")), ("new-a".into(), "new-a".into()));
        assert_eq!((r("b.key"), r("b.crt")), ("new-b".into(), "new-b".into()));
        assert_eq!((r("c.key"), r("c.crt")), ("old-c".into(), "old-c".into()));
        assert_eq!(fs::read_dir(d)?.count(), 6);
        Ok(())
    }
}
