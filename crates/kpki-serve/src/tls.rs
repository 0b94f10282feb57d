//! The mTLS listener's rustls configuration (aws-lc-rs, TLS 1.2/1.3, client certificates
//! required and verified against the configured client CAs; the server key a PEM file or a
//! backend key, see [`crate::tls_key`]) and caller identities.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use x509_parser::prelude::{FromDer, X509Certificate};

use kpki_pki::keystore::KeyStore;
use kpki_pki::subject::Subject;
use kpki_signer::Signer;

use crate::config::{ConfigError, Listen};
use crate::policy::Caller;
use crate::tls_key::BackendKey;

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError(format!("{}: not PEM certificates ({e})", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!(
            "{}: no CERTIFICATE block",
            path.display()
        )));
    }
    Ok(certs)
}

/// The mTLS listener's rustls configuration and, when its key lives with a key backend
/// (`listen.key = "pkcs11:…"`), that key (probed for readiness like the CA keys).
pub struct ServerTls {
    /// The rustls server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// The backend key that signs handshakes; `None` for a key file rustls loaded.
    pub key: Option<Arc<dyn Signer>>,
}

/// The server configuration for `listen`, opening a backend key through `keys`.
pub fn server_config(listen: &Listen, keys: &KeyStore) -> Result<ServerTls, ConfigError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    if listen.client_cas.is_empty() {
        return Err(ConfigError(
            "listen.client_cas is empty: callers must present certificates".into(),
        ));
    }
    for path in &listen.client_cas {
        for c in certs(path)? {
            roots
                .add(c)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        }
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ConfigError(format!("listen.client_cas: {e}")))?;
    let chain = certs(&listen.cert)?;
    let (certified, backend_key, tls13) = match listen.key.as_file() {
        Some(path) => {
            let key = file_key(path)?;
            let certified = CertifiedKey::from_der(chain, key, &provider)
                .map_err(|e| ConfigError(format!("{}: {e}", listen.cert.display())))?;
            (certified, None, true)
        }
        None => {
            let key = keys
                .open(&listen.key)
                .map_err(|e| ConfigError(format!("listen.key: {e}")))?;
            let tls_key = BackendKey::new(Arc::clone(&key));
            let tls13 = tls_key.supports_tls13();
            let certified = CertifiedKey::new(chain, Arc::new(tls_key));
            certified.keys_match().map_err(|e| {
                ConfigError(format!(
                    "{}: does not match listen.key {} ({e})",
                    listen.cert.display(),
                    listen.key
                ))
            })?;
            (certified, Some(key), tls13)
        }
    };
    // An RSA key whose backend cannot sign RSASSA-PSS cannot sign a TLS 1.3 handshake.
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls13 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        tracing::warn!(key = %listen.key, "listen.key offers no RSASSA-PSS: TLS 1.2 only");
        &[&rustls::version::TLS12]
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ConfigError(format!("TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        key: backend_key,
    })
}

/// A PEM key file (owner-only mode), read into a zeroizing buffer.
fn file_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    kpki_soft::check_key_file_permissions(path)
        .map_err(|e| ConfigError(format!("listen.key: {e}")))?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?,
    );
    PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| ConfigError(format!("{}: not a PEM private key ({e})", path.display())))
}

/// The caller named by a verified client certificate: its CN and O values; `None` when
/// the certificate carries more than one CN (which one a peer would honour is ambiguous).
pub fn caller(cert: &CertificateDer<'_>) -> Option<Caller> {
    let (_, c) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let subject = Subject::known_of(c.subject());
    Some(Caller {
        cn: subject.single_cn().ok()?.to_string(),
        orgs: subject.orgs(),
    })
}
