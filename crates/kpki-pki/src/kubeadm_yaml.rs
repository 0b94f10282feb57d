//! Cluster facts from a kubeadm `InitConfiguration`/`ClusterConfiguration` YAML, read as
//! kubeadm v1.37 reads it: only `kubeadm.k8s.io/v1beta4` (older versions refused, as kubeadm
//! refuses v1beta3 since v1.37), every document must name its `apiVersion` and `kind`, a kind
//! may appear once, and the kubeadm documents are decoded strictly (see the `strict` module):
//! an unknown or misspelt field, a value of the wrong type or a bad duration is an error naming
//! the field and the document. `featureGates` must name gates kubeadm v1.37 knows.
//! Documents of other API groups (KubeletConfiguration, ...) are ignored.

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

/// The only kubeadm API version read.
pub const API_VERSION: &str = "kubeadm.k8s.io/v1beta4";

/// Feature gates kubeadm v1.37 accepts in `featureGates` (none of them changes the PKI).
const FEATURE_GATES: &[&str] = &["RootlessControlPlane"];

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
    #[serde(default)]
    feature_gates: std::collections::BTreeMap<String, bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Networking {
    service_subnet: Option<String>,
    pod_subnet: Option<String>,
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
    let mut kinds: Vec<String> = Vec::new();
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
        // kubeadm: a document without a group, version or kind is an error.
        if kind.is_empty() || !api.contains('/') {
            return Err(format!(
                "a document has apiVersion {api:?} and kind {kind:?}: kind and apiVersion (with its group) are required"
            ));
        }
        if kinds.contains(&kind) {
            return Err(format!("kind {kind:?} is specified twice"));
        }
        kinds.push(kind.clone());
        if !api.starts_with("kubeadm.k8s.io/") {
            continue;
        }
        if api != API_VERSION {
            return Err(format!(
                "{kind}: unsupported apiVersion {api:?}: kpki reads {API_VERSION} only, as kubeadm v1.37 does (convert with `kubeadm config migrate`)"
            ));
        }
        crate::strict::check(&kind, &value)?;
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
                for gate in c.feature_gates.keys() {
                    if !FEATURE_GATES.contains(&gate.as_str()) {
                        let why = match gate.as_str() {
                            "ControlPlaneKubeletLocalMode" => {
                                " (it graduated in kubeadm v1.35 and was removed in v1.36: kubelet.conf always points at the local API endpoint)"
                            }
                            _ => "",
                        };
                        return Err(format!(
                            "ClusterConfiguration: featureGates: {gate} is not a valid feature name{why}"
                        ));
                    }
                }
                if let Some(dir) = c.certificates_dir.as_ref().filter(|d| !d.is_absolute()) {
                    return Err(format!(
                        "ClusterConfiguration: certificatesDir {:?}: path is not absolute",
                        dir.display()
                    ));
                }
                let in_doc = |e: ConfigError| format!("ClusterConfiguration: {e}");
                let sans = [
                    (&c.api_server.cert_sans, "apiServer.certSANs"),
                    (
                        &c.etcd
                            .local
                            .as_ref()
                            .and_then(|l| l.server_cert_sans.clone()),
                        "etcd.local.serverCertSANs",
                    ),
                    (
                        &c.etcd.local.as_ref().and_then(|l| l.peer_cert_sans.clone()),
                        "etcd.local.peerCertSANs",
                    ),
                ];
                for (list, field) in sans {
                    crate::config::check_cert_sans(list.as_deref().unwrap_or_default(), field)
                        .map_err(in_doc)?;
                }
                if let Some(svc) = c
                    .networking
                    .service_subnet
                    .as_ref()
                    .filter(|s| !s.is_empty())
                {
                    crate::config::service_vip(svc).map_err(in_doc)?;
                }
                if let Some(domain) = c
                    .networking
                    .dns_domain
                    .as_ref()
                    .filter(|d| !d.is_empty() && !crate::config::is_dns_subdomain(d))
                {
                    return Err(format!(
                        "ClusterConfiguration: networking.dnsDomain: invalid value {domain:?}: must be a DNS-1123 subdomain"
                    ));
                }
                if let Some(pods) = c.networking.pod_subnet.as_ref().filter(|p| !p.is_empty()) {
                    crate::config::check_subnets(pods, 14, "networking.podSubnet")
                        .map_err(|e| format!("ClusterConfiguration: {e}"))?;
                }
                facts.certificates_dir = c.certificates_dir;
                facts.cluster_name = c.cluster_name;
                facts.control_plane_endpoint = c.control_plane_endpoint;
                facts.service_subnet = c.networking.service_subnet;
                facts.dns_domain = c.networking.dns_domain;
                facts.cert_sans = c.api_server.cert_sans;
                if c.etcd.local.is_some() && c.etcd.external.is_some() {
                    return Err(
                        "ClusterConfiguration: etcd.local and etcd.external are mutually exclusive"
                            .into(),
                    );
                }
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

    #[test]
    fn reads_as_kubeadm_v1_37_does() {
        let cluster = |body: &str| {
            parse(&format!(
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n{body}"
            ))
        };
        assert!(cluster("featureGates:\n  RootlessControlPlane: true\n").is_ok());
        assert!(cluster("certificateValidityPeriod: 2160.5h\n").is_ok());
        let bad: &[(&str, &str)] = &[
            (
                "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n",
                "unsupported apiVersion \"kubeadm.k8s.io/v1beta3\"",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1\nkind: ClusterConfiguration\n",
                "unsupported apiVersion",
            ),
            ("kind: ClusterConfiguration\n", "kind and apiVersion"),
            (
                "apiVersion: kubeadm.k8s.io/v1beta4\n",
                "kind and apiVersion",
            ),
            ("apiVersion: v1\nkind: Pod\n", "kind and apiVersion"),
            (
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n",
                "kind \"ClusterConfiguration\" is specified twice",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nfeatureGates:\n  ControlPlaneKubeletLocalMode: false\n",
                "featureGates: ControlPlaneKubeletLocalMode is not a valid feature name",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\netcd:\n  local: {}\n  external:\n    endpoints: [https://e:2379]\n",
                "mutually exclusive",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificatesDir: pki\n",
                "path is not absolute",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.244.0.0/29\n",
                "networking.podSubnet",
            ),
            (
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nlocalAPIEndpoint:\n  advertiseAdress: 10.0.0.1\n",
                "InitConfiguration: strict decoding error: unknown field \"localAPIEndpoint.advertiseAdress\"",
            ),
        ];
        for (text, want) in bad {
            let e = parse(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
