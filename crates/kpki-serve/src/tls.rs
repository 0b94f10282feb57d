//! The mTLS listener's rustls configuration (aws-lc-rs, TLS 1.2/1.3, client certificates
//! required and verified against the configured client CAs) and caller identities.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::{FromDer, X509Certificate};

use kpki_pki::subject::Subject;

use crate::config::{ConfigError, Listen};
use crate::policy::Caller;

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

/// The server configuration for `listen`.
pub fn server_config(listen: &Listen) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
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
    kpki_soft::check_key_file_permissions(&listen.key)
        .map_err(|e| ConfigError(format!("listen.key: {e}")))?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(&listen.key)
            .map_err(|e| ConfigError(format!("{}: {e}", listen.key.display())))?,
    );
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        ConfigError(format!(
            "{}: not a PEM private key ({e})",
            listen.key.display()
        ))
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError(format!("TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ConfigError(format!("{}: {e}", listen.cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
