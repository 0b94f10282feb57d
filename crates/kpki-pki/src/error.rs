//! [`PkiError`]: what went wrong in a PKI operation, by kind, with one line naming the file
//! or key and the problem. The kinds let callers tell the input's fault (missing, mismatched
//! or malformed material, a rule's refusal) from a failing backend or disk and from a bug.

use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::csr::CsrError;

/// An error of a PKI operation: one line naming the file or key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file, key or entry the operation needs is absent.
    #[error("{0}")]
    Missing(String),
    /// Two pieces of material that must agree do not (a certificate and its key, a
    /// kubeconfig's CA and `ca.crt`, a certificate and the SANs it must carry).
    #[error("{0}")]
    Mismatch(String),
    /// A file or value is not what it must be (PEM, DER, YAML, base64, a name's grammar).
    #[error("{0}")]
    Malformed(String),
    /// A rule refuses the operation although its input is well formed (never overwrite,
    /// kubeadm's own refusals, `O=system:masters`, a certificate out of its period).
    #[error("{0}")]
    Refused(String),
    /// A signing request refused under its signer's rules, with the kind of refusal.
    #[error(transparent)]
    Request(#[from] CsrError),
    /// A broken invariant of kpki itself: a bug, never the fault of the input.
    #[error("internal error: {0}")]
    Internal(String),
    /// A key backend failed.
    #[error(transparent)]
    Key(#[from] kpki_signer::KeyError),
    /// A CA key kpki was told about (configured, or recorded by `init`) cannot be used: absent,
    /// or its token or file unreachable. Never kubeadm's external-CA mode.
    #[error("{ca} key {uri}: {problem}")]
    CaKey {
        /// kubeadm's name of the CA (`ca`, `front-proxy-ca`, `etcd-ca`).
        ca: &'static str,
        /// The key's URI (never a PIN value).
        uri: String,
        /// Why it cannot be used.
        problem: String,
    },
    /// Configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

impl PkiError {
    /// An I/O failure on `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> PkiError {
        PkiError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A broken invariant of kpki (a bug) described by `what`.
    pub(crate) fn internal(what: impl Into<String>) -> PkiError {
        PkiError::Internal(what.into())
    }

    /// The same error with `path` named in front of its message; kinds that name their
    /// file already (I/O, key, configuration, request) are returned as they are.
    pub(crate) fn in_file(self, path: &Path) -> PkiError {
        let at = |m: String| format!("{}: {m}", path.display());
        match self {
            PkiError::Missing(m) => PkiError::Missing(at(m)),
            PkiError::Mismatch(m) => PkiError::Mismatch(at(m)),
            PkiError::Malformed(m) => PkiError::Malformed(at(m)),
            PkiError::Refused(m) => PkiError::Refused(at(m)),
            PkiError::Internal(m) => PkiError::Internal(at(m)),
            other => other,
        }
    }
}
