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
