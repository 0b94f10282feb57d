//! Certificate files as kubeadm reads them, and the chain check it makes before keeping one.
//!
//! A leaf's `.crt` holds the certificate first, then any intermediates towards its CA
//! (kubeadm's `TryLoadCertChainFromDisk`). A file is kept only when its chain reaches the CA
//! certificate the way Go's `x509.Verify` finds it: every link named by its issuer's exact
//! subject bytes and signed by the issuer's key, intermediates being CAs within their path
//! length, and every certificate — the CA included — inside its validity period at the time
//! of the check. kpki treats `NotAfter <= now` as expired (Go lets the last second pass).
//!
//! A CA's `.crt` may hold several certificates (a bundle, as while a CA is rotated). Every
//! command takes the same one as the CA (`signing_cert`): the certificate whose public key
//! is the CA key's; with no key at hand (an external CA), the first one, as kubeadm reads it.

use std::net::IpAddr;
use std::path::Path;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::PkiError;
use crate::sans::AltNames;

fn malformed(msg: String) -> PkiError {
    PkiError::Malformed(msg)
}

/// The DER certificates of a PEM file, first block first; `Ok(None)` when the file is absent.
/// Refuses a file with no block or with a block that is not a `CERTIFICATE`.
pub fn read(path: &Path) -> Result<Option<Vec<Vec<u8>>>, PkiError> {
    let bytes = match kpki_atomic::read::regular_file(path, kpki_atomic::read::PEM_MAX) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PkiError::io(path, e)),
    };
    let blocks = pem::parse_many(&bytes)
        .map_err(|e| malformed(format!("{}: not a PEM certificate ({e})", path.display())))?;
    if blocks.is_empty() {
        return Err(malformed(format!(
            "{}: not a PEM certificate (no PEM block)",
            path.display()
        )));
    }
    let mut certs = Vec::with_capacity(blocks.len());
    for block in blocks {
        if block.tag() != "CERTIFICATE" {
            return Err(malformed(format!(
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
pub(crate) fn read_existing(path: &Path) -> Result<Vec<Vec<u8>>, PkiError> {
    read(path)?.ok_or_else(|| absent(path))
}

/// The error of a certificate file `path` that does not exist (worded as the system words it).
pub(crate) fn absent(path: &Path) -> PkiError {
    PkiError::Missing(format!("{}: No such file or directory", path.display()))
}

/// The signing certificate among the `certs` of the CA file `path`: the first whose public key
/// is `key_spki`, or, with no key (an external CA), the first certificate. Refused when a
/// certificate is malformed, when none matches the key, or when the chosen one is no CA.
pub(crate) fn signing_cert<'a>(
    path: &Path,
    certs: &'a [Vec<u8>],
    key_spki: Option<&[u8]>,
) -> Result<&'a [u8], SigningCertError> {
    let mut chosen = None;
    for (i, der) in certs.iter().enumerate() {
        let cert = X509Certificate::from_der(der)
            .map(|(_, c)| c)
            .map_err(|e| {
                let which = if certs.len() > 1 {
                    format!(" (certificate {} of {})", i + 1, certs.len())
                } else {
                    String::new()
                };
                SigningCertError::Malformed(format!(
                    "{}{which}: malformed certificate ({e})",
                    path.display()
                ))
            })?;
        let matches = key_spki.is_none_or(|spki| cert.public_key().raw == spki);
        if chosen.is_none() && matches {
            chosen = Some((der.as_slice(), cert.is_ca()));
        }
    }
    match chosen {
        Some((der, true)) => Ok(der),
        Some((_, false)) => Err(SigningCertError::NotCa(format!(
            "{}: not a CA certificate",
            path.display()
        ))),
        None if certs.is_empty() => Err(SigningCertError::Malformed(format!(
            "{}: no certificate",
            path.display()
        ))),
        None => Err(SigningCertError::NoMatch),
    }
}

/// Why [`signing_cert`] found no signing certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SigningCertError {
    /// A certificate of the file cannot be parsed, or the file holds none (one line).
    Malformed(String),
    /// The certificate chosen is not a CA certificate (one line).
    NotCa(String),
    /// No certificate of the file holds the key's public key; the caller names the key.
    NoMatch,
}

/// The certificate `der` read from `path`; refused, naming the file, when it does not parse.
pub(crate) fn parse_at<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, PkiError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| malformed(format!("{}: malformed certificate ({e})", path.display())))
}

/// The DNS and IP SANs of `cert`, in certificate order (other kinds, and IP entries that are
/// neither 4 nor 16 bytes long, are left out). A SAN extension that does not parse reads as none.
pub(crate) fn alt_names(cert: &X509Certificate<'_>) -> AltNames {
    let mut out = AltNames::default();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                GeneralName::IPAddress(b) => out.ips.extend(ip_of(b)),
                _ => {}
            }
        }
    }
    out
}

/// The address of an IP SAN's bytes (4 for IPv4, 16 for IPv6).
pub(crate) fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn parse<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, ChainError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| ChainError::Invalid(format!("{what}: malformed certificate ({e})")))
}

/// Why a chain is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainError {
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
        match e {
            ChainError::Period { message, .. } => PkiError::Refused(message),
            ChainError::Invalid(message) => PkiError::Mismatch(message),
        }
    }
}

fn stamp(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Refuses `cert` (named `what` in the message) unless `now` lies in its validity period:
/// not before its NotBefore, and before its NotAfter.
fn check_period(what: &str, cert: &X509Certificate<'_>, now: OffsetDateTime) -> Result<(), String> {
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
pub(crate) fn verify_chain(
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
pub(crate) mod tests {
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

    /// Keys and CAs made in memory, for the tests of this crate.
    pub(crate) mod chains {
        use std::sync::Arc;
        use std::time::Duration;

        use kpki_signer::{KeyAlgorithm, KeyUri, Signer};
        use time::OffsetDateTime;

        use crate::catalogue::Usage;
        use crate::certfile::{ChainError, verify_chain};
        use crate::sans::AltNames;
        use crate::subject::{Attr, Subject};
        use crate::x509::{self, CaSigner, Draft, Profile};

        /// A new P-256 software key.
        pub(crate) fn key() -> Arc<dyn Signer> {
            Arc::new(
                kpki_soft::SoftKey::generate(KeyUri::file("/dev/null"), KeyAlgorithm::EcdsaP256)
                    .unwrap()
                    .0,
            )
        }

        /// A CA: its certificate and issuer.
        pub(crate) struct Ca {
            /// The certificate, DER.
            pub(crate) der: Vec<u8>,
            signer: CaSigner,
        }

        /// A self-signed CA with key `k`, valid for `period` from `start`.
        pub(crate) fn root(start: OffsetDateTime, period: Duration, k: Arc<dyn Signer>) -> Ca {
            let params = x509::ca_params("root", k.public_key_spki(), start, period).unwrap();
            let der = x509::self_sign(params, Arc::clone(&k)).unwrap().der;
            let signer = CaSigner::new(&der, k).unwrap();
            Ca { der, signer }
        }

        fn intermediate(parent: &Ca, cn: &str, start: OffsetDateTime, as_ca: bool) -> Ca {
            let k = key();
            let mut params =
                x509::ca_params(cn, k.public_key_spki(), start, Duration::from_secs(86400))
                    .unwrap();
            if !as_ca {
                params.is_ca = rcgen::IsCa::ExplicitNoCa;
            }
            params.use_authority_key_identifier_extension = true;
            let mut subject = Subject::default();
            subject.push(Attr::CommonName, cn);
            let der = parent
                .signer
                .issue(Draft::new(params, subject), Arc::clone(&k))
                .unwrap()
                .der;
            let signer = CaSigner::new(&der, k).unwrap();
            Ca { der, signer }
        }

        fn leaf(ca: &Ca, start: OffsetDateTime, period: Duration) -> Vec<u8> {
            let profile = Profile {
                cn: "leaf".into(),
                orgs: vec![],
                usages: vec![Usage::ClientAuth],
                sans: AltNames::default(),
            };
            let draft = x509::leaf_params(&profile, start, period).unwrap();
            ca.signer.issue(draft, key()).unwrap().der
        }

        #[test]
        fn chains_are_checked_as_go_verifies_them() {
            let now = x509::whole_seconds(OffsetDateTime::now_utc());
            let day = Duration::from_secs(86400);
            let ca = root(now, day * 10, key());
            let int = intermediate(&ca, "int", now, true);
            let int2 = intermediate(&int, "int2", now, true);
            let not_ca = intermediate(&ca, "not-ca", now, false);
            let other = root(now, day, key());
            let expired_ca = root(now - day * 3, day, key());
            let l_ca = leaf(&ca, now, day);
            let l_int = leaf(&int, now, day);
            let l_int2 = leaf(&int2, now, day);
            let l_not_ca = leaf(&not_ca, now, day);
            let l_other = leaf(&other, now, day);
            let l_expired = leaf(&ca, now - day * 2, day);
            let l_ends_now = leaf(&ca, now - day, day);
            let l_future = leaf(&ca, now + day, day);
            let l_under_expired = leaf(&expired_ca, now - day * 3, day * 9);
            type Chain = Vec<Vec<u8>>;
            let ok: &[(&str, Chain, &[u8])] = &[
                ("leaf", vec![l_ca.clone()], &ca.der),
                ("leaf+int", vec![l_int.clone(), int.der.clone()], &ca.der),
                (
                    "leaf+int+root",
                    vec![l_int.clone(), int.der.clone(), ca.der.clone()],
                    &ca.der,
                ),
                (
                    "leaf+int+int2 (any order)",
                    vec![l_int2.clone(), int.der.clone(), int2.der.clone()],
                    &ca.der,
                ),
                ("leaf+unused", vec![l_ca.clone(), int.der.clone()], &ca.der),
            ];
            let p = std::path::Path::new("x.crt");
            let c = std::path::Path::new("ca.crt");
            for (name, chain, ca_der) in ok {
                assert_eq!(verify_chain(p, chain, c, ca_der, now), Ok(()), "{name}");
            }
            let period = |of_ca| move |e: &ChainError| matches!(e, ChainError::Period { of_ca: o, .. } if *o == of_ca);
            let invalid = |e: &ChainError| matches!(e, ChainError::Invalid(m) if m.contains("not signed by ca.crt"));
            type Check = Box<dyn Fn(&ChainError) -> bool>;
            let bad: Vec<(&str, Chain, &[u8], Check)> = vec![
                (
                    "leaf without its intermediate",
                    vec![l_int.clone()],
                    &ca.der,
                    Box::new(invalid),
                ),
                (
                    "other CA",
                    vec![l_other.clone()],
                    &ca.der,
                    Box::new(invalid),
                ),
                (
                    "intermediate not a CA",
                    vec![l_not_ca.clone(), not_ca.der.clone()],
                    &ca.der,
                    Box::new(invalid),
                ),
                (
                    "expired",
                    vec![l_expired.clone()],
                    &ca.der,
                    Box::new(period(false)),
                ),
                (
                    "NotAfter == now",
                    vec![l_ends_now.clone()],
                    &ca.der,
                    Box::new(period(false)),
                ),
                (
                    "not yet valid",
                    vec![l_future.clone()],
                    &ca.der,
                    Box::new(period(false)),
                ),
                (
                    "CA expired",
                    vec![l_under_expired.clone()],
                    &expired_ca.der,
                    Box::new(period(true)),
                ),
            ];
            for (name, chain, ca_der, check) in bad {
                let e = verify_chain(p, &chain, c, ca_der, now).expect_err(name);
                assert!(check(&e), "{name}: {e}");
            }
        }
    }
}
