//! The trust anchors of a CA on this node, read and rewritten as bundles: the CA's
//! certificate file (what kube-apiserver's `--client-ca-file`, etcd's trusted CA and the
//! front-proxy client CA read) and, for the cluster CA, the `certificate-authority-data` of
//! kubeadm's kubeconfigs. Each write is atomic and skipped when the anchor already holds
//! exactly the wanted certificates in the wanted order.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::PkiError;
use crate::catalogue::{self, CaId};
use crate::config::ClusterSpec;
use crate::{certfile, kubeconfig, store, x509};

/// Where an anchor lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The CA's certificate file.
    CaFile,
    /// A kubeconfig's current cluster's `certificate-authority-data`.
    Kubeconfig,
}

/// A trust anchor and the certificates it holds now (DER, in order).
#[derive(Debug, Clone)]
pub(crate) struct Anchor {
    /// Its file.
    pub path: PathBuf,
    /// What kind of file.
    pub kind: Kind,
    /// The certificates it trusts now.
    pub certs: Vec<Vec<u8>>,
}

/// The certificates of a PEM bundle `pem` read from `path`.
fn pem_certs(path: &Path, pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    let blocks = pem::parse_many(pem.as_bytes()).map_err(|e| {
        PkiError::Malformed(format!(
            "{}: certificate-authority-data is not PEM ({e})",
            path.display()
        ))
    })?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect())
}

/// `certs` as one PEM bundle.
pub(crate) fn bundle_pem(certs: &[&[u8]]) -> String {
    certs
        .iter()
        .map(|d| x509::to_pem("CERTIFICATE", d))
        .collect()
}

/// The trust anchors of CA `id` on the node of `spec`: its certificate file (refused when
/// absent) and, for `ca`, every kubeadm kubeconfig present whose current cluster embeds a CA.
pub(crate) fn list(spec: &ClusterSpec, id: CaId) -> Result<Vec<Anchor>, PkiError> {
    let crt = catalogue::ca(id).cert_path(&spec.cert_dir);
    let mut out = vec![Anchor {
        certs: certfile::read_existing(&crt)?,
        path: crt,
        kind: Kind::CaFile,
    }];
    if id != CaId::Ca {
        return Ok(out);
    }
    for kc in &catalogue::KUBECONFIGS {
        let path = kc.path(&spec.kubeconfig_dir);
        let text = match kpki_atomic::read::regular_file(&path, kpki_atomic::read::PEM_MAX) {
            Ok(b) => Zeroizing::new(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(PkiError::io(&path, e)),
        };
        let config = kubeconfig::parse(&text).map_err(|e| e.in_file(&path))?;
        if let Some(pem) = config.current_ca_pem() {
            out.push(Anchor {
                certs: pem_certs(&path, &pem)?,
                path,
                kind: Kind::Kubeconfig,
            });
        }
    }
    Ok(out)
}

/// True when `anchor` holds exactly `want`, in that order.
pub(crate) fn holds_exactly(anchor: &Anchor, want: &[&[u8]]) -> bool {
    anchor.certs.len() == want.len() && anchor.certs.iter().zip(want).all(|(a, b)| a == b)
}

/// True when `anchor` trusts `der`.
pub(crate) fn trusts(anchor: &Anchor, der: &[u8]) -> bool {
    anchor.certs.iter().any(|c| c == der)
}

/// Makes `anchor` hold exactly `want` (in order); returns whether it wrote.
pub(crate) fn set(anchor: &Anchor, want: &[&[u8]]) -> Result<bool, PkiError> {
    if holds_exactly(anchor, want) {
        return Ok(false);
    }
    let pem = bundle_pem(want);
    match anchor.kind {
        Kind::CaFile => store::replace(&anchor.path, pem.as_bytes(), store::CERT_MODE)?,
        Kind::Kubeconfig => {
            let path = &anchor.path;
            let bytes = kpki_atomic::read::regular_file(path, kpki_atomic::read::PEM_MAX)
                .map_err(|e| PkiError::io(path, e))?;
            let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
            let mut doc = kubeconfig::Document::parse(path, &text)?;
            doc.set_ca(path, &pem)?;
            store::replace(path, doc.render(path)?.as_bytes(), store::PRIVATE_MODE)?;
        }
    }
    Ok(true)
}
