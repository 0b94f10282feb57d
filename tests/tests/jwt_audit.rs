//! The token signer inside `kpki serve` counts every `Sign` call in
//! `kpki_jwt_sign_total{result}` and, with `jwt.audit = true`, writes a `token` record for each
//! (peer uid, subject, digest of the claims, outcome, key) into the same verified chain;
//! without it, no token records. `--jwt-only` audits too, and refuses `jwt.audit` without an
//! `[audit]` section.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kpki_e2e::jwt_client::{self, V1Alpha1Client, V1Client, proto};
use kpki_e2e::serve::{ServeFixture, ops_get};
use kpki_e2e::{kpki, text};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tonic::Code;

fn policy(socket: &std::path::Path, key: &str, audit: bool) -> String {
    format!(
        r#"
[[policy]]
name = "users"
callers = {{ cn = "onboarder" }}
signers = ["kubernetes.io/kube-apiserver-client"]

[jwt]
socket = "{}"
signing_key = "{key}"
max_claims_bytes = 4096
audit = {audit}
"#,
        socket.display()
    )
}

fn claims(sub: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        json!({ "iss": "https://kubernetes.default.svc", "sub": sub, "exp": 4_000_000_000u64 })
            .to_string(),
    )
}

/// The value of the sample `name` in a Prometheus text exposition, 0 when absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_calls_are_counted_and_audited_when_asked() {
    let token = kpki_e2e::hsm::token();
    let sa = token.key_uri("sa-audit");
    let out = kpki(&["keys", "create", &sa, "-a", "ECDSA-P256"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("jwt.sock");
    let f = ServeFixture::new("ECDSA-P256", &policy(&socket, &sa, true));
    let mut daemon = f.start();

    let mut v1 = V1Client::new(jwt_client::channel(&socket).await.unwrap());
    let mut alpha = V1Alpha1Client::new(jwt_client::channel(&socket).await.unwrap());
    for sub in [
        "system:serviceaccount:default:a",
        "system:serviceaccount:kube-system:b",
    ] {
        v1.sign(proto::v1::SignJwtRequest {
            claims: claims(sub),
        })
        .await
        .unwrap();
    }
    alpha
        .sign(proto::v1alpha1::SignJwtRequest {
            claims: claims("system:serviceaccount:default:c"),
        })
        .await
        .unwrap();
    for bad in ["not base64url!", &URL_SAFE_NO_PAD.encode("[1]")] {
        let e = v1
            .sign(proto::v1::SignJwtRequest {
                claims: bad.to_string(),
            })
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    let (status, metrics) = ops_get(f.ops_addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        sample(&metrics, "kpki_jwt_sign_total{result=\"ok\"}"),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "kpki_jwt_sign_total{result=\"invalid_argument\"}"),
        2.0,
        "{metrics}"
    );
    assert!(daemon.terminate().success(), "{}", daemon.log_text());

    let tokens: Vec<serde_json::Value> = f
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "token")
        .collect();
    assert_eq!(tokens.len(), 5, "{tokens:#?}");
    let subjects: Vec<_> = tokens.iter().map(|t| t["subject"].as_str()).collect();
    assert_eq!(
        subjects,
        [
            Some("system:serviceaccount:default:a"),
            Some("system:serviceaccount:kube-system:b"),
            Some("system:serviceaccount:default:c"),
            None,
            None
        ]
    );
    let uid = own_uid();
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(t["caller"]["cn"], format!("uid:{uid}"), "{t}");
        let key = t["key_uri"].as_str().unwrap();
        assert!(
            key.starts_with("pkcs11:") && key.contains("object=sa-audit"),
            "{t}"
        );
        assert!(!key.contains("pin-value"), "{t}");
        let (decision, code, endpoint) = match i {
            0 | 1 => ("allow", None, "/v1.ExternalJWTSigner/Sign"),
            2 => ("allow", None, "/v1alpha1.ExternalJWTSigner/Sign"),
            _ => (
                "error",
                Some("invalid_argument"),
                "/v1.ExternalJWTSigner/Sign",
            ),
        };
        assert_eq!(t["decision"], decision, "{t}");
        assert_eq!(t["code"].as_str(), code, "{t}");
        assert_eq!(t["endpoint"], endpoint, "{t}");
        assert_eq!(t["request_sha256"].as_str().unwrap().len(), 64, "{t}");
    }
    let out = kpki(&["audit", "verify", f.audit.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));

    // Without `jwt.audit`: counted, not audited.
    let before = f.audit_lines().len();
    f.write_config(&policy(&socket, &sa, false));
    let mut daemon = f.start();
    let mut v1 = V1Client::new(jwt_client::channel(&socket).await.unwrap());
    v1.sign(proto::v1::SignJwtRequest {
        claims: claims("system:serviceaccount:default:d"),
    })
    .await
    .unwrap();
    let (_, metrics) = ops_get(f.ops_addr, "/metrics").unwrap();
    assert_eq!(
        sample(&metrics, "kpki_jwt_sign_total{result=\"ok\"}"),
        1.0,
        "{metrics}"
    );
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
    let after = f.audit_lines();
    assert_eq!(after.len(), before + 2, "only open and close were added");
    assert!(after[before..].iter().all(|l| l["event"] != "token"));
}

/// This process's uid (the peer the daemon sees).
fn own_uid() -> u32 {
    let out = std::process::Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_signer_alone_audits_when_asked_and_needs_an_audit_section() {
    let token = kpki_e2e::hsm::token();
    let sa = token.key_uri("sa-alone");
    let out = kpki(&["keys", "create", &sa, "-a", "ECDSA-P256"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("jwt.sock");
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("serve.toml");
    let jwt = format!(
        "[jwt]\nsocket = \"{}\"\nsigning_key = \"{sa}\"\naudit = true\n",
        socket.display()
    );

    // Without [audit]: refused at start, one line.
    std::fs::write(&config, &jwt).unwrap();
    let out = Command::new(kpki_e2e::kpki_bin())
        .args(["serve", "--jwt-only", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.ends_with("jwt.audit needs an [audit] section\n"),
        "{stderr}"
    );

    std::fs::write(
        &config,
        format!("{jwt}\n[audit]\npath = \"{}\"\n", audit.display()),
    )
    .unwrap();
    let mut child = Command::new(kpki_e2e::kpki_bin())
        .args(["serve", "--jwt-only", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut v1 = loop {
        if let Ok(ch) = jwt_client::channel(&socket).await {
            let mut c = V1Client::new(ch);
            if c.metadata(proto::v1::MetadataRequest {}).await.is_ok() {
                break c;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "kpki serve --jwt-only exited"
        );
        assert!(Instant::now() < deadline, "token signer not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    v1.sign(proto::v1::SignJwtRequest {
        claims: claims("system:serviceaccount:default:alone"),
    })
    .await
    .unwrap();
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(child.wait().unwrap().success());
    let events: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
        .collect();
    assert_eq!(events, ["\"open\"", "\"token\"", "\"close\""]);
    let out = kpki(&["audit", "verify", audit.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
}
