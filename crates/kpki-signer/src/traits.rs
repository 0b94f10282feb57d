//! The `Signer` and `KeyBackend` traits every key backend implements.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::{KeyAlgorithm, KeyError, KeyUri, Result};

/// A private key you can use but not read: it reports its algorithm and public key and
/// signs messages.
///
/// `sign` returns the signature as X.509 needs it: RSA PKCS#1 v1.5 with SHA-256, ECDSA as
/// a DER `Ecdsa-Sig-Value` over SHA-256 (P-256) or SHA-384 (P-384). It may block (a token
/// round trip); async callers go through [`AsyncSign`].
pub trait Signer: Send + Sync + fmt::Debug {
    /// The key's algorithm.
    fn algorithm(&self) -> KeyAlgorithm;
    /// The public key as DER SubjectPublicKeyInfo.
    fn public_key_spki(&self) -> &[u8];
    /// Where the key lives (PIN values are never part of it when printed).
    fn uri(&self) -> &KeyUri;
    /// Signs `message` (hashing is part of the signature algorithm). May block.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
    /// A bound on concurrent blocking signs that async callers wait on *before* taking a
    /// blocking thread (a token's session pool), or `None` when signing is CPU-only.
    fn concurrency_gate(&self) -> Option<&tokio::sync::Semaphore> {
        None
    }
    /// True when the key is usable right now (for readiness checks); software keys always are.
    fn is_available(&self) -> bool {
        true
    }
    /// True when [`Signer::sign_rsa_pss_sha256`] can sign with this key (an RSA key whose
    /// backend offers RSASSA-PSS).
    fn supports_rsa_pss(&self) -> bool {
        false
    }
    /// Signs `message` with RSASSA-PSS, SHA-256, MGF1-SHA-256 and a 32-byte salt (the TLS
    /// scheme `rsa_pss_rsae_sha256`). May block. Refused for keys that cannot.
    fn sign_rsa_pss_sha256(&self, message: &[u8]) -> Result<Vec<u8>> {
        let _ = message;
        Err(KeyError::Unsupported(format!(
            "{}: RSASSA-PSS signing is not available for this key",
            self.uri()
        )))
    }
}

/// Signing from async code without blocking the runtime: waits for the signer's
/// concurrency gate asynchronously, then signs on a blocking thread.
#[async_trait::async_trait]
pub trait AsyncSign {
    /// Signs `message` on a blocking thread.
    async fn sign_async(&self, message: Vec<u8>) -> Result<Vec<u8>>;
}

#[async_trait::async_trait]
impl AsyncSign for Arc<dyn Signer> {
    async fn sign_async(&self, message: Vec<u8>) -> Result<Vec<u8>> {
        let gated = match self.concurrency_gate() {
            // The session goes with the blocking call and comes back when the token returns,
            // even if this future is dropped first (a caller's deadline): a token that stops
            // answering never gets more calls than sessions.
            Some(gate) => {
                gate.acquire()
                    .await
                    .map_err(|_| KeyError::Crypto("signer is shutting down".into()))?
                    .forget();
                true
            }
            None => false,
        };
        let signer = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let signed = signer.sign(&message);
            if gated && let Some(gate) = signer.concurrency_gate() {
                gate.add_permits(1);
            }
            signed
        })
        .await
        .map_err(|e| KeyError::Crypto(format!("signing task failed: {e}")))?
    }
}

/// PKCS#11 protection attributes of a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyProtection {
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_ALWAYS_SENSITIVE.
    pub always_sensitive: bool,
    /// CKA_NEVER_EXTRACTABLE.
    pub never_extractable: bool,
    /// CKA_LOCAL (generated on the token).
    pub local: bool,
}

/// What a backend reports about one key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// The key's URI (never with a PIN value).
    #[serde(serialize_with = "serialize_display")]
    pub uri: KeyUri,
    /// The key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// Lower-case hex SHA-256 of the SubjectPublicKeyInfo DER.
    pub spki_sha256: String,
    /// Object label on a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Object id on a token, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Protection attributes (token keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protection: Option<KeyProtection>,
}

fn serialize_display<S: serde::Serializer>(
    v: &KeyUri,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A place keys live: creates keys, opens them by URI, lists them.
pub trait KeyBackend: Send + Sync {
    /// Creates a new key of `algorithm` at `uri`; refuses if one is already there.
    fn create(&self, uri: &KeyUri, algorithm: KeyAlgorithm) -> Result<Arc<dyn Signer>>;
    /// Opens the existing key at `uri`.
    fn open(&self, uri: &KeyUri) -> Result<Arc<dyn Signer>>;
    /// Describes the key at `uri` (algorithm, fingerprint, protection).
    fn describe(&self, uri: &KeyUri) -> Result<KeyInfo>;
    /// Lists the keys under `uri` (a token, or a directory for files).
    fn list(&self, uri: &KeyUri) -> Result<Vec<KeyInfo>>;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::time::Duration;

    use super::*;

    /// A key on a token with one session whose calls return only when told to.
    #[derive(Debug)]
    struct Held {
        gate: tokio::sync::Semaphore,
        entered: Mutex<Sender<()>>,
        release: Mutex<Receiver<()>>,
        uri: KeyUri,
    }

    impl Signer for Held {
        fn algorithm(&self) -> KeyAlgorithm {
            KeyAlgorithm::EcdsaP256
        }
        fn public_key_spki(&self) -> &[u8] {
            &[]
        }
        fn uri(&self) -> &KeyUri {
            &self.uri
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>> {
            let _ = self.entered.lock().map(|s| s.send(()));
            let _ = self.release.lock().map(|r| r.recv());
            Ok(vec![1])
        }
        fn concurrency_gate(&self) -> Option<&tokio::sync::Semaphore> {
            Some(&self.gate)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_abandoned_by_its_caller_keeps_the_session_until_the_token_returns() {
        let (entered_tx, entered) = channel();
        let (release, release_rx) = channel();
        let held = Held {
            gate: tokio::sync::Semaphore::new(1),
            entered: Mutex::new(entered_tx),
            release: Mutex::new(release_rx),
            uri: "file:/k".parse().unwrap(),
        };
        let signer: Arc<dyn Signer> = Arc::new(held);
        // The caller stops waiting while the token still holds the call.
        let first = tokio::time::timeout(Duration::from_millis(100), signer.sign_async(vec![0]));
        assert!(first.await.is_err(), "the first call returned");
        entered.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(signer.concurrency_gate().unwrap().available_permits(), 0);
        // A second call waits for the session instead of entering the token beside it.
        let second = tokio::spawn({
            let signer = Arc::clone(&signer);
            async move { signer.sign_async(vec![0]).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            entered.try_recv().is_err(),
            "a second call entered the token"
        );
        // The token returns the first call: its session serves the second.
        release.send(()).unwrap();
        entered.recv_timeout(Duration::from_secs(5)).unwrap();
        release.send(()).unwrap();
        assert_eq!(second.await.unwrap().unwrap(), vec![1]);
        assert_eq!(signer.concurrency_gate().unwrap().available_permits(), 1);
    }
}
