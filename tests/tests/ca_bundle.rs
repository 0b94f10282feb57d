//! A `ca.crt` holding two certificates — the signing CA and an unrelated CA made by openssl,
//! appended after it or put before it — is read the same way by every command: `kpki init`
//! keeps every file, `certs renew apiserver` renews, `certs check-expiration` lists the signing
//! CA, `kpki sign` issues a certificate that verifies against the signing CA, `kpki inspect`
//! shows both certificates and `kpki serve` starts and issues. The cluster CA key is on a
//! SoftHSM token.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kpki_e2e::load::Connection;
use kpki_e2e::serve::ServeFixture;
use kpki_e2e::{kpki, openssl, openssl_csr, text};
use serde_json::{Value, json};

const KAC: &str = "kubernetes.io/kube-apiserver-client";

const POLICY: &str = r#"
[[policy]]
name = "onboarding"
callers = { cn = "onboarder" }
signers = ["kubernetes.io/kube-apiserver-client"]
cn = "[a-z][a-z0-9-]*"
orgs = ["dev"]
max_validity = "720h"
"#;

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Runs kpki with `args`, then the cluster flags; panics with its output unless it succeeds.
fn ok(what: &str, args: &[&str], cluster: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(cluster);
    let out = kpki(&all);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{what}: {stdout}{stderr}");
    stdout
}

/// `openssl verify` of `cert` against the CA file `ca` alone.
fn verifies(ca: &Path, cert: &Path) -> bool {
    openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ])
    .status
    .success()
}

/// An unrelated self-signed P-256 CA valid for 30 days, as PEM.
fn other_ca(dir: &Path) -> String {
    let (key, crt) = (dir.join("other-ca.key"), dir.join("other-ca.crt"));
    let out = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
        "-subj",
        "/CN=other-ca",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    std::fs::read_to_string(crt).unwrap()
}

async fn bundle_case(other_first: bool) {
    let case = if other_first { "before" } else { "after" };
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let dir = f.dir.path();
    let root = dir.join("k8s");
    let pki = root.join("pki");
    let key = format!("ca={}", f.ca_key_uri);
    let cluster = [
        "--dir",
        root.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "127.0.0.1",
        "--encryption-algorithm",
        "ECDSA-P256",
        "--key",
        &key,
    ];
    let signing_pem = std::fs::read_to_string(&f.ca_cert).unwrap();
    let signing = dir.join("signing-ca.crt");
    std::fs::write(&signing, &signing_pem).unwrap();
    let other = other_ca(dir);
    let bundle = if other_first {
        format!("{other}{signing_pem}")
    } else {
        format!("{signing_pem}{other}")
    };
    std::fs::write(&f.ca_cert, &bundle).unwrap();

    // init keeps every file as it is.
    let before = snapshot(&root);
    ok(&format!("{case}: init"), &["init"], &cluster);
    assert_eq!(snapshot(&root), before, "{case}: init changed files");

    // check-expiration lists the signing CA (ten years), not the other one (30 days).
    let out = ok(
        &format!("{case}: check-expiration"),
        &["certs", "check-expiration", "-o", "json"],
        &cluster,
    );
    let info: Value = serde_json::from_str(&out).unwrap();
    let ca = info["certificateAuthorities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ca")
        .cloned()
        .unwrap();
    let residual = ca["residualTime"].as_i64().unwrap();
    assert!(residual > 9 * 365 * 86400, "{case}: ca row {ca}");
    assert_eq!(ca["externallyManaged"], false, "{case}: {ca}");

    // renew apiserver: the new certificate is signed by the signing CA.
    ok(
        &format!("{case}: renew apiserver"),
        &["certs", "renew", "apiserver"],
        &cluster,
    );
    let apiserver = pki.join("apiserver.crt");
    assert_ne!(
        std::fs::read(&apiserver).unwrap(),
        before[&apiserver],
        "{case}: apiserver.crt not renewed"
    );
    assert!(verifies(&signing, &apiserver), "{case}: renewed apiserver");
    assert_eq!(std::fs::read_to_string(&f.ca_cert).unwrap(), bundle);

    // sign: the certificate verifies against the signing CA.
    let csr = dir.join("jane.csr");
    std::fs::write(
        &csr,
        openssl_csr(dir, "jane", "p256", "/CN=jane/O=dev", &[]),
    )
    .unwrap();
    let issued = ok(
        &format!("{case}: sign"),
        &["sign", csr.to_str().unwrap()],
        &cluster,
    );
    let jane = dir.join("jane.crt");
    std::fs::write(&jane, issued).unwrap();
    assert!(verifies(&signing, &jane), "{case}: signed certificate");

    // inspect shows both certificates, in file order.
    let out = ok(
        &format!("{case}: inspect"),
        &["inspect", f.ca_cert.to_str().unwrap(), "-o", "json"],
        &[],
    );
    let items: Value = serde_json::from_str(&out).unwrap();
    let subjects: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["subject"].as_str().unwrap())
        .collect();
    let want = if other_first {
        ["CN = other-ca", "CN = kubernetes"]
    } else {
        ["CN = kubernetes", "CN = other-ca"]
    };
    assert_eq!(subjects, want, "{case}: inspect");

    // serve starts and issues with the signing CA.
    let mut daemon = f.start();
    let mut conn = Connection::connect(&f.target(f.identity("onboarder", None)))
        .await
        .unwrap();
    let body = json!({
        "csr": openssl_csr(dir, "joe", "p256", "/CN=joe/O=dev", &[]),
        "signer_name": KAC,
    });
    let reply = conn
        .post("/v1/sign", body.to_string().into_bytes())
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    assert_eq!(reply.status, 200, "{case}: serve: {v}");
    let joe = dir.join("joe.crt");
    std::fs::write(&joe, v["certificate"].as_str().unwrap()).unwrap();
    assert!(verifies(&signing, &joe), "{case}: served certificate");
    assert!(daemon.terminate().success(), "{case}: serve exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_takes_the_signing_certificate_of_a_ca_bundle() {
    bundle_case(false).await;
    bundle_case(true).await;
}
