//! A TLS test server standing in for kube-apiserver: presents a serving certificate,
//! requires client certificates from a CA, answers any request with a small JSON body, and
//! records each caller's identity (certificate CN and O values) as kube-apiserver maps it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A caller as kube-apiserver would see it: user = CN, groups = O values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (CN).
    pub user: String,
    /// Groups (O values).
    pub groups: Vec<String>,
}

/// A running test server.
pub struct TlsServer {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Identities of callers that completed a request, in order.
    pub seen: Arc<Mutex<Vec<Identity>>>,
    _runtime: tokio::runtime::Runtime,
}

/// Starts a server on 127.0.0.1 with `cert`/`key` that accepts clients signed by `client_ca`.
pub fn start(cert: &Path, key: &Path, client_ca: &Path) -> TlsServer {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(client_ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_task = Arc::clone(&seen);
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen_task);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let identity = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| {
                    let (_, cert) = X509Certificate::from_der(c.as_ref()).ok()?;
                    let user = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
                    let groups = cert.subject().iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
                    Some(Identity { user, groups })
                });
                let mut buf = vec![0u8; 16384];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if let Some(id) = identity {
                    seen.lock().unwrap().push(id);
                }
                let body = r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:6443"}]}"#;
                let response = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsServer {
        port,
        seen,
        _runtime: runtime,
    }
}
