//! A CA that is an intermediate of an external root, and where its chain goes.
//!
//! The CA certificate file (`ca.crt`, `etcd/ca.crt`, `front-proxy-ca.crt`) holds the cluster
//! CA itself, as kubeadm expects; the certificates above it, nearest issuer first and the
//! self-signed root last, are kept beside it in `<base>-chain.crt` (`ca-chain.crt`,
//! `etcd/ca-chain.crt`, `front-proxy-ca-chain.crt`). From those two files:
//!
//! - every leaf certificate file the CA issues holds the leaf, the CA and the intermediates
//!   above it up to (not including) the root ([`served`]): servers send it whole, so clients
//!   that hold only the root verify them, and clients send it whole too;
//! - kubeconfigs' `certificate-authority-data` holds the CA and its chain up to the root
//!   ([`trust_pem`]): Go's verifier takes any certificate of that pool as an anchor, and
//!   tools that insist on a self-signed anchor (OpenSSL) find the root;
//! - `ca.crt` stays the CA alone: it is the client CA of kube-apiserver, the kubelet and etcd,
//!   and a root there would let every certificate the enterprise root ever issued log in.
//!
//! A self-signed CA has no chain file, and everything stays as kubeadm writes it.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PkiError;
use crate::certfile;
use crate::constraints::{self, NameRules};
use crate::x509;

/// The chain file of the CA certificate file `crt`: `ca.crt` → `ca-chain.crt`.
pub fn chain_path(crt: &Path) -> PathBuf {
    let name = crt
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".crt").unwrap_or(&name);
    crt.with_file_name(format!("{stem}-chain.crt"))
}

/// The chain kept beside the CA file `crt` (nearest issuer first); empty when there is none.
pub(crate) fn read(crt: &Path) -> Result<Vec<Vec<u8>>, PkiError> {
    Ok(certfile::read(&chain_path(crt))?.unwrap_or_default())
}

fn parse<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, PkiError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| PkiError::Malformed(format!("{what}: malformed certificate ({e})")))
}

fn self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.tbs_certificate.issuer.as_raw() == cert.tbs_certificate.subject.as_raw()
        && cert.verify_signature(None).is_ok()
}

/// The certificates a leaf file holds after the leaf: the CA and the intermediates above it,
/// without the self-signed root. Empty for a self-signed CA (no chain).
pub(crate) fn served(ca_der: &[u8], chain: &[Vec<u8>]) -> Vec<Vec<u8>> {
    if chain.is_empty() {
        return Vec::new();
    }
    let mut out = vec![ca_der.to_vec()];
    let last_is_root = chain
        .last()
        .and_then(|d| X509Certificate::from_der(d).ok())
        .is_some_and(|(_, c)| self_signed(&c));
    let upto = if last_is_root {
        chain.len() - 1
    } else {
        chain.len()
    };
    out.extend(chain[..upto].iter().cloned());
    out
}

/// A leaf's file text: `leaf_pem` then [`served`] as PEM.
pub(crate) fn leaf_file(leaf_pem: &str, ca_der: &[u8], chain: &[Vec<u8>]) -> String {
    let mut out = leaf_pem.to_string();
    for der in served(ca_der, chain) {
        out.push_str(&x509::to_pem("CERTIFICATE", &der));
    }
    out
}

/// What clients hold to trust servers of this CA (kubeconfigs' `certificate-authority-data`):
/// every certificate of the CA file (`bundle`: the CA, or the old and new CA while a rotation
/// trusts both), then the CA's chain up to the root.
pub(crate) fn trust_pem(bundle: &[Vec<u8>], chain: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in bundle.iter().chain(chain) {
        out.push_str(&x509::to_pem("CERTIFICATE", der));
    }
    out
}

/// Refuses a chain file that does not belong to the CA certificate file `crt` (whose
/// signing certificate is `ca_der`, `None` when the file is absent): each certificate must
/// be named by, and signed with the key of, the next one, starting from the CA. A chain left
/// without its CA (an install that stopped half-way) is refused too: `kpki ca install` again
/// completes it.
pub(crate) fn check_links(
    crt: &Path,
    ca_der: Option<&[u8]>,
    chain: &[Vec<u8>],
) -> Result<(), PkiError> {
    if chain.is_empty() {
        return Ok(());
    }
    let file = chain_path(crt);
    let Some(ca_der) = ca_der else {
        return Err(PkiError::Missing(format!(
            "{}: exists but {} does not; run `kpki ca install` again, or remove the chain file",
            file.display(),
            crt.display()
        )));
    };
    let mut current = parse(&crt.display().to_string(), ca_der)?;
    for (i, der) in chain.iter().enumerate() {
        let what = format!("{} (certificate {})", file.display(), i + 1);
        let issuer = parse(&what, der)?;
        if current.tbs_certificate.issuer.as_raw() != issuer.tbs_certificate.subject.as_raw()
            || current.verify_signature(Some(issuer.public_key())).is_err()
        {
            return Err(PkiError::Mismatch(format!(
                "{what}: did not issue {} ({}); the chain file does not belong to {}",
                current.subject(),
                if i == 0 {
                    "the CA"
                } else {
                    "the certificate before it"
                },
                crt.display()
            )));
        }
        current = issuer;
    }
    Ok(())
}

/// The name constraints of the CA `ca_der` and of every issuer of its `chain`.
pub(crate) fn name_rules(ca_der: &[u8], chain: &[Vec<u8>]) -> Result<Vec<NameRules>, PkiError> {
    let mut rules = Vec::new();
    for (i, der) in std::iter::once(ca_der)
        .chain(chain.iter().map(Vec::as_slice))
        .enumerate()
    {
        let what = if i == 0 {
            "CA certificate".to_string()
        } else {
            format!("chain certificate {i}")
        };
        let cert = parse(&what, der)?;
        rules.extend(NameRules::of(&cert).map_err(PkiError::Refused)?);
    }
    Ok(rules)
}

fn period(what: &str, cert: &X509Certificate<'_>, now: OffsetDateTime) -> Result<(), PkiError> {
    let v = cert.validity();
    if now < v.not_before.to_datetime() {
        return Err(PkiError::Refused(format!(
            "{what} ({}): not valid before {}",
            cert.subject(),
            v.not_before
        )));
    }
    if v.not_after.to_datetime() <= now {
        return Err(PkiError::Refused(format!(
            "{what} ({}): expired at {}",
            cert.subject(),
            v.not_after
        )));
    }
    Ok(())
}

/// Refuses `cert` (named `what`) unless it is a CA allowed to sign certificates, with
/// `below` intermediate CAs between it and the leaves, and allowed to issue server and
/// client authentication certificates.
fn check_issuer(what: &str, cert: &X509Certificate<'_>, below: usize) -> Result<(), PkiError> {
    let name = cert.subject();
    let bc = cert.basic_constraints().map_err(|e| {
        PkiError::Malformed(format!(
            "{what} ({name}): basic constraints do not parse ({e})"
        ))
    })?;
    let Some(bc) = bc.filter(|bc| bc.value.ca) else {
        return Err(PkiError::Refused(format!(
            "{what} ({name}): not a CA certificate (no basicConstraints CA:TRUE)"
        )));
    };
    if let Some(max) = bc.value.path_len_constraint
        && below > max as usize
    {
        return Err(PkiError::Refused(format!(
            "{what} ({name}): its path length constraint {max} allows {max} intermediate CA(s) below it, the chain puts {below} there"
        )));
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            return Err(PkiError::Refused(format!(
                "{what} ({name}): its key usage lacks keyCertSign"
            )));
        }
        Ok(_) => {}
        Err(e) => {
            return Err(PkiError::Malformed(format!(
                "{what} ({name}): key usage does not parse ({e})"
            )));
        }
    }
    match cert.extended_key_usage() {
        Ok(Some(eku)) if !(eku.value.any || (eku.value.server_auth && eku.value.client_auth)) => {
            Err(PkiError::Refused(format!(
                "{what} ({name}): its extended key usage does not allow both serverAuth and clientAuth, which the cluster's certificates need"
            )))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(PkiError::Malformed(format!(
            "{what} ({name}): extended key usage does not parse ({e})"
        ))),
    }
}

/// Checks the CA certificate `ca_der` against `given` (its issuers, any order, root
/// included) at `now`, and returns the issuers in order, nearest first, the self-signed root
/// last — what `<base>-chain.crt` holds. Refused, in one line: a CA that is not a CA or
/// lacks keyCertSign, a link whose issuer name or signature does not match, a chain that
/// does not end at a self-signed root, a certificate of `given` off the path, any
/// certificate outside its validity period, a path length constraint the path violates, a
/// CA whose own SANs its issuers' name constraints exclude. `chain_file` names `given`.
pub(crate) fn order_to_root(
    ca_der: &[u8],
    given: &[Vec<u8>],
    chain_file: &str,
    now: OffsetDateTime,
) -> Result<Vec<Vec<u8>>, PkiError> {
    let ca = parse("the certificate", ca_der)?;
    check_issuer("the certificate", &ca, 0)?;
    period("the certificate", &ca, now)?;
    let parsed = given
        .iter()
        .enumerate()
        .map(|(i, d)| parse(&format!("{chain_file} (certificate {})", i + 1), d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut used = vec![false; parsed.len()];
    let mut ordered: Vec<Vec<u8>> = Vec::new();
    let mut rules: Vec<NameRules> = Vec::new();
    let mut current = &ca;
    while !self_signed(current) {
        let next = parsed.iter().enumerate().find(|(j, c)| {
            !used[*j]
                && current.tbs_certificate.issuer.as_raw() == c.tbs_certificate.subject.as_raw()
                && current.verify_signature(Some(c.public_key())).is_ok()
        });
        let Some((j, issuer)) = next else {
            return Err(PkiError::Refused(format!(
                "{chain_file}: no certificate issued {} (issuer {}): the chain does not reach a self-signed root",
                current.subject(),
                current.issuer()
            )));
        };
        let what = format!("{chain_file} (certificate {})", j + 1);
        // Below this issuer sit the CA and the issuers already taken.
        check_issuer(&what, issuer, ordered.len() + 1)?;
        period(&what, issuer, now)?;
        rules.extend(NameRules::of(issuer).map_err(PkiError::Refused)?);
        used[j] = true;
        ordered.push(given[j].clone());
        current = issuer;
    }
    if let Some(j) = used.iter().position(|u| !u) {
        return Err(PkiError::Refused(format!(
            "{chain_file} (certificate {}, {}): not on the path from the certificate to its root",
            j + 1,
            parsed[j].subject()
        )));
    }
    // Go checks the intermediates' own SANs against the constraints above them too.
    constraints::check_all(&rules, &constraints::sans_of(&ca)).map_err(PkiError::Refused)?;
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    /// A CA certificate for `cn` (CA:TRUE with `pathlen`, or CA:FALSE), signed by `parent`
    /// or self-signed: (DER, its parameters, its key).
    fn ca(
        cn: &str,
        is_ca: bool,
        pathlen: Option<u8>,
        parent: Option<&(Vec<u8>, CertificateParams, KeyPair)>,
    ) -> (Vec<u8>, CertificateParams, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = match (is_ca, pathlen) {
            (false, _) => IsCa::ExplicitNoCa,
            (true, None) => IsCa::Ca(BasicConstraints::Unconstrained),
            (true, Some(n)) => IsCa::Ca(BasicConstraints::Constrained(n)),
        };
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = match parent {
            Some((_, pp, pk)) => p.signed_by(&key, &Issuer::from_params(pp, pk)).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        (cert.der().to_vec(), p, key)
    }

    #[test]
    fn chains_are_ordered_to_a_root_or_refused() {
        let root = ca("root", true, None, None);
        let mid0 = ca("mid0", true, Some(0), Some(&root));
        let mid1 = ca("mid1", true, Some(1), Some(&root));
        let stranger = ca("stranger", true, None, None);
        let int = ca("int", true, Some(0), Some(&root));
        let under_mid0 = ca("int", true, None, Some(&mid0));
        let under_mid1 = ca("int", true, Some(0), Some(&mid1));
        let not_ca = ca("int", false, None, Some(&root));
        let now = OffsetDateTime::now_utc();
        let d = |c: &(Vec<u8>, CertificateParams, KeyPair)| c.0.clone();
        // (CA, given chain, Ok(expected order) or Err(fragment))
        type Case = (Vec<u8>, Vec<Vec<u8>>, Result<Vec<Vec<u8>>, &'static str>);
        let table: Vec<Case> = vec![
            (d(&int), vec![d(&root)], Ok(vec![d(&root)])),
            (d(&root), vec![], Ok(vec![])),
            (
                d(&under_mid1),
                vec![d(&root), d(&mid1)],
                Ok(vec![d(&mid1), d(&root)]),
            ),
            (
                d(&under_mid0),
                vec![d(&mid0), d(&root)],
                Err("path length constraint 0"),
            ),
            (d(&int), vec![], Err("does not reach a self-signed root")),
            (
                d(&int),
                vec![d(&stranger)],
                Err("does not reach a self-signed root"),
            ),
            (
                d(&int),
                vec![d(&root), d(&stranger)],
                Err("(certificate 2, CN=stranger): not on the path"),
            ),
            (d(&not_ca), vec![d(&root)], Err("not a CA certificate")),
            (d(&int), vec![d(&not_ca), d(&root)], Err("not on the path")),
        ];
        for (i, (ca_der, given, want)) in table.into_iter().enumerate() {
            match (order_to_root(&ca_der, &given, "chain.pem", now), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "case {i}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "case {i}: {e}"),
                (got, want) => panic!(
                    "case {i}: got {:?}, want {:?}",
                    got.map(|v| v.len()),
                    want.map(|v| v.len())
                ),
            }
        }
        // A chain file belongs to its CA, link by link; none without the CA.
        let crt = Path::new("/pki/ca.crt");
        // (CA, chain, Ok or a fragment of the refusal)
        type Link<'a> = (Option<Vec<u8>>, Vec<Vec<u8>>, Result<(), &'a str>);
        let links: Vec<Link> = vec![
            (Some(d(&under_mid1)), vec![d(&mid1), d(&root)], Ok(())),
            (Some(d(&root)), vec![], Ok(())),
            (None, vec![], Ok(())),
            (
                None,
                vec![d(&root)],
                Err("/pki/ca-chain.crt: exists but /pki/ca.crt does not"),
            ),
            (
                Some(d(&under_mid1)),
                vec![d(&root)],
                Err("(certificate 1): did not issue CN=int (the CA)"),
            ),
            (
                Some(d(&under_mid1)),
                vec![d(&mid1), d(&stranger)],
                Err("(certificate 2): did not issue CN=mid1"),
            ),
        ];
        for (i, (ca_der, chain, want)) in links.into_iter().enumerate() {
            match (check_links(crt, ca_der.as_deref(), &chain), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "links {i}: {e}"),
                (got, want) => panic!("links {i}: got {got:?}, want {want:?}"),
            }
        }
        // Leaves carry the CA and the intermediates below the root; kubeconfigs all of it.
        assert_eq!(
            served(&d(&under_mid1), &[d(&mid1), d(&root)]),
            vec![d(&under_mid1), d(&mid1)]
        );
        assert!(served(&d(&root), &[]).is_empty());
        assert_eq!(
            trust_pem(&[d(&int)], &[d(&root)])
                .matches("BEGIN CERTIFICATE")
                .count(),
            2
        );
    }

    #[test]
    fn chain_files_sit_beside_their_ca() {
        for (crt, want) in [
            ("/p/ca.crt", "/p/ca-chain.crt"),
            ("/p/etcd/ca.crt", "/p/etcd/ca-chain.crt"),
            ("/p/front-proxy-ca.crt", "/p/front-proxy-ca-chain.crt"),
            ("mesh-ca.crt", "mesh-ca-chain.crt"),
        ] {
            assert_eq!(chain_path(Path::new(crt)), PathBuf::from(want));
        }
    }
}
