//! The docs' quick starts run as written. Each fenced block after a
//! `<!-- quickstart: NAME -->` marker in README.md, docs/serve.md and docs/jwt.md is run with
//! `bash` under `set -euo pipefail`, with only its directories (and ports) replaced by
//! temporary ones, `kpki` of this build first on the `PATH` and a private SoftHSM token
//! directory; then the documented outcome is checked (certificates verify, the daemon
//! answers, the JWT signer signs a token that verifies with the key it lists).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kpki_e2e::jwt_client::{self, V1Client, proto};
use kpki_e2e::{hsm, kpki_bin, serve::free_port};

/// The quick start `name` of the markdown file `doc` (relative to the repository): the
/// fenced blocks after its markers, in order. Panics when there is none.
fn quickstart(doc: &str, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- quickstart: {name} -->");
    let mut script = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(&marker) {
        rest = &rest[at + marker.len()..];
        let open = rest.find("```").expect("a fenced block after the marker");
        let body = &rest[open..];
        let first_line_end = body.find('\n').unwrap();
        let body = &body[first_line_end + 1..];
        let close = body.find("\n```").expect("the block's end");
        script.push_str(&body[..close + 1]);
        rest = &body[close..];
    }
    assert!(!script.is_empty(), "{doc}: no block marked {marker}");
    script
}

/// A private SoftHSM configuration (its token directory this process's own), written by
/// making a first token there; the quick start adds its own.
fn softhsm_conf() -> PathBuf {
    hsm::token();
    hsm::softhsm().conf().to_path_buf()
}

/// A quick start running in its own process group (killed when dropped).
struct Run {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Run {
    /// Starts `script` with `subs` applied, in `work`.
    fn start(script: &str, subs: &[(&str, String)], work: &Path) -> Run {
        let mut script = script.to_string();
        for (from, to) in subs {
            script = script.replace(from, to);
        }
        let bin_dir = kpki_bin().parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let (stdout, stderr) = (work.join("quickstart.out"), work.join("quickstart.err"));
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(work)
            .env("PATH", path)
            .env("SOFTHSM2_CONF", softhsm_conf())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0)
            .spawn()
            .expect("run bash");
        Run {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for the script (not for what it left in the background) up to `limit`;
    /// panics with its output unless it exits 0. Returns stdout.
    fn finish(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the quick start did not end within {limit:?}: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.success(),
            "quick start failed ({status}): {}",
            self.output()
        );
        std::fs::read_to_string(&self.stdout).unwrap()
    }

    fn output(&self) -> String {
        format!(
            "\n--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // The script and anything it left running (a daemon in the background).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn readme_quick_start() {
    let script = quickstart("README.md", "readme");
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("pki-demo");
    let mut run = Run::start(
        &script,
        &[("/tmp/pki-demo", demo.display().to_string())],
        tmp.path(),
    );
    let out = run.finish(Duration::from_secs(180));
    let ok = |f: &str| format!("{}: OK", demo.join(f).display());
    assert_eq!(out.matches(&ok("pki/apiserver.crt")).count(), 2, "{out}");
    assert!(out.contains(&ok("joe.crt")), "{out}");
    assert!(out.contains("nothing is written"), "the dry run: {out}");
    assert!(out.contains("renewed"), "{out}");
    assert!(demo.join("jane.conf").exists());
    assert!(
        !demo.join("pki/ca.key").exists(),
        "the CA key is on the token"
    );
}

#[test]
fn serve_quick_start() {
    let script = quickstart("docs/serve.md", "serve");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let at = |p: &str| root.join(p.trim_start_matches('/')).display().to_string();
    let (api, ops) = (free_port(), free_port());
    let mut run = Run::start(
        &script,
        &[
            ("/etc/kpki", at("/etc/kpki")),
            ("/etc/kubernetes", at("/etc/kubernetes")),
            ("/var/log/kpki", at("/var/log/kpki")),
            ("8443", api.to_string()),
            ("9443", ops.to_string()),
        ],
        &work,
    );
    let out = run.finish(Duration::from_secs(240));
    assert!(out.contains("ready"), "{out}");
    assert!(out.contains("jane.crt: OK"), "{out}");
    assert!(out.contains("api.pem: OK"), "{out}");
    // The certificates are what was asked.
    let subject = |f: &str| {
        let o = Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-subject",
                "-ext",
                "subjectAltName",
                "-in",
            ])
            .arg(work.join(f))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).replace(" = ", "=")
    };
    let jane = subject("jane.crt");
    assert!(jane.contains("O=dev") && jane.contains("CN=jane"), "{jane}");
    let api_cert = subject("api.pem");
    assert!(
        api_cert.contains("DNS:api.default.svc.cluster.local"),
        "{api_cert}"
    );
    // Two decisions audited, the trail closed and intact.
    let audit = std::fs::read_to_string(root.join("var/log/kpki/audit.jsonl")).unwrap();
    let allowed = audit
        .lines()
        .filter(|l| l.contains("\"decision\":\"allow\""))
        .count();
    assert!(allowed >= 2, "{audit}");
}

#[test]
fn jwt_quick_start() {
    let script = quickstart("docs/jwt.md", "jwt");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let at = |p: &str| root.join(p.trim_start_matches('/')).display().to_string();
    let mut run = Run::start(
        &script,
        &[
            ("/etc/kpki", at("/etc/kpki")),
            ("/run/kpki", at("/run/kpki")),
        ],
        tmp.path(),
    );
    run.finish(Duration::from_secs(120));
    // The daemon the quick start left running answers on the socket.
    let socket = root.join("run/kpki/jwt.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (token, spki) = rt.block_on(async {
        let mut c = V1Client::new(jwt_client::channel(&socket).await.unwrap());
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "iss": "https://kubernetes.default.svc.cluster.local",
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "sub": "system:serviceaccount:default:demo",
            "iat": now, "nbf": now, "exp": now + 600,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = c
            .sign(proto::v1::SignJwtRequest {
                claims: claims.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        (
            format!("{}.{claims}.{}", signed.header, signed.signature),
            keys.keys[0].key.clone(),
        )
    });
    let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
    let key = jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["https://kubernetes.default.svc.cluster.local"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v)
        .unwrap_or_else(|e| panic!("the token does not verify: {e}"))
        .claims;
    assert_eq!(claims["sub"], "system:serviceaccount:default:demo");
}
