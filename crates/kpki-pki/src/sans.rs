//! Subject alternative names per kubeadm's rules (reference §1.3): DNS names de-duplicated
//! and sorted, IP addresses de-duplicated in first-seen order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::catalogue::SanRule;
use crate::config::{ClusterSpec, Etcd, Host, is_dns_subdomain, parse_ip_sloppy};

/// The SANs of one certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AltNames {
    /// DNS names, sorted.
    pub dns: Vec<String>,
    /// IP addresses, in kubeadm's order.
    pub ips: Vec<IpAddr>,
}

impl AltNames {
    fn new(dns: Vec<String>, ips: Vec<IpAddr>, extra: &[String]) -> AltNames {
        let mut out = AltNames { dns, ips };
        for entry in extra {
            if let Some(ip) = parse_ip_sloppy(entry) {
                out.ips.push(ip);
            } else if is_dns_subdomain(entry)
                || entry.strip_prefix("*.").is_some_and(is_dns_subdomain)
            {
                out.dns.push(entry.clone());
            } else {
                tracing::warn!(san = %entry, "ignoring SAN that is neither an IP address nor a DNS name");
            }
        }
        out.dns.sort();
        out.dns.dedup();
        let mut seen = Vec::new();
        out.ips.retain(|ip| {
            let fresh = !seen.contains(ip);
            seen.push(*ip);
            fresh
        });
        out
    }
}

/// The SANs `rule` gives on the node described by `spec`.
pub(crate) fn alt_names(spec: &ClusterSpec, rule: SanRule) -> AltNames {
    match rule {
        SanRule::None => AltNames::default(),
        SanRule::ApiServer => {
            let mut dns = vec![
                spec.node_name.clone(),
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                format!("kubernetes.default.svc.{}", spec.dns_domain),
            ];
            let mut ips = vec![spec.service_vip, spec.advertise_address];
            match spec.control_plane_endpoint.as_ref().map(|e| &e.host) {
                Some(Host::Dns(name)) => dns.push(name.clone()),
                Some(Host::Ip(ip)) => ips.push(*ip),
                None => {}
            }
            AltNames::new(dns, ips, &spec.cert_sans)
        }
        SanRule::EtcdServer | SanRule::EtcdPeer => {
            let extra = match (&spec.etcd, rule) {
                (Etcd::Local { server_sans, .. }, SanRule::EtcdServer) => server_sans.clone(),
                (Etcd::Local { peer_sans, .. }, _) => peer_sans.clone(),
                (Etcd::External, _) => Vec::new(),
            };
            AltNames::new(
                vec![spec.node_name.clone(), "localhost".into()],
                vec![
                    spec.advertise_address,
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ],
                &extra,
            )
        }
    }
}
