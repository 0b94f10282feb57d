//! Bounded, never-blocking reads of files kpki is given: only regular files (a FIFO, a
//! device or a directory is refused up front, never opened for reading in a way that
//! waits), at most a size cap, and the permission rule of files that hold secrets.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Cap for a PIN file.
pub const PIN_MAX: u64 = 4 * 1024;
/// Cap for a configuration file (kubeadm YAML, kpki.toml, serve.toml).
pub const CONFIG_MAX: u64 = 4 * 1024 * 1024;
/// Cap for a certificate, bundle, CSR, kubeconfig or key file.
pub const PEM_MAX: u64 = 16 * 1024 * 1024;

/// Reads the regular file `path`, refusing anything else and anything over `max` bytes.
pub fn regular_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO does not wait for a writer; it is then refused as not
    // regular. Reads of a regular file ignore the flag.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", kind(&meta)),
        ));
    }
    read_at_most(file, max)
}

/// Reads an input file as [`regular_file`] does, except that `/dev/stdin` (how kpki spells
/// `-`) is read as it is, a pipe included, still at most `max` bytes.
pub fn input(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    if path == Path::new("/dev/stdin") {
        return read_at_most(File::open(path)?, max);
    }
    regular_file(path, max)
}

fn read_at_most(file: File, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

fn kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// Who besides the owner may read a secret file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// The owner only (mode 0600 or 0400): key files.
    Owner,
    /// The owner and the process's own group, read-only (0640/0440 with the file's group the
    /// process's effective group): PIN files mounted from a Kubernetes Secret with `fsGroup`.
    OwnGroup,
}

/// Why a file holding a secret (a key, a PIN) may not be used, if it may not: accessible by
/// others, by a group beyond what `readers` allows, or, for a process running as root, not
/// owned by root.
pub fn secret_file_problem(path: &Path, meta: &Metadata, readers: Readers) -> Option<String> {
    let mode = meta.mode() & 0o777;
    let own_group = meta.gid() == rustix::process::getegid().as_raw();
    let group_ok = match readers {
        Readers::Owner => mode & 0o070 == 0,
        Readers::OwnGroup => mode & 0o030 == 0 && (mode & 0o040 == 0 || own_group),
    };
    if mode & 0o007 != 0 || !group_ok {
        let fix = match readers {
            Readers::Owner => "chmod 600",
            Readers::OwnGroup => "chmod 600 (or 0640 with the daemon's group)",
        };
        return Some(format!(
            "accessible by group or others (mode {mode:04o}); fix with: {fix} {}",
            path.display()
        ));
    }
    if rustix::process::geteuid().is_root() && meta.uid() != 0 {
        return Some(format!(
            "owned by uid {}, not root; fix with: chown root:root {}",
            meta.uid(),
            path.display()
        ));
    }
    None
}

/// Reads a secret file: regular, at most `max` bytes, and passing [`secret_file_problem`].
pub fn secret_file(path: &Path, max: u64, readers: Readers) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if let Some(problem) = meta
        .is_file()
        .then(|| secret_file_problem(path, &meta, readers))
        .flatten()
    {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, problem));
    }
    regular_file(path, max)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn regular_files_only_within_the_cap() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("f");
        std::fs::write(&f, b"12345")?;
        assert_eq!(regular_file(&f, 5)?, b"12345");
        let e = regular_file(&f, 4).unwrap_err();
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
        let e = regular_file(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )?;
        // Returns at once (no writer needed) and refuses it.
        let e = regular_file(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = regular_file(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("a device"), "{e}");
        Ok(())
    }

    #[test]
    fn secrets_need_private_modes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("pin");
        std::fs::write(&f, b"1234")?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))?;
        for readers in [Readers::Owner, Readers::OwnGroup] {
            let e = secret_file(&f, PIN_MAX, readers).unwrap_err();
            assert!(e.to_string().contains("mode 0644"), "{e}");
        }
        // The test's own group (files are created with the process's egid).
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640))?;
        assert!(secret_file(&f, PIN_MAX, Readers::Owner).is_err());
        let own = secret_file(&f, PIN_MAX, Readers::OwnGroup);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o660))?;
        assert!(secret_file(&f, PIN_MAX, Readers::OwnGroup).is_err());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))?;
        if rustix::process::geteuid().is_root() {
            assert_eq!(own?, b"1234");
            assert_eq!(secret_file(&f, PIN_MAX, Readers::Owner)?, b"1234");
        }
        Ok(())
    }
}
