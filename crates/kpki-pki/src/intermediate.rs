//! `kpki ca csr` and `kpki ca install`: a CA signed by an external root (the cluster CA as an
//! intermediate of an enterprise root).
//!
//! `csr` makes the CA key on its backend (or takes it there) and writes a PKCS#10 request
//! asking for the CA extensions. `install` takes the certificate the root's operators
//! returned and its chain, checks that the certificate holds that key, is a CA, and chains
//! through the given certificates up to a self-signed root with every path length
//! constraint kept, then writes the CA certificate file and its chain file beside it (the
//! layout is described in `chain`). Nothing is written when any check fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kpki_signer::{KeyAlgorithm, KeyUri, RcgenSigner, Signer, spki};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyUsagePurpose};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authority::open_key;
use crate::keygen::create_keys;
use crate::keystore::KeyStore;
use crate::store::{self, CERT_MODE};
use crate::subject::{Attr, Subject};
use crate::{PkiError, certfile, chain};

/// Parses a subject written as OpenSSL's `-subj` takes it: `/O=Example Bank/CN=kubernetes`
/// (attributes `CN O OU C ST L street postalCode serialNumber`; `\/` for a slash in a value).
/// Each attribute at most once.
pub fn parse_subject(text: &str) -> Result<Subject, PkiError> {
    let bad = |why: String| PkiError::Malformed(format!("subject {text:?}: {why}"));
    let rest = text
        .strip_prefix('/')
        .ok_or_else(|| bad("must start with '/', as in /O=Example/CN=kubernetes".into()))?;
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err(bad("ends with a lone backslash".into())),
            },
            '/' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let mut subject = Subject::default();
    let mut seen: Vec<Attr> = Vec::new();
    for part in parts {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not NAME=value")))?;
        let attr = Attr::from_short_name(name.trim())
            .ok_or_else(|| bad(format!("unknown attribute {name:?}")))?;
        if value.is_empty() {
            return Err(bad(format!("{name} has an empty value")));
        }
        if seen.contains(&attr) {
            return Err(bad(format!("{name} given twice")));
        }
        seen.push(attr);
        subject.push(attr, value);
    }
    if subject.values(Attr::CommonName).next().is_none() {
        return Err(bad("has no CN".into()));
    }
    Ok(subject)
}

/// What `csr` is asked.
#[derive(Debug, Clone)]
pub struct CaRequest {
    /// The CA's subject.
    pub subject: Subject,
    /// Where its key lives (made there if absent).
    pub key: KeyUri,
    /// The algorithm of a key made now.
    pub algorithm: KeyAlgorithm,
    /// The request file to write.
    pub csr: PathBuf,
}

/// What `csr` did.
#[derive(Debug, Clone)]
pub struct Requested {
    /// The key was made now (else taken from its backend).
    pub key_created: bool,
    /// Lowercase hex SHA-256 of the key's SubjectPublicKeyInfo.
    pub spki_sha256: String,
}

/// The request's DER: `subject`, `key`'s public key, CA extensions requested
/// (basicConstraints CA:TRUE; keyUsage digitalSignature, keyCertSign, cRLSign), signed by
/// `key`.
fn request_der(subject: &Subject, key: &Arc<dyn Signer>) -> Result<Vec<u8>, PkiError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject.to_rcgen();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let signer = RcgenSigner::new(Arc::clone(key))?;
    let csr = p
        .serialize_request(&signer)
        .map_err(|e| signer.explain(e))?;
    Ok(csr.der().to_vec())
}

/// Refuses an existing request at `path` for another key than `spki`.
fn check_existing_request(path: &Path, spki: &[u8]) -> Result<(), PkiError> {
    let bytes = match kpki_atomic::read::regular_file(path, kpki_atomic::read::PEM_MAX) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PkiError::io(path, e)),
    };
    let same_key = pem::parse(&bytes)
        .ok()
        .and_then(|p| {
            X509CertificationRequest::from_der(p.contents())
                .ok()
                .map(|(_, r)| r.certification_request_info.subject_pki.raw == spki)
        })
        .unwrap_or(false);
    if same_key {
        Ok(())
    } else {
        Err(PkiError::Refused(format!(
            "{}: exists and is not a request for this key; move it away",
            path.display()
        )))
    }
}

/// The CA key of `req` when it exists, after the refusals of [`csr`]: a request already at
/// the path for another key, or for a key that does not exist.
fn csr_checks(keys: &KeyStore, req: &CaRequest) -> Result<Option<Arc<dyn Signer>>, PkiError> {
    let existing = open_key(keys, &req.key)?;
    if let Some(k) = &existing {
        check_existing_request(&req.csr, k.public_key_spki())?;
    } else if req.csr.exists() {
        return Err(PkiError::Refused(format!(
            "{}: exists but the key {} does not; move the request away",
            req.csr.display(),
            req.key
        )));
    }
    Ok(existing)
}

/// What [`csr`] would do for `req`, without doing it: the same refusals; the key is opened,
/// never made; nothing is written. `key_created` says the key would be made, and
/// `spki_sha256` is empty then.
pub fn csr_plan(keys: &KeyStore, req: &CaRequest) -> Result<Requested, PkiError> {
    let existing = csr_checks(keys, req)?;
    Ok(Requested {
        key_created: existing.is_none(),
        spki_sha256: existing
            .map(|k| spki::sha256_hex(k.public_key_spki()))
            .unwrap_or_default(),
    })
}

/// Writes the request `req` asks for, making the key when it is absent. A request already at
/// the path is replaced only when it is for the same key.
pub fn csr(keys: &KeyStore, req: &CaRequest) -> Result<Requested, PkiError> {
    let existing = csr_checks(keys, req)?;
    let (key, key_created) = match existing {
        Some(k) => (k, false),
        None => {
            let made = create_keys(keys, req.algorithm, vec![req.key.clone()])?
                .into_iter()
                .next()
                .ok_or_else(|| PkiError::internal("no key made"))?;
            (made.persist()?, true)
        }
    };
    let der = request_der(&req.subject, &key)?;
    let text = crate::x509::to_pem("CERTIFICATE REQUEST", &der);
    store::replace(&req.csr, text.as_bytes(), CERT_MODE)?;
    Ok(Requested {
        key_created,
        spki_sha256: spki::sha256_hex(key.public_key_spki()),
    })
}

/// What `install` is asked.
#[derive(Debug, Clone)]
pub struct Install {
    /// The signed CA certificate (PEM; more certificates after it are taken as its chain).
    pub cert: PathBuf,
    /// The issuers up to the root (PEM, any order).
    pub chain: Option<PathBuf>,
    /// The CA key.
    pub key: KeyUri,
    /// The CA certificate file to write (`ca.crt`); the chain goes to `chain::chain_path`.
    pub target: PathBuf,
    /// Check everything and write nothing (`written` then says what would be written).
    pub dry_run: bool,
}

/// What `install` did and found.
#[derive(Debug, Clone)]
pub struct Installed {
    /// Written now, or in a dry run to be written (else the same certificate and chain were
    /// there: nothing written).
    pub written: bool,
    /// The chain file, when the CA is not self-signed.
    pub chain_file: Option<PathBuf>,
    /// Subjects from the CA up to the root.
    pub path: Vec<String>,
    /// The CA's own path length constraint.
    pub path_len: Option<u32>,
    /// The CA or an issuer above it carries name constraints (enforced at issuance).
    pub name_constraints: bool,
    /// Lowercase hex SHA-256 of the CA key's SubjectPublicKeyInfo.
    pub spki_sha256: String,
}

fn subject_of(der: &[u8]) -> String {
    X509Certificate::from_der(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default()
}

/// Checks and installs the CA certificate `req` names (see the module text); `now` is the
/// time the validity periods are checked at.
pub fn install(keys: &KeyStore, req: &Install, now: OffsetDateTime) -> Result<Installed, PkiError> {
    let mut given = certfile::read_existing(&req.cert)?.into_iter();
    let ca_der = given
        .next()
        .ok_or_else(|| PkiError::Malformed(format!("{}: no certificate", req.cert.display())))?;
    let mut given: Vec<Vec<u8>> = given.collect();
    let chain_name = match &req.chain {
        Some(p) => {
            given.extend(certfile::read_existing(p)?);
            p.display().to_string()
        }
        None => "--chain (none given)".to_string(),
    };
    let key = open_key(keys, &req.key)?.ok_or_else(|| {
        PkiError::Missing(format!(
            "the key {} does not exist; `kpki ca csr` makes it",
            req.key
        ))
    })?;
    let cert = certfile::parse_at(&req.cert, &ca_der)?;
    if cert.public_key().raw != key.public_key_spki() {
        return Err(PkiError::Mismatch(format!(
            "{}: the certificate does not match the key {}",
            req.cert.display(),
            req.key
        )));
    }
    let path_len = cert
        .basic_constraints()
        .ok()
        .flatten()
        .and_then(|bc| bc.value.path_len_constraint);
    let ordered = chain::order_to_root(&ca_der, &given, &chain_name, now)
        .map_err(|e| e.in_file(&req.cert))?;
    let name_constraints = !chain::name_rules(&ca_der, &ordered)?.is_empty();
    let chain_file = chain::chain_path(&req.target);
    let chain_text: String = ordered
        .iter()
        .map(|d| crate::x509::to_pem("CERTIFICATE", d))
        .collect();
    let mut written = true;
    match certfile::read(&req.target)? {
        Some(existing) => {
            let have_chain = chain::read(&req.target)?;
            if existing.first() == Some(&ca_der) && have_chain == ordered {
                written = false;
            } else {
                return Err(PkiError::Refused(format!(
                    "{}: a different CA certificate (or chain) is installed; kpki never replaces one, move it away first",
                    req.target.display()
                )));
            }
        }
        None if req.dry_run => {
            if ordered.is_empty() && chain_file.exists() {
                return Err(PkiError::Refused(format!(
                    "{}: a chain file is there but the certificate is self-signed; move it away",
                    chain_file.display()
                )));
            }
        }
        None => {
            if ordered.is_empty() {
                if chain_file.exists() {
                    return Err(PkiError::Refused(format!(
                        "{}: a chain file is there but the certificate is self-signed; move it away",
                        chain_file.display()
                    )));
                }
            } else {
                store::replace(&chain_file, chain_text.as_bytes(), CERT_MODE)?;
            }
            let text = crate::x509::to_pem("CERTIFICATE", &ca_der);
            store::create(&req.target, text.as_bytes(), CERT_MODE)?;
        }
    }
    let mut path = vec![subject_of(&ca_der)];
    path.extend(ordered.iter().map(|d| subject_of(d)));
    Ok(Installed {
        written,
        chain_file: (!ordered.is_empty()).then_some(chain_file),
        path,
        path_len,
        name_constraints,
        spki_sha256: spki::sha256_hex(key.public_key_spki()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_as_openssl_writes_them() {
        // (text, Ok(display) or Err(fragment))
        let table: &[(&str, Result<&str, &str>)] = &[
            ("/CN=kubernetes", Ok("CN=kubernetes")),
            (
                "/C=CH/O=Example Bank/OU=K8s/CN=kubernetes",
                Ok("C=CH, O=Example Bank, OU=K8s, CN=kubernetes"),
            ),
            ("/o=a\\/b/cn=x", Ok("O=a/b, CN=x")),
            ("CN=x", Err("must start with '/'")),
            ("/O=a", Err("has no CN")),
            ("/CN=a/CN=b", Err("CN given twice")),
            ("/XX=a/CN=b", Err("unknown attribute \"XX\"")),
            ("/CN=", Err("CN has an empty value")),
            ("/CN", Err("is not NAME=value")),
            ("/CN=a\\", Err("lone backslash")),
        ];
        for (text, want) in table {
            match (parse_subject(text), want) {
                (Ok(s), Ok(w)) => assert_eq!(s.display(), *w, "{text}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{text}: {e}"),
                (got, want) => panic!("{text}: got {:?}, want {want:?}", got.map(|s| s.display())),
            }
        }
    }
}
