//! A token that stops answering: the CA key is on a SoftHSM token behind `p11-kit server`,
//! and the server is frozen (SIGSTOP), as a network HSM behind a silent partition is: its
//! socket stays open and no reply comes. Every request is answered (503) within the request
//! timeout instead of waiting for the token, the operations listener keeps answering and
//! `/readyz` turns false; a caller that went away meanwhile still has its decision audited;
//! once the server is thawed (SIGCONT), signing resumes without a
//! restart of the daemon.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use kpki_e2e::hsm;
use kpki_e2e::load::Connection;
use kpki_e2e::openssl_csr;
use kpki_e2e::p11kit::{self, start_server, stop_server};
use kpki_e2e::serve::{ServeFixture, ops_get};
use serde_json::{Value, json};

/// The policy, and a request timeout short enough for the test.
const CONFIG: &str = r#"
[limits]
request_timeout = "2s"

[[policy]]
name = "load"
callers = { cn = "loadgen" }
signers = ["kubernetes.io/kube-apiserver-client"]
"#;

/// Sends `signal` to the process group `pgid`.
fn signal_group(signal: &str, pgid: u32) {
    let st = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{signal} -{pgid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_token_gets_answers_within_the_request_timeout() {
    p11kit::require();
    let token = hsm::token();
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("p11-kit.sock");
    let server = start_server(&socket, &token.label);
    let pgid = server.id();
    p11kit::use_server(&socket);
    let uri = p11kit::key_uri(&token, "frozen-ca");
    let f = ServeFixture::with_key("ECDSA-P256", CONFIG, token.clone(), uri);
    let mut daemon = f.start();
    let csr = openssl_csr(f.dir.path(), "load", "p256", "/CN=load-user", &[]);
    let body =
        json!({ "csr": csr, "signer_name": "kubernetes.io/kube-apiserver-client" }).to_string();
    let target = f.target(f.identity("loadgen", None));
    let mut conn = Connection::connect(&target).await.unwrap();
    let first = conn
        .post("/v1/sign", body.clone().into_bytes())
        .await
        .unwrap();
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );

    signal_group("STOP", pgid);
    let frozen = Instant::now();
    // A caller that goes away while its request waits on the frozen token: its decision is
    // still audited (hsm_unavailable, once the request timeout has passed).
    let abandoned = {
        let (target, body) = (target.clone(), body.clone());
        tokio::spawn(async move {
            let mut conn = Connection::connect(&target).await.unwrap();
            let _ = conn.post("/v1/sign", body.into_bytes()).await;
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    abandoned.abort();
    // Eight callers at once, more than the token's sessions: each is answered, none waits
    // for the token beyond the request timeout (2 s) plus scheduling.
    let mut calls = Vec::new();
    for _ in 0..8 {
        let (target, body) = (target.clone(), body.clone());
        calls.push(tokio::spawn(async move {
            let mut conn = Connection::connect(&target).await.unwrap();
            let sent = Instant::now();
            let reply = conn.post("/v1/sign", body.into_bytes()).await;
            (sent.elapsed(), reply)
        }));
    }
    for c in calls {
        let (took, reply) = c.await.unwrap();
        let reply = reply.unwrap_or_else(|e| {
            panic!(
                "no answer while the token is frozen ({e}, after {took:?}): {}",
                daemon.log_text()
            )
        });
        assert_eq!(
            reply.status,
            503,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let v: Value = serde_json::from_slice(&reply.body).unwrap();
        let code = v["error"]["code"].as_str().unwrap_or_default().to_string();
        assert!(["hsm_unavailable", "busy"].contains(&code.as_str()), "{v}");
        assert!(
            took < Duration::from_secs(6),
            "answered {took:?} after it was sent ({code})"
        );
    }
    // Nine requests met the frozen token (the abandoned one and the eight answered): each
    // has its audit line.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = f
            .audit_lines()
            .iter()
            .filter(|l| {
                l["event"] == "decision"
                    && ["hsm_unavailable", "busy"].contains(&l["code"].as_str().unwrap_or(""))
            })
            .count();
        if refused == 9 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refused} refusals audited while the token was frozen, 9 expected: {}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ops = ops_get(f.ops_addr, "/healthz");
    assert!(
        matches!(ops, Some((200, _))),
        "/healthz while the token is frozen: {ops:?}"
    );
    let to_unready =
        tokio::task::block_in_place(|| daemon.wait_ready(false, Duration::from_secs(10)));
    eprintln!(
        "readyz false {to_unready:?} after the check began, {:?} after the freeze",
        frozen.elapsed()
    );

    signal_group("CONT", pgid);
    let to_ready = tokio::task::block_in_place(|| daemon.wait_ready(true, Duration::from_secs(30)));
    eprintln!("ready again {to_ready:?} after the thaw");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = conn.post("/v1/sign", body.clone().into_bytes()).await;
        if let Ok(r) = &reply
            && r.status == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "signing did not resume after the thaw: {:?}: {}",
            reply.map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned())),
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        if reply.is_err() {
            conn = Connection::connect(&target).await.unwrap();
        }
    }
    assert!(daemon.is_running());
    let status = daemon.terminate();
    assert!(status.success(), "{}", daemon.log_text());
    stop_server(server);
}
