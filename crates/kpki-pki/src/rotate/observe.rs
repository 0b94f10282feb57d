//! What this node's files say about a CA rotation: the certificates the CA issued here
//! (leaves and kubeconfig client certificates), which CA signed each, and so the last phase
//! done on this node. Read from the files themselves, so a stale copy of the state file
//! never takes a node backwards, and a run killed mid-phase is seen as the phase before.

use std::path::{Path, PathBuf};

use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use super::Phase;
use super::anchors::{self, Anchor};
use crate::PkiError;
use crate::catalogue::{self, CaId};
use crate::config::ClusterSpec;
use crate::{certfile, kubeconfig};

/// A certificate CA `id` issued on this node.
#[derive(Debug, Clone)]
pub(crate) enum Issued {
    /// A leaf pair of the catalogue.
    Leaf {
        /// kubeadm's name.
        name: &'static str,
        /// Its key file.
        key: PathBuf,
        /// Its certificate file.
        crt: PathBuf,
    },
    /// A kubeconfig embedding a client certificate.
    Kubeconfig {
        /// Its file name.
        name: &'static str,
        /// Its path.
        path: PathBuf,
    },
}

impl Issued {
    /// kubeadm's name of it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Issued::Leaf { name, .. } | Issued::Kubeconfig { name, .. } => name,
        }
    }

    /// The file holding the certificate.
    pub(crate) fn file(&self) -> &Path {
        match self {
            Issued::Leaf { crt, .. } => crt,
            Issued::Kubeconfig { path, .. } => path,
        }
    }

    /// The certificate (DER): a leaf file's first certificate, a kubeconfig's embedded one.
    pub(crate) fn cert(&self) -> Result<Vec<u8>, PkiError> {
        match self {
            Issued::Leaf { crt, .. } => Ok(certfile::read_existing(crt)?
                .into_iter()
                .next()
                .unwrap_or_default()),
            Issued::Kubeconfig { path, .. } => {
                let text = read_text(path)?;
                kubeconfig::Document::parse(path, &text)?.embedded_client_cert(path)
            }
        }
    }
}

/// The text of a kubeconfig (a zeroizing buffer: it holds a key).
pub(crate) fn read_text(path: &Path) -> Result<Zeroizing<String>, PkiError> {
    let bytes = kpki_atomic::read::regular_file(path, kpki_atomic::read::PEM_MAX)
        .map_err(|e| PkiError::io(path, e))?;
    String::from_utf8(bytes)
        .map(Zeroizing::new)
        .map_err(|_| PkiError::Malformed(format!("{}: not UTF-8 text", path.display())))
}

/// The certificates CA `id` issued on this node that exist: its catalogue leaves and, for
/// `ca`, the kubeadm kubeconfigs that embed a client certificate (a `kubelet.conf` pointing
/// at the kubelet's own rotated certificate file is the kubelet's to renew).
pub(crate) fn issued(spec: &ClusterSpec, id: CaId) -> Result<Vec<Issued>, PkiError> {
    let mut out: Vec<Issued> = catalogue::leaves(spec.local_etcd())
        .filter(|l| l.ca == id)
        .map(|l| Issued::Leaf {
            name: l.name,
            key: l.key_path(&spec.cert_dir),
            crt: l.cert_path(&spec.cert_dir),
        })
        .filter(|i| i.file().exists())
        .collect();
    if id == CaId::Ca {
        for kc in &catalogue::KUBECONFIGS {
            let path = kc.path(&spec.kubeconfig_dir);
            if !path.exists() {
                continue;
            }
            let text = read_text(&path)?;
            let embeds = kubeconfig::parse(&text)
                .map_err(|e| e.in_file(&path))?
                .current_user()
                .is_some_and(|u| u.client_certificate_data.is_some());
            if embeds {
                out.push(Issued::Kubeconfig {
                    name: kc.file,
                    path,
                });
            }
        }
    }
    Ok(out)
}

/// True when the CA certificate `ca_der` names and signed the certificate `der`.
pub(crate) fn signed_by(der: &[u8], ca_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(der),
        X509Certificate::from_der(ca_der),
    ) else {
        return false;
    };
    cert.tbs_certificate.issuer.as_raw() == ca.tbs_certificate.subject.as_raw()
        && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// The issued certificates not yet signed by `new_der`.
pub(crate) fn not_reissued(items: &[Issued], new_der: &[u8]) -> Result<Vec<Issued>, PkiError> {
    let mut out = Vec::new();
    for i in items {
        if !signed_by(&i.cert()?, new_der) {
            out.push(i.clone());
        }
    }
    Ok(out)
}

/// The last phase done on this node as its files show it: `retire` when every anchor holds
/// the new CA alone; `reissue` when every anchor is new+old and every certificate is signed
/// by the new CA; `trust-both` when every anchor trusts the new CA; else `prepare`.
pub(crate) fn phase_of_files(
    anchors: &[Anchor],
    items: &[Issued],
    old_der: &[u8],
    new_der: &[u8],
) -> Result<Phase, PkiError> {
    let all = |f: &dyn Fn(&Anchor) -> bool| anchors.iter().all(f);
    if all(&|a| anchors::holds_exactly(a, &[new_der])) {
        return Ok(Phase::Retire);
    }
    if all(&|a| anchors::holds_exactly(a, &[new_der, old_der]))
        && not_reissued(items, new_der)?.is_empty()
    {
        return Ok(Phase::Reissue);
    }
    // Every anchor trusts the new CA: trust-both is done (a retire killed midway leaves
    // some anchors with the new CA alone).
    if all(&|a| anchors::trusts(a, new_der)) {
        return Ok(Phase::TrustBoth);
    }
    Ok(Phase::Prepare)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use time::OffsetDateTime;

    use super::anchors::Kind;
    use crate::certfile::tests::chains::{key, root};
    use crate::x509;

    fn anchor(certs: &[&[u8]]) -> Anchor {
        Anchor {
            path: PathBuf::from("ca.crt"),
            kind: Kind::CaFile,
            certs: certs.iter().map(|c| c.to_vec()).collect(),
        }
    }

    #[test]
    fn the_phase_a_node_is_at_is_read_from_its_anchors_and_certificates() {
        let now = x509::whole_seconds(OffsetDateTime::now_utc());
        let day = Duration::from_secs(86400);
        let (old_ca, new_ca) = (root(now, day, key()), root(now, day, key()));
        let (old, new) = (old_ca.der.as_slice(), new_ca.der.as_slice());
        let stranger = root(now, day, key()).der;
        let dir = tempfile::tempdir().unwrap();
        // A leaf signed by the old CA (the CA certificates themselves stand in: a
        // self-signed certificate is signed by its own CA only).
        let crt = dir.path().join("leaf.crt");
        std::fs::write(&crt, x509::to_pem("CERTIFICATE", old)).unwrap();
        let by_old = vec![Issued::Leaf {
            name: "apiserver",
            key: dir.path().join("leaf.key"),
            crt,
        }];
        let none: Vec<Issued> = Vec::new();
        // (anchors, issued certificates, expected phase)
        let table: Vec<(Vec<Anchor>, &Vec<Issued>, Phase)> = vec![
            (vec![anchor(&[old])], &none, Phase::Prepare),
            (
                vec![anchor(&[old, new]), anchor(&[old])],
                &none,
                Phase::Prepare,
            ),
            (
                vec![anchor(&[old, new]), anchor(&[new, old])],
                &none,
                Phase::TrustBoth,
            ),
            (vec![anchor(&[old, new])], &none, Phase::TrustBoth),
            (
                vec![anchor(&[new, old]), anchor(&[new, old])],
                &none,
                Phase::Reissue,
            ),
            (vec![anchor(&[new, old])], &by_old, Phase::TrustBoth),
            (
                vec![anchor(&[new]), anchor(&[new, old])],
                &none,
                Phase::TrustBoth,
            ),
            (vec![anchor(&[new]), anchor(&[new])], &none, Phase::Retire),
            (vec![anchor(&[&stranger])], &none, Phase::Prepare),
            (
                vec![anchor(&[new, old, &stranger])],
                &none,
                Phase::TrustBoth,
            ),
        ];
        for (i, (anchors, items, want)) in table.into_iter().enumerate() {
            let got = phase_of_files(&anchors, items, old, new).unwrap();
            assert_eq!(got, want, "case {i}");
        }
        assert!(signed_by(old, old) && !signed_by(old, new) && !signed_by(b"junk", old));
    }
}
