//! The `[kubernetes]` section: how the CSR controller reaches the cluster, which signer
//! names it signs (each through the CA `[signers]`/`ca` gives it), which it may approve,
//! and its leader election. Checked once at start (and on SIGHUP) into [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use kpki_pki::GoDuration;
use serde::Deserialize;

use crate::config::{ConfigError, ServeConfig};

/// The section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Kubeconfig of the controller's identity; absent: the in-cluster service account,
    /// then `$KUBECONFIG` / `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Signer names whose approved requests the controller signs.
    pub signers: Vec<String>,
    /// Signer names whose requests the controller may approve by rule (default none):
    /// `kubernetes.io/kube-apiserver-client-kubelet` and `kubernetes.io/kubelet-serving`.
    #[serde(default)]
    pub approve: Vec<String>,
    /// Requests handled at once (default 16).
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
    /// Plain-HTTP address for `/healthz`, `/readyz` and `/metrics` when the controller runs
    /// alone (`--controller-only`); with the HTTPS API, `[listen].ops_address` serves them.
    #[serde(default)]
    pub ops_address: Option<std::net::SocketAddr>,
    /// Leader election among replicas.
    #[serde(default)]
    pub leader_election: LeaderElectionConfig,
}

fn default_concurrency() -> u16 {
    16
}

/// Leader election on a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderElectionConfig {
    /// Lease name (default `kpki-csr-signer`).
    pub lease_name: String,
    /// Lease namespace (default `kube-system`).
    pub namespace: String,
    /// How long a lease holds without renewal (whole seconds, ≥ 2s; default 15s).
    pub lease_duration: GoDuration,
    /// How long before expiry the holder renews (whole seconds, below `lease_duration`;
    /// default 5s).
    pub renew_before: GoDuration,
    /// This replica's identity in the lease (default: host name and process id).
    pub identity: Option<String>,
}

impl Default for LeaderElectionConfig {
    fn default() -> LeaderElectionConfig {
        LeaderElectionConfig {
            lease_name: "kpki-csr-signer".into(),
            namespace: "kube-system".into(),
            lease_duration: GoDuration(Duration::from_secs(15)),
            renew_before: GoDuration(Duration::from_secs(5)),
            identity: None,
        }
    }
}

/// Signer names the optional approver knows.
pub(crate) const APPROVABLE: &[&str] = &[
    kpki_pki::csr::KUBE_APISERVER_CLIENT_KUBELET,
    kpki_pki::csr::KUBELET_SERVING,
];

/// The section, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// See [`KubernetesConfig::kubeconfig`].
    pub kubeconfig: Option<PathBuf>,
    /// Signer names signed.
    pub signers: Vec<String>,
    /// Signer names approved by rule.
    pub approve: Vec<String>,
    /// Requests handled at once.
    pub concurrency: u16,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace.
    pub namespace: String,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Renewal margin.
    pub renew_before: Duration,
    /// Identity in the lease.
    pub identity: String,
}

impl Settings {
    /// Checks `[kubernetes]` against the rest of `config`: every signer has a CA, every
    /// approved signer is signed and approvable, durations parse and fit.
    pub fn from_config(
        k: &KubernetesConfig,
        config: &ServeConfig,
    ) -> Result<Settings, ConfigError> {
        let err = |m: String| ConfigError(format!("[kubernetes] {m}"));
        if k.signers.is_empty() {
            return Err(err("signers: name at least one signer".into()));
        }
        for s in &k.signers {
            if config.ca_for(s).is_none() {
                return Err(err(format!(
                    "signers: no CA for {s:?} (add [signers.{s:?}] ca = \"…\", or a [cas.ca] for kubernetes.io/ names)"
                )));
            }
        }
        for a in &k.approve {
            if !APPROVABLE.contains(&a.as_str()) {
                return Err(err(format!(
                    "approve: {a:?} cannot be approved by rule (only {})",
                    APPROVABLE.join(", ")
                )));
            }
            if !k.signers.contains(a) {
                return Err(err(format!("approve: {a:?} is not in signers")));
            }
        }
        if k.concurrency == 0 {
            return Err(err("concurrency: must be at least 1".into()));
        }
        let le = &k.leader_election;
        let lease_duration = le.lease_duration.get();
        let renew_before = le.renew_before.get();
        if lease_duration < Duration::from_secs(2) || lease_duration.subsec_nanos() != 0 {
            return Err(err(format!(
                "leader_election.lease_duration: {lease_duration:?} must be whole seconds, at least 2s"
            )));
        }
        if renew_before.is_zero()
            || renew_before >= lease_duration
            || renew_before.subsec_nanos() != 0
        {
            return Err(err(format!(
                "leader_election.renew_before: {renew_before:?} must be whole seconds, above 0 and below lease_duration"
            )));
        }
        for (what, v) in [("lease_name", &le.lease_name), ("namespace", &le.namespace)] {
            if !kpki_pki::config::is_dns_subdomain(v) {
                return Err(err(format!(
                    "leader_election.{what}: {v:?} is not a Kubernetes object name"
                )));
            }
        }
        let identity = match &le.identity {
            Some(i) if i.trim().is_empty() => {
                return Err(err("leader_election.identity: empty".into()));
            }
            Some(i) => i.clone(),
            None => default_identity(),
        };
        Ok(Settings {
            kubeconfig: k.kubeconfig.clone(),
            signers: k.signers.clone(),
            approve: k.approve.clone(),
            concurrency: k.concurrency,
            lease_name: le.lease_name.clone(),
            namespace: le.namespace.clone(),
            lease_duration,
            renew_before,
            identity,
        })
    }
}

/// Host name (a pod's name in a cluster) and process id, as client-go's leader election
/// names a candidate.
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kpki".into());
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[cas.ca]
cert = "/etc/kubernetes/pki/ca.crt"
key = "file:/etc/kubernetes/pki/ca.key"

[cas.mesh]
cert = "/etc/mesh/ca.crt"
key = "file:/etc/mesh/ca.key"

[signers."example.com/mesh"]
ca = "mesh"
"#;

    fn settings(section: &str) -> Result<Settings, String> {
        let text = format!("{BASE}\n[kubernetes]\n{section}");
        let config = ServeConfig::parse(&text).map_err(|e| e.0)?;
        let k = config.kubernetes.clone().ok_or("no [kubernetes]")?;
        Settings::from_config(&k, &config).map_err(|e| e.0)
    }

    #[test]
    fn sections_are_checked() {
        let ok = [
            r#"signers = ["kubernetes.io/kube-apiserver-client"]"#,
            r#"signers = ["example.com/mesh", "kubernetes.io/kubelet-serving"]
approve = ["kubernetes.io/kubelet-serving"]"#,
            r#"signers = ["kubernetes.io/kube-apiserver-client-kubelet"]
approve = ["kubernetes.io/kube-apiserver-client-kubelet"]
[kubernetes.leader_election]
lease_duration = "4s"
renew_before = "1s"
identity = "a"
namespace = "kpki-system""#,
        ];
        for s in ok {
            assert!(settings(s).is_ok(), "{s}: {:?}", settings(s));
        }
        let bad = [
            ("signers = []", "name at least one signer"),
            (
                r#"signers = ["example.com/other"]"#,
                "no CA for \"example.com/other\"",
            ),
            (
                r#"signers = ["kubernetes.io/kube-apiserver-client"]
approve = ["kubernetes.io/kube-apiserver-client"]"#,
                "cannot be approved by rule",
            ),
            (
                r#"signers = ["kubernetes.io/kube-apiserver-client"]
approve = ["kubernetes.io/kubelet-serving"]"#,
                "is not in signers",
            ),
            (
                r#"signers = ["kubernetes.io/kube-apiserver-client"]
concurrency = 0"#,
                "at least 1",
            ),
            (
                r#"signers = ["kubernetes.io/kube-apiserver-client"]
[kubernetes.leader_election]
lease_duration = "1s""#,
                "at least 2s",
            ),
            (
                r#"signers = ["kubernetes.io/kube-apiserver-client"]
[kubernetes.leader_election]
lease_duration = "10s"
renew_before = "10s""#,
                "below lease_duration",
            ),
            (
                r#"signers = ["kubernetes.io/kube-apiserver-client"]
[kubernetes.leader_election]
lease_duration = "ten""#,
                "invalid duration",
            ),
            (
                r#"signers = ["kubernetes.io/kube-apiserver-client"]
[kubernetes.leader_election]
namespace = "Kube_System""#,
                "not a Kubernetes object name",
            ),
            (
                r#"signers = ["kubernetes.io/kube-apiserver-client"]
wat = 1"#,
                "unknown field",
            ),
        ];
        for (s, want) in bad {
            let e = settings(s).expect_err(s);
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn default_identity_names_host_and_process() {
        let i = default_identity();
        assert!(i.ends_with(&format!("_{}", std::process::id())), "{i}");
    }
}
