//! Configuration: `kpki.toml` (config crate) with `KPKI__SECTION__FIELD` environment
//! overrides and CLI flags on top, cluster facts optionally from a kubeadm v1beta4
//! `InitConfiguration`/`ClusterConfiguration` YAML, and kubeadm's defaults underneath.
//! [`read_settings`] reads it, each value into its type as it is read (key URIs, algorithms,
//! durations, the etcd mode), and [`resolve`] turns it into a validated [`ClusterSpec`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kpki_signer::{KeyAlgorithm, KeyUri};
use serde::{Deserialize, Deserializer};

use crate::catalogue::CaId;
use crate::duration::GoDuration;
use crate::kubeadm_yaml::{self, KubeadmFacts};

/// A configuration problem, one line naming the input and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Settings as written in `kpki.toml`, `KPKI__…` variables or flags (all optional).
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Certificate directory (kubeadm `certificatesDir`).
    pub cert_dir: Option<PathBuf>,
    /// Directory of the kubeconfig files.
    pub kubeconfig_dir: Option<PathBuf>,
    /// A kubeadm v1beta4 config file to take cluster facts from.
    pub kubeadm_config: Option<PathBuf>,
    /// Cluster facts.
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// Key URIs per CA (and `sa`).
    #[serde(default)]
    pub keys: KeySettings,
    /// Which CA (`ca`, `front-proxy-ca`, `etcd-ca`) signs each CSR signerName.
    pub signers: Option<std::collections::BTreeMap<String, String>>,
    /// The audit file of offline issuance (`sign`, `certs renew`, `node add`,
    /// `kubeconfig user`): hash-chained lines as the daemon writes them.
    pub audit_file: Option<PathBuf>,
}

/// `[cluster]`: the facts kubeadm's config carries.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// `clusterName`.
    pub name: Option<String>,
    /// `nodeRegistration.name`.
    pub node_name: Option<String>,
    /// `localAPIEndpoint.advertiseAddress`.
    pub advertise_address: Option<String>,
    /// `localAPIEndpoint.bindPort`.
    pub bind_port: Option<u16>,
    /// `controlPlaneEndpoint`.
    pub control_plane_endpoint: Option<String>,
    /// `networking.serviceSubnet`.
    pub service_subnet: Option<String>,
    /// `networking.dnsDomain`.
    pub dns_domain: Option<String>,
    /// `apiServer.certSANs`.
    pub cert_sans: Option<Vec<String>>,
    /// `local` (default) or `external` etcd.
    pub etcd: Option<EtcdMode>,
    /// `etcd.local.serverCertSANs`.
    pub etcd_server_sans: Option<Vec<String>>,
    /// `etcd.local.peerCertSANs`.
    pub etcd_peer_sans: Option<Vec<String>>,
    /// `encryptionAlgorithm` (empty: the default, RSA-2048).
    #[serde(default, deserialize_with = "encryption_algorithm")]
    pub encryption_algorithm: Option<KeyAlgorithm>,
    /// `certificateValidityPeriod`.
    pub certificate_validity: Option<GoDuration>,
    /// `caCertificateValidityPeriod`.
    pub ca_certificate_validity: Option<GoDuration>,
    /// Longest validity `kpki sign` grants (kube-controller-manager's `--cluster-signing-duration`).
    pub signing_duration: Option<GoDuration>,
}

/// Where etcd runs: stacked on the control-plane nodes or outside the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdMode {
    /// Stacked etcd: kpki makes the etcd CA and the etcd certificates.
    Local,
    /// External etcd: no etcd CA or etcd certificates.
    External,
}

impl std::str::FromStr for EtcdMode {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<EtcdMode, ConfigError> {
        match text {
            "local" => Ok(EtcdMode::Local),
            "external" => Ok(EtcdMode::External),
            other => Err(ConfigError(format!(
                "etcd {other:?}: expected \"local\" or \"external\""
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for EtcdMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EtcdMode, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Reads an `encryptionAlgorithm` value as kubeadm does: one of its five names, or empty for
/// the default (RSA-2048).
pub fn parse_algorithm(text: &str) -> Result<KeyAlgorithm, ConfigError> {
    if text.is_empty() {
        return Ok(KeyAlgorithm::Rsa2048);
    }
    text.parse().map_err(|_| {
        ConfigError(format!(
            "unknown encryptionAlgorithm {text:?}: expected RSA-2048, RSA-3072, RSA-4096, ECDSA-P256 or ECDSA-P384"
        ))
    })
}

/// Deserialises an optional `encryptionAlgorithm` with [`parse_algorithm`].
pub(crate) fn encryption_algorithm<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<KeyAlgorithm>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(text) => parse_algorithm(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

/// `[keys]`: where each CA key (and the service-account key) lives.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// The cluster CA key.
    pub ca: Option<KeyUri>,
    /// The front-proxy CA key.
    #[serde(alias = "front-proxy-ca")]
    pub front_proxy_ca: Option<KeyUri>,
    /// The etcd CA key.
    #[serde(alias = "etcd-ca")]
    pub etcd_ca: Option<KeyUri>,
    /// The service-account signing key.
    pub sa: Option<KeyUri>,
}

/// The API server address part of `controlPlaneEndpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host: an IP or a DNS name.
    pub host: Host,
    /// Port, if given.
    pub port: Option<u16>,
}

/// An IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name.
    Dns(String),
}

/// Local or external etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Etcd {
    /// Stacked etcd with extra server and peer SANs.
    Local {
        /// `serverCertSANs`.
        server_sans: Vec<String>,
        /// `peerCertSANs`.
        peer_sans: Vec<String>,
    },
    /// External etcd: no etcd CA or etcd certificates.
    External,
}

/// The resolved, validated configuration of one node's PKI.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Certificate directory.
    pub cert_dir: PathBuf,
    /// Kubeconfig directory.
    pub kubeconfig_dir: PathBuf,
    /// Cluster name.
    pub cluster_name: String,
    /// Node name.
    pub node_name: String,
    /// Advertise address.
    pub advertise_address: IpAddr,
    /// API server port.
    pub bind_port: u16,
    /// Control-plane endpoint, if any.
    pub control_plane_endpoint: Option<Endpoint>,
    /// The service VIP (`.1` of the first service CIDR).
    pub service_vip: IpAddr,
    /// Cluster DNS domain.
    pub dns_domain: String,
    /// Extra API server SANs.
    pub cert_sans: Vec<String>,
    /// etcd mode.
    pub etcd: Etcd,
    /// Key algorithm of every generated key.
    pub algorithm: KeyAlgorithm,
    /// Leaf validity.
    pub cert_validity: Duration,
    /// CA validity.
    pub ca_validity: Duration,
    /// CA key URIs.
    pub ca_keys: [(CaId, KeyUri); 3],
    /// Service-account key URI.
    pub sa_key: KeyUri,
    /// CSR signerName → the CA that signs it.
    pub signer_cas: std::collections::BTreeMap<String, CaId>,
    /// Longest validity of certificates signed from CSRs.
    pub signing_duration: Duration,
}

impl ClusterSpec {
    /// The key URI of a CA.
    pub fn ca_key(&self, id: CaId) -> &KeyUri {
        self.ca_keys
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, u)| u)
            .unwrap_or(&self.ca_keys[0].1)
    }

    /// True with stacked etcd.
    pub(crate) fn local_etcd(&self) -> bool {
        matches!(self.etcd, Etcd::Local { .. })
    }

    /// `https://advertise:port`.
    pub(crate) fn local_url(&self) -> String {
        url(&Host::Ip(self.advertise_address), self.bind_port)
    }

    /// The control-plane endpoint URL, or the local one when unset.
    pub(crate) fn control_plane_url(&self) -> String {
        match &self.control_plane_endpoint {
            Some(e) => url(&e.host, e.port.unwrap_or(self.bind_port)),
            None => self.local_url(),
        }
    }
}

fn url(host: &Host, port: u16) -> String {
    match host {
        Host::Ip(IpAddr::V6(ip)) => format!("https://[{ip}]:{port}"),
        Host::Ip(IpAddr::V4(ip)) => format!("https://{ip}:{port}"),
        Host::Dns(name) => format!("https://{name}:{port}"),
    }
}

/// Reads settings from `file` (if any) and `KPKI__…` variables; `flags` win over both.
pub fn read_settings(file: Option<&Path>, flags: &Settings) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "config file {}: not found",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix("KPKI")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("cluster.cert_sans")
            .with_list_parse_key("cluster.etcd_server_sans")
            .with_list_parse_key("cluster.etcd_peer_sans")
            .try_parsing(true),
    );
    let built = builder
        .build()
        .map_err(|e| ConfigError(format!("configuration: {e}")))?;
    let mut s: Settings = built.try_deserialize().map_err(|e| {
        ConfigError(format!(
            "configuration{}: {e}",
            file.map(|p| format!(" {}", p.display()))
                .unwrap_or_default()
        ))
    })?;
    overlay(&mut s, flags);
    Ok(s)
}

fn overlay(s: &mut Settings, f: &Settings) {
    macro_rules! take {
        ($($field:ident).+) => {
            if f.$($field).+.is_some() {
                s.$($field).+ = f.$($field).+.clone();
            }
        };
    }
    take!(cert_dir);
    take!(kubeconfig_dir);
    take!(kubeadm_config);
    take!(audit_file);
    take!(cluster.name);
    take!(cluster.node_name);
    take!(cluster.advertise_address);
    take!(cluster.bind_port);
    take!(cluster.control_plane_endpoint);
    take!(cluster.service_subnet);
    take!(cluster.dns_domain);
    take!(cluster.cert_sans);
    take!(cluster.etcd);
    take!(cluster.etcd_server_sans);
    take!(cluster.etcd_peer_sans);
    take!(cluster.encryption_algorithm);
    take!(cluster.certificate_validity);
    take!(cluster.ca_certificate_validity);
    take!(keys.ca);
    take!(keys.front_proxy_ca);
    take!(keys.etcd_ca);
    take!(keys.sa);
    take!(signers);
    take!(cluster.signing_duration);
}

/// Resolves settings (plus the kubeadm YAML they name) into a [`ClusterSpec`].
pub fn resolve(s: &Settings) -> Result<ClusterSpec, ConfigError> {
    let k = match &s.kubeadm_config {
        Some(path) => kubeadm_yaml::read(path)?,
        None => KubeadmFacts::default(),
    };
    let c = &s.cluster;
    let cert_dir = s
        .cert_dir
        .clone()
        .or(k.certificates_dir.clone())
        .unwrap_or_else(|| PathBuf::from("/etc/kubernetes/pki"));
    let kubeconfig_dir = s
        .kubeconfig_dir
        .clone()
        .or_else(|| cert_dir.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/etc/kubernetes"));
    let node = node(c, &k)?;
    let network = network(c, &k)?;
    let cert_validity = period(
        c.certificate_validity.or(k.certificate_validity),
        8760,
        "certificateValidityPeriod",
    )?;
    let ca_validity = period(
        c.ca_certificate_validity.or(k.ca_certificate_validity),
        87600,
        "caCertificateValidityPeriod",
    )?;
    // Keys the settings leave unset: where `kpki init` recorded them for this PKI.
    let mut keys = s.keys.clone();
    crate::recorded::fill(&mut keys, crate::recorded::read(&cert_dir)?);
    let [ca, front_proxy_ca, etcd_ca, sa] = [
        (&keys.ca, "ca"),
        (&keys.front_proxy_ca, "front-proxy-ca"),
        (&keys.etcd_ca, "etcd/ca"),
        (&keys.sa, "sa"),
    ]
    .map(|(uri, base)| match uri {
        Some(uri) => uri.clone(),
        None => KeyUri::file(cert_dir.join(format!("{base}.key"))),
    });
    Ok(ClusterSpec {
        cert_dir,
        kubeconfig_dir,
        cluster_name: c
            .name
            .clone()
            .or(k.cluster_name.clone())
            .unwrap_or_else(|| "kubernetes".into()),
        node_name: node.name,
        advertise_address: node.advertise_address,
        bind_port: node.bind_port,
        control_plane_endpoint: network.control_plane_endpoint,
        service_vip: network.service_vip,
        dns_domain: network.dns_domain,
        cert_sans: network.cert_sans,
        etcd: etcd(c, &k)?,
        algorithm: c
            .encryption_algorithm
            .or(k.encryption_algorithm)
            .unwrap_or(KeyAlgorithm::Rsa2048),
        cert_validity,
        ca_validity,
        ca_keys: [
            (CaId::Ca, ca),
            (CaId::FrontProxyCa, front_proxy_ca),
            (CaId::EtcdCa, etcd_ca),
        ],
        sa_key: sa,
        signer_cas: signer_cas(s)?,
        signing_duration: period(c.signing_duration, 8760, "cluster.signing_duration")?,
    })
}

/// This node's name and API endpoint, validated.
struct Node {
    name: String,
    advertise_address: IpAddr,
    bind_port: u16,
}

fn node(c: &ClusterSettings, k: &KubeadmFacts) -> Result<Node, ConfigError> {
    let name = c
        .node_name
        .clone()
        .or(k.node_name.clone())
        .unwrap_or_else(default_node_name);
    if name.is_empty() || !is_dns_subdomain(&name) {
        return Err(ConfigError(format!(
            "invalid node name {name:?}: must be a DNS-1123 subdomain"
        )));
    }
    let advertise_address = match c.advertise_address.clone().or(k.advertise_address.clone()) {
        Some(text) => text.parse::<IpAddr>().map_err(|_| {
            ConfigError(format!(
                "invalid advertise address {text:?}: not an IP address"
            ))
        })?,
        None => default_advertise_address(),
    };
    if advertise_address.is_unspecified() {
        return Err(ConfigError(format!(
            "invalid advertise address {advertise_address}: must not be unspecified"
        )));
    }
    Ok(Node {
        name,
        advertise_address,
        bind_port: c.bind_port.or(k.bind_port).unwrap_or(6443),
    })
}

/// The cluster's network facts, validated.
struct Network {
    control_plane_endpoint: Option<Endpoint>,
    service_vip: IpAddr,
    dns_domain: String,
    cert_sans: Vec<String>,
}

fn network(c: &ClusterSettings, k: &KubeadmFacts) -> Result<Network, ConfigError> {
    let control_plane_endpoint = match c
        .control_plane_endpoint
        .clone()
        .or(k.control_plane_endpoint.clone())
    {
        Some(text) if !text.is_empty() => Some(parse_endpoint(&text)?),
        _ => None,
    };
    let subnet_text = c
        .service_subnet
        .clone()
        .or(k.service_subnet.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "10.96.0.0/12".into());
    let service_vip = service_vip(&subnet_text)?;
    let dns_domain = c
        .dns_domain
        .clone()
        .or(k.dns_domain.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cluster.local".into());
    if !is_dns_subdomain(&dns_domain) {
        return Err(ConfigError(format!(
            "networking.dnsDomain: invalid value {dns_domain:?}: must be a DNS-1123 subdomain"
        )));
    }
    let cert_sans = san_list(&c.cert_sans, &k.cert_sans, "apiServer.certSANs")?;
    Ok(Network {
        control_plane_endpoint,
        service_vip,
        dns_domain,
        cert_sans,
    })
}

/// A SAN list: the setting, else the kubeadm document's, else none; checked as kubeadm
/// checks `field`.
fn san_list(
    setting: &Option<Vec<String>>,
    kubeadm: &Option<Vec<String>>,
    field: &str,
) -> Result<Vec<String>, ConfigError> {
    let sans = setting
        .clone()
        .or_else(|| kubeadm.clone())
        .unwrap_or_default();
    check_cert_sans(&sans, field)?;
    Ok(sans)
}

/// A validity period: `value`, or `default_hours`; zero is refused.
fn period(
    value: Option<GoDuration>,
    default_hours: u64,
    what: &str,
) -> Result<Duration, ConfigError> {
    let d = value.map_or(Duration::from_secs(default_hours * 3600), GoDuration::get);
    if d.is_zero() {
        return Err(ConfigError(format!("{what}: must be positive")));
    }
    Ok(d)
}

fn etcd(c: &ClusterSettings, k: &KubeadmFacts) -> Result<Etcd, ConfigError> {
    if c.etcd.or(k.etcd) == Some(EtcdMode::External) {
        return Ok(Etcd::External);
    }
    let server_sans = san_list(
        &c.etcd_server_sans,
        &k.etcd_server_sans,
        "etcd.local.serverCertSANs",
    )?;
    let peer_sans = san_list(
        &c.etcd_peer_sans,
        &k.etcd_peer_sans,
        "etcd.local.peerCertSANs",
    )?;
    Ok(Etcd::Local {
        server_sans,
        peer_sans,
    })
}

/// Which CA signs each CSR signerName: the `kubernetes.io` signers by the cluster CA, then
/// `[signers]`.
fn signer_cas(s: &Settings) -> Result<std::collections::BTreeMap<String, CaId>, ConfigError> {
    let mut signer_cas: std::collections::BTreeMap<String, CaId> = [
        "kubernetes.io/kube-apiserver-client",
        "kubernetes.io/kube-apiserver-client-kubelet",
        "kubernetes.io/kubelet-serving",
    ]
    .into_iter()
    .map(|n| (n.to_string(), CaId::Ca))
    .collect();
    for (name, ca) in s.signers.iter().flatten() {
        let id = match ca.as_str() {
            "ca" => CaId::Ca,
            "front-proxy-ca" => CaId::FrontProxyCa,
            "etcd-ca" => CaId::EtcdCa,
            other => {
                return Err(ConfigError(format!(
                    "signers.{name:?} = {other:?}: expected ca, front-proxy-ca or etcd-ca"
                )));
            }
        };
        signer_cas.insert(name.clone(), id);
    }
    Ok(signer_cas)
}

/// True for an RFC 1123 subdomain (lower-case labels of `[a-z0-9-]`, dot-separated).
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Parses `host[:port]` (IPv6 in brackets) of `controlPlaneEndpoint`.
pub(crate) fn parse_endpoint(text: &str) -> Result<Endpoint, ConfigError> {
    let bad = |why: &str| ConfigError(format!("unparsable controlPlaneEndpoint {text:?}: {why}"));
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected :port after ']'"))?,
            ),
        };
        (h, port)
    } else if text.matches(':').count() > 1 {
        (text, None)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port is not a number in 1-65535"))
        })
        .transpose()?;
    let host = if let Ok(ip) = host.parse::<IpAddr>() {
        Host::Ip(ip)
    } else if is_dns_subdomain(host) {
        Host::Dns(host.to_string())
    } else {
        return Err(bad("host is neither an IP address nor a DNS name"));
    };
    Ok(Endpoint { host, port })
}

/// Parses a CIDR as Go's `ParseCIDRSloppy` does (IPv4 octets may carry leading zeros); the
/// address is masked to the network.
fn parse_cidr_sloppy(text: &str) -> Option<ipnet::IpNet> {
    let (ip, prefix) = text.split_once('/')?;
    let ip = parse_ip_sloppy(ip)?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return None;
    }
    let net = ipnet::IpNet::new(ip, prefix.parse().ok()?).ok()?;
    Some(net.trunc())
}

/// Parses an IP address as Go's `ParseIPSloppy` does: like [`IpAddr`]'s parser, and IPv4
/// octets may carry leading zeros (read as decimal).
pub(crate) fn parse_ip_sloppy(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = text.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    Some(IpAddr::from(octets))
}

/// kubeadm's `ValidateIPNetFromString`: one CIDR, or two of different families (dual-stack),
/// each holding at least `min` addresses; the networks in order.
pub(crate) fn check_subnets(
    text: &str,
    min: u128,
    field: &str,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let invalid =
        |value: &str, why: &str| ConfigError(format!("{field}: invalid value {value:?}: {why}"));
    let nets = text
        .split(',')
        .map(|part| parse_cidr_sloppy(part).ok_or_else(|| invalid(text, "couldn't parse subnet")))
        .collect::<Result<Vec<_>, _>>()?;
    let two_families = matches!(
        nets.as_slice(),
        [ipnet::IpNet::V4(_), ipnet::IpNet::V6(_)] | [ipnet::IpNet::V6(_), ipnet::IpNet::V4(_)]
    );
    if nets.len() > 2 || (nets.len() == 2 && !two_families) {
        return Err(invalid(
            text,
            "expected one (IPv4 or IPv6) CIDR or two CIDRs from each family for dual-stack networking",
        ));
    }
    for net in &nets {
        let bits = u32::from(net.max_prefix_len());
        let host = bits - u32::from(net.prefix_len());
        // apimachinery's RangeSize: /31, /32, /127 and /128 hold no usable range.
        let size: u128 = if host <= 1 {
            0
        } else if host >= 127 {
            u128::MAX
        } else {
            1u128 << host
        };
        if size < min {
            return Err(invalid(
                &net.to_string(),
                &format!("subnet with {size} address(es) is too small, the minimum is {min}"),
            ));
        }
    }
    Ok(nets)
}

/// kubeadm's service subnet rules (`ValidateIPNetFromString` with at least 10 addresses, and
/// `ValidateServiceSubnetSize`: at most 20 host bits); the API server VIP is index 1 of the
/// first subnet.
pub(crate) fn service_vip(subnets: &str) -> Result<IpAddr, ConfigError> {
    let field = "networking.serviceSubnet";
    let nets = check_subnets(subnets, 10, field)?;
    for net in &nets {
        let bits = net.max_prefix_len();
        if bits - net.prefix_len() > 20 {
            return Err(ConfigError(format!(
                "{field}: invalid value \"{net}\": specified service subnet is too large; for {bits}-bit addresses, the mask must be >= {}",
                bits - 20
            )));
        }
    }
    let first = nets
        .first()
        .ok_or_else(|| ConfigError(format!("{field}: empty")))?;
    Ok(match first.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
    })
}

/// kubeadm's `ValidateCertSANs`: each entry an IP address, a DNS-1123 subdomain or a wildcard
/// subdomain (`*.example.com`).
pub(crate) fn check_cert_sans(sans: &[String], field: &str) -> Result<(), ConfigError> {
    for san in sans {
        let ok = parse_ip_sloppy(san).is_some()
            || is_dns_subdomain(san)
            || san.strip_prefix("*.").is_some_and(is_dns_subdomain);
        if !ok {
            return Err(ConfigError(format!(
                "{field}: invalid value {san:?}: not an IP address, a DNS-1123 subdomain (lower case) or a wildcard subdomain such as *.example.com"
            )));
        }
    }
    Ok(())
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// The address of the interface holding the default route, as kubeadm picks it; found by
/// asking the kernel which source address it would use (a UDP `connect` sends nothing).
fn default_advertise_address() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("k8s.example.com:6443").unwrap().port,
            Some(6443)
        );
        assert_eq!(
            parse_endpoint("10.0.0.1").unwrap().host,
            Host::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_endpoint("[fd00::1]:443").unwrap().host,
            Host::Ip("fd00::1".parse().unwrap())
        );
        for bad in ["k8s:abc", "bad_host!:6443", "[fd00::1", "host:0", ""] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_subnets_follow_kubeadm() {
        let ok: &[(&str, &str)] = &[
            ("10.96.0.0/12", "10.96.0.1"),
            ("10.96.0.5/12", "10.96.0.1"),
            ("010.096.0.0/16", "10.96.0.1"),
            ("10.96.0.0/28", "10.96.0.1"),
            ("fd00::/108", "fd00::1"),
            ("fd00::/124", "fd00::1"),
            ("10.96.0.0/16,fd00::/108", "10.96.0.1"),
            ("fd00::/112,10.96.0.0/16", "fd00::1"),
        ];
        for (text, vip) in ok {
            assert_eq!(
                service_vip(text).map_err(|e| e.0),
                Ok(vip.parse::<IpAddr>().unwrap()),
                "{text}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("10.0.0.0/8", "the mask must be >= 12"),
            ("fd00::/64", "the mask must be >= 108"),
            (
                "10.96.0.0/29",
                "subnet with 8 address(es) is too small, the minimum is 10",
            ),
            ("10.96.0.0/32", "subnet with 0 address(es)"),
            ("fd00::/125", "too small"),
            ("10.96.0.0/16,10.97.0.0/16", "two CIDRs from each family"),
            (
                "10.96.0.0/16,fd00::/108,fd01::/108",
                "two CIDRs from each family",
            ),
            ("10.96.0.0/16, fd00::/108", "couldn't parse subnet"),
            ("10.96.0.0", "couldn't parse subnet"),
            ("10.96.0.0/33", "couldn't parse subnet"),
            ("", "couldn't parse subnet"),
        ];
        for (text, want) in bad {
            let e = service_vip(text).map(|_| ()).map_err(|e| e.0);
            assert!(e.as_ref().is_err_and(|e| e.contains(want)), "{text}: {e:?}");
        }
    }

    #[test]
    fn cert_sans_follow_kubeadm() {
        let ok = [
            "api.example.com",
            "*.example.com",
            "10.0.0.1",
            "010.0.0.1",
            "fd00::1",
            "localhost",
            "a-b.c",
        ];
        for san in ok {
            assert!(check_cert_sans(&[san.into()], "f").is_ok(), "{san}");
        }
        let bad = [
            "API.example.com",
            "bad_name",
            "*.*.example.com",
            "a.*.example.com",
            "-a.example.com",
            "a..b",
            "",
            "*",
            "10.0.0.1/24",
            "http://api.example.com",
        ];
        for san in bad {
            let e = check_cert_sans(&[san.into()], "apiServer.certSANs").map_err(|e| e.0);
            assert!(
                e.as_ref()
                    .is_err_and(|e| e.contains("apiServer.certSANs: invalid value")),
                "{san}: {e:?}"
            );
        }
    }

    #[test]
    fn defaults_follow_kubeadm() {
        let s = Settings {
            cluster: ClusterSettings {
                node_name: Some("cp1".into()),
                advertise_address: Some("10.0.0.10".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let spec = resolve(&s).unwrap();
        assert_eq!(spec.service_vip, "10.96.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(spec.algorithm, KeyAlgorithm::Rsa2048);
        assert_eq!(spec.cert_validity, Duration::from_secs(8760 * 3600));
        assert_eq!(spec.ca_validity, Duration::from_secs(87600 * 3600));
        assert_eq!(
            spec.ca_key(CaId::EtcdCa),
            &KeyUri::file("/etc/kubernetes/pki/etcd/ca.key")
        );
        assert_eq!(spec.kubeconfig_dir, PathBuf::from("/etc/kubernetes"));
        assert_eq!(spec.control_plane_url(), "https://10.0.0.10:6443");
        assert!(spec.local_etcd());
    }

    /// One row: lines of `[cluster]` and of `[keys]` in a kpki.toml, then what the node
    /// resolves to (algorithm, etcd, leaf validity in hours, signing duration in hours, the
    /// cluster CA's key) or a fragment of the error.
    #[rustfmt::skip]
    const TYPED: &[(&str, &str, Result<&str, &str>)] = &[
        ("", "", Ok("RSA-2048 local 8760h 8760h file:/pki/ca.key")),
        ("encryption_algorithm = \"ECDSA-P384\"", "", Ok("ECDSA-P384 local 8760h 8760h file:/pki/ca.key")),
        ("encryption_algorithm = \"\"", "", Ok("RSA-2048 local 8760h 8760h file:/pki/ca.key")),
        ("encryption_algorithm = \"DSA-1024\"", "", Err("unknown encryptionAlgorithm \"DSA-1024\": expected RSA-2048")),
        ("encryption_algorithm = \"ecdsa-p256\"", "", Err("unknown encryptionAlgorithm \"ecdsa-p256\"")),
        ("etcd = \"external\"", "", Ok("RSA-2048 external 8760h 8760h file:/pki/ca.key")),
        ("etcd = \"local\"", "", Ok("RSA-2048 local 8760h 8760h file:/pki/ca.key")),
        ("etcd = \"remote\"", "", Err("etcd \"remote\": expected \"local\" or \"external\" for key `cluster.etcd`")),
        ("certificate_validity = \"30d\"", "", Ok("RSA-2048 local 720h 8760h file:/pki/ca.key")),
        ("certificate_validity = \"2160.5h\"", "", Ok("RSA-2048 local 2160h 8760h file:/pki/ca.key")),
        ("certificate_validity = \"1y\"", "", Err("invalid duration \"1y\": unknown unit")),
        ("certificate_validity = \"0s\"", "", Err("certificateValidityPeriod: must be positive")),
        ("certificate_validity = \"-1h\"", "", Err("invalid duration \"-1h\": negative")),
        ("signing_duration = \"1d12h\"", "", Ok("RSA-2048 local 8760h 36h file:/pki/ca.key")),
        ("signing_duration = \"0\"", "", Err("cluster.signing_duration: must be positive")),
        ("", "ca = \"pkcs11:token=k8s;object=ca\"", Ok("RSA-2048 local 8760h 8760h pkcs11:token=k8s;object=ca")),
        ("", "ca = \"file:/hsm/ca.key\"", Ok("RSA-2048 local 8760h 8760h file:/hsm/ca.key")),
        ("", "ca = \"bogus:x\"", Err("invalid key URI \"bogus:x\"")),
        ("", "ca = \"pkcs11:object=ca\"", Err("no token, serial or slot-id attribute")),
        ("", "front-proxy-ca = \"file:/x.key\"", Ok("RSA-2048 local 8760h 8760h file:/pki/ca.key")),
        ("", "etcd_ca = \"file:\"", Err("for key `keys.etcd_ca`")),
    ];

    #[test]
    fn settings_are_read_into_their_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("kpki.toml");
        for (cluster, keys, want) in TYPED {
            let text = format!(
                "cert_dir = \"/pki\"\n[cluster]\nnode_name = \"cp1\"\nadvertise_address = \"10.0.0.10\"\n{cluster}\n[keys]\n{keys}\n"
            );
            std::fs::write(&file, &text).expect("write");
            let got = read_settings(Some(&file), &Settings::default())
                .and_then(|s| resolve(&s))
                .map(|spec| {
                    format!(
                        "{} {} {}h {}h {}",
                        spec.algorithm,
                        if spec.local_etcd() {
                            "local"
                        } else {
                            "external"
                        },
                        spec.cert_validity.as_secs() / 3600,
                        spec.signing_duration.as_secs() / 3600,
                        spec.ca_key(CaId::Ca)
                    )
                });
            match (want, got) {
                (Ok(want), Ok(got)) => assert_eq!(got, *want, "{text}"),
                (Err(fragment), Err(e)) => assert!(e.0.contains(fragment), "{text}: {}", e.0),
                (want, got) => panic!("{text}: want {want:?}, got {got:?}"),
            }
        }
    }
}
