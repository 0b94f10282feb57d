//! `kpki serve` under load, CA key on SoftHSM: 100,000 issuances over 64 keep-alive mTLS
//! connections with zero errors and zero duplicate serials; 1% of the certificates verified
//! against the CA. Afterwards the audit trail holds exactly one line per issued certificate,
//! `kpki audit verify` accepts it, and deleting or editing any line makes it fail naming
//! that line.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use kpki_e2e::load::{self, LoadSpec, Reply};
use kpki_e2e::openssl_csr;
use kpki_e2e::serve::ServeFixture;
use kpki_e2e::{kpki, text};
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

const POLICY: &str = r#"
[[policy]]
name = "load"
callers = { cn = "loadgen" }
signers = ["kubernetes.io/kube-apiserver-client"]
cn = "load-user"
"#;

const REQUESTS: u64 = 100_000;
const CONNECTIONS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_issuances_unique_verified_and_audited() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let mut daemon = f.start();
    let csr = openssl_csr(f.dir.path(), "load", "p256", "/CN=load-user", &[]);
    let body = json!({ "csr": csr, "signer_name": "kubernetes.io/kube-apiserver-client" })
        .to_string()
        .into_bytes();
    let serials = Arc::new(Mutex::new((HashSet::<String>::new(), 0u64)));
    let seen = serials.clone();
    let on_reply = move |r: &Reply| {
        if r.status == 200 {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let serial = v["serial"].as_str().unwrap().to_string();
            let mut s = seen.lock().unwrap();
            if !s.0.insert(serial) {
                s.1 += 1;
            }
        }
    };
    let spec = LoadSpec {
        target: f.target(f.identity("loadgen", None)),
        path: "/v1/sign".into(),
        body,
        connections: CONNECTIONS,
        requests: REQUESTS,
        keep_bodies_every: 100,
    };
    let report = load::run(&spec, on_reply).await.unwrap();
    eprintln!(
        "{} requests in {:?}: {:.0}/s, p50 {:?}, p99 {:?}, statuses {:?}",
        report.requests, report.elapsed, report.rate, report.p50, report.p99, report.by_status
    );
    assert_eq!(
        report.ok, REQUESTS,
        "statuses {:?}, first error {:?}",
        report.by_status, report.first_error
    );
    assert_eq!(report.transport_errors, 0);
    let (serials, duplicates) = {
        let s = serials.lock().unwrap();
        (s.0.clone(), s.1)
    };
    assert_eq!(duplicates, 0, "duplicate serials");
    assert_eq!(serials.len() as u64, REQUESTS);

    // 1% sample: each verifies against the HSM-held CA.
    let ca_der = pem::parse(std::fs::read(&f.ca_cert).unwrap())
        .unwrap()
        .into_contents();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(report.kept.len() as u64, REQUESTS / 100);
    for body in &report.kept {
        let v: Value = serde_json::from_slice(body).unwrap();
        let der = pem::parse(v["certificate"].as_str().unwrap())
            .unwrap()
            .into_contents();
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        c.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(c.subject().to_string(), "CN=load-user");
    }

    // The audit trail: one allow line per issued serial, and nothing else decided.
    let status = daemon.terminate();
    assert!(status.success(), "{}", daemon.log_text());
    let lines = f.audit_lines();
    let allowed: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "decision")
        .map(|l| {
            assert_eq!(l["decision"], "allow", "{l}");
            l["serial"].as_str().unwrap()
        })
        .collect();
    assert_eq!(allowed.len() as u64, REQUESTS);
    let audited: HashSet<String> = allowed.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        audited, serials,
        "audited serials differ from issued serials"
    );

    let audit = f.audit.to_str().unwrap();
    let out = kpki(&["audit", "verify", audit]);
    assert!(out.status.success(), "{:?}", text(&out));
    // Deleting or editing any line is detected and the line named.
    let original = std::fs::read_to_string(&f.audit).unwrap();
    let all: Vec<&str> = original.lines().collect();
    for (index, edit) in [
        (0, false),
        (1, false),
        (54_321, false),
        (all.len() - 1, false),
        (0, true),
        (77_777, true),
        (all.len() - 1, true),
    ] {
        let mut changed: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        if edit {
            changed[index] = changed[index].replacen("\"time\":\"", "\"time\":\"1", 1);
        } else {
            changed.remove(index);
        }
        std::fs::write(&f.audit, changed.join("\n") + "\n").unwrap();
        let out = kpki(&["audit", "verify", audit]);
        let (_, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{} line {}: {stderr}",
            if edit { "edit" } else { "delete" },
            index + 1
        );
        let named = [index + 1, index].map(|n| format!("line {n}:"));
        assert!(
            stderr.lines().count() == 1 && named.iter().any(|n| stderr.contains(n)),
            "{} line {}: {stderr}",
            if edit { "edit" } else { "delete" },
            index + 1
        );
    }
}
