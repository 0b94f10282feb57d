//! Flags shared by the commands that work on a node's PKI, and their resolution into a
//! [`ClusterSpec`] (flags > `KPKI__…` > `kpki.toml` > kubeadm YAML > kubeadm defaults).

use std::path::PathBuf;

use clap::Args;
use kpki_pki::config::{self, ClusterSpec, Settings};

/// Flags naming the cluster and its PKI (each overrides `kpki.toml` and `KPKI__…` variables),
/// shared by every command that works on a node's PKI.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// kpki.toml configuration file.
    #[arg(long, env = "KPKI_CONFIG")]
    pub config: Option<PathBuf>,
    /// kubeadm InitConfiguration/ClusterConfiguration YAML to take cluster facts from. Only
    /// kubeadm.k8s.io/v1beta4 is read (v1beta3 and older are refused, as kubeadm v1.37 refuses
    /// them); decoding is strict: an unknown field is an error.
    #[arg(long)]
    kubeadm_config: Option<PathBuf>,
    /// Write everything under DIR: certificates in DIR/pki, kubeconfigs in DIR.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Certificate directory (default /etc/kubernetes/pki).
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Kubeconfig directory (default: parent of the certificate directory).
    #[arg(long)]
    kubeconfig_dir: Option<PathBuf>,
    /// Node name (default: host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Advertise address of this node's API server.
    #[arg(long)]
    advertise_address: Option<String>,
    /// Control-plane endpoint host[:port].
    #[arg(long)]
    control_plane_endpoint: Option<String>,
    /// Key algorithm of every generated key.
    #[arg(long)]
    encryption_algorithm: Option<String>,
    /// Key URI of a CA or the service-account key: `ca=URI`, `front-proxy-ca=URI`, `etcd-ca=URI`, `sa=URI`.
    #[arg(long = "key", value_name = "NAME=URI")]
    keys: Vec<String>,
}

impl ClusterArgs {
    /// The settings these flags give.
    fn settings(&self) -> Result<Settings, String> {
        let mut s = Settings {
            kubeadm_config: self.kubeadm_config.clone(),
            ..Default::default()
        };
        if let Some(dir) = &self.dir {
            s.cert_dir = Some(dir.join("pki"));
            s.kubeconfig_dir = Some(dir.clone());
        }
        if self.cert_dir.is_some() {
            s.cert_dir = self.cert_dir.clone();
        }
        if self.kubeconfig_dir.is_some() {
            s.kubeconfig_dir = self.kubeconfig_dir.clone();
        }
        s.cluster.node_name = self.node_name.clone();
        s.cluster.advertise_address = self.advertise_address.clone();
        s.cluster.control_plane_endpoint = self.control_plane_endpoint.clone();
        s.cluster.encryption_algorithm = self
            .encryption_algorithm
            .as_deref()
            .map(config::parse_algorithm)
            .transpose()
            .map_err(|e| e.to_string())?;
        for entry in &self.keys {
            let (name, uri) = entry
                .split_once('=')
                .ok_or_else(|| format!("--key {entry:?}: expected NAME=URI"))?;
            let slot = match name {
                "ca" => &mut s.keys.ca,
                "front-proxy-ca" => &mut s.keys.front_proxy_ca,
                "etcd-ca" => &mut s.keys.etcd_ca,
                "sa" => &mut s.keys.sa,
                other => {
                    return Err(format!(
                        "--key {other:?}: expected ca, front-proxy-ca, etcd-ca or sa"
                    ));
                }
            };
            *slot = Some(uri.parse().map_err(|e| format!("keys.{name}: {e}"))?);
        }
        Ok(s)
    }
}

impl ClusterArgs {
    /// Reads the configuration these flags point at and resolves it.
    pub fn spec(&self) -> Result<ClusterSpec, String> {
        let flags = self.settings()?;
        let settings =
            config::read_settings(self.config.as_deref(), &flags).map_err(|e| e.to_string())?;
        config::resolve(&settings).map_err(|e| e.to_string())
    }
}
