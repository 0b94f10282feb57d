//! `kpki ca create`: a self-signed CA (kubeadm's CA profile) for any purpose, whose key is
//! made on — or taken from — any backend, its certificate written beside. Running it again
//! changes nothing when the certificate and the key already match.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kpki_signer::spki;
use kpki_signer::{KeyAlgorithm, KeyUri, Signer};
use time::OffsetDateTime;

use crate::PkiError;
use crate::authority::{open_key, signing_cert};
use crate::keygen::create_keys;
use crate::keystore::KeyStore;
use crate::store::{self, CERT_MODE};
use crate::x509;

/// What to create.
#[derive(Debug, Clone)]
pub struct NewCa {
    /// The CA's common name (also its DNS SAN, as kubeadm's CAs carry).
    pub cn: String,
    /// Where its key lives (made there if absent).
    pub key: KeyUri,
    /// The algorithm of a key made now.
    pub algorithm: KeyAlgorithm,
    /// The certificate's validity.
    pub validity: Duration,
    /// The certificate file to write.
    pub cert: PathBuf,
}

/// What `create` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Made a key and the certificate.
    Created,
    /// Took the existing key and made the certificate.
    KeyTaken,
    /// The certificate and key were there and match: nothing written.
    Exists,
}

/// The result: what happened and the key's SHA-256 SPKI fingerprint.
#[derive(Debug, Clone)]
pub struct Created {
    /// What happened.
    pub outcome: Outcome,
    /// Lowercase hex SHA-256 of the CA key's SubjectPublicKeyInfo.
    pub spki_sha256: String,
}

/// What [`create`] does for `ca`, decided from what exists: the existing key (opened) and
/// the outcome. An existing certificate must match the key (else a mismatch); an existing
/// certificate without its key is refused.
fn decide(keys: &KeyStore, ca: &NewCa) -> Result<(Option<Arc<dyn Signer>>, Outcome), PkiError> {
    let existing_key = open_key(keys, &ca.key)?;
    if ca.cert.exists() {
        let Some(key) = existing_key else {
            return Err(PkiError::Missing(format!(
                "{}: the certificate exists but its key {} does not; move the certificate away to make a new CA",
                ca.cert.display(),
                ca.key
            )));
        };
        // Refuses a certificate that does not match the key, or is not a CA.
        signing_cert(&ca.cert, Some(key.as_ref()))?;
        return Ok((Some(key), Outcome::Exists));
    }
    Ok(match existing_key {
        Some(k) => (Some(k), Outcome::KeyTaken),
        None => (None, Outcome::Created),
    })
}

/// What [`create`] would do for `ca`, without doing it: the outcome, and the fingerprint of
/// the key when it exists already. Writes nothing and makes no key.
pub fn plan(keys: &KeyStore, ca: &NewCa) -> Result<(Outcome, Option<String>), PkiError> {
    let (key, outcome) = decide(keys, ca)?;
    Ok((outcome, key.map(|k| spki::sha256_hex(k.public_key_spki()))))
}

/// Creates the CA `ca` describes. An existing certificate must match the key (else a
/// mismatch, nothing written); an existing certificate without its key is refused.
pub fn create(keys: &KeyStore, ca: &NewCa) -> Result<Created, PkiError> {
    let (key, outcome): (Arc<dyn Signer>, Outcome) = match decide(keys, ca)? {
        (Some(key), Outcome::Exists) => {
            return Ok(Created {
                outcome: Outcome::Exists,
                spki_sha256: spki::sha256_hex(key.public_key_spki()),
            });
        }
        (Some(k), outcome) => (k, outcome),
        (None, _) => {
            let made = create_keys(keys, ca.algorithm, vec![ca.key.clone()])?
                .into_iter()
                .next()
                .ok_or_else(|| PkiError::internal("no key made"))?;
            (made.persist()?, Outcome::Created)
        }
    };
    let now = OffsetDateTime::now_utc();
    let params = x509::ca_params(&ca.cn, key.public_key_spki(), now, ca.validity)?;
    let cert = x509::self_sign(params, Arc::clone(&key))?;
    if let Some(dir) = ca.cert.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::io(dir, e))?;
    }
    store::create(&ca.cert, cert.pem.as_bytes(), CERT_MODE)?;
    Ok(Created {
        outcome,
        spki_sha256: spki::sha256_hex(key.public_key_spki()),
    })
}
