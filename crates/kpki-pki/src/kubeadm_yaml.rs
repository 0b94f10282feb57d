//! Cluster facts from a kubeadm `InitConfiguration`/`ClusterConfiguration` YAML (v1beta4;
//! v1beta3 is read the same way, its missing fields taking kubeadm's defaults). Documents of
//! other kinds (KubeletConfiguration, ...) are ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ConfigError;

/// The facts kpki takes from kubeadm's configuration.
#[derive(Debug, Default, Clone)]
pub struct KubeadmFacts {
    /// `certificatesDir`.
    pub certificates_dir: Option<PathBuf>,
    /// `clusterName`.
    pub cluster_name: Option<String>,
    /// `controlPlaneEndpoint`.
    pub control_plane_endpoint: Option<String>,
    /// `networking.serviceSubnet`.
    pub service_subnet: Option<String>,
    /// `networking.dnsDomain`.
    pub dns_domain: Option<String>,
    /// `apiServer.certSANs`.
    pub cert_sans: Option<Vec<String>>,
    /// `etcd.local.serverCertSANs`.
    pub etcd_server_sans: Option<Vec<String>>,
    /// `etcd.local.peerCertSANs`.
    pub etcd_peer_sans: Option<Vec<String>>,
    /// `etcd.external` is set.
    pub external_etcd: bool,
    /// `nodeRegistration.name`.
    pub node_name: Option<String>,
    /// `localAPIEndpoint.advertiseAddress`.
    pub advertise_address: Option<String>,
    /// `localAPIEndpoint.bindPort`.
    pub bind_port: Option<u16>,
    /// `encryptionAlgorithm`.
    pub encryption_algorithm: Option<String>,
    /// `certificateValidityPeriod`.
    pub certificate_validity: Option<String>,
    /// `caCertificateValidityPeriod`.
    pub ca_certificate_validity: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct InitConfiguration {
    #[serde(default)]
    node_registration: NodeRegistration,
    #[serde(default, rename = "localAPIEndpoint")]
    local_api_endpoint: LocalApiEndpoint,
}

#[derive(Deserialize, Default)]
struct NodeRegistration {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LocalApiEndpoint {
    advertise_address: Option<String>,
    bind_port: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration {
    certificates_dir: Option<PathBuf>,
    cluster_name: Option<String>,
    control_plane_endpoint: Option<String>,
    #[serde(default)]
    networking: Networking,
    #[serde(default)]
    api_server: ApiServer,
    #[serde(default)]
    etcd: EtcdConfig,
    encryption_algorithm: Option<String>,
    certificate_validity_period: Option<String>,
    ca_certificate_validity_period: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Networking {
    service_subnet: Option<String>,
    dns_domain: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ApiServer {
    #[serde(rename = "certSANs")]
    cert_sans: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct EtcdConfig {
    local: Option<LocalEtcd>,
    external: Option<serde_norway::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LocalEtcd {
    #[serde(rename = "serverCertSANs")]
    server_cert_sans: Option<Vec<String>>,
    #[serde(rename = "peerCertSANs")]
    peer_cert_sans: Option<Vec<String>>,
}

/// Reads the kubeadm configuration file at `path`.
pub fn read(path: &Path) -> Result<KubeadmFacts, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("kubeadm config {}: {e}", path.display())))?;
    parse(&text).map_err(|e| ConfigError(format!("kubeadm config {}: {e}", path.display())))
}

/// Parses kubeadm configuration YAML (one or more documents).
pub fn parse(text: &str) -> Result<KubeadmFacts, String> {
    let mut facts = KubeadmFacts::default();
    let mut seen = false;
    for doc in serde_norway::Deserializer::from_str(text) {
        let value =
            serde_norway::Value::deserialize(doc).map_err(|e| format!("malformed YAML: {e}"))?;
        if value.is_null() {
            continue;
        }
        let header: Header = serde_norway::from_value(value.clone())
            .map_err(|e| format!("malformed document: {e}"))?;
        let api = header.api_version.unwrap_or_default();
        let kind = header.kind.unwrap_or_default();
        if !api.starts_with("kubeadm.k8s.io/") {
            continue;
        }
        if api != "kubeadm.k8s.io/v1beta4" && api != "kubeadm.k8s.io/v1beta3" {
            return Err(format!(
                "unsupported apiVersion {api:?} (expected kubeadm.k8s.io/v1beta4)"
            ));
        }
        match kind.as_str() {
            "InitConfiguration" => {
                let c: InitConfiguration = serde_norway::from_value(value)
                    .map_err(|e| format!("InitConfiguration: {e}"))?;
                facts.node_name = c.node_registration.name;
                facts.advertise_address = c.local_api_endpoint.advertise_address;
                facts.bind_port = c.local_api_endpoint.bind_port;
                seen = true;
            }
            "ClusterConfiguration" => {
                let c: ClusterConfiguration = serde_norway::from_value(value)
                    .map_err(|e| format!("ClusterConfiguration: {e}"))?;
                facts.certificates_dir = c.certificates_dir;
                facts.cluster_name = c.cluster_name;
                facts.control_plane_endpoint = c.control_plane_endpoint;
                facts.service_subnet = c.networking.service_subnet;
                facts.dns_domain = c.networking.dns_domain;
                facts.cert_sans = c.api_server.cert_sans;
                facts.external_etcd = c.etcd.external.is_some();
                if let Some(local) = c.etcd.local {
                    facts.etcd_server_sans = local.server_cert_sans;
                    facts.etcd_peer_sans = local.peer_cert_sans;
                }
                facts.encryption_algorithm = c.encryption_algorithm;
                facts.certificate_validity = c.certificate_validity_period;
                facts.ca_certificate_validity = c.ca_certificate_validity_period;
                seen = true;
            }
            _ => {}
        }
    }
    if !seen {
        return Err("no InitConfiguration or ClusterConfiguration document".into());
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v1beta4_documents() {
        let f = parse(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  name: cp1\nlocalAPIEndpoint:\n  advertiseAddress: 10.0.0.10\n  bindPort: 6443\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nclusterName: prod\ncontrolPlaneEndpoint: k8s.example.com:6443\nnetworking:\n  serviceSubnet: 10.100.0.0/16\n  dnsDomain: corp.local\napiServer:\n  certSANs: [api.example.com, 192.168.1.1]\netcd:\n  local:\n    serverCertSANs: [etcd.example.com]\nencryptionAlgorithm: ECDSA-P256\ncertificateValidityPeriod: 4380h\n---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n",
        )
        .unwrap();
        assert_eq!(f.node_name.as_deref(), Some("cp1"));
        assert_eq!(f.cluster_name.as_deref(), Some("prod"));
        assert_eq!(f.cert_sans.as_ref().map(Vec::len), Some(2));
        assert_eq!(f.encryption_algorithm.as_deref(), Some("ECDSA-P256"));
        assert!(!f.external_etcd);
        assert!(parse("a: [unclosed").is_err());
        assert!(parse("apiVersion: v1\nkind: Pod\n").is_err());
    }
}
