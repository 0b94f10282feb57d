//! `kpki serve` with no private key file on the host: `listen.key` names a key on a SoftHSM
//! token served by `p11-kit server` (the CA key is there too). The listener's certificate
//! comes from a request the token key signed (`kpki keys csr`); curl and the cfssl client
//! get mTLS service (TLS 1.3 and 1.2); while the p11-kit server is down new connections fail
//! cleanly (no hang) and the daemon reports not ready, and after its restart requests
//! succeed again without a daemon restart. No file under the directories the daemon is
//! configured with holds a private key (PEM or DER), a scan shown to find one where one is.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kpki_e2e::p11kit::{self, CLIENT_MODULE, start_server, stop_server};
use kpki_e2e::serve::{ServeFixture, ops_get};
use kpki_e2e::{hsm, kpki, openssl, openssl_csr, text};
use serde_json::{Value, json};

const POLICY: &str = r#"
[[policy]]
name = "clients"
callers = { cn = "tls-client" }
signers = ["kubernetes.io/kube-apiserver-client"]
orgs = ["dev"]
"#;

/// Files that hold a private key under `dir` (recursively): PEM `… PRIVATE KEY` blocks, or
/// DER that aws-lc reads as a PKCS#8, SEC1 or PKCS#1 private key.
fn private_key_files(dir: &Path) -> Vec<PathBuf> {
    use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let pem = String::from_utf8_lossy(&bytes).contains("PRIVATE KEY-----");
            let der = [
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            ]
            .iter()
            .any(|alg| {
                EcdsaKeyPair::from_pkcs8(alg, &bytes).is_ok()
                    || EcdsaKeyPair::from_private_key_der(alg, &bytes).is_ok()
            }) || RsaKeyPair::from_der(&bytes).is_ok()
                || RsaKeyPair::from_pkcs8(&bytes).is_ok()
                || Ed25519KeyPair::from_pkcs8(&bytes).is_ok();
            if pem || der {
                found.push(path);
            }
        }
    }
    found
}

/// `curl` over mTLS to the daemon: (exit code, HTTP status, body). `tls` picks the version
/// (`--tlsv1.3` or `--tls-max 1.2`).
fn curl(f: &ServeFixture, client: &Path, tls: &[&str], body: &str) -> (i32, u16, String) {
    let started = Instant::now();
    let out = Command::new(hsm::require_tool("curl"))
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{time_appconnect}",
        ])
        .args(tls)
        .arg("--cacert")
        .arg(client.join("callers-ca.crt"))
        .arg("--cert")
        .arg(client.join("client.crt"))
        .arg("--key")
        .arg(client.join("client.key"))
        .args(["-H", "Content-Type: application/json", "--data", body])
        .arg(format!("https://127.0.0.1:{}/v1/sign", f.addr.port()))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(
        code,
        28,
        "curl timed out after {:?}: {stderr}",
        started.elapsed()
    );
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", "0 0"));
    let (status, handshake) = last.trim().split_once(' ').unwrap_or(("0", "0"));
    eprintln!(
        "curl {tls:?}: exit {code}, HTTP {status}, TLS handshake done after {handshake} s, ended after {:?}",
        started.elapsed()
    );
    (code, status.parse().unwrap_or(0), format!("{body}{stderr}"))
}

fn cfssl_sign(f: &ServeFixture, client: &Path, csr: &Path) -> (bool, Value, String) {
    let out = Command::new(hsm::require_tool("cfssl"))
        .args([
            "sign",
            "-remote",
            &format!("https://{}", f.addr),
            "-tls-remote-ca",
            client.join("callers-ca.crt").to_str().unwrap(),
            "-mutual-tls-client-cert",
            client.join("client.crt").to_str().unwrap(),
            "-mutual-tls-client-key",
            client.join("client.key").to_str().unwrap(),
            csr.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), json, stderr)
}

/// A 200 whose certificate verifies against the cluster CA.
fn assert_issued(f: &ServeFixture, work: &Path, (code, status, body): (i32, u16, String)) {
    assert_eq!((code, status), (0, 200), "{body}");
    let v: Value = serde_json::from_str(body.trim()).unwrap();
    let crt = work.join("issued.crt");
    std::fs::write(&crt, v["certificate"].as_str().unwrap()).unwrap();
    let out = openssl(&[
        "verify",
        "-CAfile",
        f.ca_cert.to_str().unwrap(),
        crt.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
}

fn write_private(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The key URI of `object` through p11-kit with the PIN file `pin`.
fn uri(token: &hsm::TestToken, object: &str, pin: &Path) -> String {
    format!(
        "pkcs11:token={};object={object}?module-path={CLIENT_MODULE}&pin-source=file:{}",
        token.label,
        pin.display()
    )
}

fn serve_with_token_key(algorithm: &str) {
    p11kit::require();
    let token = hsm::token();
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("p11-kit.sock");
    let server = start_server(&socket, &token.label);
    p11kit::use_server(&socket);
    let f = ServeFixture::with_key(
        "ECDSA-P256",
        POLICY,
        token.clone(),
        p11kit::key_uri(&token, "tls-ca"),
    );

    // The daemon's own directories: configuration (with the PIN file) and audit.
    let etc = work.path().join("etc/kpki");
    let log_dir = work.path().join("var/log/kpki");
    let client = work.path().join("client");
    for d in [&etc, &log_dir, &client] {
        std::fs::create_dir_all(d).unwrap();
    }
    write_private(&etc.join("pin"), &std::fs::read(&token.pin_file).unwrap());
    std::fs::copy(&f.ca_cert, etc.join("ca.crt")).unwrap();
    std::fs::write(etc.join("callers-ca.crt"), &f.callers.cert_pem).unwrap();
    std::fs::write(client.join("callers-ca.crt"), &f.callers.cert_pem).unwrap();
    let (crt, key) = f.callers.leaf("tls-client", None, false, window());
    std::fs::write(client.join("client.crt"), crt).unwrap();
    write_private(&client.join("client.key"), key.as_bytes());

    // The listener's key is made on the token; its request is signed there.
    let tls_uri = uri(&token, "serve-tls", &etc.join("pin"));
    let out = kpki(&["keys", "create", &tls_uri, "-a", algorithm]);
    assert!(out.status.success(), "keys create: {:?}", text(&out));
    let csr_path = work.path().join("serve.csr");
    let out = kpki(&[
        "keys",
        "csr",
        &tls_uri,
        "--cn",
        "kpki-serve",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--out",
        csr_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "keys csr: {:?}", text(&out));
    let csr = std::fs::read_to_string(&csr_path).unwrap();
    let check = openssl(&[
        "req",
        "-verify",
        "-noout",
        "-in",
        csr_path.to_str().unwrap(),
    ]);
    assert!(
        check.status.success(),
        "CSR self-signature: {:?}",
        text(&check)
    );
    std::fs::write(etc.join("serve.crt"), f.callers.sign_server_csr(&csr)).unwrap();

    let config = etc.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            r#"[listen]
address = "{addr}"
ops_address = "{ops}"
cert = "{etc}/serve.crt"
key = "{tls_uri}"
client_cas = ["{etc}/callers-ca.crt"]

[cas.ca]
cert = "{etc}/ca.crt"
key = "{ca_uri}"

[audit]
path = "{log}/audit.jsonl"

[signing]
probe_interval = "200ms"
{POLICY}"#,
            addr = f.addr,
            ops = f.ops_addr,
            etc = etc.display(),
            log = log_dir.display(),
            ca_uri = uri(&token, "tls-ca", &etc.join("pin")),
        ),
    )
    .unwrap();
    let mut daemon = f.start_with(&config);

    let csr_pem = openssl_csr(client.as_path(), "jane", "p256", "/CN=jane/O=dev", &[]);
    let body =
        json!({ "csr": csr_pem, "signer_name": "kubernetes.io/kube-apiserver-client" }).to_string();
    // curl over TLS 1.3 and 1.2: the handshake is signed on the token.
    assert_issued(&f, work.path(), curl(&f, &client, &["--tlsv1.3"], &body));
    assert_issued(
        &f,
        work.path(),
        curl(&f, &client, &["--tls-max", "1.2"], &body),
    );
    // The certificate curl was shown is the one made from the token key's request.
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{} -cert {c}/client.crt -key {c}/client.key </dev/null 2>/dev/null | openssl x509 -noout -pubkey",
            f.addr.port(),
            c = client.display()
        ))
        .output()
        .unwrap();
    let from_csr = openssl(&[
        "req",
        "-noout",
        "-pubkey",
        "-in",
        csr_path.to_str().unwrap(),
    ]);
    assert_eq!(
        text(&shown).0,
        text(&from_csr).0,
        "the served key is the token's"
    );
    assert!(!text(&shown).0.is_empty());
    // The signature scheme the token made: RSASSA-PSS for an RSA key under TLS 1.3.
    let session = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -tls1_3 -connect 127.0.0.1:{} -cert {c}/client.crt -key {c}/client.key </dev/null 2>&1",
            f.addr.port(),
            c = client.display()
        ))
        .output()
        .unwrap();
    let want = if algorithm.starts_with("RSA") {
        "Peer signature type: RSA-PSS"
    } else {
        "Peer signature type: ECDSA"
    };
    assert!(
        text(&session).0.contains(want),
        "{want}: {}",
        text(&session).0
    );

    // The cfssl client.
    let cfssl_csr = client.join("cfssl.csr");
    std::fs::write(
        &cfssl_csr,
        openssl_csr(client.as_path(), "cfssl", "p256", "/CN=mallory/O=dev", &[]),
    )
    .unwrap();
    let (ok, signed, stderr) = cfssl_sign(&f, &client, &cfssl_csr);
    assert!(ok, "cfssl sign: {stderr}");
    assert!(
        signed["cert"]
            .as_str()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
    );

    // Outage: the p11-kit server (the token) goes away.
    stop_server(server);
    daemon.wait_ready(false, Duration::from_secs(10));
    let (_, reason) = ops_get(f.ops_addr, "/readyz").unwrap();
    assert!(reason.contains("unavailable"), "{reason}");
    for _ in 0..3 {
        let (code, status, out) = curl(&f, &client, &[], &body);
        assert!(
            code != 0 || status == 503,
            "a request during the outage must fail: {code} {status} {out}"
        );
    }
    assert!(daemon.is_running(), "the daemon stays up");

    // Back: requests succeed again, without a restart of the daemon.
    let server = start_server(&socket, &token.label);
    daemon.wait_ready(true, Duration::from_secs(30));
    assert_issued(&f, work.path(), curl(&f, &client, &[], &body));
    let (ok, _, stderr) = cfssl_sign(&f, &client, &cfssl_csr);
    assert!(ok, "cfssl sign after the outage: {stderr}");
    assert!(
        daemon.log_text().contains("TLS handshake signature failed"),
        "the outage reached the handshake: {}",
        daemon.log_text()
    );
    let status = daemon.terminate();
    assert!(status.success(), "{status}: {}", daemon.log_text());
    stop_server(server);

    // No private key under the daemon's configured directories (config, PIN file, listener
    // and CA certificates, client CAs, audit) ...
    for d in [&etc, &log_dir] {
        let found = private_key_files(d);
        assert!(
            found.is_empty(),
            "private keys under {}: {found:?}",
            d.display()
        );
    }
    // ... while the same scan finds the PEM and DER keys where they are.
    let der = client.join("client.der");
    let out = openssl(&[
        "pkey",
        "-in",
        client.join("client.key").to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let found = private_key_files(&client);
    for k in ["client.der", "client.key", "jane.key"] {
        assert!(found.contains(&client.join(k)), "{k} found: {found:?}");
    }
    assert!(!found.contains(&client.join("client.crt")), "{found:?}");
    assert!(
        private_key_files(f.dir.path()).len() > 5,
        "the fixture's kubeadm PKI holds key files"
    );
}

fn window() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    )
}

#[test]
fn ecdsa_p256_listener_key_on_a_token() {
    serve_with_token_key("ECDSA-P256");
}

#[test]
fn rsa_2048_listener_key_on_a_token() {
    serve_with_token_key("RSA-2048");
}
