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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterSettings, EtcdMode, Settings, resolve};

    /// A node: name, advertise address, control-plane endpoint, service subnet, DNS domain,
    /// `apiServer.certSANs`, etcd `serverCertSANs`, `peerCertSANs`, external etcd.
    type Node = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
        bool,
    );

    const PLAIN: Node = ("cp1", "10.0.0.10", None, None, None, &[], &[], &[], false);
    const K8S: [&str; 4] = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];

    fn spec(n: &Node) -> ClusterSpec {
        let list = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
        let settings = Settings {
            cluster: ClusterSettings {
                node_name: Some(n.0.into()),
                advertise_address: Some(n.1.into()),
                control_plane_endpoint: n.2.map(str::to_string),
                service_subnet: n.3.map(str::to_string),
                dns_domain: n.4.map(str::to_string),
                cert_sans: list(n.5),
                etcd_server_sans: list(n.6),
                etcd_peer_sans: list(n.7),
                etcd: n.8.then_some(EtcdMode::External),
                ..Default::default()
            },
            ..Default::default()
        };
        resolve(&settings).expect("the table's node resolves")
    }

    /// One row: the node, the rule, then the DNS names (sorted) and IPs (in order) it gives.
    type Row = (
        Node,
        SanRule,
        &'static [&'static str],
        &'static [&'static str],
    );

    #[rustfmt::skip]
    const ROWS: &[Row] = &[
        (PLAIN, SanRule::None, &[], &[]),
        (PLAIN, SanRule::ApiServer, &["cp1", K8S[0], K8S[1], K8S[2], K8S[3]], &["10.96.0.1", "10.0.0.10"]),
        // The endpoint's host: a name joins the DNS names, an address the IPs (port ignored).
        (("cp1", "10.0.0.10", Some("k8s.example.com:6443"), None, None, &[], &[], &[], false), SanRule::ApiServer,
            &["cp1", "k8s.example.com", K8S[0], K8S[1], K8S[2], K8S[3]], &["10.96.0.1", "10.0.0.10"]),
        (("cp1", "10.0.0.10", Some("192.168.0.5"), None, None, &[], &[], &[], false), SanRule::ApiServer,
            &["cp1", K8S[0], K8S[1], K8S[2], K8S[3]], &["10.96.0.1", "10.0.0.10", "192.168.0.5"]),
        (("cp1", "10.0.0.10", Some("[fd00::5]:443"), None, None, &[], &[], &[], false), SanRule::ApiServer,
            &["cp1", K8S[0], K8S[1], K8S[2], K8S[3]], &["10.96.0.1", "10.0.0.10", "fd00::5"]),
        // An endpoint equal to the advertise address is listed once.
        (("cp1", "10.0.0.10", Some("10.0.0.10:6443"), None, None, &[], &[], &[], false), SanRule::ApiServer,
            &["cp1", K8S[0], K8S[1], K8S[2], K8S[3]], &["10.96.0.1", "10.0.0.10"]),
        // The service VIP is the first address of the (first) service subnet.
        (("cp1", "10.0.0.10", None, Some("10.100.0.0/16"), None, &[], &[], &[], false), SanRule::ApiServer,
            &["cp1", K8S[0], K8S[1], K8S[2], K8S[3]], &["10.100.0.1", "10.0.0.10"]),
        (("cp1", "10.0.0.10", None, Some("fd00:10:96::/112,10.96.0.0/12"), None, &[], &[], &[], false), SanRule::ApiServer,
            &["cp1", K8S[0], K8S[1], K8S[2], K8S[3]], &["fd00:10:96::1", "10.0.0.10"]),
        // The DNS domain ends the service's full name.
        (("cp1", "10.0.0.10", None, None, Some("corp.local"), &[], &[], &[], false), SanRule::ApiServer,
            &["cp1", K8S[0], K8S[1], K8S[2], "kubernetes.default.svc.corp.local"], &["10.96.0.1", "10.0.0.10"]),
        // certSANs: names sorted in, wildcards kept, addresses appended in order (sloppy
        // IPv4 read as decimal), duplicates dropped, anything else left out.
        (("cp1", "10.0.0.10", None, None, None, &["api.example.com", "*.apps.example.com", "192.168.1.1", "010.0.0.7", "10.0.0.10", "cp1", "kubernetes"], &[], &[], false), SanRule::ApiServer,
            &["*.apps.example.com", "api.example.com", "cp1", K8S[0], K8S[1], K8S[2], K8S[3]], &["10.96.0.1", "10.0.0.10", "192.168.1.1", "10.0.0.7"]),
        (("cp1", "10.0.0.10", None, None, None, &["fd00::1", "::1"], &[], &[], false), SanRule::ApiServer,
            &["cp1", K8S[0], K8S[1], K8S[2], K8S[3]], &["10.96.0.1", "10.0.0.10", "fd00::1", "::1"]),
        (("node-a.example.com", "fd00::10", None, None, None, &[], &[], &[], false), SanRule::ApiServer,
            &[K8S[0], K8S[1], K8S[2], K8S[3], "node-a.example.com"], &["10.96.0.1", "fd00::10"]),
        // etcd: node name and localhost, advertise address and both loopbacks, plus its list.
        (PLAIN, SanRule::EtcdServer, &["cp1", "localhost"], &["10.0.0.10", "127.0.0.1", "::1"]),
        (PLAIN, SanRule::EtcdPeer, &["cp1", "localhost"], &["10.0.0.10", "127.0.0.1", "::1"]),
        (("cp1", "10.0.0.10", None, None, None, &["api.example.com"], &["etcd.example.com", "10.1.1.1", "127.0.0.1"], &["peer.example.com"], false), SanRule::EtcdServer,
            &["cp1", "etcd.example.com", "localhost"], &["10.0.0.10", "127.0.0.1", "::1", "10.1.1.1"]),
        (("cp1", "10.0.0.10", None, None, None, &["api.example.com"], &["etcd.example.com"], &["peer.example.com", "10.2.2.2"], false), SanRule::EtcdPeer,
            &["cp1", "localhost", "peer.example.com"], &["10.0.0.10", "127.0.0.1", "::1", "10.2.2.2"]),
        // The API server's certSANs are not etcd's.
        (("cp1", "10.0.0.10", None, None, None, &["api.example.com"], &[], &[], false), SanRule::EtcdServer,
            &["cp1", "localhost"], &["10.0.0.10", "127.0.0.1", "::1"]),
        // With external etcd the extra lists are not read (no etcd certificates are made).
        (("cp1", "10.0.0.10", None, None, None, &[], &[], &[], true), SanRule::EtcdServer,
            &["cp1", "localhost"], &["10.0.0.10", "127.0.0.1", "::1"]),
        (("cp1", "fd00::10", None, None, None, &[], &[], &[], false), SanRule::EtcdPeer,
            &["cp1", "localhost"], &["fd00::10", "127.0.0.1", "::1"]),
    ];

    #[test]
    fn alt_names_table() {
        for (i, (node, rule, dns, ips)) in ROWS.iter().enumerate() {
            let got = alt_names(&spec(node), *rule);
            let want = AltNames {
                dns: dns.iter().map(|s| s.to_string()).collect(),
                ips: ips
                    .iter()
                    .map(|s| s.parse().expect("an IP in the table"))
                    .collect(),
            };
            assert_eq!(got, want, "row {i}: {node:?} {rule:?}");
        }
    }
}
