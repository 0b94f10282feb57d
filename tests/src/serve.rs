//! A `kpki serve` under test: a cluster CA whose key is on a SoftHSM token (made by
//! `kpki init`), a separate callers' CA that issues client certificates and the server
//! certificate, the daemon's config file, the daemon process and its clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::hsm;
use crate::load::{ClientIdentity, Target};

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA made with rcgen whose key stays in memory (for callers and the server).
pub struct TestCa {
    /// The CA certificate PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new P-256 CA named `cn`.
    pub fn new(cn: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// The CA's private key as PEM (for `openssl x509 -CAkey` in tests).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A leaf with `cn`, `org` (at most one O), `sans`, for client or server use, valid
    /// from `not_before` to `not_after`. Returns (cert PEM, key PEM).
    pub fn leaf(
        &self,
        cn: &str,
        org: Option<&str>,
        server: bool,
        validity: (OffsetDateTime, OffsetDateTime),
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        if let Some(o) = org {
            p.distinguished_name.push(DnType::OrganizationName, o);
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = validity.0;
        p.not_after = validity.1;
        if server {
            p.subject_alt_names = vec![
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
                SanType::DnsName("localhost".try_into().unwrap()),
            ];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate (TLS server auth, valid for a day) for the request `csr_pem`,
    /// with the request's subject and SANs: for a key that never leaves its token.
    pub fn sign_server_csr(&self, csr_pem: &str) -> String {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        let (not_before, not_after) = now_window();
        csr.params.not_before = not_before;
        csr.params.not_after = not_after;
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        csr.signed_by(&self.issuer).unwrap().pem()
    }
}

fn now_window() -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    )
}

/// Files and settings of one daemon under test.
pub struct ServeFixture {
    /// Working directory (PKI, config, audit log).
    pub dir: tempfile::TempDir,
    /// The token holding the cluster CA key.
    pub token: hsm::TestToken,
    /// The cluster CA key URI.
    pub ca_key_uri: String,
    /// The cluster CA certificate file (`<dir>/k8s/pki/ca.crt`).
    pub ca_cert: PathBuf,
    /// The callers' (and server's) CA.
    pub callers: TestCa,
    /// The mTLS address.
    pub addr: SocketAddr,
    /// The plain-HTTP operations address.
    pub ops_addr: SocketAddr,
    /// The config file.
    pub config: PathBuf,
    /// The audit log.
    pub audit: PathBuf,
}

impl ServeFixture {
    /// A cluster PKI with the CA of `algorithm` (`ECDSA-P256`, `RSA-2048`) on a new SoftHSM
    /// token and a config whose policy is `policy_toml` (appended verbatim).
    pub fn new(algorithm: &str, policy_toml: &str) -> ServeFixture {
        let token = hsm::token();
        Self::with_key(
            algorithm,
            policy_toml,
            token.clone(),
            token.key_uri("serve-ca"),
        )
    }

    /// Like [`ServeFixture::new`] with the CA key at `ca_key_uri` (e.g. through p11-kit).
    pub fn with_key(
        algorithm: &str,
        policy_toml: &str,
        token: hsm::TestToken,
        ca_key_uri: String,
    ) -> ServeFixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("k8s");
        crate::init_cluster(
            &root,
            "127.0.0.1",
            &[
                "--encryption-algorithm",
                algorithm,
                "--key",
                &format!("ca={ca_key_uri}"),
            ],
        );
        let callers = TestCa::new("kpki-serve callers");
        let (server_crt, server_key) = callers.leaf("kpki-serve", None, true, now_window());
        std::fs::write(dir.path().join("callers-ca.crt"), &callers.cert_pem).unwrap();
        std::fs::write(dir.path().join("serve.crt"), server_crt).unwrap();
        write_private(&dir.path().join("serve.key"), &server_key);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let ops_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let f = ServeFixture {
            ca_cert: root.join("pki/ca.crt"),
            config: dir.path().join("serve.toml"),
            audit: dir.path().join("audit.jsonl"),
            dir,
            token,
            ca_key_uri,
            callers,
            addr,
            ops_addr,
        };
        f.write_config(policy_toml);
        f
    }

    /// (Re)writes the config file with `policy_toml` appended.
    pub fn write_config(&self, policy_toml: &str) {
        let d = self.dir.path();
        let text = format!(
            r#"[listen]
address = "{addr}"
ops_address = "{ops}"
cert = "{d}/serve.crt"
key = "{d}/serve.key"
client_cas = ["{d}/callers-ca.crt"]

[cas.ca]
cert = "{ca}"
key = "{key}"

[audit]
path = "{audit}"

[signing]
probe_interval = "200ms"

{policy_toml}
"#,
            addr = self.addr,
            ops = self.ops_addr,
            d = d.display(),
            ca = self.ca_cert.display(),
            key = self.ca_key_uri,
            audit = self.audit.display(),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    /// A caller identity issued by the callers' CA.
    pub fn identity(&self, cn: &str, org: Option<&str>) -> ClientIdentity {
        let (cert, key) = self.callers.leaf(cn, org, false, now_window());
        self.identity_from(Some((cert, key)))
    }

    /// A client with the given certificate and key (or none), trusting the server.
    pub fn identity_from(&self, cert_key: Option<(String, String)>) -> ClientIdentity {
        let (cert_pem, key_pem) = match cert_key {
            Some((c, k)) => (Some(c.into_bytes()), Some(k.into_bytes())),
            None => (None, None),
        };
        ClientIdentity {
            ca_pem: self.callers.cert_pem.clone().into_bytes(),
            cert_pem,
            key_pem,
        }
    }

    /// The daemon's mTLS endpoint for `identity`.
    pub fn target(&self, identity: ClientIdentity) -> Target {
        Target {
            addr: self.addr,
            server_name: "127.0.0.1".into(),
            identity,
            http2: false,
        }
    }

    /// Starts `kpki serve` and waits until `/readyz` answers 200.
    pub fn start(&self) -> Daemon {
        self.start_with(&self.config)
    }

    /// Starts `kpki serve` with the config file `config` (listening where this fixture's
    /// does) and waits until `/readyz` answers 200.
    pub fn start_with(&self, config: &Path) -> Daemon {
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let child = Command::new(crate::kpki_bin())
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("KPKI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            ops_addr: self.ops_addr,
            log: self.dir.path().join("serve.log"),
        };
        d.wait_ready(true, Duration::from_secs(30));
        d
    }

    /// Every audit line as JSON.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A running daemon; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    ops_addr: SocketAddr,
    log: PathBuf,
}

/// A plain HTTP/1.0 GET on the operations listener: (status, body), or `None` when nothing
/// answers.
pub fn ops_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: kpki\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Some((status, body))
}

impl Daemon {
    /// Waits until `/readyz` is 200 (`ready`) or not 200 (`!ready`); panics after `limit`.
    pub fn wait_ready(&mut self, ready: bool, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("kpki serve exited ({status}): {}", self.log_text());
            }
            let ok = matches!(ops_get(self.ops_addr, "/readyz"), Some((200, _)));
            if ok == ready {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "readyz not {} within {limit:?}: {}",
                if ready { "200" } else { "failing" },
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Sends `signal` (e.g. `TERM`, `HUP`).
    pub fn signal(&self, signal: &str) {
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "kpki serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
