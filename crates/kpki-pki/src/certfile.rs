//! Certificate files as kubeadm reads them, and the chain check it makes before keeping one.
//!
//! A leaf's `.crt` holds the certificate first, then any intermediates towards its CA
//! (kubeadm's `TryLoadCertChainFromDisk`). A file is kept only when its chain reaches the CA
//! certificate the way Go's `x509.Verify` finds it: every link named by its issuer's exact
//! subject bytes and signed by the issuer's key, intermediates being CAs within their path
//! length, and every certificate — the CA included — inside its validity period at the time
//! of the check. kpki treats `NotAfter <= now` as expired (Go lets the last second pass).

use std::path::Path;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PkiError;

fn refused(msg: impl Into<String>) -> PkiError {
    PkiError::Refused(msg.into())
}

/// The DER certificates of a PEM file, first block first; `Ok(None)` when the file is absent.
/// Refuses a file with no block or with a block that is not a `CERTIFICATE`.
pub fn read(path: &Path) -> Result<Option<Vec<Vec<u8>>>, PkiError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refused(format!("{}: {e}", path.display()))),
    };
    let blocks = pem::parse_many(&bytes)
        .map_err(|e| refused(format!("{}: not a PEM certificate ({e})", path.display())))?;
    if blocks.is_empty() {
        return Err(refused(format!(
            "{}: not a PEM certificate (no PEM block)",
            path.display()
        )));
    }
    let mut certs = Vec::with_capacity(blocks.len());
    for block in blocks {
        if block.tag() != "CERTIFICATE" {
            return Err(refused(format!(
                "{}: PEM block is {:?}, not CERTIFICATE",
                path.display(),
                block.tag()
            )));
        }
        certs.push(block.into_contents());
    }
    Ok(Some(certs))
}

/// The certificates of `path` (see [`read`]), refusing an absent file.
pub fn read_existing(path: &Path) -> Result<Vec<Vec<u8>>, PkiError> {
    read(path)?.ok_or_else(|| refused(format!("{}: No such file or directory", path.display())))
}

fn parse<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, ChainError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| ChainError::Invalid(format!("{what}: malformed certificate ({e})")))
}

/// Why a chain is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// A certificate is outside its validity period at the time of the check; `of_ca` when it
    /// is the CA certificate itself.
    Period {
        /// One line naming the file and the dates.
        message: String,
        /// The CA certificate is the one out of its period.
        of_ca: bool,
    },
    /// Any other problem (malformed, not signed by the CA, an intermediate that is no CA).
    Invalid(String),
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainError::Period { message, .. } | ChainError::Invalid(message) => {
                f.write_str(message)
            }
        }
    }
}

impl From<ChainError> for PkiError {
    fn from(e: ChainError) -> PkiError {
        PkiError::Refused(e.to_string())
    }
}

fn stamp(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Refuses `cert` (named `what` in the message) unless `now` lies in its validity period:
/// not before its NotBefore, and before its NotAfter.
pub fn check_period(
    what: &str,
    cert: &X509Certificate<'_>,
    now: OffsetDateTime,
) -> Result<(), String> {
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.to_datetime(),
        validity.not_after.to_datetime(),
    );
    if now < not_before {
        return Err(format!("{what}: not valid before {}", stamp(not_before)));
    }
    if not_after <= now {
        return Err(format!("{what}: expired at {}", stamp(not_after)));
    }
    Ok(())
}

/// True when `issuer` names and signed `cert`.
fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.tbs_certificate.issuer.as_raw() == issuer.tbs_certificate.subject.as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

/// True when `cert` may sign certificates with `below` intermediates under it.
fn may_issue(cert: &X509Certificate<'_>, below: usize) -> bool {
    let key_usage_ok = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    let path_ok = match cert.basic_constraints() {
        Ok(Some(bc)) => bc
            .value
            .path_len_constraint
            .is_none_or(|max| below <= max as usize),
        _ => false,
    };
    cert.is_ca() && key_usage_ok && path_ok
}

/// Verifies the chain read from `path` (leaf first, then intermediates in any order) up to the
/// CA certificate `ca_der` (read from `ca_path`) at time `now`.
pub fn verify_chain(
    path: &Path,
    chain: &[Vec<u8>],
    ca_path: &Path,
    ca_der: &[u8],
    now: OffsetDateTime,
) -> Result<(), ChainError> {
    let period = |of_ca: bool| move |message: String| ChainError::Period { message, of_ca };
    let file = path.display().to_string();
    let ca_name = ca_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ca_path.display().to_string());
    let ca = parse(&ca_path.display().to_string(), ca_der)?;
    let certs = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            let what = if i == 0 {
                file.clone()
            } else {
                format!("{file} (certificate {} of the chain)", i + 1)
            };
            parse(&what, der).map(|c| (what, c))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(((leaf_what, leaf), intermediates)) = certs.split_first() else {
        return Err(ChainError::Invalid(format!("{file}: no certificate")));
    };
    let mut used = vec![false; intermediates.len()];
    let (mut what, mut current) = (leaf_what, leaf);
    for below in 0..=intermediates.len() {
        check_period(what, current, now).map_err(period(false))?;
        if issued_by(current, &ca) {
            if !may_issue(&ca, below) {
                return Err(ChainError::Invalid(format!(
                    "{file}: {} may not sign this chain (not a CA, or its path length is exceeded)",
                    ca_path.display()
                )));
            }
            return check_period(&ca_path.display().to_string(), &ca, now).map_err(period(true));
        }
        let next = intermediates
            .iter()
            .enumerate()
            .find(|(j, (_, c))| !used[*j] && issued_by(current, c) && may_issue(c, below));
        match next {
            Some((j, (w, c))) => {
                used[j] = true;
                what = w;
                current = c;
            }
            None => break,
        }
    }
    Err(ChainError::Invalid(format!(
        "{file}: not signed by {ca_name}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_refuses_non_certificate_blocks_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.crt");
        assert!(read(&p).unwrap().is_none());
        std::fs::write(&p, "").unwrap();
        assert!(read(&p).is_err());
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = read(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("\"RSA PRIVATE KEY\", not CERTIFICATE"), "{e}");
    }
}
