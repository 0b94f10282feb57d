//! Crash-safe file writes: a temporary file in the target's directory gets the bytes and
//! the final mode, is fsynced, then renamed (or hard-linked, when the target must not be
//! replaced) into place, and the directory is fsynced. A crash leaves either the old file
//! or the new one, plus at most a `.kpki-tmp-*` file that the next write ignores.
//!
//! Both writers of kpki use it: the software key backend (`kpki-soft`) for key files and the
//! PKI library (`kpki-pki`) for certificates, kubeconfigs and staged renewals.
//!
//! [`read`] is the other direction: bounded, never-blocking reads of the files kpki is
//! given, and the permission rule of files that hold secrets.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

pub mod read;

/// Whether an existing file at the target may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it atomically.
    Replace,
    /// Fail with `AlreadyExists` and leave it untouched.
    Keep,
}

/// Writes `bytes` to `path` with `mode`, atomically. Parent directories must exist.
pub fn write(path: &Path, bytes: &[u8], mode: u32, existing: Existing) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_path(path)?;
    let result = write_temp(&tmp, bytes, mode).and_then(|()| match existing {
        Existing::Replace => fs::rename(&tmp, path),
        Existing::Keep => fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp)),
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir)
}

/// Creates `dir` and missing parents with `mode` (existing directories are left as they are).
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent, mode)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes temporary files a killed writer left in `dir` (they may hold key material).
pub fn remove_stale_temps(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".kpki-tmp-")
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let mut nonce = [0u8; 8];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| io::Error::other("no randomness for a temporary file name"))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    Ok(parent_dir(path).join(format!(".kpki-tmp-{name}-{suffix}")))
}

fn write_temp(tmp: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)?;
    // The umask may have narrowed the mode; set it exactly before the file becomes visible.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_with_mode_and_keeps_or_replaces() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("a.key");
        write(&p, b"one", 0o600, Existing::Keep)?;
        assert_eq!(fs::metadata(&p)?.mode() & 0o777, 0o600);
        let err = write(&p, b"two", 0o600, Existing::Keep).expect_err("must not replace");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p)?, b"one");
        write(&p, b"three", 0o644, Existing::Replace)?;
        assert_eq!(fs::read(&p)?, b"three");
        assert_eq!(fs::metadata(&p)?.mode() & 0o777, 0o644);
        let leftovers = fs::read_dir(dir.path())?.count();
        assert_eq!(leftovers, 1, "no temporary files left behind");
        Ok(())
    }
}
