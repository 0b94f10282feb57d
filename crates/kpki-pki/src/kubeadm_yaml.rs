//! Cluster facts from a kubeadm `InitConfiguration`/`ClusterConfiguration` YAML, read as
//! kubeadm v1.37 reads it: only `kubeadm.k8s.io/v1beta4` (older versions refused, as kubeadm
//! refuses v1beta3 since v1.37), every document must name its `apiVersion` and `kind`, a kind
//! may appear once, and the kubeadm documents are decoded strictly (see the `strict` module):
//! an unknown or misspelt field, a value of the wrong type or a bad duration is an error naming
//! the field and the document. `featureGates` must name gates kubeadm v1.37 knows.
//! Documents of other API groups (KubeletConfiguration, ...) are ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use kpki_signer::KeyAlgorithm;

use crate::config::{ConfigError, EtcdMode};
use crate::duration::GoDuration;

/// The facts kpki takes from kubeadm's configuration.
#[derive(Debug, Default, Clone)]
pub(crate) struct KubeadmFacts {
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
    /// `external` when `etcd.external` is set, `local` when `etcd.local` is.
    pub etcd: Option<EtcdMode>,
    /// `nodeRegistration.name`.
    pub node_name: Option<String>,
    /// `localAPIEndpoint.advertiseAddress`.
    pub advertise_address: Option<String>,
    /// `localAPIEndpoint.bindPort`.
    pub bind_port: Option<u16>,
    /// `encryptionAlgorithm`.
    pub encryption_algorithm: Option<KeyAlgorithm>,
    /// `certificateValidityPeriod`.
    pub certificate_validity: Option<GoDuration>,
    /// `caCertificateValidityPeriod`.
    pub ca_certificate_validity: Option<GoDuration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
}

/// The only kubeadm API version read.
pub(crate) const API_VERSION: &str = "kubeadm.k8s.io/v1beta4";

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
    #[serde(default, deserialize_with = "crate::config::encryption_algorithm")]
    encryption_algorithm: Option<KeyAlgorithm>,
    certificate_validity_period: Option<GoDuration>,
    ca_certificate_validity_period: Option<GoDuration>,
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
    let bytes = kpki_atomic::read::input(path, kpki_atomic::read::CONFIG_MAX)
        .map_err(|e| ConfigError(format!("kubeadm config {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigError(format!("kubeadm config {}: not UTF-8 text", path.display())))?;
    parse(&text).map_err(|e| ConfigError(format!("kubeadm config {}: {}", path.display(), e.0)))
}

/// Parses kubeadm configuration YAML (one or more documents).
pub fn parse(text: &str) -> Result<KubeadmFacts, ConfigError> {
    let mut facts = KubeadmFacts::default();
    let mut seen = false;
    let mut kinds: Vec<String> = Vec::new();
    crate::yaml_guard::check(text).map_err(|e| bad(format!("malformed YAML: {e}")))?;
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(doc)
            .map_err(|e| bad(format!("malformed YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let Some(kind) = kubeadm_kind(&value, &mut kinds)? else {
            continue;
        };
        crate::strict::check(&kind, &value).map_err(bad)?;
        match kind.as_str() {
            "InitConfiguration" => {
                let c: InitConfiguration = serde_norway::from_value(value)
                    .map_err(|e| bad(format!("InitConfiguration: {e}")))?;
                facts.node_name = c.node_registration.name;
                facts.advertise_address = c.local_api_endpoint.advertise_address;
                facts.bind_port = c.local_api_endpoint.bind_port;
                seen = true;
            }
            "ClusterConfiguration" => {
                let c: ClusterConfiguration = serde_norway::from_value(value)
                    .map_err(|e| bad(format!("ClusterConfiguration: {e}")))?;
                cluster_facts(c, &mut facts)
                    .map_err(|e| bad(format!("ClusterConfiguration: {}", e.0)))?;
                seen = true;
            }
            _ => {}
        }
    }
    if !seen {
        return Err(bad(
            "no InitConfiguration or ClusterConfiguration document".into()
        ));
    }
    Ok(facts)
}

fn bad(message: String) -> ConfigError {
    ConfigError(message)
}

/// The kind of a document of the kubeadm API group (`None` for other groups), once its
/// header is checked as kubeadm checks it; `kinds` collects the kinds seen so far.
fn kubeadm_kind(
    value: &serde_norway::Value,
    kinds: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    let header: Header = serde_norway::from_value(value.clone())
        .map_err(|e| bad(format!("malformed document: {e}")))?;
    let api = header.api_version.unwrap_or_default();
    let kind = header.kind.unwrap_or_default();
    // kubeadm: a document without a group, version or kind is an error.
    if kind.is_empty() || !api.contains('/') {
        return Err(bad(format!(
            "a document has apiVersion {api:?} and kind {kind:?}: kind and apiVersion (with its group) are required"
        )));
    }
    if kinds.contains(&kind) {
        return Err(bad(format!("kind {kind:?} is specified twice")));
    }
    kinds.push(kind.clone());
    if !api.starts_with("kubeadm.k8s.io/") {
        return Ok(None);
    }
    if api != API_VERSION {
        return Err(bad(format!(
            "{kind}: unsupported apiVersion {api:?}: kpki reads {API_VERSION} only, as kubeadm v1.37 does (convert with `kubeadm config migrate`)"
        )));
    }
    Ok(Some(kind))
}

/// Checks a `ClusterConfiguration` as kubeadm validates it and takes its facts.
fn cluster_facts(c: ClusterConfiguration, facts: &mut KubeadmFacts) -> Result<(), ConfigError> {
    check_feature_gates(&c.feature_gates)?;
    if let Some(dir) = c.certificates_dir.as_ref().filter(|d| !d.is_absolute()) {
        return Err(bad(format!(
            "certificatesDir {:?}: path is not absolute",
            dir.display()
        )));
    }
    let local = c.etcd.local.as_ref();
    let sans = [
        (&c.api_server.cert_sans, "apiServer.certSANs"),
        (
            &local.and_then(|l| l.server_cert_sans.clone()),
            "etcd.local.serverCertSANs",
        ),
        (
            &local.and_then(|l| l.peer_cert_sans.clone()),
            "etcd.local.peerCertSANs",
        ),
    ];
    for (list, field) in sans {
        crate::config::check_cert_sans(list.as_deref().unwrap_or_default(), field)?;
    }
    check_networking(&c.networking)?;
    facts.certificates_dir = c.certificates_dir;
    facts.cluster_name = c.cluster_name;
    facts.control_plane_endpoint = c.control_plane_endpoint;
    facts.service_subnet = c.networking.service_subnet;
    facts.dns_domain = c.networking.dns_domain;
    facts.cert_sans = c.api_server.cert_sans;
    facts.etcd = match (c.etcd.local, c.etcd.external) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "etcd.local and etcd.external are mutually exclusive".into()
            ));
        }
        (_, Some(_)) => Some(EtcdMode::External),
        (Some(local), None) => {
            facts.etcd_server_sans = local.server_cert_sans;
            facts.etcd_peer_sans = local.peer_cert_sans;
            Some(EtcdMode::Local)
        }
        (None, None) => None,
    };
    facts.encryption_algorithm = c.encryption_algorithm;
    facts.certificate_validity = c.certificate_validity_period;
    facts.ca_certificate_validity = c.ca_certificate_validity_period;
    Ok(())
}

/// Refuses a feature gate kubeadm v1.37 does not know.
fn check_feature_gates(
    gates: &std::collections::BTreeMap<String, bool>,
) -> Result<(), ConfigError> {
    for gate in gates.keys() {
        if !FEATURE_GATES.contains(&gate.as_str()) {
            let why = match gate.as_str() {
                "ControlPlaneKubeletLocalMode" => {
                    " (it graduated in kubeadm v1.35 and was removed in v1.36: kubelet.conf always points at the local API endpoint)"
                }
                _ => "",
            };
            return Err(bad(format!(
                "featureGates: {gate} is not a valid feature name{why}"
            )));
        }
    }
    Ok(())
}

/// Checks `networking` as kubeadm validates it: service and pod subnets, DNS domain.
fn check_networking(n: &Networking) -> Result<(), ConfigError> {
    if let Some(svc) = n.service_subnet.as_ref().filter(|s| !s.is_empty()) {
        crate::config::service_vip(svc)?;
    }
    if let Some(domain) = n
        .dns_domain
        .as_ref()
        .filter(|d| !d.is_empty() && !crate::config::is_dns_subdomain(d))
    {
        return Err(bad(format!(
            "networking.dnsDomain: invalid value {domain:?}: must be a DNS-1123 subdomain"
        )));
    }
    if let Some(pods) = n.pod_subnet.as_ref().filter(|p| !p.is_empty()) {
        crate::config::check_subnets(pods, 14, "networking.podSubnet")?;
    }
    Ok(())
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
        assert_eq!(f.encryption_algorithm, Some(KeyAlgorithm::EcdsaP256));
        assert_eq!(f.etcd, Some(EtcdMode::Local));
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
            let e = parse(text).expect_err(text).0;
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
