//! The Certificates API as tests drive it: kpki's CSR controller configured and started
//! beside a [`Cluster`], with the RBAC of `deploy/kubernetes/60-csr-controller-rbac.yaml`
//! and a ServiceAccount token as its identity; CertificateSigningRequest objects created,
//! approved, denied and read with kubectl.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use serde_json::{Value, json};

use crate::cluster::{Cluster, Daemon};
use crate::serve::free_port;
use crate::text;

/// The signers the controller handles in these tests.
pub const SIGNERS: [&str; 3] = [
    "kubernetes.io/kube-apiserver-client",
    "kubernetes.io/kube-apiserver-client-kubelet",
    "kubernetes.io/kubelet-serving",
];

/// The repository's deploy directory.
fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(name)
}

/// Applies the kpki namespace and the controller's RBAC from `deploy/kubernetes`, and
/// writes a kubeconfig for its ServiceAccount (a token from the TokenRequest API, signed by
/// kpki's token signer); returns its path.
pub fn install_rbac(cluster: &Cluster) -> PathBuf {
    for f in ["00-namespace.yaml", "60-csr-controller-rbac.yaml"] {
        let out = cluster.kubectl(
            "super-admin.conf",
            &["apply", "-f", deploy(f).to_str().expect("UTF-8 path")],
        );
        assert!(out.status.success(), "kubectl apply {f}: {:?}", text(&out));
    }
    let out = cluster.kubectl(
        "super-admin.conf",
        &[
            "-n",
            "kpki",
            "create",
            "token",
            "kpki-csr-signer",
            "--duration=2h",
        ],
    );
    assert!(out.status.success(), "create token: {:?}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let ca = std::fs::read(cluster.pki().join("ca.crt")).expect("read ca.crt");
    let kubeconfig = cluster.path("kpki-csr-signer.conf");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority-data: {ca}
users:
- name: kpki-csr-signer
  user:
    token: {token}
contexts:
- name: kpki-csr-signer@test
  context:
    cluster: test
    user: kpki-csr-signer
current-context: kpki-csr-signer@test
",
        port = cluster.port,
        ca = base64::engine::general_purpose::STANDARD.encode(ca),
    );
    std::fs::write(&kubeconfig, text).expect("write kubeconfig");
    kubeconfig
}

/// A controller replica's settings.
pub struct Replica {
    /// Lease identity.
    pub identity: &'static str,
    /// Its `--controller-only` ops listener port.
    pub ops_port: u16,
    /// Its audit trail.
    pub audit: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
}

/// Writes the configuration of controller replica `identity`: the cluster CA through the
/// p11-kit server, the three built-in signers, kubelet-serving approval on, a 4 s lease, and
/// the policy the tests need (users of group `dev` requested by cluster admins; kubelets from
/// bootstrap tokens and from themselves).
pub fn replica(cluster: &Cluster, kubeconfig: &Path, identity: &'static str) -> Replica {
    replica_approving(
        cluster,
        kubeconfig,
        identity,
        &["kubernetes.io/kubelet-serving"],
    )
}

/// [`replica`] with the approver on for the signer names `approve`.
pub fn replica_approving(
    cluster: &Cluster,
    kubeconfig: &Path,
    identity: &'static str,
    approve: &[&str],
) -> Replica {
    let ops_port = free_port();
    let audit = cluster.path(&format!("{identity}-audit.jsonl"));
    let config = cluster.path(&format!("{identity}.toml"));
    let signers = SIGNERS.map(|s| format!("{s:?}")).join(", ");
    let approve = approve
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"[cas.ca]
cert = "{ca}"
key = "{key}"

[audit]
path = "{audit}"

[signing]
probe_interval = "200ms"

[kubernetes]
kubeconfig = "{kubeconfig}"
signers = [{signers}]
approve = [{approve}]
ops_address = "127.0.0.1:{ops_port}"

[kubernetes.leader_election]
namespace = "kpki"
lease_duration = "4s"
renew_before = "2s"
identity = "{identity}"

[[policy]]
name = "users-by-admins"
callers = {{ orgs = ["kubeadm:cluster-admins", "system:masters"] }}
signers = ["kubernetes.io/kube-apiserver-client"]
orgs = ["dev"]
max_validity = "48h"

[[policy]]
name = "kubelet-bootstrap"
callers = {{ cn = "system:bootstrap:[a-z0-9]{{6}}", orgs = ["system:bootstrappers"] }}
signers = ["kubernetes.io/kube-apiserver-client-kubelet"]
cn = "system:node:.+"
orgs = ["system:nodes"]
max_validity = "8760h"

[[policy]]
name = "kubelets"
callers = {{ orgs = ["system:nodes"] }}
signers = ["kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kubelet-serving"]
cn = "system:node:.+"
orgs = ["system:nodes"]
dns_suffixes = [".test"]
ip_ranges = ["127.0.0.0/8", "10.0.0.0/8"]
max_validity = "8760h"
"#,
        ca = cluster.pki().join("ca.crt").display(),
        key = cluster.remote_key_uri("ca"),
        audit = audit.display(),
        kubeconfig = kubeconfig.display(),
    );
    std::fs::write(&config, text).expect("write controller config");
    Replica {
        identity,
        ops_port,
        audit,
        config,
    }
}

/// Starts `kpki serve --controller-only` for `r`.
pub fn start(cluster: &Cluster, r: &Replica) -> Daemon {
    cluster.start_kpki_serve(
        r.identity,
        &[
            "--controller-only",
            "--config",
            r.config.to_str().expect("UTF-8 path"),
        ],
    )
}

/// `GET /metrics` of replica `r` (empty when it does not answer).
pub fn metrics(r: &Replica) -> String {
    crate::serve::ops_get(([127, 0, 0, 1], r.ops_port).into(), "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The value of metric `name` (a line `name value`) in `text`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits (30 s at most) until replica `r`, running as `d`, says it leads.
pub fn wait_leading(r: &Replica, d: &mut Daemon) {
    crate::cluster::eventually(
        "controller leads",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || {
            assert!(!d.exited(), "controller exited:\n{}", d.log());
            if leads(r) { Ok(()) } else { Err(d.log()) }
        },
    );
}

/// Whether replica `r` says it leads.
pub fn leads(r: &Replica) -> bool {
    metric(&metrics(r), "kpki_csr_controller_leader") == Some(1.0)
}

/// A CertificateSigningRequest object.
pub fn object(
    name: &str,
    csr_pem: &str,
    signer: &str,
    usages: &[&str],
    seconds: Option<u32>,
) -> Value {
    let mut spec = json!({
        "request": base64::engine::general_purpose::STANDARD.encode(csr_pem),
        "signerName": signer,
        "usages": usages,
    });
    if let Some(s) = seconds {
        spec["expirationSeconds"] = json!(s);
    }
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": name },
        "spec": spec,
    })
}

/// Creates `objects` in one `kubectl create` as `kubeconfig`'s user; panics unless it
/// succeeds.
pub fn create(cluster: &Cluster, kubeconfig: &str, objects: &[Value]) {
    std::thread::scope(|s| {
        let batches: Vec<_> = objects
            .chunks(20)
            .map(|batch| s.spawn(move || try_create(cluster, kubeconfig, batch)))
            .collect();
        for b in batches {
            let out = b.join().expect("kubectl thread");
            assert!(out.status.success(), "kubectl create: {:?}", text(&out));
        }
    });
}

/// `kubectl create` of `objects` as `kubeconfig`'s user, whatever the outcome.
pub fn try_create(cluster: &Cluster, kubeconfig: &str, objects: &[Value]) -> Output {
    crate::hsm::require_tool("kubectl");
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": objects });
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.path(kubeconfig))
        .args(["create", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(list.to_string().as_bytes())
        .expect("write to kubectl");
    child.wait_with_output().expect("kubectl")
}

/// `kubectl certificate approve|deny names…` as the cluster admin: batches of 10 names in
/// parallel kubectl processes (one kubectl throttles itself to a few requests a second).
pub fn decide(cluster: &Cluster, verb: &str, names: &[String]) {
    crate::hsm::require_tool("kubectl");
    let children: Vec<_> = names
        .chunks(10)
        .map(|chunk| {
            Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(cluster.path("admin.conf"))
                .args(["certificate", verb])
                .args(chunk)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run kubectl")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl certificate {verb}: {:?}",
            text(&out)
        );
    }
}

/// Every CertificateSigningRequest object.
pub fn list(cluster: &Cluster) -> Vec<Value> {
    let out = cluster.kubectl("super-admin.conf", &["get", "csr", "-o", "json"]);
    assert!(out.status.success(), "kubectl get csr: {:?}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("kubectl JSON");
    v["items"].as_array().cloned().unwrap_or_default()
}

/// How many CSRs carry a certificate.
pub fn signed(cluster: &Cluster) -> usize {
    list(cluster)
        .iter()
        .filter(|o| certificate(o).is_some())
        .count()
}

/// One object.
pub fn get(cluster: &Cluster, name: &str) -> Value {
    let out = cluster.kubectl("super-admin.conf", &["get", "csr", name, "-o", "json"]);
    assert!(
        out.status.success(),
        "kubectl get csr {name}: {:?}",
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl JSON")
}

/// The issued certificate (PEM) of an object, if any.
pub fn certificate(object: &Value) -> Option<String> {
    let b64 = object["status"]["certificate"].as_str()?;
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some(String::from_utf8(pem).expect("PEM text"))
}

/// The condition of type `kind` of an object, if any.
pub fn condition(object: &Value, kind: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

/// Audit lines of `path` as JSON (decisions and approvals), in order.
pub fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}
