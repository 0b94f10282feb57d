//! The token signer with a gRPC C-core client: Python `grpcio` (Debian `python3-grpcio`)
//! calls `Metadata`, `FetchKeys` and `Sign` of `v1.ExternalJWTSigner` on the unix socket
//! without setting `grpc.default_authority`, and again with the `:authority` C-core 1.57 and
//! later send by default on unix sockets (the percent-encoded socket path; Debian's 1.51 still
//! sends `localhost`) and with the plain path grpc-java sends. Before, the latter two got
//! `RST_STREAM(PROTOCOL_ERROR)`. The signed token verifies with the key `FetchKeys` listed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kpki_e2e::{hsm, kpki, text};
use serde_json::{Value, json};

const PYTHON: &str = "/usr/bin/python3";

/// Calls the three RPCs through grpcio with the channel options given as `key=value`
/// arguments after the target and the claims; prints one JSON object. Messages are encoded
/// and decoded by hand (no generated code): each is a few string/bytes/varint fields.
const CLIENT: &str = r#"
import base64, json, sys, grpc
target, claims = sys.argv[1], sys.argv[2]
options = [tuple(a.split("=", 1)) for a in sys.argv[3:]]

def varint(n):
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def fields(buf):
    i, out = 0, []
    while i < len(buf):
        key, shift = 0, 0
        while True:
            b = buf[i]; i += 1
            key |= (b & 0x7f) << shift; shift += 7
            if not b & 0x80: break
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, shift = 0, 0
            while True:
                b = buf[i]; i += 1
                v |= (b & 0x7f) << shift; shift += 7
                if not b & 0x80: break
        elif wire == 2:
            n, shift = 0, 0
            while True:
                b = buf[i]; i += 1
                n |= (b & 0x7f) << shift; shift += 7
                if not b & 0x80: break
            v = buf[i:i + n]; i += n
        else:
            raise ValueError("wire type %d" % wire)
        out.append((num, v))
    return out

channel = grpc.insecure_channel(target, options=options)
call = lambda m: channel.unary_unary("/v1.ExternalJWTSigner/" + m,
    request_serializer=lambda b: b, response_deserializer=lambda b: b)
meta = dict(fields(call("Metadata")(b"", timeout=10)))
keys = []
for num, v in fields(call("FetchKeys")(b"", timeout=10)):
    if num == 1:
        k = dict(fields(v))
        keys.append({"kid": k[1].decode(), "key": base64.b64encode(k[2]).decode()})
c = claims.encode()
signed = dict(fields(call("Sign")(b"\x0a" + varint(len(c)) + c, timeout=10)))
print(json.dumps({"max_token_expiration_seconds": meta.get(1, 0), "keys": keys,
    "header": signed[1].decode(), "signature": signed[2].decode()}))
"#;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn grpcio(socket: &Path, claims: &str, options: &[String]) -> Result<Value, String> {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} not found: run scripts/setup (python3-grpcio)"
    );
    let out = Command::new(PYTHON)
        .args(["-c", CLIENT, &format!("unix:{}", socket.display()), claims])
        .args(options)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        !stderr.contains("No module named 'grpc'"),
        "python3-grpcio is not installed: run scripts/setup"
    );
    if out.status.success() {
        Ok(serde_json::from_str(&stdout).unwrap())
    } else {
        Err(stderr)
    }
}

#[test]
fn grpc_core_clients_call_the_token_signer_whatever_authority_they_send() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let key = token.key_uri("sa-grpc-core");
    let out = kpki(&["keys", "create", &key, "-a", "ECDSA-P256"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let socket = dir.path().join("jwt.sock");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[jwt]\nsocket = \"{}\"\nsigning_key = \"{key}\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let _daemon = Daemon(
        Command::new(kpki_e2e::kpki_bin())
            .args(["serve", "--jwt-only", "--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "no socket: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = URL_SAFE_NO_PAD.encode(
        json!({
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": "system:serviceaccount:default:grpc-core",
            "aud": ["kpki"],
            "exp": now + 600,
            "iat": now,
            "nbf": now,
        })
        .to_string(),
    );
    let percent_path = socket.display().to_string().replace('/', "%2F");
    for options in [
        vec![],
        vec![format!("grpc.default_authority={percent_path}")],
        vec![format!("grpc.default_authority={}", socket.display())],
    ] {
        let reply = grpcio(&socket, &claims, &options)
            .unwrap_or_else(|e| panic!("grpcio {options:?}: {e}"));
        assert_eq!(reply["max_token_expiration_seconds"], 86_400, "{reply}");
        let spki = STANDARD
            .decode(reply["keys"][0]["key"].as_str().unwrap())
            .unwrap();
        let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
        let token = format!(
            "{}.{claims}.{}",
            reply["header"].as_str().unwrap(),
            reply["signature"].as_str().unwrap()
        );
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["kpki"]);
        let decoded = jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            &v,
        )
        .unwrap_or_else(|e| panic!("{options:?}: token does not verify: {e}"));
        assert_eq!(
            decoded.claims["sub"], "system:serviceaccount:default:grpc-core",
            "{options:?}"
        );
        assert_eq!(
            decoded.header.kid.as_deref(),
            reply["keys"][0]["kid"].as_str(),
            "{options:?}"
        );
    }

    // `serve --check` beside the running signer: the socket is in use, named, and left alone.
    let out = kpki(&[
        "serve",
        "--jwt-only",
        "--check",
        "--config",
        config.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("ok    key jwt.signing_key pkcs11:"),
        "{stdout}"
    );
    assert!(
        stderr.contains("bind jwt.socket failed") && stderr.contains("in use"),
        "{stderr}"
    );
    grpcio(&socket, &claims, &[]).expect("the signer still answers after --check");
}
