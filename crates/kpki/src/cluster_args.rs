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
    /// them); decoding is strict: an unknown field is an error. `-` reads stdin.
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
    #[arg(long = "key", value_name = "NAME=URI", value_parser = parse_key)]
    keys: Vec<(KeyName, String)>,
}

/// The `[keys]` names a `--key` flag can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyName {
    /// `ca`.
    Ca,
    /// `front-proxy-ca`.
    FrontProxyCa,
    /// `etcd-ca`.
    EtcdCa,
    /// `sa`.
    Sa,
}

impl KeyName {
    /// The `[keys]` name.
    fn as_str(self) -> &'static str {
        match self {
            KeyName::Ca => "ca",
            KeyName::FrontProxyCa => "front-proxy-ca",
            KeyName::EtcdCa => "etcd-ca",
            KeyName::Sa => "sa",
        }
    }
}

/// Parses `--key NAME=URI` (the URI itself is checked where it is used); a malformed flag
/// is a usage error.
fn parse_key(entry: &str) -> Result<(KeyName, String), String> {
    let (name, uri) = entry
        .split_once('=')
        .ok_or_else(|| format!("{entry:?}: expected NAME=URI"))?;
    let name = match name {
        "ca" => KeyName::Ca,
        "front-proxy-ca" => KeyName::FrontProxyCa,
        "etcd-ca" => KeyName::EtcdCa,
        "sa" => KeyName::Sa,
        other => {
            return Err(format!(
                "{other:?}: expected ca, front-proxy-ca, etcd-ca or sa"
            ));
        }
    };
    if uri.is_empty() {
        return Err(format!("{entry:?}: the URI is empty"));
    }
    Ok((name, uri.to_string()))
}

impl ClusterArgs {
    /// The settings these flags give.
    fn settings(&self) -> Result<Settings, String> {
        let mut s = Settings {
            kubeadm_config: self.kubeadm_config.as_deref().map(crate::input::path),
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
        for (name, uri) in &self.keys {
            let slot = match name {
                KeyName::Ca => &mut s.keys.ca,
                KeyName::FrontProxyCa => &mut s.keys.front_proxy_ca,
                KeyName::EtcdCa => &mut s.keys.etcd_ca,
                KeyName::Sa => &mut s.keys.sa,
            };
            *slot = Some(
                uri.parse()
                    .map_err(|e| format!("keys.{}: {e}", name.as_str()))?,
            );
        }
        Ok(s)
    }
}

impl ClusterArgs {
    /// [`ClusterArgs::spec`] and the audit file of offline issuance: `flag`, else
    /// `audit_file` from `KPKI__AUDIT_FILE` or kpki.toml.
    pub fn spec_and_audit_file(
        &self,
        flag: Option<&std::path::Path>,
    ) -> Result<(ClusterSpec, Option<PathBuf>), String> {
        let flags = self.settings()?;
        let settings =
            config::read_settings(self.config.as_deref(), &flags).map_err(|e| e.to_string())?;
        let spec = config::resolve(&settings).map_err(|e| e.to_string())?;
        log_spec(&spec);
        Ok((
            spec,
            flag.map(std::path::Path::to_path_buf)
                .or(settings.audit_file),
        ))
    }

    /// Reads the configuration these flags point at and resolves it.
    pub fn spec(&self) -> Result<ClusterSpec, String> {
        let flags = self.settings()?;
        let settings =
            config::read_settings(self.config.as_deref(), &flags).map_err(|e| e.to_string())?;
        let spec = config::resolve(&settings).map_err(|e| e.to_string())?;
        log_spec(&spec);
        Ok(spec)
    }
}

/// Logs where the resolved configuration puts things (key URIs print without `pin-value`).
fn log_spec(spec: &ClusterSpec) {
    tracing::info!(
        cert_dir = %spec.cert_dir.display(),
        kubeconfig_dir = %spec.kubeconfig_dir.display(),
        node = %spec.node_name,
        algorithm = %spec.algorithm,
        "configuration resolved"
    );
    for (id, uri) in &spec.ca_keys {
        tracing::debug!(ca = ?id, key = %uri, "CA key");
    }
    tracing::debug!(key = %spec.sa_key, "service-account key");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_flags_name_a_known_key_and_a_uri() {
        assert_eq!(
            parse_key("ca=file:/k").unwrap(),
            (KeyName::Ca, "file:/k".to_string())
        );
        assert_eq!(
            parse_key("etcd-ca=pkcs11:token=a;object=b?x=y=z").unwrap(),
            (KeyName::EtcdCa, "pkcs11:token=a;object=b?x=y=z".to_string())
        );
        assert_eq!(
            parse_key("front-proxy-ca=x").unwrap().0,
            KeyName::FrontProxyCa
        );
        assert_eq!(parse_key("sa=x").unwrap().0, KeyName::Sa);
        for bad in ["ca", "ca=", "root=file:/k", "=file:/k", ""] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
    }
}
