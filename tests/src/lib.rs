//! Helpers for kpki's end-to-end tests: the built `kpki` binary, temporary directories,
//! and independent checks through the OpenSSL CLI.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers fail loudly by design.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use kpki_hsm_test as hsm;

pub mod cluster;
pub mod csr_api;
pub mod jwt_client;
pub mod kubelet;
pub mod limits;
pub mod load;
pub mod p11kit;
pub mod peers;
pub mod serve;
pub mod snapshot;
pub mod tls_server;
pub mod token_matrix;

/// The `kpki` binary of this build (`target/<profile>/kpki`).
pub fn kpki_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("kpki");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p kpki` (scripts/test does)",
        bin.display()
    );
    bin
}

/// Runs `kpki` with `args` and the given extra environment.
pub fn kpki(args: &[&str]) -> Output {
    Command::new(kpki_bin())
        .args(args)
        .output()
        .expect("run kpki")
}

/// Stdout and stderr of an output as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `der` as a PEM block of type `tag` (LF endings).
pub fn write_pem(path: &Path, tag: &str, der: &[u8]) {
    let text = pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    std::fs::write(path, text).expect("write pem");
}

/// Runs `openssl` with `args`, asserting the tool is installed.
pub fn openssl(args: &[&str]) -> Output {
    kpki_hsm_test::require_tool("openssl");
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

/// Verifies an X.509-form signature with `openssl dgst -verify` on the exported public key.
pub fn openssl_verify_signature(
    dir: &Path,
    spki: &[u8],
    digest: &str,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let pubkey = dir.join("pub.pem");
    let msg = dir.join("msg.bin");
    let sig = dir.join("sig.bin");
    write_pem(&pubkey, "PUBLIC KEY", spki);
    std::fs::write(&msg, message).expect("write msg");
    std::fs::write(&sig, signature).expect("write sig");
    let out = openssl(&[
        "dgst",
        &format!("-{digest}"),
        "-verify",
        pubkey.to_str().unwrap(),
        "-signature",
        sig.to_str().unwrap(),
        msg.to_str().unwrap(),
    ]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

/// Starts `kpki` with `args` and SIGKILLs it after a random delay below `max_ms`; returns the
/// delay (for failure messages).
pub fn kill_kpki_at_random(args: &[String], max_ms: u64) -> u64 {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut child = Command::new(kpki_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kpki");
    let mut b = [0u8; 8];
    SystemRandom::new().fill(&mut b).expect("randomness");
    let delay = u64::from_be_bytes(b) % max_ms;
    std::thread::sleep(std::time::Duration::from_millis(delay));
    let _ = child.kill();
    let _ = child.wait();
    delay
}

/// Makes a private key of `kind` (`p256`, `p384`, `rsa2048`, `rsa1024`, `ed25519`) at `path`
/// with `openssl genpkey`.
pub fn openssl_key(path: &Path, kind: &str) {
    let algorithm: &[&str] = match kind {
        "p256" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "rsa2048" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "rsa1024" => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        "ed25519" => &["-algorithm", "ED25519"],
        other => panic!("unknown key kind {other}"),
    };
    let mut args = vec!["genpkey"];
    args.extend_from_slice(algorithm);
    args.extend(["-out", path.to_str().expect("UTF-8 path")]);
    let out = openssl(&args);
    assert!(out.status.success(), "{:?}", text(&out));
}

/// A self-signed CA made by `openssl req -x509` with a new key of `kind` (as
/// [`openssl_key`]): `<dir>/<name>.crt` and `<dir>/<name>.key`, subject `subj`; returns
/// both paths.
pub fn openssl_ca(dir: &Path, name: &str, kind: &str, subj: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    openssl_key(&key, kind);
    let out = openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key.to_str().expect("UTF-8 path"),
        "-days",
        "3650",
        "-subj",
        subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out",
        crt.to_str().expect("UTF-8 path"),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    (crt, key)
}

/// A PKCS#10 request (PEM) made by `openssl req` with the key file `key` for `subj`
/// (e.g. `/CN=jane/O=dev`) and extra `-addext` values.
pub fn openssl_req(key: &Path, subj: &str, addext: &[&str]) -> String {
    let mut args = vec![
        "req",
        "-new",
        "-key",
        key.to_str().expect("UTF-8 path"),
        "-subj",
        subj,
    ];
    for a in addext {
        args.extend(["-addext", a]);
    }
    let out = openssl(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    String::from_utf8(out.stdout).expect("PEM is text")
}

/// A request for `subj` with a new key of `kind` written to `<dir>/<name>.key`.
pub fn openssl_csr(dir: &Path, name: &str, kind: &str, subj: &str, addext: &[&str]) -> String {
    let key = dir.join(format!("{name}.key"));
    openssl_key(&key, kind);
    openssl_req(&key, subj, addext)
}

/// `kpki init` of node `cp1` at `address` into `root` with `extra` flags; panics with kpki's
/// output unless it succeeds.
pub fn init_cluster(root: &Path, address: &str, extra: &[&str]) {
    let mut args = vec![
        "init",
        "--dir",
        root.to_str().expect("UTF-8 path"),
        "--node-name",
        "cp1",
        "--advertise-address",
        address,
    ];
    args.extend_from_slice(extra);
    let out = kpki(&args);
    assert!(out.status.success(), "kpki init: {:?}", text(&out));
}
