//! Lets rcgen 0.14 sign certificates with any [`Signer`] (`PublicKeyData` + `SigningKey`).

use std::sync::{Arc, Mutex};

use crate::{KeyError, Result, Signer, spki};

/// An rcgen signing key backed by a [`Signer`]. rcgen's error type cannot carry the
/// backend's error, so the last one is kept and can be taken with `RcgenSigner::take_error`.
#[derive(Debug)]
pub struct RcgenSigner {
    signer: Arc<dyn Signer>,
    subject_public_key: Vec<u8>,
    last_error: Mutex<Option<KeyError>>,
}

impl RcgenSigner {
    /// Wraps `signer` for rcgen.
    pub fn new(signer: Arc<dyn Signer>) -> Result<RcgenSigner> {
        let subject_public_key = spki::subject_public_key(signer.public_key_spki())?;
        Ok(RcgenSigner {
            signer,
            subject_public_key,
            last_error: Mutex::new(None),
        })
    }

    /// The wrapped signer.
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    /// The backend error behind the last `rcgen::Error::RemoteKeyError`, if any.
    pub(crate) fn take_error(&self) -> Option<KeyError> {
        self.last_error.lock().ok().and_then(|mut e| e.take())
    }

    /// Maps an rcgen error to a [`KeyError`], preferring the backend's own error.
    pub fn explain(&self, err: rcgen::Error) -> KeyError {
        match err {
            rcgen::Error::RemoteKeyError => self
                .take_error()
                .unwrap_or_else(|| KeyError::Crypto("signing failed".into())),
            other => KeyError::Crypto(other.to_string()),
        }
    }
}

impl rcgen::PublicKeyData for RcgenSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.subject_public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.signer.algorithm().rcgen_signature_algorithm()
    }
}

impl rcgen::SigningKey for RcgenSigner {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.signer.sign(msg).map_err(|e| {
            if let Ok(mut slot) = self.last_error.lock() {
                *slot = Some(e);
            }
            rcgen::Error::RemoteKeyError
        })
    }
}
