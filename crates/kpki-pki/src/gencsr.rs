//! `certs generate-csr`: kubeadm's external-CA preparation — a key and a CSR for every leaf
//! (etcd's included) and, for the five kubeconfigs, a partial kubeconfig holding only the
//! client key plus a CSR beside it. CSRs carry the subject and SANs of the catalogue and
//! nothing else; the CA adds usages and validity when it signs. Nothing is overwritten.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kpki_signer::{KeyUri, RcgenSigner, Signer};
use kpki_soft::SoftKey;
use rcgen::{CertificateParams, DnType, SanType};
use serde::Serialize;

use crate::catalogue::{KUBECONFIGS, LEAVES};
use crate::config::ClusterSpec;
use crate::sans::{AltNames, alt_names};
use crate::{PkiError, kubeconfig, store};

/// Mode of directories holding CSRs (kubeadm creates them 0700).
const CSR_DIR_MODE: u32 = 0o700;

/// A file `generate-csr` wrote.
#[derive(Debug, Serialize)]
pub struct Written {
    /// Catalogue name.
    pub name: String,
    /// The key file (or partial kubeconfig).
    pub key: PathBuf,
    /// The CSR file.
    pub csr: PathBuf,
}

fn request_pem(
    key: &Arc<dyn Signer>,
    cn: &str,
    orgs: &[&str],
    sans: &AltNames,
) -> Result<String, PkiError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    for o in orgs {
        p.distinguished_name
            .push(DnType::OrganizationName, crate::subject::dn_value(o));
    }
    p.distinguished_name
        .push(DnType::CommonName, crate::subject::dn_value(cn));
    for d in &sans.dns {
        p.subject_alt_names.push(SanType::DnsName(
            d.as_str()
                .try_into()
                .map_err(|e| PkiError::Malformed(format!("DNS SAN {d:?}: {e}")))?,
        ));
    }
    for ip in &sans.ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let signer = RcgenSigner::new(Arc::clone(key))?;
    let csr = p
        .serialize_request(&signer)
        .map_err(|e| signer.explain(e))?;
    csr.pem()
        .map_err(|e| PkiError::internal(format!("CSR encoding: {e}")))
}

/// A PKCS#10 request (PEM) for the key `key`, wherever it lives (a token key never leaves
/// the token: it signs the request), with subject `CN=cn` and `O=orgs` and the DNS and IP
/// SANs given (each DNS name checked as a name first).
pub fn request_for_key(
    key: &Arc<dyn Signer>,
    cn: &str,
    orgs: &[&str],
    dns: &[String],
    ips: &[std::net::IpAddr],
) -> Result<String, PkiError> {
    crate::names::check(dns, &[], &[]).map_err(PkiError::Malformed)?;
    let sans = AltNames {
        dns: dns.to_vec(),
        ips: ips.to_vec(),
    };
    request_pem(key, cn, orgs, &sans)
}

/// Writes the key (or partial kubeconfig) `key_text` to `key_path`, then the request `csr`
/// to `csr_path`, creating the request's directory with kubeadm's mode.
fn write_pair(key_path: &Path, key_text: &str, csr_path: &Path, csr: &str) -> Result<(), PkiError> {
    if let Some(dir) = csr_path.parent() {
        kpki_atomic::create_dir_all(dir, CSR_DIR_MODE).map_err(|e| PkiError::io(dir, e))?;
    }
    store::create(key_path, key_text.as_bytes(), store::PRIVATE_MODE)?;
    store::create(csr_path, csr.as_bytes(), store::PRIVATE_MODE)
}

/// Writes keys, partial kubeconfigs and CSRs; refuses before writing if any target exists.
pub fn generate(spec: &ClusterSpec) -> Result<Vec<Written>, PkiError> {
    let leaves: Vec<_> = LEAVES
        .iter()
        .map(|l| (l, l.key_path(&spec.cert_dir), l.csr_path(&spec.cert_dir)))
        .collect();
    let kubeconfigs: Vec<_> = KUBECONFIGS
        .iter()
        .map(|k| {
            (
                k,
                k.path(&spec.kubeconfig_dir),
                k.csr_path(&spec.kubeconfig_dir),
            )
        })
        .collect();
    for path in leaves
        .iter()
        .flat_map(|(_, k, c)| [k, c])
        .chain(kubeconfigs.iter().flat_map(|(_, k, c)| [k, c]))
    {
        if path.exists() {
            return Err(PkiError::Refused(format!(
                "{}: file already exists",
                path.display()
            )));
        }
    }
    let mut out = Vec::new();
    for (leaf, key_path, csr_path) in leaves {
        let (key, pem) = SoftKey::generate(KeyUri::file(&key_path), spec.algorithm)?;
        let key: Arc<dyn Signer> = Arc::new(key);
        let csr = request_pem(
            &key,
            &leaf.cn.for_node(&spec.node_name),
            leaf.orgs,
            &alt_names(spec, leaf.sans),
        )?;
        write_pair(&key_path, &pem, &csr_path, &csr)?;
        out.push(Written {
            name: leaf.name.into(),
            key: key_path,
            csr: csr_path,
        });
    }
    for (kc, path, csr_path) in kubeconfigs {
        let (key, pem) = SoftKey::generate(KeyUri::file(&path), spec.algorithm)?;
        let key: Arc<dyn Signer> = Arc::new(key);
        let cn = kc.cn.for_node(&spec.node_name);
        let csr = request_pem(&key, &cn, kc.orgs, &AltNames::default())?;
        let server = kc.server_url(spec);
        let partial = kubeconfig::render_partial(&spec.cluster_name, &server, &cn, &pem)?;
        write_pair(&path, &partial, &csr_path, &csr)?;
        out.push(Written {
            name: kc.file.into(),
            key: path,
            csr: csr_path,
        });
    }
    Ok(out)
}
