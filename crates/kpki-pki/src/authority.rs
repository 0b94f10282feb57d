//! Loading a CA that can sign: its certificate from the certificate directory and its key
//! from the configured backend (file or token), checked to belong together.

use std::sync::Arc;

use kpki_signer::{KeyError, KeyUri, Signer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PkiError;
use crate::catalogue::{CAS, CaId};
use crate::config::ClusterSpec;
use crate::keystore::KeyStore;
use crate::x509::CaSigner;

/// A CA ready to sign.
pub struct LoadedCa {
    /// kubeadm's name (`ca`, `front-proxy-ca`, `etcd-ca`).
    pub name: &'static str,
    /// The CA certificate, DER.
    pub cert_der: Vec<u8>,
    /// The issuer.
    pub signer: CaSigner,
}

fn refused(msg: impl Into<String>) -> PkiError {
    PkiError::Refused(msg.into())
}

/// Reads one PEM certificate file (exactly one CERTIFICATE block).
pub fn read_cert(path: &std::path::Path) -> Result<Vec<u8>, PkiError> {
    let bytes = std::fs::read(path).map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let blocks = pem::parse_many(&bytes)
        .map_err(|e| refused(format!("{}: not PEM ({e})", path.display())))?;
    match blocks.as_slice() {
        [one] if one.tag() == "CERTIFICATE" => Ok(one.contents().to_vec()),
        _ => Err(refused(format!(
            "{}: expected exactly one CERTIFICATE block",
            path.display()
        ))),
    }
}

/// Opens CA `id`: `Ok(None)` when its key is absent (an external CA).
pub fn open(spec: &ClusterSpec, keys: &KeyStore, id: CaId) -> Result<Option<LoadedCa>, PkiError> {
    let ca = CAS
        .iter()
        .find(|c| c.id == id)
        .ok_or_else(|| refused("unknown CA"))?;
    let crt = spec.cert_dir.join(format!("{}.crt", ca.base));
    let cert_der = read_cert(&crt)?;
    let uri = spec.ca_key(id);
    let key: Arc<dyn Signer> = match uri {
        KeyUri::File(p) if !p.exists() => return Ok(None),
        uri => match keys.open(uri) {
            Ok(k) => k,
            Err(KeyError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        },
    };
    let signer = issuer(&crt, &cert_der, key)?;
    Ok(Some(LoadedCa {
        name: ca.name,
        cert_der,
        signer,
    }))
}

/// The issuer for the CA certificate `cert_der` (read from `crt`) and its key `key`:
/// refused unless the certificate is a CA certificate whose public key is the key's.
pub fn issuer(
    crt: &std::path::Path,
    cert_der: &[u8],
    key: Arc<dyn Signer>,
) -> Result<CaSigner, PkiError> {
    let (_, parsed) = X509Certificate::from_der(cert_der)
        .map_err(|e| refused(format!("{}: {e}", crt.display())))?;
    if parsed.public_key().raw != key.public_key_spki() {
        return Err(refused(format!(
            "{}: does not match its key {}",
            crt.display(),
            key.uri()
        )));
    }
    if !parsed.is_ca() {
        return Err(refused(format!("{}: not a CA certificate", crt.display())));
    }
    Ok(CaSigner::new(cert_der, key)?)
}
