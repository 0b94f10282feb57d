//! The ExternalJWTSigner (`kpki serve --jwt-only`) with its key on the token: 200 `Sign`
//! calls whose tokens all verify (jsonwebtoken) against the key `FetchKeys` returns, whose
//! key id follows kube-apiserver's rule.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::must_create_key;
use crate::hsm::matrix::{Token, TokenKind};
use crate::jwt_client::{self, V1Client, proto};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Tokens signed per token kind.
const TOKENS: usize = 200;

/// A running signer, killed on drop.
struct Signer(Child);

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JWT algorithm used on a token: ES256 where it has P-256, else RS256.
fn jwt_algorithm(kind: TokenKind) -> (&'static str, Algorithm) {
    if kind.supported().contains(&"ECDSA-P256") {
        ("ECDSA-P256", Algorithm::ES256)
    } else {
        ("RSA-2048", Algorithm::RS256)
    }
}

fn claims(n: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sa = format!("sa-{n}");
    URL_SAFE_NO_PAD.encode(
        json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:default:{sa}"),
            "aud": [ISSUER],
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "kubernetes.io": { "namespace": "default", "serviceaccount": { "name": sa, "uid": "0b0f8b3c" } }
        })
        .to_string(),
    )
}

async fn connect(socket: &Path, child: &mut Child, log: &Path) -> V1Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "kpki serve --jwt-only exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(ch) = jwt_client::channel(socket).await {
            let mut c = V1Client::new(ch);
            if c.metadata(proto::v1::MetadataRequest {}).await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "signer not up: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Signs 200 tokens with a key on a fresh token of `kind` and verifies every one.
pub fn sign_200(kind: TokenKind) {
    let token = Token::start(kind);
    let name = kind.name();
    let (algorithm, alg) = jwt_algorithm(kind);
    let uri = token.key_uri("sa-signer");
    must_create_key(&token, &uri, algorithm);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("jwt.sock");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[jwt]\nsocket = \"{}\"\nsigning_key = \"{uri}\"\n\n[signing]\nprobe_interval = \"200ms\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let child = Command::new(crate::kpki_bin())
        .args(["serve", "--jwt-only", "--config", config.to_str().unwrap()])
        .env("KPKI_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut signer = Signer(child);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(&socket, &mut signer.0, &log).await;
        let keys = c
            .fetch_keys(proto::v1::FetchKeysRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(keys.keys.len(), 1, "{name}");
        let key = &keys.keys[0];
        assert_eq!(
            key.key_id,
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &key.key)),
            "{name}: kid rule"
        );
        let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", key.key.clone()));
        let decoding = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        for n in 0..TOKENS {
            let claims_b64 = claims(n);
            let r = c
                .sign(proto::v1::SignJwtRequest {
                    claims: claims_b64.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("{name}: Sign {n}: {e}"))
                .into_inner();
            let jwt = format!("{}.{claims_b64}.{}", r.header, r.signature);
            let got = jsonwebtoken::decode::<Value>(&jwt, &decoding, &validation)
                .unwrap_or_else(|e| panic!("{name}: token {n} does not verify: {e}"));
            assert_eq!(
                got.claims["sub"],
                format!("system:serviceaccount:default:sa-{n}")
            );
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&r.header).unwrap()).unwrap();
            assert_eq!(header["kid"], key.key_id.as_str(), "{name}");
        }
    });
}

/// The `[jwt]` configuration signing with `signing` and listing `verify` as verify-only.
fn rotation_config(socket: &Path, signing: &str, verify: Option<&str>) -> String {
    let mut text = format!(
        "[jwt]\nsocket = \"{}\"\nsigning_key = \"{signing}\"\n",
        socket.display()
    );
    if let Some(v) = verify {
        text.push_str(&format!("\n[[jwt.verify_keys]]\nkey = \"{v}\"\n"));
    }
    text.push_str("\n[signing]\nprobe_interval = \"200ms\"\n");
    text
}

/// `kpki keys create -o json`, returning the key's SPKI SHA-256 (hex) as kpki reports it.
fn create_key_spki_sha256(token: &Token, uri: &str, algorithm: &str) -> String {
    let out = crate::kpki(&["keys", "create", uri, "-a", algorithm, "-o", "json"]);
    assert!(
        out.status.success(),
        "{}: kpki keys create {algorithm}: {:?}",
        token.kind().name(),
        crate::text(&out)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    info["spki_sha256"].as_str().unwrap().to_string()
}

/// What the rotation check measured.
#[derive(Debug)]
pub struct Rotation {
    /// From SIGHUP to `FetchKeys` listing the new key first.
    pub applied_after: Duration,
    /// Log lines of the daemon saying it re-initialised the module to find a key.
    pub reloads: usize,
    /// Signatures (all successful) made by a concurrent caller from SIGHUP until the
    /// rotation showed and the ten checks after it.
    pub signed_during_reload: usize,
}

/// Rotation to a key another process created after the daemon loaded the module: start
/// `kpki serve --jwt-only` signing with key A, create key B with `kpki keys create` (its own
/// process), rewrite the configuration to sign with B and keep A verify-only, SIGHUP. Then
/// `FetchKeys` must list B first (B's SPKI as `keys create` reported it) and A, and `Sign`
/// must produce tokens with B's key id that verify with B. Returns what it measured.
pub fn rotate_to_key_created_later(kind: TokenKind) -> Rotation {
    let token = Token::start(kind);
    let name = kind.name();
    let (algorithm, alg) = jwt_algorithm(kind);
    let (a, b) = (token.key_uri("sa-a"), token.key_uri("sa-b"));
    let a_sha = create_key_spki_sha256(&token, &a, algorithm);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("jwt.sock");
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, rotation_config(&socket, &a, None)).unwrap();
    let log = dir.path().join("serve.log");
    let child = Command::new(crate::kpki_bin())
        .args(["serve", "--jwt-only", "--config", config.to_str().unwrap()])
        .env("KPKI_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut signer = Signer(child);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(&socket, &mut signer.0, &log).await;
        let before = c
            .fetch_keys(proto::v1::FetchKeysRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(before.keys.len(), 1, "{name}");
        assert_eq!(
            hex::encode(digest::digest(&digest::SHA256, &before.keys[0].key)),
            a_sha,
            "{name}: key A served"
        );
        let a_kid = before.keys[0].key_id.clone();
        // One signature with A, so the daemon has used the module before B exists.
        let r = c
            .sign(proto::v1::SignJwtRequest { claims: claims(0) })
            .await
            .unwrap_or_else(|e| panic!("{name}: Sign with A: {e}"))
            .into_inner();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&r.header).unwrap()).unwrap();
        assert_eq!(header["kid"], a_kid.as_str(), "{name}");

        let b_sha = create_key_spki_sha256(&token, &b, algorithm);
        assert_ne!(a_sha, b_sha, "{name}");
        std::fs::write(&config, rotation_config(&socket, &b, Some(&a))).unwrap();
        // Signing keeps going through the reload (with A, then B): re-reading the module
        // for B must not fail a signature in flight.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let background = {
            let mut c = c.clone();
            let stop = std::sync::Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut signed, mut failed) = (0usize, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match c
                        .sign(proto::v1::SignJwtRequest {
                            claims: claims(1000 + signed),
                        })
                        .await
                    {
                        Ok(_) => signed += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (signed, failed)
            })
        };
        let hup = Instant::now();
        let st = Command::new("kill")
            .args(["-HUP", &signer.0.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = hup + Duration::from_secs(15);
        let (after, applied_after) = loop {
            let k = c
                .fetch_keys(proto::v1::FetchKeysRequest {})
                .await
                .unwrap()
                .into_inner();
            if k.keys.first().is_some_and(|k| k.key_id != a_kid) {
                break (k, hup.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "{name}: rotation to key B (created after the daemon started) not applied \
                 within 15 s; daemon log:\n{}",
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(after.keys.len(), 2, "{name}: B signs, A verify-only");
        let new_key = after.keys[0].clone();
        assert_eq!(
            hex::encode(digest::digest(&digest::SHA256, &new_key.key)),
            b_sha,
            "{name}: FetchKeys lists key B"
        );
        assert_eq!(
            new_key.key_id,
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &new_key.key)),
            "{name}: kid rule"
        );
        assert!(
            after.keys[1].key_id == a_kid && after.keys[1].exclude_from_oidc_discovery,
            "{name}: A stays listed, verify-only"
        );
        let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", new_key.key.clone()));
        let decoding = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        for n in 1..=10 {
            let claims_b64 = claims(n);
            let r = c
                .sign(proto::v1::SignJwtRequest {
                    claims: claims_b64.clone(),
                })
                .await
                .unwrap_or_else(|e| panic!("{name}: Sign {n} with B: {e}"))
                .into_inner();
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&r.header).unwrap()).unwrap();
            assert_eq!(
                header["kid"],
                new_key.key_id.as_str(),
                "{name}: signed by B"
            );
            let jwt = format!("{}.{claims_b64}.{}", r.header, r.signature);
            jsonwebtoken::decode::<Value>(&jwt, &decoding, &validation)
                .unwrap_or_else(|e| panic!("{name}: token {n} does not verify with B: {e}"));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (signed, failed) = background.await.unwrap();
        assert!(
            failed.is_empty(),
            "{name}: {} of {} signatures during the reload failed: {failed:?}",
            failed.len(),
            signed + failed.len()
        );
        assert!(signed > 0, "{name}: nothing signed during the reload");
        let reloads = log_text()
            .lines()
            .filter(|l| l.contains("re-reading the token's objects"))
            .count();
        // tpm2-pkcs11 reads its store at C_Initialize: exactly one re-read finds B. The
        // others see B at once and are not re-initialised.
        let want = usize::from(kind == TokenKind::Tpm2);
        assert_eq!(
            reloads,
            want,
            "{name}: module re-initialisations to find B; daemon log:\n{}",
            log_text()
        );
        Rotation {
            applied_after,
            reloads,
            signed_during_reload: signed,
        }
    })
}
