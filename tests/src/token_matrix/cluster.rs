//! A cluster's PKI with all three CAs on the token: `kpki init` (every certificate and
//! kubeconfig client certificate passes `openssl verify -purpose`), `kpki certs renew all`,
//! `kpki sign` of an openssl-made request, and `kpki serve` issuing 500 certificates over 8
//! keep-alive mTLS connections with zero errors, each verifying against the token-held CA.

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::cluster_algorithm;
use crate::hsm::TestToken;
use crate::hsm::matrix::{Token, TokenKind};
use crate::load::{self, LoadSpec};
use crate::serve::ServeFixture;
use crate::{kpki, openssl, openssl_csr, text};

/// Leaf certificates of a control-plane node: (file stem under pki/, CA file stem, purpose).
const LEAVES: &[(&str, &str, &str)] = &[
    ("apiserver", "ca", "sslserver"),
    ("apiserver-kubelet-client", "ca", "sslclient"),
    ("front-proxy-client", "front-proxy-ca", "sslclient"),
    ("etcd/server", "etcd/ca", "sslserver"),
    ("etcd/peer", "etcd/ca", "sslserver"),
    ("etcd/healthcheck-client", "etcd/ca", "sslclient"),
    ("apiserver-etcd-client", "etcd/ca", "sslclient"),
];

/// Kubeconfigs whose embedded client certificate the cluster CA signs.
const KUBECONFIGS: &[&str] = &[
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

/// `--key` arguments putting `ca`, `front-proxy-ca` and `etcd-ca` on the token.
pub fn ca_key_args(token: &Token, prefix: &str) -> Vec<String> {
    let mut args = Vec::new();
    for ca in ["ca", "front-proxy-ca", "etcd-ca"] {
        args.push("--key".to_string());
        args.push(format!("{ca}={}", token.key_uri(&format!("{prefix}-{ca}"))));
    }
    args
}

fn verify(name: &str, ca: &Path, purpose: &str, cert: &Path) {
    let out = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        purpose,
        cert.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{name}: openssl verify -purpose {purpose} {}: {:?}",
        cert.display(),
        text(&out)
    );
}

fn serial_of(path: &Path) -> Vec<u8> {
    let der = pem::parse(std::fs::read(path).unwrap())
        .unwrap()
        .into_contents();
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    c.raw_serial().to_vec()
}

/// Every CA, leaf and kubeconfig client certificate of `root` passes `openssl verify
/// -purpose`; returns the leaves' serials.
fn verify_all(name: &str, root: &Path) -> Vec<Vec<u8>> {
    let pki = root.join("pki");
    for ca in ["ca", "front-proxy-ca", "etcd/ca"] {
        let c = pki.join(format!("{ca}.crt"));
        verify(name, &c, "any", &c);
    }
    let mut serials = Vec::new();
    for (leaf, ca, purpose) in LEAVES {
        let crt = pki.join(format!("{leaf}.crt"));
        verify(name, &pki.join(format!("{ca}.crt")), purpose, &crt);
        serials.push(serial_of(&crt));
    }
    for conf in KUBECONFIGS {
        let doc: Value =
            serde_norway::from_str(&std::fs::read_to_string(root.join(conf)).unwrap()).unwrap();
        let data = doc["users"][0]["user"]["client-certificate-data"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: {conf} has no client certificate"));
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        let file = root.join(format!("{conf}.crt"));
        std::fs::write(&file, pem).unwrap();
        verify(name, &pki.join("ca.crt"), "sslclient", &file);
    }
    serials
}

/// `kpki init` with the three CAs on a fresh token, `certs renew all`, `kpki sign`.
pub fn init_renew_sign(kind: TokenKind) {
    let token = Token::start(kind);
    let name = kind.name();
    let algorithm = cluster_algorithm(kind);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("k8s");
    let keys = ca_key_args(&token, "pki");
    let mut args = vec![
        "init".to_string(),
        "--dir".into(),
        root.display().to_string(),
        "--node-name".into(),
        "cp1".into(),
        "--advertise-address".into(),
        "127.0.0.1".into(),
        "--encryption-algorithm".into(),
        algorithm.into(),
    ];
    args.extend(keys.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kpki(&refs);
    assert!(out.status.success(), "{name}: kpki init: {:?}", text(&out));
    for ca in ["ca", "front-proxy-ca", "etcd/ca"] {
        assert!(
            !root.join(format!("pki/{ca}.key")).exists(),
            "{name}: {ca} key must stay on the token"
        );
    }
    let before = verify_all(name, &root);

    let mut renew = vec![
        "certs",
        "renew",
        "all",
        "--dir",
        root.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "127.0.0.1",
    ];
    renew.extend(keys.iter().map(String::as_str));
    let out = kpki(&renew);
    assert!(
        out.status.success(),
        "{name}: kpki certs renew all: {:?}",
        text(&out)
    );
    let after = verify_all(name, &root);
    for ((leaf, _, _), (b, a)) in LEAVES.iter().zip(before.iter().zip(&after)) {
        assert_ne!(b, a, "{name}: {leaf} was not renewed");
    }

    let csr = dir.path().join("jane.csr");
    std::fs::write(
        &csr,
        openssl_csr(dir.path(), "jane", "p256", "/CN=jane/O=dev", &[]),
    )
    .unwrap();
    let mut sign = vec![
        "sign",
        csr.to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
    ];
    sign.extend(keys.iter().map(String::as_str));
    let out = kpki(&sign);
    assert!(out.status.success(), "{name}: kpki sign: {:?}", text(&out));
    let issued = dir.path().join("jane.crt");
    std::fs::write(&issued, &out.stdout).unwrap();
    verify(name, &root.join("pki/ca.crt"), "sslclient", &issued);
}

/// The policy of the serve test: one caller may have client certificates for `load-user`.
const POLICY: &str = r#"
[[policy]]
name = "load"
callers = { cn = "loadgen" }
signers = ["kubernetes.io/kube-apiserver-client"]
cn = "load-user"
"#;

/// Requests of the serve test, and the connections they go over.
const REQUESTS: u64 = 500;
const CONNECTIONS: usize = 8;

/// `kpki serve` with its CA key on a fresh token issues 500 certificates over 8 mTLS
/// connections with zero errors; every certificate verifies against the CA.
pub fn serve_500(kind: TokenKind) {
    let token = Token::start(kind);
    let name = kind.name();
    let uri = token.key_uri("serve-ca");
    serve_load(&token, uri, name);
}

/// The serve fixture's view of a matrix token (label and PIN file).
pub fn test_token(token: &Token) -> TestToken {
    TestToken {
        label: token.label().to_string(),
        pin_file: token.pin_file().to_path_buf(),
    }
}

fn serve_load(token: &Token, uri: String, name: &str) {
    let f = ServeFixture::with_key(
        cluster_algorithm(token.kind()),
        POLICY,
        test_token(token),
        uri,
    );
    let mut daemon = f.start();
    let csr = openssl_csr(f.dir.path(), "load", "p256", "/CN=load-user", &[]);
    let body = json!({ "csr": csr, "signer_name": "kubernetes.io/kube-apiserver-client" })
        .to_string()
        .into_bytes();
    let spec = LoadSpec {
        target: f.target(f.identity("loadgen", None)),
        path: "/v1/sign".into(),
        body,
        connections: CONNECTIONS,
        requests: REQUESTS,
        keep_bodies_every: 1,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(load::run(&spec, |_| {})).unwrap();
    eprintln!(
        "{name}: {} requests in {:?}: {:.0}/s, p50 {:?}, p99 {:?}, statuses {:?}",
        report.requests, report.elapsed, report.rate, report.p50, report.p99, report.by_status
    );
    assert_eq!(
        report.ok,
        REQUESTS,
        "{name}: statuses {:?}, first error {:?}, log: {}",
        report.by_status,
        report.first_error,
        daemon.log_text()
    );
    assert_eq!(report.transport_errors, 0, "{name}");
    let ca_der = pem::parse(std::fs::read(&f.ca_cert).unwrap())
        .unwrap()
        .into_contents();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(report.kept.len() as u64, REQUESTS);
    for body in &report.kept {
        let v: Value = serde_json::from_slice(body).unwrap();
        let der = pem::parse(v["certificate"].as_str().unwrap())
            .unwrap()
            .into_contents();
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        c.verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|e| panic!("{name}: issued certificate does not verify: {e}"));
    }
    let status = daemon.terminate();
    assert!(status.success(), "{name}: {}", daemon.log_text());
}
