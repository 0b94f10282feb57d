//! Token outages under load, for every token that can be taken away under a running
//! `kpki serve`: SoftHSM and Kryoptic behind `p11-kit server` (killed and started again),
//! and the TPM, whose tpm2-abrmd (optionally with swtpm) is killed and restarted. While 8
//! keep-alive clients issue certificates: `/readyz` answers 503 within 2 s of the outage,
//! requests meanwhile get 503 `hsm_unavailable`, signing resumes within 2 s of the token's
//! return, the daemon never exits, and every certificate verifies against the CA.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::cluster::test_token;
use super::cluster_algorithm;
use crate::hsm::matrix::{Token, TokenKind};
use crate::load::Connection;
use crate::openssl_csr;
use crate::p11kit::{self, stop_server};
use crate::serve::{ServeFixture, ops_get};

/// How the token is taken away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// `p11-kit server` in front of the token is killed and started again.
    P11KitServer,
    /// tpm2-abrmd is killed and started again (the TPM keeps running).
    Abrmd,
    /// swtpm and tpm2-abrmd are both killed and started again.
    SwtpmAndAbrmd,
}

/// Starts `p11-kit server` for `token` on `socket` (in its own process group, with the
/// token's environment) and waits for the socket.
pub fn start_p11kit_server(token: &Token, socket: &Path) -> Child {
    let _ = std::fs::remove_file(socket);
    let child = token
        .command("p11-kit")
        .args(["server", "-f", "-n"])
        .arg(socket)
        .arg("--provider")
        .arg(token.module())
        .arg(format!(
            "pkcs11:token={}",
            crate::hsm::matrix::pct(token.label())
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "p11-kit server did not create {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[derive(Default)]
struct Tally {
    ok_before: u64,
    ok_during: u64,
    ok_after: u64,
    unavailable: u64,
    busy: u64,
    other: Vec<(u16, String)>,
    certs: Vec<Vec<u8>>,
    transport: Vec<String>,
    first_ok_after: Option<Instant>,
}

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

/// The token taken away and brought back while `kpki serve` issues certificates.
pub fn run(kind: TokenKind, how: Outage) {
    let name = kind.name();
    let mut token = Token::start(kind);
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("p11-kit.sock");
    let mut server: Option<ServerGuard> = None;
    let uri = if how == Outage::P11KitServer {
        p11kit::require();
        server = Some(ServerGuard(Some(start_p11kit_server(&token, &socket))));
        p11kit::use_server(&socket);
        format!(
            "pkcs11:token={};object=outage-ca?{}",
            crate::hsm::matrix::pct(token.label()),
            token.uri_query_for(Path::new(p11kit::CLIENT_MODULE))
        )
    } else {
        token.key_uri("outage-ca")
    };
    let f = ServeFixture::with_key(cluster_algorithm(kind), POLICY, test_token(&token), uri);
    let mut daemon = f.start();
    let csr = openssl_csr(f.dir.path(), "load", "p256", "/CN=load-user", &[]);
    let body =
        json!({ "csr": csr, "signer_name": "kubernetes.io/kube-apiserver-client" }).to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 0: before, 1: outage, 2: token back.
    let phase = Arc::new(AtomicU8::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::new();
    let started = Instant::now();
    for _ in 0..8 {
        let target = f.target(f.identity("loadgen", None));
        let (phase, stop, tally, body) = (phase.clone(), stop.clone(), tally.clone(), body.clone());
        workers.push(rt.spawn(async move {
            let mut conn = Connection::connect(&target).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let reply = match conn.post("/v1/sign", body.clone().into_bytes()).await {
                    Ok(r) => r,
                    Err(e) => {
                        tally.lock().await.transport.push(format!(
                            "{e} (sent {:?} after the start, phase {})",
                            sent.duration_since(started),
                            phase.load(Ordering::Relaxed)
                        ));
                        return;
                    }
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
                            _ => {
                                t.ok_after += 1;
                                t.first_ok_after.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                    503 => {
                        let v: Value = serde_json::from_slice(&reply.body).unwrap();
                        match v["error"]["code"].as_str().unwrap_or_default() {
                            "hsm_unavailable" => t.unavailable += 1,
                            "busy" => t.busy += 1,
                            _ => t.other.push((503, v.to_string())),
                        }
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

    std::thread::sleep(Duration::from_secs(2));
    phase.store(1, Ordering::Relaxed);
    match how {
        Outage::P11KitServer => server.take().unwrap().stop(),
        Outage::Abrmd => token.tpm2().stop_abrmd(),
        Outage::SwtpmAndAbrmd => {
            token.tpm2().stop_abrmd();
            token.tpm2().stop_swtpm();
        }
    }
    let to_unready = daemon.wait_ready(false, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(2));
    let readyz = ops_get(f.ops_addr, "/readyz");
    assert!(
        matches!(readyz, Some((503, _))),
        "{name} {how:?}: /readyz during the outage: {readyz:?}"
    );
    assert!(
        daemon.is_running(),
        "{name}: the daemon exited during the outage"
    );

    match how {
        Outage::P11KitServer => {
            server = Some(ServerGuard(Some(start_p11kit_server(&token, &socket))))
        }
        Outage::Abrmd => token.tpm2().start_abrmd(),
        Outage::SwtpmAndAbrmd => {
            token.tpm2().start_swtpm();
            token.tpm2().start_abrmd();
        }
    }
    let back = Instant::now();
    phase.store(2, Ordering::Relaxed);
    let to_ready = daemon.wait_ready(true, Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        rt.block_on(w).unwrap();
    }

    let t = rt.block_on(tally.lock());
    let to_signing = t.first_ok_after.map(|i| i.duration_since(back));
    eprintln!(
        "{name} {how:?}: before {} / during {} / after {} certificates, {} × hsm_unavailable, {} × busy; unready after {to_unready:?}, ready again after {to_ready:?}, first certificate after {to_signing:?}",
        t.ok_before, t.ok_during, t.ok_after, t.unavailable, t.busy
    );
    assert!(
        to_unready <= Duration::from_secs(2),
        "{name} {how:?}: /readyz still 200 {to_unready:?} into the outage"
    );
    assert!(
        t.transport.is_empty(),
        "{name} {how:?}: transport errors (the daemon must keep serving): {:?}\n{}",
        t.transport,
        daemon.log_text()
    );
    assert!(
        t.other.is_empty(),
        "{name} {how:?}: replies other than 200 / 503 hsm_unavailable / busy: {:?}",
        &t.other[..t.other.len().min(3)]
    );
    assert!(t.ok_before > 0, "{name}: nothing issued before the outage");
    assert!(t.unavailable > 0, "{name}: no request met the outage");
    assert!(
        to_ready <= Duration::from_secs(2),
        "{name} {how:?}: /readyz not 200 {to_ready:?} after the token came back: {}",
        daemon.log_text()
    );
    assert!(
        to_signing.is_some_and(|d| d <= Duration::from_secs(2)),
        "{name} {how:?}: first certificate {to_signing:?} after the token came back: {}",
        daemon.log_text()
    );
    let ca_der = pem::parse(std::fs::read(&f.ca_cert).unwrap())
        .unwrap()
        .into_contents();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    for der in &t.certs {
        let (_, c) = X509Certificate::from_der(der).unwrap();
        c.verify_signature(Some(ca.public_key())).unwrap();
    }
    drop(t);
    assert!(daemon.is_running(), "{name}: the daemon exited");
    let status = daemon.terminate();
    assert!(status.success(), "{name}: {}", daemon.log_text());
    if let Some(s) = server.take() {
        s.stop();
    }
    token.assert_daemons_running();
}

/// A `p11-kit server` that is stopped (its process group killed) when dropped, so a failing
/// test leaves nothing running.
struct ServerGuard(Option<Child>);

impl ServerGuard {
    fn stop(mut self) {
        if let Some(c) = self.0.take() {
            stop_server(c);
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            stop_server(c);
        }
    }
}
