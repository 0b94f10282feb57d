//! The HTTPS load client (`kpki_e2e::load`) against an in-process echo server that requires
//! client certificates: every request of a 4 × 200 run comes back 200 with the body sent, over
//! four keep-alive connections and without transport errors, for HTTP/1.1 and HTTP/2; a
//! client without a certificate, or one that does not trust the server, gets an error rather
//! than a panic; a server that closes after every reply is followed by reconnecting.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kpki_e2e::load::{self, ClientIdentity, Connection, LoadSpec, Reply, Target};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const BODY: &[u8] = br#"{"certificate_request":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB...\n-----END CERTIFICATE REQUEST-----\n","profile":"client"}"#;

/// A throwaway PKI: one CA issuing the server's and the client's certificates.
struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "load test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".into()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(DnType::CommonName, "load-client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client.signed_by(&client_key, &issuer).unwrap();

    Pki {
        ca_pem: ca_cert.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// A running echo server and the number of TLS connections it has accepted.
struct EchoServer {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    Ok(Response::new(Full::new(body)))
}

/// Starts an HTTPS echo server (HTTP/1.1 and HTTP/2 by ALPN) on 127.0.0.1 that requires a
/// client certificate issued by the PKI's CA.
async fn start_echo_server(pki: &Pki) -> EchoServer {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(pki.server_cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), hyper::service::service_fn(echo))
                    .await;
            });
        }
    });
    EchoServer { addr, accepted }
}

fn target(addr: SocketAddr, pki: &Pki, with_cert: bool, http2: bool) -> Target {
    Target {
        addr,
        server_name: "localhost".into(),
        identity: ClientIdentity {
            ca_pem: pki.ca_pem.clone().into_bytes(),
            cert_pem: with_cert.then(|| pki.client_cert_pem.clone().into_bytes()),
            key_pem: with_cert.then(|| pki.client_key_pem.clone().into_bytes()),
        },
        http2,
    }
}

async fn four_by_two_hundred(http2: bool) {
    let pki = pki();
    let server = start_echo_server(&pki).await;
    let spec = LoadSpec {
        target: target(server.addr, &pki, true, http2),
        path: "/api/v1/cfssl/sign".into(),
        body: BODY.to_vec(),
        connections: 4,
        requests: 800,
        keep_bodies_every: 10,
    };
    let seen = Arc::new(AtomicU64::new(0));
    let echoed = Arc::new(AtomicU64::new(0));
    let (s, e) = (Arc::clone(&seen), Arc::clone(&echoed));
    let report = load::run(&spec, move |reply: &Reply| {
        s.fetch_add(1, Ordering::Relaxed);
        if reply.body == BODY {
            e.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await
    .unwrap();

    assert_eq!(report.requests, 800, "{report:?}");
    assert_eq!(report.ok, 800, "{report:?}");
    assert_eq!(report.by_status.get(&200), Some(&800), "{report:?}");
    assert_eq!(report.by_status.len(), 1, "{report:?}");
    assert_eq!(report.transport_errors, 0, "{report:?}");
    assert_eq!(report.reconnects, 0, "{report:?}");
    assert!(report.first_error.is_none(), "{report:?}");
    assert_eq!(
        server.accepted.load(Ordering::Relaxed),
        4,
        "connections are reused"
    );
    assert_eq!(seen.load(Ordering::Relaxed), 800);
    assert_eq!(echoed.load(Ordering::Relaxed), 800);
    assert!(report.p50 <= report.p90, "{report:?}");
    assert!(report.p90 <= report.p99, "{report:?}");
    assert!(report.p99 <= report.max, "{report:?}");
    assert!(report.max > std::time::Duration::ZERO, "{report:?}");
    assert!(report.rate > 0.0, "{report:?}");
    assert_eq!(report.kept.len(), 80, "1 of every 10 bodies kept");
    assert!(report.kept.iter().all(|b| b == BODY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_mtls_load_all_ok_on_kept_alive_connections() {
    four_by_two_hundred(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_mtls_load_all_ok_on_kept_alive_connections() {
    four_by_two_hundred(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_connection_get_and_post() {
    let pki = pki();
    let server = start_echo_server(&pki).await;
    for http2 in [false, true] {
        let mut conn = Connection::connect(&target(server.addr, &pki, true, http2))
            .await
            .unwrap();
        let reply = conn.post("/echo", BODY.to_vec()).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, BODY);
        let reply = conn.get("/anything").await.unwrap();
        assert_eq!(reply.status, 200);
        assert!(reply.body.is_empty());
        assert!(!conn.is_closed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_gets_an_error() {
    let pki = pki();
    let server = start_echo_server(&pki).await;
    for http2 in [false, true] {
        let target = target(server.addr, &pki, false, http2);
        // TLS 1.3 finishes the client's side of the handshake before the server rejects the
        // missing certificate, so the refusal shows either here or on the first request: as
        // the server's alert, or as a broken pipe or reset when the client's write meets the
        // closed connection before the alert is read.
        let error = match Connection::connect(&target).await {
            Err(e) => e,
            Ok(mut conn) => conn.post("/echo", BODY.to_vec()).await.unwrap_err(),
        };
        let text = format!("{error:#}");
        assert!(
            ["CertificateRequired", "broken pipe", "reset", "closed"]
                .iter()
                .any(|cause| text.contains(cause)),
            "http2={http2}: {text}"
        );

        let spec = LoadSpec {
            target,
            path: "/echo".into(),
            body: BODY.to_vec(),
            connections: 2,
            requests: 6,
            keep_bodies_every: 0,
        };
        let error = load::run(&spec, |_: &Reply| {}).await.unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("none of 6 requests got a reply") || text.contains("opening connection"),
            "http2={http2}: {text}"
        );
        assert!(
            text.to_lowercase().contains("certificate"),
            "http2={http2}: {text}"
        );
    }
    assert_eq!(
        server.accepted.load(Ordering::Relaxed),
        0,
        "no connection without a client certificate got past TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_does_not_trust_the_server_fails_the_handshake() {
    let pki = pki();
    let other = self::pki();
    let server = start_echo_server(&pki).await;
    let mut target = target(server.addr, &pki, true, false);
    target.identity.ca_pem = other.ca_pem.into_bytes();
    let error = Connection::connect(&target).await.err().unwrap();
    let text = format!("{error:#}");
    assert!(text.contains("TLS handshake with localhost"), "{text}");
    assert!(text.contains("invalid peer certificate"), "{text}");
}

/// `tls_server` answers every request with `Connection: close`: the client opens a new
/// connection for each request without counting transport errors.
#[test]
fn server_closing_after_each_reply_is_followed_by_reconnects() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cert = write("server.pem", &pki.server_cert_pem);
    let key = write("server-key.pem", &pki.server_key_pem);
    let ca = write("ca.pem", &pki.ca_pem);
    let server = kpki_e2e::tls_server::start(&cert, &key, &ca);
    let addr: SocketAddr = ([127, 0, 0, 1], server.port).into();
    let spec = LoadSpec {
        target: target(addr, &pki, true, false),
        path: "/api".into(),
        body: b"{}".to_vec(),
        connections: 2,
        requests: 20,
        keep_bodies_every: 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(load::run(&spec, |_: &Reply| {})).unwrap();
    assert_eq!(report.ok, 20, "{report:?}");
    assert_eq!(report.transport_errors, 0, "{report:?}");
    assert!((18..=19).contains(&report.reconnects), "{report:?}");
    assert_eq!(report.kept.len(), 20);
    assert!(
        report
            .kept
            .iter()
            .all(|b| b.starts_with(b"{\"kind\":\"APIVersions\""))
    );
    assert_eq!(server.seen.lock().unwrap().len(), 20);
}

/// The `kpki-load` binary drives the same server and prints its report as one JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpki_load_binary_prints_a_json_report() {
    let pki = pki();
    let server = start_echo_server(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let ca = write("ca.pem", pki.ca_pem.as_bytes());
    let cert = write("client.pem", pki.client_cert_pem.as_bytes());
    let key = write("client-key.pem", pki.client_key_pem.as_bytes());
    let body = write("body.json", BODY);
    let url = format!("https://127.0.0.1:{}/api/v1/cfssl/sign", server.addr.port());
    for http2 in [false, true] {
        let mut args = vec![
            "--url",
            &url,
            "--server-name",
            "localhost",
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--body-file",
            &body,
            "--connections",
            "3",
            "--requests",
            "50",
            "--json",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if http2 {
            args.push("--http2".into());
        }
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_kpki-load"))
                .args(&args)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "http2={http2}: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["requests"], 50, "{report}");
        assert_eq!(report["ok"], 50, "{report}");
        assert_eq!(report["by_status"]["200"], 50, "{report}");
        assert_eq!(report["transport_errors"], 0, "{report}");
        for key in ["elapsed_ms", "rate", "p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
        }
        assert!(report["p50_ms"].as_f64() <= report["max_ms"].as_f64());
    }

    // Without a client certificate: a failure exit and a message naming the cause.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kpki-load"))
            .args(["--url", &url, "--server-name", "localhost", "--ca", &ca])
            .args(["--body-file", &body, "--requests", "4"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("certificate"), "{stderr}");
}
