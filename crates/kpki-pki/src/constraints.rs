//! X.509 name constraints of a CA and of the issuers above it, evaluated as Go's
//! `crypto/x509` evaluates them when kube-apiserver, kubectl or etcd verify a chain: a SAN of
//! a kind the constraints name must lie in one of the permitted subtrees of that kind (when
//! there are any) and in none of the excluded ones. DNS names match a constraint equal to
//! them or one of their parent domains (a leading `.` asks for a proper subdomain), case
//! insensitively; IP addresses match a constraint's network. kpki's leaves carry DNS and IP
//! SANs only; a request with email or URI SANs under a CA that constrains those kinds is
//! refused rather than judged.

use std::net::IpAddr;

use x509_parser::prelude::{GeneralName, X509Certificate};

/// A SAN value to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum San {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
    /// An email address.
    Email(String),
    /// A URI.
    Uri(String),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS name {d}"),
            San::Ip(ip) => write!(f, "IP address {ip}"),
            San::Email(e) => write!(f, "email address {e}"),
            San::Uri(u) => write!(f, "URI {u}"),
        }
    }
}

/// An IP subtree: network address and mask, both 4 or both 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Net {
    addr: Vec<u8>,
    mask: Vec<u8>,
}

impl Net {
    fn contains(&self, ip: &IpAddr) -> bool {
        let bytes = match ip {
            IpAddr::V4(v) => v.octets().to_vec(),
            IpAddr::V6(v) => v.octets().to_vec(),
        };
        bytes.len() == self.addr.len()
            && bytes
                .iter()
                .zip(&self.addr)
                .zip(&self.mask)
                .all(|((b, a), m)| b & m == a & m)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = crate::certfile::ip_of(&self.addr);
        let bits: u32 = self.mask.iter().map(|b| b.count_ones()).sum();
        match ip {
            Some(ip) => write!(f, "{ip}/{bits}"),
            None => write!(f, "(malformed)"),
        }
    }
}

/// One side (permitted or excluded) of a CA's constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Subtrees {
    dns: Vec<String>,
    ips: Vec<Net>,
    /// Email, URI or other kinds are named.
    other: bool,
}

impl Subtrees {
    fn read(trees: Option<&Vec<x509_parser::extensions::GeneralSubtree<'_>>>) -> Subtrees {
        let mut out = Subtrees::default();
        for tree in trees.into_iter().flatten() {
            match &tree.base {
                GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                GeneralName::IPAddress(b) if b.len() == 8 || b.len() == 32 => {
                    let (addr, mask) = b.split_at(b.len() / 2);
                    out.ips.push(Net {
                        addr: addr.to_vec(),
                        mask: mask.to_vec(),
                    });
                }
                // Directory names constrain the subject, which Go does not check; any other
                // kind constrains SANs kpki does not issue for the cluster.
                GeneralName::DirectoryName(_) => {}
                _ => out.other = true,
            }
        }
        out
    }
}

/// The name constraints of one CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameRules {
    /// The CA's subject, for messages.
    ca: String,
    permitted: Subtrees,
    excluded: Subtrees,
}

impl NameRules {
    /// The constraints of `cert`; `Ok(None)` when it has none; refused when the extension
    /// does not parse.
    pub(crate) fn of(cert: &X509Certificate<'_>) -> Result<Option<NameRules>, String> {
        let ext = cert
            .name_constraints()
            .map_err(|e| format!("CA {}: name constraints do not parse ({e})", cert.subject()))?;
        Ok(ext.map(|nc| NameRules {
            ca: cert.subject().to_string(),
            permitted: Subtrees::read(nc.value.permitted_subtrees.as_ref()),
            excluded: Subtrees::read(nc.value.excluded_subtrees.as_ref()),
        }))
    }

    /// Refuses `san` when these constraints exclude it (one line naming the value and CA).
    pub(crate) fn check(&self, san: &San) -> Result<(), String> {
        let outside = |why: String| {
            format!(
                "{san} is outside the name constraints of CA {}: {why}",
                self.ca
            )
        };
        match san {
            San::Dns(d) => {
                if let Some(c) = self.excluded.dns.iter().find(|c| dns_matches(d, c)) {
                    return Err(outside(format!("excluded by {c:?}")));
                }
                if !self.permitted.dns.is_empty()
                    && !self.permitted.dns.iter().any(|c| dns_matches(d, c))
                {
                    return Err(outside(format!(
                        "permitted DNS subtrees are {}",
                        self.permitted.dns.join(", ")
                    )));
                }
            }
            San::Ip(ip) => {
                if let Some(n) = self.excluded.ips.iter().find(|n| n.contains(ip)) {
                    return Err(outside(format!("excluded by {n}")));
                }
                if !self.permitted.ips.is_empty()
                    && !self.permitted.ips.iter().any(|n| n.contains(ip))
                {
                    let nets: Vec<String> =
                        self.permitted.ips.iter().map(|n| n.to_string()).collect();
                    return Err(outside(format!(
                        "permitted IP subtrees are {}",
                        nets.join(", ")
                    )));
                }
            }
            San::Email(_) | San::Uri(_) => {
                if self.permitted.other || self.excluded.other {
                    return Err(outside(
                        "kpki does not evaluate email or URI name constraints".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Go's `matchDomainConstraint`: an empty constraint matches everything; `example.com`
/// matches itself and its subdomains; `.example.com` only proper subdomains.
fn dns_matches(domain: &str, constraint: &str) -> bool {
    if constraint.is_empty() {
        return true;
    }
    let (must_sub, constraint) = match constraint.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, constraint),
    };
    let d: Vec<&str> = domain.trim_end_matches('.').rsplit('.').collect();
    let c: Vec<&str> = constraint.rsplit('.').collect();
    if d.len() < c.len() || (must_sub && d.len() == c.len()) {
        return false;
    }
    c.iter().zip(&d).all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// The SANs of `cert` as [`San`] values.
pub(crate) fn sans_of(cert: &X509Certificate<'_>) -> Vec<San> {
    let mut out = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => out.push(San::Dns(d.to_string())),
                GeneralName::IPAddress(b) => out.extend(crate::certfile::ip_of(b).map(San::Ip)),
                GeneralName::RFC822Name(e) => out.push(San::Email(e.to_string())),
                GeneralName::URI(u) => out.push(San::Uri(u.to_string())),
                _ => {}
            }
        }
    }
    out
}

/// The SANs rcgen is about to write.
pub(crate) fn sans_of_params(p: &rcgen::CertificateParams) -> Vec<San> {
    p.subject_alt_names
        .iter()
        .filter_map(|s| match s {
            rcgen::SanType::DnsName(d) => Some(San::Dns(d.as_str().to_string())),
            rcgen::SanType::IpAddress(ip) => Some(San::Ip(*ip)),
            rcgen::SanType::Rfc822Name(e) => Some(San::Email(e.as_str().to_string())),
            rcgen::SanType::URI(u) => Some(San::Uri(u.as_str().to_string())),
            _ => None,
        })
        .collect()
}

/// kpki's DNS and IP SANs as [`San`] values.
pub(crate) fn of_alt_names(sans: &crate::sans::AltNames) -> Vec<San> {
    sans.dns
        .iter()
        .map(|d| San::Dns(d.clone()))
        .chain(sans.ips.iter().map(|ip| San::Ip(*ip)))
        .collect()
}

/// Refuses the first of `sans` some rule of `rules` excludes.
pub(crate) fn check_all(rules: &[NameRules], sans: &[San]) -> Result<(), String> {
    for san in sans {
        for r in rules {
            r.check(san)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_constraints_match_as_go_matches_them() {
        // (domain, constraint, matches)
        let table = [
            ("kubernetes.example.com", "example.com", true),
            ("example.com", "example.com", true),
            ("EXAMPLE.com", "example.COM", true),
            ("example.com", ".example.com", false),
            ("a.example.com", ".example.com", true),
            ("badexample.com", "example.com", false),
            ("kubernetes", "example.com", false),
            ("kubernetes", "", true),
            (
                "kubernetes.default.svc.cluster.local",
                "cluster.local",
                true,
            ),
            ("com", "example.com", false),
        ];
        for (d, c, want) in table {
            assert_eq!(dns_matches(d, c), want, "{d} under {c:?}");
        }
    }

    fn net(addr: [u8; 4], mask: [u8; 4]) -> Net {
        Net {
            addr: addr.to_vec(),
            mask: mask.to_vec(),
        }
    }

    #[test]
    fn rules_permit_and_exclude() {
        let rules = NameRules {
            ca: "CN=int".into(),
            permitted: Subtrees {
                dns: vec!["example.com".into(), "kubernetes".into()],
                ips: vec![net([10, 0, 0, 0], [255, 0, 0, 0])],
                other: false,
            },
            excluded: Subtrees {
                dns: vec!["bad.example.com".into()],
                ips: vec![net([10, 9, 0, 0], [255, 255, 0, 0])],
                other: false,
            },
        };
        // (SAN, Ok or a fragment of the refusal)
        let table: Vec<(San, Result<(), &str>)> = vec![
            (San::Dns("api.example.com".into()), Ok(())),
            (San::Dns("kubernetes".into()), Ok(())),
            (
                San::Dns("kubernetes.default".into()),
                Err("permitted DNS subtrees are example.com, kubernetes"),
            ),
            (
                San::Dns("x.bad.example.com".into()),
                Err("excluded by \"bad.example.com\""),
            ),
            (San::Ip("10.1.2.3".parse().unwrap()), Ok(())),
            (
                San::Ip("10.9.0.1".parse().unwrap()),
                Err("excluded by 10.9.0.0/16"),
            ),
            (
                San::Ip("192.168.0.1".parse().unwrap()),
                Err("permitted IP subtrees are 10.0.0.0/8"),
            ),
            (
                San::Ip("::1".parse().unwrap()),
                Err("permitted IP subtrees"),
            ),
            (San::Email("a@example.com".into()), Ok(())),
        ];
        for (san, want) in table {
            match (rules.check(&san), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => {
                    assert!(e.contains(w), "{san}: {e}");
                    assert!(
                        e.contains("outside the name constraints of CA CN=int"),
                        "{e}"
                    );
                }
                (got, want) => panic!("{san}: got {got:?}, want {want:?}"),
            }
        }
        let mut with_other = rules.clone();
        with_other.permitted.other = true;
        assert!(with_other.check(&San::Uri("spiffe://x".into())).is_err());
    }
}
