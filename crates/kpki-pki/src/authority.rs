//! Loading a CA: its certificate file from the certificate directory and its key from the
//! configured backend (file or token), checked to belong together. The only CA loader: `init`,
//! `renew`, `check-expiration`, `sign`, the kubeconfig commands and the daemon all come here,
//! so every one of them takes the same certificate of a bundle as the CA (see
//! `certfile::signing_cert`) and agrees on whether the key is there.
//!
//! kubeadm's external-CA mode (a CA certificate without its key: its leaves are kept, "can't
//! be renewed") applies only to a key at kubeadm's own path, `<cert_dir>/<ca>.key`, that no
//! flag, `KPKI__…` variable, kpki.toml or `kpki-keys.toml` record moved elsewhere. A key kpki
//! was told about that cannot be opened — absent file, no object with that label, token or
//! module unreachable, wrong PIN — is an error naming the key and the reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kpki_signer::{KeyError, KeyUri, Signer};

use crate::PkiError;
use crate::catalogue::{self, CaId, CaSpec};
use crate::certfile::{self, SigningCertError};
use crate::chain;
use crate::config::ClusterSpec;
use crate::keystore::KeyStore;
use crate::x509::CaSigner;

/// A CA ready to sign.
pub struct LoadedCa {
    /// kubeadm's name (`ca`, `front-proxy-ca`, `etcd-ca`).
    pub name: &'static str,
    /// The signing CA certificate, DER.
    pub cert_der: Vec<u8>,
    /// Every certificate of the CA file in file order (the signing one alone, or the old and
    /// new CA while a rotation trusts both), DER.
    pub bundle: Vec<Vec<u8>>,
    /// The issuers above it when it is an intermediate (`<base>-chain.crt`, nearest first,
    /// root last); empty for a self-signed CA.
    pub chain: Vec<Vec<u8>>,
    /// The issuer.
    pub signer: CaSigner,
}

impl LoadedCa {
    /// What kubeconfigs embed as `certificate-authority-data` (see `chain::trust_pem`).
    pub fn trust_pem(&self) -> String {
        chain::trust_pem(&self.bundle, &self.chain)
    }

    /// A leaf certificate file's text: `leaf_pem` and the chain servers send (see
    /// `chain::served`).
    pub fn leaf_file(&self, leaf_pem: &str) -> String {
        chain::leaf_file(leaf_pem, &self.cert_der, &self.chain)
    }
}

/// A CA as found, before anything is made: each part may be absent.
pub struct FoundCa {
    /// Its catalogue entry.
    pub spec: &'static CaSpec,
    /// Its certificate file.
    pub crt: PathBuf,
    /// Where its key is configured.
    pub key_uri: KeyUri,
    /// The signing certificate of the file (DER); `None` when the file is absent.
    pub cert: Option<Vec<u8>>,
    /// The key; `None` when absent: an external CA (see the module header), or a CA still to
    /// make (no certificate yet).
    pub key: Option<Arc<dyn Signer>>,
    /// The issuers above the CA (`<base>-chain.crt`); empty when it is self-signed.
    pub chain: Vec<Vec<u8>>,
    /// Every certificate of the CA file in file order; empty when the file is absent.
    pub bundle: Vec<Vec<u8>>,
}

/// True when CA `ca`'s key is kubeadm's default file under `cert_dir`: the one place where an
/// absent key means kubeadm's external-CA mode rather than an error.
fn at_kubeadm_path(ca: &CaSpec, cert_dir: &Path, uri: &KeyUri) -> bool {
    uri.as_file() == Some(ca.key_path(cert_dir).as_path())
}

/// The error for CA `ca`'s key at `uri` that cannot be used, with the reason.
fn unusable(ca: &CaSpec, uri: &KeyUri, problem: String) -> PkiError {
    PkiError::CaKey {
        ca: ca.name,
        uri: uri.to_string(),
        problem,
    }
}

/// Opens the key at `uri`; `Ok(None)` when it is absent: a key file that does not exist, a
/// token object that is not found.
pub(crate) fn open_key(keys: &KeyStore, uri: &KeyUri) -> Result<Option<Arc<dyn Signer>>, PkiError> {
    Ok(uri_key(keys, uri)?)
}

/// [`open_key`] with the backend's error.
fn uri_key(keys: &KeyStore, uri: &KeyUri) -> Result<Option<Arc<dyn Signer>>, KeyError> {
    match uri {
        KeyUri::File(p) if !p.exists() => Ok(None),
        uri => match keys.open(uri) {
            Ok(k) => Ok(Some(k)),
            Err(KeyError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        },
    }
}

/// The signing certificate of the CA file `crt` for `key` (or the first one without a key),
/// as DER; `Ok(None)` when the file is absent.
pub(crate) fn signing_cert(
    crt: &Path,
    key: Option<&dyn Signer>,
) -> Result<Option<Vec<u8>>, PkiError> {
    let Some(certs) = certfile::read(crt)? else {
        return Ok(None);
    };
    signing_cert_of(crt, &certs, key)
}

/// The signing certificate among `certs`, the certificates of the CA file `crt` (see
/// [`signing_cert`]).
fn signing_cert_of(
    crt: &Path,
    certs: &[Vec<u8>],
    key: Option<&dyn Signer>,
) -> Result<Option<Vec<u8>>, PkiError> {
    let der = certfile::signing_cert(crt, certs, key.map(|k| k.public_key_spki())).map_err(
        |e| match e {
            SigningCertError::Malformed(m) => PkiError::Malformed(m),
            SigningCertError::NotCa(m) => PkiError::Mismatch(m),
            SigningCertError::NoMatch => PkiError::Mismatch(format!(
                "{}: CA certificate does not match its key {}",
                crt.display(),
                key.map(|k| k.uri().to_string()).unwrap_or_default()
            )),
        },
    )?;
    Ok(Some(der.to_vec()))
}

/// Finds CA `id` of `spec`: its signing certificate and its key, each when present. Refused,
/// naming the key and the reason, when the key cannot be opened (token or module
/// unreachable, wrong PIN), and when the certificate exists but a key configured or recorded
/// away from kubeadm's path is absent (see the module header).
pub fn find(spec: &ClusterSpec, keys: &KeyStore, id: CaId) -> Result<FoundCa, PkiError> {
    let ca = catalogue::ca(id);
    let crt = ca.cert_path(&spec.cert_dir);
    let key_uri = spec.ca_key(id).clone();
    let key = match uri_key(keys, &key_uri) {
        Ok(k) => k,
        Err(e) => return Err(unusable(ca, &key_uri, e.to_string())),
    };
    // The CA file is read once: its signing certificate and every certificate of it.
    let bundle = certfile::read(&crt)?.unwrap_or_default();
    let cert = if bundle.is_empty() {
        None
    } else {
        signing_cert_of(&crt, &bundle, key.as_deref())?
    };
    if key.is_none() && cert.is_some() && !at_kubeadm_path(ca, &spec.cert_dir, &key_uri) {
        let problem = match &key_uri {
            KeyUri::File(p) => format!(
                "key file {} does not exist (a key given to kpki is never taken for an external CA)",
                p.display()
            ),
            KeyUri::Pkcs11(u) => format!(
                "key {} not found on the token (a key given to kpki is never taken for an external CA)",
                u.object_description()
            ),
        };
        return Err(unusable(ca, &key_uri, problem));
    }
    let chain = chain::read(&crt)?;
    chain::check_links(&crt, cert.as_deref(), &chain)?;
    Ok(FoundCa {
        spec: ca,
        crt,
        key_uri,
        cert,
        key,
        chain,
        bundle,
    })
}

/// Opens CA `id` to sign: `Ok(None)` when its key is absent in kubeadm's external-CA mode
/// (see the module header); refused when its certificate file is absent and as
/// [`find`] refuses.
pub fn open(spec: &ClusterSpec, keys: &KeyStore, id: CaId) -> Result<Option<LoadedCa>, PkiError> {
    let found = find(spec, keys, id)?;
    let cert_der = found.cert.ok_or_else(|| certfile::absent(&found.crt))?;
    let Some(key) = found.key else {
        return Ok(None);
    };
    let signer = CaSigner::new(&cert_der, key)?.within_chain(&cert_der, &found.chain)?;
    Ok(Some(LoadedCa {
        name: found.spec.name,
        cert_der,
        bundle: found.bundle,
        chain: found.chain,
        signer,
    }))
}

/// Loads the CA whose certificate file is `crt` (a bundle allowed) and whose key is `key`:
/// its signing certificate (DER) and its issuer. For CAs outside the catalogue (the daemon's).
pub fn load(crt: &Path, key: Arc<dyn Signer>) -> Result<(Vec<u8>, CaSigner), PkiError> {
    let cert_der = signing_cert(crt, Some(key.as_ref()))?.ok_or_else(|| certfile::absent(crt))?;
    let chain = chain::read(crt)?;
    chain::check_links(crt, Some(&cert_der), &chain)?;
    let signer = CaSigner::new(&cert_der, key)?.within_chain(&cert_der, &chain)?;
    Ok((cert_der, signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    use time::OffsetDateTime;

    use crate::certfile::tests::chains::{key, root};
    use crate::x509;

    fn ca_pem(k: &Arc<dyn Signer>) -> (Vec<u8>, String) {
        let start = x509::whole_seconds(OffsetDateTime::now_utc());
        let der = root(start, std::time::Duration::from_secs(86400), Arc::clone(k)).der;
        let pem = x509::to_pem("CERTIFICATE", &der);
        (der, pem)
    }

    #[test]
    fn the_signing_certificate_of_a_bundle_is_the_one_matching_the_key() {
        let (k, other_k, stranger) = (key(), key(), key());
        let (der, pem) = ca_pem(&k);
        let (other_der, other_pem) = ca_pem(&other_k);
        let dir = tempfile::tempdir().unwrap();
        let crt = dir.path().join("ca.crt");
        // (file contents, key, expected: Ok(signing DER) or Err(message part))
        type Case<'a> = (
            String,
            Option<&'a Arc<dyn Signer>>,
            Result<&'a [u8], &'a str>,
        );
        let table: Vec<Case> = vec![
            (pem.clone(), Some(&k), Ok(&der)),
            (format!("{pem}{other_pem}"), Some(&k), Ok(&der)),
            (format!("{other_pem}{pem}"), Some(&k), Ok(&der)),
            (format!("{other_pem}{pem}"), Some(&other_k), Ok(&other_der)),
            (format!("{other_pem}{pem}"), None, Ok(&other_der)),
            (pem.clone(), None, Ok(&der)),
            (
                format!("{other_pem}{pem}"),
                Some(&stranger),
                Err("CA certificate does not match its key"),
            ),
            (
                format!("{pem}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
                Some(&k),
                Err("(certificate 2 of 2): malformed certificate"),
            ),
        ];
        for (i, (text, key, want)) in table.into_iter().enumerate() {
            std::fs::write(&crt, text).unwrap();
            let got = signing_cert(&crt, key.map(|k| k.as_ref()));
            match (got, want) {
                (Ok(Some(d)), Ok(w)) => assert_eq!(d, w, "case {i}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "case {i}: {e}"),
                (got, want) => panic!("case {i}: got {:?}, want {want:?}", got.map(|_| ())),
            }
            if let (Some(k), Ok(w)) = (key, want) {
                let (d, _) = load(&crt, Arc::clone(k)).unwrap();
                assert_eq!(d, w, "load, case {i}");
            }
        }
        assert!(
            signing_cert(&dir.path().join("absent.crt"), None)
                .unwrap()
                .is_none()
        );
        assert!(load(&dir.path().join("absent.crt"), k).is_err());
    }

    #[test]
    fn an_absent_key_is_kubeadms_external_ca_only_at_kubeadms_path() {
        use std::os::unix::fs::PermissionsExt;

        use kpki_signer::KeyAlgorithm;

        use crate::config::{KeySettings, Settings};

        // (key given away from kubeadm's path, key file present, certificate present,
        //  expected: Ok(key found) or Err(message part))
        let table: [(bool, bool, bool, Result<bool, &str>); 6] = [
            (false, true, true, Ok(true)),
            (false, false, true, Ok(false)),  // kubeadm's external CA
            (false, false, false, Ok(false)), // a CA still to make
            (true, true, true, Ok(true)),
            (true, false, true, Err("ca key file:")), // given, gone: an error
            (true, false, false, Ok(false)),          // given, still to make
        ];
        for (i, (moved, key_present, cert_present, want)) in table.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let pki = dir.path().join("pki");
            std::fs::create_dir_all(&pki).unwrap();
            let key_path = if moved {
                dir.path().join("elsewhere.key")
            } else {
                pki.join("ca.key")
            };
            let (soft, pem) =
                kpki_soft::SoftKey::generate(KeyUri::file("/dev/null"), KeyAlgorithm::EcdsaP256)
                    .unwrap();
            if key_present {
                std::fs::write(&key_path, pem.as_bytes()).unwrap();
                std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                    .unwrap();
            }
            if cert_present {
                let (_, ca_pem) = ca_pem(&(Arc::new(soft) as Arc<dyn Signer>));
                std::fs::write(pki.join("ca.crt"), ca_pem).unwrap();
            }
            let mut settings = Settings {
                cert_dir: Some(pki.clone()),
                keys: KeySettings {
                    ca: moved.then(|| KeyUri::file(&key_path)),
                    ..Default::default()
                },
                ..Default::default()
            };
            settings.cluster.node_name = Some("cp1".into());
            settings.cluster.advertise_address = Some("10.0.0.10".into());
            let spec = crate::config::resolve(&settings).unwrap();
            let got = find(&spec, &KeyStore::default(), CaId::Ca);
            match (got, want) {
                (Ok(f), Ok(found)) => assert_eq!(f.key.is_some(), found, "case {i}"),
                (Err(e), Err(part)) => {
                    let text = e.to_string();
                    assert!(text.contains(part), "case {i}: {text}");
                    assert!(text.contains("does not exist"), "case {i}: {text}");
                }
                (got, want) => panic!("case {i}: got {:?}, want {want:?}", got.map(|_| ())),
            }
        }
    }
}
