//! The ExternalJWTSigner (`kpki serve --jwt-only`) with keys on SoftHSM, called by a client
//! generated from the test crate's own copy of the service definition: all three RPCs in
//! both packages for ES256, ES384 and RS256; every token verifies with jsonwebtoken and with
//! `openssl dgst -verify` on the key `FetchKeys` returned; the key id follows kube-apiserver's
//! rule. Rotation by SIGHUP, bad input, a uid that is not allowed, and a token outage.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kpki_e2e::jwt_client::{self, V1Alpha1Client, V1Client, proto};
use kpki_e2e::p11kit::{self, start_server, stop_server};
use kpki_e2e::{hsm, init_cluster, kpki, openssl, text};
use serde_json::{Value, json};
use tonic::Code;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A running `kpki serve --jwt-only`; killed on drop.
struct Signer {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Signer {
    async fn start(dir: &Path, config: &str) -> Signer {
        let path = dir.join("serve.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("serve.log");
        let child = Command::new(kpki_e2e::kpki_bin())
            .args(["serve", "--jwt-only", "--config", path.to_str().unwrap()])
            .env("KPKI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Signer {
            child,
            socket: dir.join("jwt.sock"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                panic!("kpki serve exited ({st}): {}", s.log_text());
            }
            if let Ok(mut c) = s.v1().await
                && c.metadata(proto::v1::MetadataRequest {}).await.is_ok()
            {
                return s;
            }
            assert!(Instant::now() < deadline, "signer not up: {}", s.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn v1(&self) -> anyhow::Result<V1Client> {
        Ok(V1Client::new(jwt_client::channel(&self.socket).await?))
    }

    async fn v1alpha1(&self) -> anyhow::Result<V1Alpha1Client> {
        Ok(V1Alpha1Client::new(
            jwt_client::channel(&self.socket).await?,
        ))
    }

    fn hup(&mut self, config: &str) {
        std::fs::write(self.socket.with_file_name("serve.toml"), config).unwrap();
        let st = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

fn config(dir: &Path, signing: &str, extra: &str) -> String {
    format!(
        r#"[jwt]
socket = "{sock}"
signing_key = "{signing}"
refresh_hint = "60s"
max_claims_bytes = 4096
{extra}

[signing]
probe_interval = "200ms"
"#,
        sock = dir.join("jwt.sock").display()
    )
}

fn create_key(uri: &str, algorithm: &str) {
    let out = kpki(&["keys", "create", uri, "-a", algorithm]);
    assert!(out.status.success(), "{:?}", text(&out));
}

/// kube-apiserver's kid rule, computed here independently.
fn expected_kid(spki: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, spki))
}

fn claims(sub: &str) -> (String, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = json!({
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:default:{sub}"),
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "kubernetes.io": { "namespace": "default", "serviceaccount": { "name": sub, "uid": "0b0f8b3c" } }
    });
    (URL_SAFE_NO_PAD.encode(c.to_string()), now)
}

/// A v1 `Sign` of fresh claims for service account `sub`: the assembled token.
async fn sign_token(c: &mut V1Client, sub: &str) -> String {
    let (claims_b64, _) = claims(sub);
    let r = c
        .sign(proto::v1::SignJwtRequest {
            claims: claims_b64.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    format!("{}.{claims_b64}.{}", r.header, r.signature)
}

fn spki_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("PUBLIC KEY", der.to_vec()))
}

/// Verifies `token` with jsonwebtoken against `spki` (PKIX DER) for `alg`.
fn verify_jwt(token: &str, spki: &[u8], alg: Algorithm) -> Value {
    let pem = spki_pem(spki);
    let key = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        _ => DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    };
    let mut v = Validation::new(alg);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&["https://kubernetes.default.svc.cluster.local"]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap_or_else(|e| panic!("{alg:?} token does not verify: {e}"))
        .claims
}

/// Verifies the signature of `token` with `openssl dgst -verify` on the PKIX key.
fn verify_openssl(dir: &Path, token: &str, spki: &[u8], alg: &str) {
    let (signed, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let sig = if alg.starts_with("ES") {
        kpki_signer::spki::ecdsa_raw_to_der(&sig).unwrap()
    } else {
        sig
    };
    let (key, data, sigf) = (dir.join("k.pem"), dir.join("data"), dir.join("sig"));
    std::fs::write(&key, spki_pem(spki)).unwrap();
    std::fs::write(&data, signed).unwrap();
    std::fs::write(&sigf, sig).unwrap();
    let digest = if alg == "ES384" { "-sha384" } else { "-sha256" };
    let out = openssl(&[
        "dgst",
        digest,
        "-verify",
        key.to_str().unwrap(),
        "-signature",
        sigf.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{alg}: {:?}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verify_for_every_algorithm_in_both_packages() {
    let token = hsm::token();
    for (algorithm, alg, jalg) in [
        ("ECDSA-P256", "ES256", Algorithm::ES256),
        ("ECDSA-P384", "ES384", Algorithm::ES384),
        ("RSA-2048", "RS256", Algorithm::RS256),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let uri = token.key_uri(&format!("sa-{alg}"));
        create_key(&uri, algorithm);
        let signer = Signer::start(dir.path(), &config(dir.path(), &uri, "")).await;
        let mode = std::fs::metadata(&signer.socket).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );

        // v1
        let mut c = signer.v1().await.unwrap();
        let meta = c
            .metadata(proto::v1::MetadataRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(meta.max_token_expiration_seconds, 86400);
        let keys = c
            .fetch_keys(proto::v1::FetchKeysRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(keys.keys.len(), 1);
        assert_eq!(keys.refresh_hint_seconds, 60);
        assert!(keys.data_timestamp.is_some());
        let key = &keys.keys[0];
        assert_eq!(key.key_id, expected_kid(&key.key), "{alg}: kid rule");
        assert!(!key.exclude_from_oidc_discovery);
        let (claims_b64, _) = claims("v1");
        let resp = c
            .sign(proto::v1::SignJwtRequest {
                claims: claims_b64.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&resp.header).unwrap()).unwrap();
        assert_eq!(
            header,
            json!({ "alg": alg, "kid": key.key_id, "typ": "JWT" })
        );
        let jwt = format!("{}.{claims_b64}.{}", resp.header, resp.signature);
        let got = verify_jwt(&jwt, &key.key, jalg);
        assert_eq!(got["sub"], "system:serviceaccount:default:v1");
        verify_openssl(dir.path(), &jwt, &key.key, alg);

        // v1alpha1: same key, same answers.
        let mut a = signer.v1alpha1().await.unwrap();
        let meta = a
            .metadata(proto::v1alpha1::MetadataRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(meta.max_token_expiration_seconds, 86400);
        let akeys = a
            .fetch_keys(proto::v1alpha1::FetchKeysRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(akeys.keys[0].key, key.key);
        assert_eq!(akeys.keys[0].key_id, key.key_id);
        let (claims_b64, _) = claims("v1alpha1");
        let resp = a
            .sign(proto::v1alpha1::SignJwtRequest {
                claims: claims_b64.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let jwt = format!("{}.{claims_b64}.{}", resp.header, resp.signature);
        verify_jwt(&jwt, &key.key, jalg);
        verify_openssl(dir.path(), &jwt, &key.key, alg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_signing_key_and_keeps_old_tokens_verifiable() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (token.key_uri("sa-old"), token.key_uri("sa-new"));
    create_key(&a, "ECDSA-P256");
    create_key(&b, "ECDSA-P256");
    // A cluster's existing sa.pub (kubeadm's file key), listed as verify-only.
    let root = dir.path().join("k8s");
    init_cluster(&root, "127.0.0.1", &[]);
    let sa_pub = root.join("pki/sa.pub");
    let legacy = format!(
        "[[jwt.verify_keys]]\npublic_key = \"{}\"\n",
        sa_pub.display()
    );
    let mut signer = Signer::start(dir.path(), &config(dir.path(), &a, &legacy)).await;
    let mut c = signer.v1().await.unwrap();
    let before = c
        .fetch_keys(proto::v1::FetchKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.keys.len(), 2);
    let legacy_key = &before.keys[1];
    assert!(legacy_key.exclude_from_oidc_discovery);
    let sa_der = pem::parse(std::fs::read(&sa_pub).unwrap())
        .unwrap()
        .into_contents();
    assert_eq!(legacy_key.key, sa_der);
    assert_eq!(legacy_key.key_id, expected_kid(&sa_der));
    let old_kid = before.keys[0].key_id.clone();
    let old_jwt = sign_token(&mut c, "before").await;

    // Same config again: the key set is unchanged, so is data_timestamp.
    signer.hup(&config(dir.path(), &a, &legacy));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let same = c
        .fetch_keys(proto::v1::FetchKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.data_timestamp, before.data_timestamp);

    // Rotate: b signs, a stays as a verify-only key.
    let rotated = format!("{legacy}[[jwt.verify_keys]]\nkey = \"{a}\"\n");
    signer.hup(&config(dir.path(), &b, &rotated));
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let k = c
            .fetch_keys(proto::v1::FetchKeysRequest {})
            .await
            .unwrap()
            .into_inner();
        if k.keys[0].key_id != old_kid {
            break k;
        }
        assert!(
            Instant::now() < deadline,
            "rotation not applied: {}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after.keys.len(), 3);
    assert_ne!(after.data_timestamp, before.data_timestamp);
    let new_key = after.keys[0].clone();
    let old_key = after
        .keys
        .iter()
        .find(|k| k.key_id == old_kid)
        .unwrap()
        .clone();
    assert!(old_key.exclude_from_oidc_discovery);
    let new_jwt = sign_token(&mut c, "after").await;
    assert_eq!(
        jsonwebtoken::decode_header(&new_jwt)
            .unwrap()
            .kid
            .as_deref(),
        Some(new_key.key_id.as_str())
    );
    verify_jwt(&new_jwt, &new_key.key, Algorithm::ES256);
    // The token signed before the rotation still verifies with the listed old key.
    assert_eq!(
        jsonwebtoken::decode_header(&old_jwt)
            .unwrap()
            .kid
            .as_deref(),
        Some(old_kid.as_str())
    );
    verify_jwt(&old_jwt, &old_key.key, Algorithm::ES256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_claims_and_foreign_uids_get_clear_statuses_and_the_server_keeps_serving() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let uri = token.key_uri("sa-bad");
    create_key(&uri, "ECDSA-P256");
    let signer = Signer::start(
        dir.path(),
        &config(dir.path(), &uri, "allowed_uids = [0]\nsocket_uid = 65534"),
    )
    .await;
    let mut c = signer.v1().await.unwrap();
    let big = URL_SAFE_NO_PAD.encode(json!({ "x": "y".repeat(5000) }).to_string());
    for (claims, expect) in [
        ("not base64url!", "not unpadded base64url"),
        ("eyJhIjoxfQ==", "not unpadded base64url"),
        (
            URL_SAFE_NO_PAD.encode("[1,2]").as_str(),
            "not a JSON object",
        ),
        (
            URL_SAFE_NO_PAD.encode("\"text\"").as_str(),
            "not a JSON object",
        ),
        (
            URL_SAFE_NO_PAD.encode("{\"a\":").as_str(),
            "not a JSON object",
        ),
        (big.as_str(), "the limit is 4096"),
    ] {
        let e = c
            .sign(proto::v1::SignJwtRequest {
                claims: claims.to_string(),
            })
            .await
            .expect_err("bad claims must be refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{claims}: {e:?}");
        assert!(e.message().contains(expect), "{claims}: {}", e.message());
    }
    // Still serving.
    let (ok, _) = claims("after-bad-input");
    c.sign(proto::v1::SignJwtRequest { claims: ok })
        .await
        .unwrap();

    // uid 65534 owns the socket (so it can connect) but is not allowed.
    hsm::require_tool("setpriv");
    let call = kpki_e2e::kpki_bin().with_file_name("kpki-jwt-call");
    assert!(
        call.exists(),
        "{} not built (cargo build -p kpki-e2e --bins)",
        call.display()
    );
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let copy = dir.path().join("kpki-jwt-call");
    std::fs::copy(&call, &copy).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            copy.to_str().unwrap(),
            "--socket",
            signer.socket.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.starts_with("PermissionDenied: peer uid 65534"),
        "{stdout}{stderr}"
    );
    // And root (allowed) still signs.
    let (ok, _) = claims("after-foreign-uid");
    c.sign(proto::v1::SignJwtRequest { claims: ok })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_outage_fails_fast_keeps_keys_and_recovers() {
    p11kit::require();
    let token = hsm::token();
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("p11-kit.sock");
    let mut server = Some(start_server(&socket, &token.label));
    p11kit::use_server(&socket);
    let uri = p11kit::key_uri(&token, "sa-remote");
    create_key(&uri, "ECDSA-P256");
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::start(dir.path(), &config(dir.path(), &uri, "")).await;
    let mut c = signer.v1().await.unwrap();
    let (claims_b64, _) = claims("outage");
    c.sign(proto::v1::SignJwtRequest {
        claims: claims_b64.clone(),
    })
    .await
    .unwrap();
    let keys = c
        .fetch_keys(proto::v1::FetchKeysRequest {})
        .await
        .unwrap()
        .into_inner();

    stop_server(server.take().unwrap());
    let started = Instant::now();
    let e = c
        .sign(proto::v1::SignJwtRequest {
            claims: claims_b64.clone(),
        })
        .await
        .expect_err("signing must fail while the token is away");
    let took = started.elapsed();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(took < Duration::from_secs(2), "failing took {took:?}");
    // Public keys are answered from memory.
    let during = c
        .fetch_keys(proto::v1::FetchKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(during.keys, keys.keys);
    c.metadata(proto::v1::MetadataRequest {}).await.unwrap();

    server = Some(start_server(&socket, &token.label));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c
            .sign(proto::v1::SignJwtRequest {
                claims: claims_b64.clone(),
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                verify_jwt(
                    &format!("{}.{claims_b64}.{}", r.header, r.signature),
                    &keys.keys[0].key,
                    Algorithm::ES256,
                );
                break;
            }
            Err(e) => assert_eq!(e.code(), Code::Unavailable, "{e:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: {}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_server(server.take().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sa_key_migrates_to_the_token_and_old_tokens_keep_their_kid() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    // A cluster made the kubeadm way: sa.key in a file.
    let root = dir.path().join("k8s");
    init_cluster(&root, "127.0.0.1", &[]);
    let (sa_key, sa_pub) = (root.join("pki/sa.key"), root.join("pki/sa.pub"));
    let sa_der = pem::parse(std::fs::read(&sa_pub).unwrap())
        .unwrap()
        .into_contents();
    let uri = token.key_uri("sa");

    // Without the confirmation flag: refused, one line, nothing on the token.
    let out = kpki(&["keys", "import", &uri, "--from", sa_key.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--i-understand-the-key-existed-outside-the-token"),
        "{stderr}"
    );
    let listed = kpki(&["keys", "list", &token.token_uri(), "-o", "json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&listed.stdout).unwrap(),
        json!([])
    );

    // With it: the token holds the key, sensitive and never readable again.
    let out = kpki(&[
        "keys",
        "import",
        &uri,
        "--from",
        sa_key.to_str().unwrap(),
        "--i-understand-the-key-existed-outside-the-token",
        "-o",
        "json",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("Destroy"),
        "{stderr}"
    );
    let info: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(info["protection"]["sensitive"], true);
    assert_eq!(info["protection"]["extractable"], false);
    assert_eq!(
        info["protection"]["never_extractable"], false,
        "the token must not claim it was never extractable"
    );
    // A second import of the same label is refused.
    let out = kpki(&[
        "keys",
        "import",
        &uri,
        "--from",
        sa_key.to_str().unwrap(),
        "--i-understand-the-key-existed-outside-the-token",
    ]);
    assert_eq!(out.status.code(), Some(1));

    // The token key signs; its kid is the one kube-apiserver gave sa.key's tokens.
    let signer = Signer::start(dir.path(), &config(dir.path(), &uri, "")).await;
    let mut c = signer.v1().await.unwrap();
    let keys = c
        .fetch_keys(proto::v1::FetchKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys[0].key, sa_der);
    assert_eq!(keys.keys[0].key_id, expected_kid(&sa_der));
    verify_jwt(
        &sign_token(&mut c, "migrated").await,
        &sa_der,
        Algorithm::RS256,
    );

    // A new cluster with sa on the token from the start: only sa.pub is written.
    let fresh = dir.path().join("fresh");
    let sa_uri = token.key_uri("sa-fresh");
    init_cluster(&fresh, "127.0.0.1", &["--key", &format!("sa={sa_uri}")]);
    assert!(!fresh.join("pki/sa.key").exists());
    let pub_der = pem::parse(std::fs::read(fresh.join("pki/sa.pub")).unwrap())
        .unwrap()
        .into_contents();
    let shown: Value =
        serde_json::from_slice(&kpki(&["keys", "show", &sa_uri, "-o", "json"]).stdout).unwrap();
    assert_eq!(
        shown["spki_sha256"].as_str().unwrap(),
        kpki_signer::spki::sha256_hex(&pub_der)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_signer_runs_inside_the_https_daemon_too() {
    let token = hsm::token();
    let sa = token.key_uri("sa-inside");
    create_key(&sa, "ECDSA-P256");
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("jwt.sock");
    let policy = format!(
        r#"
[[policy]]
name = "users"
callers = {{ cn = "onboarder" }}
signers = ["kubernetes.io/kube-apiserver-client"]

[jwt]
socket = "{}"
signing_key = "{sa}"
"#,
        socket.display()
    );
    let f = kpki_e2e::serve::ServeFixture::new("ECDSA-P256", &policy);
    let _daemon = f.start();
    // gRPC on the socket…
    let mut c = V1Client::new(jwt_client::channel(&socket).await.unwrap());
    let keys = c
        .fetch_keys(proto::v1::FetchKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    verify_jwt(
        &sign_token(&mut c, "inside").await,
        &keys.keys[0].key,
        Algorithm::ES256,
    );
    // …and certificates over mTLS from the same process.
    let csr = kpki_e2e::openssl_csr(f.dir.path(), "u", "p256", "/CN=jane", &[]);
    let mut conn = kpki_e2e::load::Connection::connect(&f.target(f.identity("onboarder", None)))
        .await
        .unwrap();
    let reply = conn
        .post(
            "/v1/sign",
            json!({ "csr": csr, "signer_name": "kubernetes.io/kube-apiserver-client" })
                .to_string()
                .into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
}
