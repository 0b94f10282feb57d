//! HSM outage under load: the CA key is on a SoftHSM token served by `p11-kit server`.
//! While 8 keep-alive clients issue certificates, the server is killed and restarted.
//! Every 200 carries a certificate that verifies against the CA; errors are 503 only;
//! `/readyz` fails within 2 s of the kill and recovers within 2 s of the restart; the
//! daemon never exits, and issuance resumes without a restart.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kpki_e2e::hsm;
use kpki_e2e::load::Connection;
use kpki_e2e::openssl_csr;
use kpki_e2e::p11kit::{self, start_server, stop_server};
use kpki_e2e::serve::ServeFixture;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The policy, and a request timeout below the clients' 30 s: a call that meets a token
/// that stops answering is answered 503 instead of outliving the client's wait.
const POLICY: &str = r#"
[limits]
request_timeout = "5s"

[[policy]]
name = "load"
callers = { cn = "loadgen" }
signers = ["kubernetes.io/kube-apiserver-client"]
"#;

#[derive(Default)]
struct Tally {
    ok_before: u64,
    ok_during: u64,
    ok_after: u64,
    unavailable: u64,
    other: Vec<(u16, String)>,
    certs: Vec<Vec<u8>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_survives_an_hsm_outage() {
    p11kit::require();
    let token = hsm::token();
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("p11-kit.sock");
    let mut server = Some(start_server(&socket, &token.label));
    p11kit::use_server(&socket);
    let uri = p11kit::key_uri(&token, "outage-ca");
    let f = ServeFixture::with_key("ECDSA-P256", POLICY, token.clone(), uri);
    let mut daemon = f.start();
    let csr = openssl_csr(f.dir.path(), "load", "p256", "/CN=load-user", &[]);
    let body =
        json!({ "csr": csr, "signer_name": "kubernetes.io/kube-apiserver-client" }).to_string();

    // 0: before, 1: outage, 2: after restart.
    let phase = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let target = f.target(f.identity("loadgen", None));
        let (phase, stop, tally, body) = (phase.clone(), stop.clone(), tally.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = Connection::connect(&target).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let reply = match conn.post("/v1/sign", body.clone().into_bytes()).await {
                    Ok(r) => r,
                    Err(e) => panic!("transport error (the daemon must keep serving): {e}"),
                };
                let mut t = tally.lock().await;
                match reply.status {
                    200 => {
                        let v: Value = serde_json::from_slice(&reply.body).unwrap();
                        let pem = pem::parse(v["certificate"].as_str().unwrap()).unwrap();
                        t.certs.push(pem.into_contents());
                        match phase.load(Ordering::Relaxed) {
                            0 => t.ok_before += 1,
                            1 => t.ok_during += 1,
                            _ => t.ok_after += 1,
                        }
                    }
                    503 => {
                        let v: Value = serde_json::from_slice(&reply.body).unwrap();
                        assert!(
                            ["hsm_unavailable", "busy"]
                                .contains(&v["error"]["code"].as_str().unwrap()),
                            "{v}"
                        );
                        t.unavailable += 1;
                    }
                    s => t
                        .other
                        .push((s, String::from_utf8_lossy(&reply.body).into_owned())),
                }
                drop(t);
                if reply.status == 503 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    phase.store(1, Ordering::Relaxed);
    stop_server(server.take().unwrap());
    let killed = Instant::now();
    let to_unready =
        tokio::task::block_in_place(|| daemon.wait_ready(false, Duration::from_secs(10)));
    assert!(
        to_unready <= Duration::from_secs(2),
        "readyz still 200 {to_unready:?} after the kill: {}",
        daemon.log_text()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(daemon.is_running(), "the daemon exited during the outage");

    server = Some(start_server(&socket, &token.label));
    let to_ready = tokio::task::block_in_place(|| daemon.wait_ready(true, Duration::from_secs(10)));
    phase.store(2, Ordering::Relaxed);
    assert!(
        to_ready <= Duration::from_secs(2),
        "readyz not 200 {to_ready:?} after the restart"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let outage = killed.elapsed();

    let t = tally.lock().await;
    eprintln!(
        "before {} / during {} / after {} certificates, {} × 503; unready after {to_unready:?}, ready again after {to_ready:?} (outage {outage:?})",
        t.ok_before, t.ok_during, t.ok_after, t.unavailable
    );
    assert!(
        t.other.is_empty(),
        "statuses other than 200/503: {:?}",
        &t.other[..t.other.len().min(3)]
    );
    assert!(t.ok_before > 0 && t.ok_after > 0, "issuance did not resume");
    assert!(t.unavailable > 0, "no request met the outage");
    // No response carries a bad certificate.
    let ca_der = pem::parse(std::fs::read(&f.ca_cert).unwrap())
        .unwrap()
        .into_contents();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    for der in &t.certs {
        let (_, c) = X509Certificate::from_der(der).unwrap();
        c.verify_signature(Some(ca.public_key())).unwrap();
    }
    assert!(daemon.is_running());
    let status = daemon.terminate();
    assert!(status.success(), "{}", daemon.log_text());
    stop_server(server.take().unwrap());
}
