//! The kubelet's side of the Certificates API against a [`Cluster`]: `tests/kubelet-csr`, a
//! small Go program that runs the kubelet's own certificate code (TLS bootstrap, client
//! rotation, serving certificate, node registration), built by `scripts/build-kubelet-csr`
//! against the Kubernetes release pinned in `scripts/peers.env` and cached under
//! `$KPKI_PEERS_DIR` (default `$HOME/.cache/kpki/peers`) by version and source hash. A
//! missing or stale build fails the test with the command that builds it.
//!
//! Also what kubeadm sets up for TLS bootstrap: a bootstrap token Secret, the RBAC that lets
//! its holders post CSRs and has kube-controller-manager's csrapproving controller approve
//! them, and a bootstrap kubeconfig.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::cluster::{Cluster, eventually};
use crate::{peers, text};

const SOURCE: &[u8] = include_bytes!("../kubelet-csr/main.go");

/// The group kubeadm puts its node bootstrap tokens in (`auth-extra-groups`).
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// The signer of kubelet client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// The signer of kubelet serving certificates.
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

fn peers_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KPKI_PEERS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache/kpki/peers")
}

/// The built `kubelet-csr` of the current source (`tests/kubelet-csr/main.go`).
pub fn kubelet_csr_bin() -> PathBuf {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, SOURCE);
    let hash = hex::encode(&digest.as_ref()[..8]);
    let path = peers_root()
        .join(format!(
            "kubelet-csr-{}-{hash}",
            peers::kubernetes_version()
        ))
        .join("kubelet-csr");
    assert!(
        path.is_file(),
        "{} not found: run scripts/build-kubelet-csr (scripts/setup does; it builds \
         tests/kubelet-csr against Kubernetes {} and rebuilds when the source changes)",
        path.display(),
        peers::kubernetes_version()
    );
    path
}

/// A kubeadm bootstrap token (`<id>.<secret>`).
#[derive(Debug, Clone)]
pub struct BootstrapToken {
    /// The public part, `[a-z0-9]{6}`.
    pub id: String,
    /// The secret part, `[a-z0-9]{16}`.
    pub secret: String,
}

impl BootstrapToken {
    /// A new random token, drawn as kubeadm draws them.
    pub fn generate() -> BootstrapToken {
        BootstrapToken {
            id: random_token_chars(6),
            secret: random_token_chars(16),
        }
    }

    /// The bearer token `<id>.<secret>`.
    pub fn token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The user the token authenticates as.
    pub fn username(&self) -> String {
        format!("system:bootstrap:{}", self.id)
    }
}

fn random_token_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 1];
        rng.fill(&mut b).expect("randomness");
        // 252 = 7 * 36: no modulo bias.
        if b[0] < 252 {
            out.push(ALPHABET[usize::from(b[0]) % 36] as char);
        }
    }
    out
}

/// Runs `kubectl apply -f` of `manifest` (JSON) as super-admin, through a file in the
/// cluster's directory; panics with kubectl's output unless it succeeds.
fn apply(cluster: &Cluster, name: &str, manifest: &serde_json::Value) {
    let path = cluster.path(&format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(manifest).expect("JSON"))
        .expect("write manifest");
    let out = cluster.kubectl(
        "super-admin.conf",
        &["apply", "-f", path.to_str().expect("UTF-8 path")],
    );
    assert!(
        out.status.success(),
        "kubectl apply {name}: {:?}",
        text(&out)
    );
}

/// Creates the `bootstrap-token-<id>` Secret in kube-system as `kubeadm token create` does
/// (kubeadm's default token: valid 24 h, usages authentication and signing, extra group
/// [`BOOTSTRAP_GROUP`]) and returns the token.
pub fn create_bootstrap_token(cluster: &Cluster) -> BootstrapToken {
    let token = BootstrapToken::generate();
    let expiration = (time::OffsetDateTime::now_utc() + time::Duration::hours(24))
        .replace_nanosecond(0)
        .expect("whole seconds")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{}", token.id), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {
            "token-id": token.id,
            "token-secret": token.secret,
            "expiration": expiration,
            "description": "The default bootstrap token generated by 'kubeadm init'.",
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": BOOTSTRAP_GROUP,
        },
    });
    apply(cluster, &format!("bootstrap-token-{}", token.id), &secret);
    token
}

fn binding(name: &str, role: &str, group: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
    })
}

/// The RBAC `kubeadm init` sets up for TLS bootstrap (phase bootstrap-token,
/// cmd/kubeadm/app/phases/bootstraptoken/node/tlsbootstrap.go of the pinned release):
/// bootstrap tokens may get nodes and post CSRs, their CSRs are auto-approved (`nodeclient`),
/// and nodes' own client certificate rotations are auto-approved (`selfnodeclient`).
pub fn apply_bootstrap_rbac(cluster: &Cluster) {
    let get_nodes = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "kubeadm:get-nodes"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
    });
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            get_nodes,
            binding("kubeadm:get-nodes", "kubeadm:get-nodes", BOOTSTRAP_GROUP),
            binding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", BOOTSTRAP_GROUP),
            binding(
                "kubeadm:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                BOOTSTRAP_GROUP,
            ),
            binding(
                "kubeadm:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                "system:nodes",
            ),
        ],
    });
    apply(cluster, "kubeadm-bootstrap-rbac", &list);
}

/// Writes a bootstrap kubeconfig for `token` at `path`, as `kubeadm join` writes
/// `bootstrap-kubelet.conf`: the cluster's CA and API server, the token as the user.
pub fn write_bootstrap_kubeconfig(cluster: &Cluster, token: &BootstrapToken, path: &Path) {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": {
            "server": format!("https://127.0.0.1:{}", cluster.port),
            "certificate-authority": cluster.pki().join("ca.crt"),
        }}],
        "users": [{"name": "tls-bootstrap-token-user", "user": {"token": token.token()}}],
        "contexts": [{"name": "tls-bootstrap-token-user@kubernetes", "context": {
            "cluster": "kubernetes", "user": "tls-bootstrap-token-user",
        }}],
        "current-context": "tls-bootstrap-token-user@kubernetes",
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&config).expect("JSON"))
        .expect("write kubeconfig");
    std::fs::rename(&tmp, path).expect("rename kubeconfig");
}

/// How a `kubelet-csr` run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output: `key: value` lines.
    pub stdout: String,
    /// Standard error: the one-line reason of a failure.
    pub stderr: String,
}

impl Outcome {
    /// Whether the run succeeded.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The value of output line `key: value`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.stdout.lines().find_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.trim())
        })
    }

    /// The name of the CSR the run created (`csr:` line).
    pub fn csr(&self) -> Option<&str> {
        self.field("csr")
    }

    /// All `key: value` lines.
    pub fn fields(&self) -> BTreeMap<&str, &str> {
        self.stdout
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k, v.trim()))
            .collect()
    }
}

/// A `kubelet-csr` still running (waiting for its certificate).
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    reader: Option<JoinHandle<()>>,
    what: String,
}

impl Running {
    /// Waits up to `limit` for the `csr: <name>` line and returns the name; panics with the
    /// program's output if it exits first or prints none in time.
    pub fn csr_name(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(name) = self
                .seen
                .iter()
                .find_map(|l| l.strip_prefix("csr: ").map(str::to_string))
            {
                return name;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no CSR within {limit:?}; output so far: {:?}",
                        self.what, self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let out = self.finish();
                    panic!("{}: exited before creating a CSR: {out:?}", self.what)
                }
            }
        }
    }

    /// Waits for the program to end and returns its outcome.
    pub fn finish(&mut self) -> Outcome {
        let status = self.child.wait().expect("wait kubelet-csr");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        let stdout: String = self.seen.iter().map(|l| format!("{l}\n")).collect();
        Outcome {
            code: status.code(),
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A node whose kubelet side is `kubelet-csr`: its certificate directory, kubeconfig and
/// bootstrap kubeconfig live in `<cluster dir>/nodes/<name>/`.
pub struct Node {
    /// The node's name (its certificates say `system:node:<name>`).
    pub name: String,
    /// The kubelet's certificate directory (`kubelet-client-current.pem`,
    /// `kubelet-server-current.pem`).
    pub cert_dir: PathBuf,
    /// The kubeconfig bootstrap writes and the other subcommands authenticate with.
    pub kubeconfig: PathBuf,
    /// The bootstrap kubeconfig (written by [`write_bootstrap_kubeconfig`]).
    pub bootstrap_kubeconfig: PathBuf,
    /// The libraries' log of every run.
    pub log: PathBuf,
}

impl Node {
    /// A node `name` of `cluster` with an empty certificate directory.
    pub fn new(cluster: &Cluster, name: &str) -> Node {
        let dir = cluster.path("nodes").join(name);
        let cert_dir = dir.join("pki");
        std::fs::create_dir_all(&cert_dir).expect("node dir");
        Node {
            name: name.to_string(),
            cert_dir,
            kubeconfig: dir.join("kubelet.conf"),
            bootstrap_kubeconfig: dir.join("bootstrap-kubelet.conf"),
            log: dir.join("kubelet-csr.log"),
        }
    }

    /// Starts `kubelet-csr <sub> --node-name <name> --log-file <log> <args…>`.
    pub fn spawn(&self, sub: &str, args: &[&str]) -> Running {
        let mut child = Command::new(kubelet_csr_bin())
            .arg(sub)
            .arg("--node-name")
            .arg(&self.name)
            .arg("--log-file")
            .arg(&self.log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start kubelet-csr {sub}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
            reader: Some(reader),
            what: format!("kubelet-csr {sub} ({})", self.name),
        }
    }

    fn timeout_arg(timeout: Duration) -> String {
        format!("{}ms", timeout.as_millis())
    }

    /// Starts the kubelet's TLS bootstrap with [`Node::bootstrap_kubeconfig`], waiting at most
    /// `timeout` for the certificate.
    pub fn spawn_bootstrap(&self, timeout: Duration) -> Running {
        let t = Self::timeout_arg(timeout);
        self.spawn(
            "bootstrap",
            &[
                "--bootstrap-kubeconfig",
                path_str(&self.bootstrap_kubeconfig),
                "--kubeconfig",
                path_str(&self.kubeconfig),
                "--cert-dir",
                path_str(&self.cert_dir),
                "--timeout",
                &t,
            ],
        )
    }

    /// The kubelet's TLS bootstrap, to the end.
    pub fn bootstrap(&self, timeout: Duration) -> Outcome {
        self.spawn_bootstrap(timeout).finish()
    }

    /// Starts one client certificate rotation by the kubelet's certificate manager,
    /// authenticated with `kubeconfig` (the node's current credentials; by default
    /// [`Node::kubeconfig`]).
    pub fn spawn_rotate_client(&self, kubeconfig: Option<&Path>, timeout: Duration) -> Running {
        let t = Self::timeout_arg(timeout);
        self.spawn(
            "rotate-client",
            &[
                "--kubeconfig",
                path_str(kubeconfig.unwrap_or(&self.kubeconfig)),
                "--cert-dir",
                path_str(&self.cert_dir),
                "--timeout",
                &t,
            ],
        )
    }

    /// One client certificate rotation, to the end.
    pub fn rotate_client(&self, kubeconfig: Option<&Path>, timeout: Duration) -> Outcome {
        self.spawn_rotate_client(kubeconfig, timeout).finish()
    }

    /// Starts a `kubelet-serving` request by the kubelet's serving certificate manager for
    /// `ips` (at least one) and `dns` names, authenticated with `kubeconfig` (default
    /// [`Node::kubeconfig`]).
    pub fn spawn_serving(
        &self,
        kubeconfig: Option<&Path>,
        ips: &[&str],
        dns: &[&str],
        timeout: Duration,
    ) -> Running {
        let t = Self::timeout_arg(timeout);
        let mut args = vec![
            "--kubeconfig",
            path_str(kubeconfig.unwrap_or(&self.kubeconfig)),
            "--cert-dir",
            path_str(&self.cert_dir),
            "--timeout",
            &t,
        ];
        for ip in ips {
            args.extend(["--ip", ip]);
        }
        for d in dns {
            args.extend(["--dns", d]);
        }
        self.spawn("serving", &args)
    }

    /// A `kubelet-serving` request, to the end.
    pub fn serving(
        &self,
        kubeconfig: Option<&Path>,
        ips: &[&str],
        dns: &[&str],
        timeout: Duration,
    ) -> Outcome {
        self.spawn_serving(kubeconfig, ips, dns, timeout).finish()
    }

    /// Creates or updates the node's Node object with addresses `internal_ips` (InternalIP),
    /// `internal_dns` (InternalDNS) and hostname `name`, authenticated with `kubeconfig`
    /// (default [`Node::kubeconfig`]).
    pub fn register(
        &self,
        kubeconfig: Option<&Path>,
        internal_ips: &[&str],
        internal_dns: &[&str],
    ) -> Outcome {
        let mut args = vec![
            "--kubeconfig",
            path_str(kubeconfig.unwrap_or(&self.kubeconfig)),
            "--timeout",
            "30s",
        ];
        for ip in internal_ips {
            args.extend(["--internal-ip", ip]);
        }
        for d in internal_dns {
            args.extend(["--internal-dns", d]);
        }
        self.spawn("register-node", &args).finish()
    }

    /// The libraries' log of this node's runs so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Sets up TLS bootstrap as `kubeadm init` does (token and RBAC) and writes `node`'s
/// bootstrap kubeconfig; returns the token.
pub fn prepare_bootstrap(cluster: &Cluster, node: &Node) -> BootstrapToken {
    apply_bootstrap_rbac(cluster);
    let token = create_bootstrap_token(cluster);
    write_bootstrap_kubeconfig(cluster, &token, &node.bootstrap_kubeconfig);
    token
}

/// The CertificateSigningRequest `name` as JSON, read as super-admin.
pub fn csr_object(cluster: &Cluster, name: &str) -> serde_json::Value {
    let out = cluster.kubectl("super-admin.conf", &["get", "csr", name, "-o", "json"]);
    assert!(
        out.status.success(),
        "kubectl get csr {name}: {:?}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("CSR JSON")
}

/// The condition `kind` (`Approved`, `Denied`, `Failed`) of a CSR object, if present.
pub fn csr_condition<'a>(csr: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    csr["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Waits up to `limit` for CSR `name` to carry condition `kind`; returns the CSR object.
pub fn wait_csr_condition(
    cluster: &Cluster,
    name: &str,
    kind: &str,
    limit: Duration,
) -> serde_json::Value {
    eventually(
        &format!("CSR {name} {kind}"),
        limit,
        Duration::from_millis(200),
        || {
            let csr = csr_object(cluster, name);
            if csr_condition(&csr, kind).is_some() {
                Ok(csr)
            } else {
                Err(format!("conditions: {}", csr["status"]["conditions"]))
            }
        },
    )
    .0
}

/// What a CSR object's PKCS#10 request (`spec.request`) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The subject's common names.
    pub common_names: Vec<String>,
    /// The subject's organizations.
    pub organizations: Vec<String>,
    /// DNS name SANs.
    pub dns: Vec<String>,
    /// IP address SANs.
    pub ips: Vec<IpAddr>,
    /// Other SANs, as debug text (a kubelet asks for none).
    pub other_sans: Vec<String>,
}

/// Decodes and parses the PKCS#10 request of a CSR object.
pub fn parse_request(csr: &serde_json::Value) -> Request {
    use base64::Engine;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    let b64 = csr["spec"]["request"].as_str().expect("spec.request");
    let pem_text = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("spec.request is base64");
    let block = pem::parse(&pem_text).expect("spec.request is PEM");
    assert_eq!(block.tag(), "CERTIFICATE REQUEST", "spec.request PEM type");
    let (_, req) = X509CertificationRequest::from_der(block.contents()).expect("PKCS#10");
    let subject = &req.certification_request_info.subject;
    let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.map(|a| a.as_str().expect("UTF-8 attribute").to_string())
            .collect::<Vec<_>>()
    };
    let mut out = Request {
        common_names: strings(&mut subject.iter_common_name()),
        organizations: strings(&mut subject.iter_organization()),
        dns: Vec::new(),
        ips: Vec::new(),
        other_sans: Vec::new(),
    };
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                    GeneralName::IPAddress(b) if b.len() == 4 => out
                        .ips
                        .push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                    GeneralName::IPAddress(b) if b.len() == 16 => out
                        .ips
                        .push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                    other => out.other_sans.push(format!("{other:?}")),
                }
            }
        }
    }
    out
}
