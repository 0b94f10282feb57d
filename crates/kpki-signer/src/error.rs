//! The one error type of key handling: every variant names the thing and the problem.

use std::path::PathBuf;

/// Result of key operations.
pub type Result<T, E = KeyError> = std::result::Result<T, E>;

/// What went wrong with a key, a key URI or a key backend. Messages are one line and
/// never contain key material or PINs.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key URI could not be parsed.
    #[error("invalid key URI {uri:?}: {problem}")]
    InvalidUri {
        /// The URI as given (PIN values removed).
        uri: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An algorithm name kubeadm does not know.
    #[error(
        "unknown key algorithm {0:?}: expected one of RSA-2048, RSA-3072, RSA-4096, ECDSA-P256, ECDSA-P384"
    )]
    UnknownAlgorithm(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file exists but cannot be used (format, permissions, owner).
    #[error("key file {path}: {problem}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and, where there is one, the fix.
        problem: String,
    },
    /// A key that should be created already exists.
    #[error("{0} already exists; refusing to replace it")]
    AlreadyExists(String),
    /// No key at the URI.
    #[error("key {0} not found")]
    NotFound(String),
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("PKCS#11 module {module}: {problem}")]
    Module {
        /// Path of the module.
        module: String,
        /// What failed.
        problem: String,
    },
    /// No token matches the URI.
    #[error("token not found: {0}")]
    TokenNotFound(String),
    /// Login to the token failed (wrong PIN, locked PIN, no PIN).
    #[error("login to token {token:?} failed: {problem}")]
    Login {
        /// Token label.
        token: String,
        /// Why (the PKCS#11 return value, never the PIN).
        problem: String,
    },
    /// The token does not answer or went away; the operation may succeed later.
    #[error("token {token:?} unavailable: {problem}")]
    Unavailable {
        /// Token label.
        token: String,
        /// What the module reported.
        problem: String,
    },
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {operation} failed: {problem}")]
    Pkcs11 {
        /// The operation (e.g. `C_Sign`).
        operation: String,
        /// The PKCS#11 return value.
        problem: String,
    },
    /// A key or its public key is of a kind kpki does not support.
    #[error("unsupported key: {0}")]
    Unsupported(String),
    /// A cryptographic operation failed.
    #[error("crypto: {0}")]
    Crypto(String),
}

impl KeyError {
    /// True when the failure is transient (token gone, device error): the caller may retry
    /// later and a daemon should report not-ready rather than refuse.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, KeyError::Unavailable { .. })
    }

    /// Convenience constructor for [`KeyError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> KeyError {
        KeyError::Io {
            path: path.into(),
            source,
        }
    }

    /// Convenience constructor for [`KeyError::KeyFile`].
    pub fn key_file(path: impl Into<PathBuf>, problem: impl Into<String>) -> KeyError {
        KeyError::KeyFile {
            path: path.into(),
            problem: problem.into(),
        }
    }
}
