//! Issuance policy: which caller (client certificate CN and O values) may ask which signer
//! for what subject, SANs, key and validity. Default deny; `O=system:masters` only where a
//! rule lists it; a `system:node:<name>` caller only for its own node name, and a node's
//! identity only to that node unless a rule names its callers' CN.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use kpki_pki::csr::Examined;
use kpki_pki::signers::{NODE_USER_PREFIX, NODES_GROUP, SYSTEM_MASTERS};
use regex::Regex;

use crate::config::{ConfigError, RuleConfig};
use crate::error_code::ErrorCode;

/// Who is calling: the client certificate's CN and O values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    /// CN (the user).
    pub cn: String,
    /// O values (the groups).
    pub orgs: Vec<String>,
}

/// Why a request was denied: a stable code and one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// [`ErrorCode::PolicyDenied`], [`ErrorCode::NodeMismatch`], [`ErrorCode::SystemMasters`],
    /// [`ErrorCode::OrgNotAllowed`], [`ErrorCode::CnNotAllowed`], [`ErrorCode::SanNotAllowed`],
    /// [`ErrorCode::KeyNotAllowed`] or [`ErrorCode::ValidityTooLong`].
    pub code: ErrorCode,
    /// What was denied and why.
    pub reason: String,
    /// The rule that matched the caller and refused the request (none when no rule matched).
    pub rule: Option<String>,
}

/// What an allowing rule grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The rule's name.
    pub rule: String,
    /// The longest validity it grants.
    pub max_validity: Duration,
}

const KEY_TYPES: &[&str] = &[
    "RSA",
    "RSA-2048",
    "RSA-3072",
    "RSA-4096",
    "ECDSA-P256",
    "ECDSA-P384",
    "Ed25519",
];

/// One rule, compiled.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    caller_cn: Option<Regex>,
    caller_orgs: Vec<String>,
    signers: Vec<String>,
    cn: Option<Regex>,
    orgs: Vec<String>,
    dns_suffixes: Vec<String>,
    ip_ranges: Vec<IpNet>,
    uri_prefixes: Vec<String>,
    max_validity: Duration,
    key_types: Vec<String>,
}

/// The compiled rule list.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

fn anchored(what: &str, pattern: &str) -> Result<Regex, ConfigError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| ConfigError(format!("{what}: invalid pattern {pattern:?}: {e}")))
}

impl Policy {
    /// Compiles the configured rules; any invalid pattern, CIDR, duration or key type is an
    /// error naming the rule.
    pub fn compile(rules: &[RuleConfig]) -> Result<Policy, ConfigError> {
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            let what = format!("policy rule {:?}", r.name);
            if r.callers.cn.is_none() && r.callers.orgs.is_empty() {
                return Err(ConfigError(format!(
                    "{what}: callers needs a cn pattern or orgs (a rule for everyone is not allowed)"
                )));
            }
            if r.signers.is_empty() {
                return Err(ConfigError(format!("{what}: signers is empty")));
            }
            let ip_ranges = r
                .ip_ranges
                .iter()
                .map(|c| {
                    c.parse::<IpNet>()
                        .map_err(|e| ConfigError(format!("{what}: ip range {c:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for k in &r.key_types {
                if !KEY_TYPES.contains(&k.as_str()) {
                    return Err(ConfigError(format!(
                        "{what}: unknown key type {k:?} (one of {})",
                        KEY_TYPES.join(", ")
                    )));
                }
            }
            out.push(Rule {
                name: r.name.clone(),
                caller_cn: r
                    .callers
                    .cn
                    .as_deref()
                    .map(|p| anchored(&format!("{what}: callers.cn"), p))
                    .transpose()?,
                caller_orgs: r.callers.orgs.clone(),
                signers: r.signers.clone(),
                cn: r
                    .cn
                    .as_deref()
                    .map(|p| anchored(&format!("{what}: cn"), p))
                    .transpose()?,
                orgs: r.orgs.clone(),
                dns_suffixes: r.dns_suffixes.clone(),
                ip_ranges,
                uri_prefixes: r.uri_prefixes.clone(),
                max_validity: r.max_validity.get(),
                key_types: r.key_types.clone(),
            });
        }
        Ok(Policy { rules: out })
    }

    /// Decides whether `caller` may obtain from `signer` what `request` asks, for
    /// `validity` (what the caller asked, if anything).
    pub fn decide(
        &self,
        caller: &Caller,
        signer: &str,
        request: &Examined,
        validity: Option<Duration>,
    ) -> Result<Grant, Denial> {
        if let Some(node) = caller.cn.strip_prefix(NODE_USER_PREFIX)
            && request.cn != caller.cn
        {
            return Err(Denial {
                code: ErrorCode::NodeMismatch,
                reason: format!(
                    "node {node:?} may only request certificates for CN {:?}; asked {:?}",
                    caller.cn, request.cn
                ),
                rule: None,
            });
        }
        let mut first_denial = None;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.applies_to(caller) && r.signers.iter().any(|s| s == signer))
        {
            if let Some(d) = rule.unpinned_node(caller, request) {
                first_denial.get_or_insert(d);
                continue;
            }
            match rule.allows(request, validity) {
                Ok(()) => {
                    return Ok(Grant {
                        rule: rule.name.clone(),
                        max_validity: rule.max_validity,
                    });
                }
                Err(d) => {
                    first_denial.get_or_insert(d);
                }
            }
        }
        Err(first_denial.unwrap_or_else(|| Denial {
            code: ErrorCode::PolicyDenied,
            reason: format!(
                "no policy rule lets caller CN={:?} O={:?} use signer {signer:?}",
                caller.cn, caller.orgs
            ),
            rule: None,
        }))
    }
}

impl Rule {
    fn applies_to(&self, caller: &Caller) -> bool {
        self.caller_cn
            .as_ref()
            .is_none_or(|re| re.is_match(&caller.cn))
            && (self.caller_orgs.is_empty()
                || caller.orgs.iter().any(|o| self.caller_orgs.contains(o)))
    }

    /// A node's identity (`CN=system:node:<name>`) is granted by a rule that matches its
    /// callers by group only to that node itself: exactly `system:node:<name>`, in
    /// `system:nodes`. A rule that names its callers' CN (a bootstrap or onboarding identity)
    /// grants node identities to them as its other terms say.
    fn unpinned_node(&self, caller: &Caller, request: &Examined) -> Option<Denial> {
        if self.caller_cn.is_some() || !request.cn.starts_with(NODE_USER_PREFIX) {
            return None;
        }
        let is_that_node = caller.cn == request.cn && caller.orgs.iter().any(|o| o == NODES_GROUP);
        (!is_that_node).then(|| {
            self.deny(
                ErrorCode::NodeMismatch,
                format!(
                    "{:?} is granted only to that node itself (CN {:?} in {NODES_GROUP}); the caller is CN={:?} O={:?} (name callers by cn in the rule to let others request node identities)",
                    request.cn, request.cn, caller.cn, caller.orgs
                ),
            )
        })
    }

    fn deny(&self, code: ErrorCode, what: String) -> Denial {
        Denial {
            code,
            reason: format!("rule {:?}: {what}", self.name),
            rule: Some(self.name.clone()),
        }
    }

    fn allows(&self, r: &Examined, validity: Option<Duration>) -> Result<(), Denial> {
        for o in &r.orgs {
            if !self.orgs.contains(o) {
                let code = if o == SYSTEM_MASTERS {
                    ErrorCode::SystemMasters
                } else {
                    ErrorCode::OrgNotAllowed
                };
                return Err(self.deny(code, format!("O={o:?} is not allowed")));
            }
        }
        if let Some(re) = &self.cn
            && !re.is_match(&r.cn)
        {
            return Err(self.deny(
                ErrorCode::CnNotAllowed,
                format!("CN {:?} is not allowed", r.cn),
            ));
        }
        for d in &r.dns {
            let ok = self.dns_suffixes.iter().any(|s| {
                let bare = s.strip_prefix('.').unwrap_or(s);
                d == bare || (d.ends_with(s.as_str()) && s.starts_with('.'))
            });
            if !ok {
                return Err(self.deny(
                    ErrorCode::SanNotAllowed,
                    format!("DNS SAN {d:?} is outside the allowed suffixes"),
                ));
            }
        }
        for ip in &r.ips {
            if !self.ip_allowed(*ip) {
                return Err(self.deny(
                    ErrorCode::SanNotAllowed,
                    format!("IP SAN {ip} is outside the allowed ranges"),
                ));
            }
        }
        for u in &r.uris {
            if !self.uri_prefixes.iter().any(|p| u.starts_with(p.as_str())) {
                return Err(self.deny(
                    ErrorCode::SanNotAllowed,
                    format!("URI SAN {u:?} is outside the allowed prefixes"),
                ));
            }
        }
        if let Some(e) = r.emails.first() {
            return Err(self.deny(
                ErrorCode::SanNotAllowed,
                format!("email SAN {e:?} is not allowed"),
            ));
        }
        if !self.key_types.is_empty()
            && !self
                .key_types
                .iter()
                .any(|k| *k == r.key || (k == "RSA" && r.key.starts_with("RSA-")))
        {
            return Err(self.deny(
                ErrorCode::KeyNotAllowed,
                format!(
                    "key {} is not allowed ({})",
                    r.key,
                    self.key_types.join(", ")
                ),
            ));
        }
        if let Some(v) = validity
            && v > self.max_validity
        {
            return Err(self.deny(
                ErrorCode::ValidityTooLong,
                format!(
                    "validity {}s exceeds the maximum {}s",
                    v.as_secs(),
                    self.max_validity.as_secs()
                ),
            ));
        }
        Ok(())
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.ip_ranges.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeConfig;
    use ErrorCode::{
        CnNotAllowed as Cn, KeyNotAllowed as Key, NodeMismatch as Node, OrgNotAllowed as Org,
        PolicyDenied as Denied, SanNotAllowed as San, SystemMasters as Masters,
        ValidityTooLong as Long,
    };

    const KAC: &str = "kubernetes.io/kube-apiserver-client";
    const KS: &str = "kubernetes.io/kubelet-serving";
    const KC: &str = "kubernetes.io/kube-apiserver-client-kubelet";
    const MESH: &str = "example.com/mesh";

    /// The rules every row is decided against, in order.
    const RULES: &str = r#"
[[policy]]
name = "ops"
callers = { cn = "ops-.*" }
signers = ["kubernetes.io/kube-apiserver-client"]
cn = "[a-z]+"
orgs = ["dev", "ops"]
max_validity = "720h"

[[policy]]
name = "root"
callers = { orgs = ["break-glass"] }
signers = ["kubernetes.io/kube-apiserver-client"]
orgs = ["system:masters"]
max_validity = "1h"

[[policy]]
name = "nodes"
callers = { orgs = ["system:nodes"] }
signers = ["kubernetes.io/kubelet-serving"]
cn = "system:node:.*"
orgs = ["system:nodes"]
dns_suffixes = [".nodes.example.com", "metal.example.com"]
ip_ranges = ["10.0.0.0/8", "fd00::/8"]
max_validity = "30d"
key_types = ["ECDSA-P256", "ECDSA-P384"]

[[policy]]
name = "bootstrap"
callers = { cn = "system:bootstrap:[a-z0-9]{6}", orgs = ["system:bootstrappers"] }
signers = ["kubernetes.io/kube-apiserver-client-kubelet"]
cn = "system:node:.*"
orgs = ["system:nodes"]

[[policy]]
name = "mesh"
callers = { cn = "mesh-ca", orgs = ["mesh"] }
signers = ["example.com/mesh"]
uri_prefixes = ["spiffe://cluster.local/"]
dns_suffixes = [".svc"]
key_types = ["RSA"]

[[policy]]
name = "mesh-fallback"
callers = { cn = "mesh-ca" }
signers = ["example.com/mesh"]
cn = "fallback"
"#;

    /// One row: caller CN and O values, signer, requested CN, O values, SANs (`DNS:`, `IP:`,
    /// `URI:`, `email:`), key, validity asked (seconds), and the rule that allows it or the
    /// denial's code with a fragment of its reason.
    type Row = (
        &'static str,
        &'static [&'static str],
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static str,
        Option<u64>,
        Result<&'static str, (ErrorCode, &'static str)>,
    );

    const NONE: &[&str] = &[];
    const NODES: &[&str] = &["system:nodes"];
    const P256: &str = "ECDSA-P256";
    const N1: &str = "system:node:n1";

    #[rustfmt::skip]
    const ROWS: &[Row] = &[
        // Callers no rule names: default deny.
        ("jane", NONE, KAC, "jane", NONE, NONE, P256, None, Err((Denied, "no policy rule lets caller CN=\"jane\""))),
        ("ops-1", NONE, KS, "x", NONE, NONE, P256, None, Err((Denied, "use signer \"kubernetes.io/kubelet-serving\""))),
        ("ops-1", NONE, "example.com/other", "x", NONE, NONE, P256, None, Err((Denied, "no policy rule"))),
        ("xops-1", NONE, KAC, "jane", NONE, NONE, P256, None, Err((Denied, "no policy rule"))),
        ("ops-1x", &["other"], KAC, "jane", NONE, NONE, P256, None, Ok("ops")),
        // CN patterns are anchored; O values must be listed.
        ("ops-1", NONE, KAC, "jane", NONE, NONE, P256, None, Ok("ops")),
        ("ops-1", NONE, KAC, "jane", &["dev"], NONE, P256, None, Ok("ops")),
        ("ops-1", NONE, KAC, "jane", &["dev", "ops"], NONE, P256, None, Ok("ops")),
        ("ops-1", NONE, KAC, "Jane", NONE, NONE, P256, None, Err((Cn, "rule \"ops\": CN \"Jane\" is not allowed"))),
        ("ops-1", NONE, KAC, "jane1", NONE, NONE, P256, None, Err((Cn, "is not allowed"))),
        ("ops-1", NONE, KAC, "", NONE, NONE, P256, None, Err((Cn, "CN \"\""))),
        ("ops-1", NONE, KAC, "jane", &["qa"], NONE, P256, None, Err((Org, "O=\"qa\" is not allowed"))),
        ("ops-1", NONE, KAC, "jane", &["dev", "qa"], NONE, P256, None, Err((Org, "O=\"qa\""))),
        // system:masters only where a rule lists it.
        ("ops-1", NONE, KAC, "jane", &["system:masters"], NONE, P256, None, Err((Masters, "O=\"system:masters\""))),
        ("alice", &["break-glass"], KAC, "alice", &["system:masters"], NONE, P256, None, Ok("root")),
        ("alice", &["break-glass"], KAC, "alice", &["system:masters"], NONE, P256, Some(3600), Ok("root")),
        ("alice", &["break-glass"], KAC, "alice", &["system:masters"], NONE, P256, Some(3601), Err((Long, "validity 3601s exceeds the maximum 3600s"))),
        ("alice", &["break-glass"], KAC, "alice", &["dev"], NONE, P256, None, Err((Org, "rule \"root\""))),
        // Validity: at most the rule's maximum (30d is 720h).
        ("ops-1", NONE, KAC, "jane", NONE, NONE, P256, Some(720 * 3600), Ok("ops")),
        ("ops-1", NONE, KAC, "jane", NONE, NONE, P256, Some(720 * 3600 + 1), Err((Long, "exceeds the maximum 2592000s"))),
        (N1, NODES, KS, N1, NODES, &["IP:10.1.2.3"], P256, Some(30 * 86400), Ok("nodes")),
        (N1, NODES, KS, N1, NODES, &["IP:10.1.2.3"], P256, Some(30 * 86400 + 1), Err((Long, "exceeds"))),
        // A node asks only for itself.
        (N1, NODES, KS, "system:node:n2", NODES, NONE, P256, None, Err((Node, "node \"n1\" may only request certificates for CN \"system:node:n1\""))),
        (N1, NODES, KAC, "jane", NONE, NONE, P256, None, Err((Node, "asked \"jane\""))),
        (N1, NODES, KS, N1, NODES, NONE, P256, None, Ok("nodes")),
        // A node's identity only to that node when the rule names callers by group only.
        ("notanode", NODES, KS, "system:node:victim", NODES, NONE, P256, None, Err((Node, "\"system:node:victim\" is granted only to that node itself"))),
        ("System:Node:n1", NODES, KS, N1, NODES, NONE, P256, None, Err((Node, "the caller is CN=\"System:Node:n1\""))),
        ("", NODES, KS, "system:node:victim", NODES, NONE, P256, None, Err((Node, "granted only to that node"))),
        ("x", &["dev", "mesh-issuers", "system:nodes"], KS, "system:node:victim", NODES, NONE, P256, None, Err((Node, "granted only to that node"))),
        (N1, &["dev"], KS, N1, NODES, NONE, P256, None, Err((Denied, "no policy rule"))),
        // A rule that names its callers' CN (bootstrap tokens) grants node identities to them.
        ("system:bootstrap:abc123", &["system:bootstrappers"], KC, "system:node:w1", NODES, NONE, P256, None, Ok("bootstrap")),
        ("system:bootstrap:abc1234", &["system:bootstrappers"], KC, "system:node:w1", NODES, NONE, P256, None, Err((Denied, "no policy rule"))),
        ("system:bootstrap:abc123", &["system:bootstrappers"], KS, "system:node:w1", NODES, NONE, P256, None, Err((Denied, "no policy rule"))),
        // DNS suffixes: ".x" allows names ending in it and "x" itself; "x" allows only "x".
        (N1, NODES, KS, N1, NODES, &["DNS:n1.nodes.example.com"], P256, None, Ok("nodes")),
        (N1, NODES, KS, N1, NODES, &["DNS:nodes.example.com"], P256, None, Ok("nodes")),
        (N1, NODES, KS, N1, NODES, &["DNS:a.b.nodes.example.com"], P256, None, Ok("nodes")),
        (N1, NODES, KS, N1, NODES, &["DNS:xnodes.example.com"], P256, None, Err((San, "DNS SAN \"xnodes.example.com\" is outside the allowed suffixes"))),
        (N1, NODES, KS, N1, NODES, &["DNS:metal.example.com"], P256, None, Ok("nodes")),
        (N1, NODES, KS, N1, NODES, &["DNS:n1.metal.example.com"], P256, None, Err((San, "outside the allowed suffixes"))),
        (N1, NODES, KS, N1, NODES, &["DNS:example.com"], P256, None, Err((San, "DNS SAN \"example.com\""))),
        (N1, NODES, KS, N1, NODES, &["DNS:n1.nodes.example.com", "DNS:evil.com"], P256, None, Err((San, "\"evil.com\""))),
        // IP ranges, both families.
        (N1, NODES, KS, N1, NODES, &["IP:10.255.255.255"], P256, None, Ok("nodes")),
        (N1, NODES, KS, N1, NODES, &["IP:11.0.0.1"], P256, None, Err((San, "IP SAN 11.0.0.1 is outside the allowed ranges"))),
        (N1, NODES, KS, N1, NODES, &["IP:fd00::1"], P256, None, Ok("nodes")),
        (N1, NODES, KS, N1, NODES, &["IP:fe80::1"], P256, None, Err((San, "IP SAN fe80::1"))),
        (N1, NODES, KS, N1, NODES, &["IP:::ffff:10.0.0.1"], P256, None, Err((San, "outside the allowed ranges"))),
        // No rule allows email SANs; URIs only under a listed prefix.
        (N1, NODES, KS, N1, NODES, &["email:n1@example.com"], P256, None, Err((San, "email SAN \"n1@example.com\" is not allowed"))),
        (N1, NODES, KS, N1, NODES, &["URI:spiffe://cluster.local/n1"], P256, None, Err((San, "URI SAN"))),
        // Key types: "RSA" allows every RSA size; listed curves only.
        (N1, NODES, KS, N1, NODES, NONE, "ECDSA-P384", None, Ok("nodes")),
        (N1, NODES, KS, N1, NODES, NONE, "RSA-2048", None, Err((Key, "key RSA-2048 is not allowed (ECDSA-P256, ECDSA-P384)"))),
        (N1, NODES, KS, N1, NODES, NONE, "Ed25519", None, Err((Key, "key Ed25519"))),
        ("mesh-ca", &["mesh"], MESH, "api", NONE, &["URI:spiffe://cluster.local/ns/a/sa/b"], "RSA-2048", None, Ok("mesh")),
        ("mesh-ca", &["mesh"], MESH, "api", NONE, &["URI:spiffe://cluster.local/x", "DNS:api.ns.svc"], "RSA-4096", None, Ok("mesh")),
        ("mesh-ca", &["mesh"], MESH, "api", NONE, &["URI:spiffe://other/x"], "RSA-2048", Some(86400), Err((San, "URI SAN \"spiffe://other/x\" is outside the allowed prefixes"))),
        ("mesh-ca", &["mesh"], MESH, "api", NONE, NONE, P256, None, Err((Key, "key ECDSA-P256 is not allowed (RSA)"))),
        ("mesh-ca", &["mesh"], MESH, "api", NONE, NONE, "RSA-3072", Some(86400), Ok("mesh")),
        ("mesh-ca", &["mesh"], MESH, "api", NONE, NONE, "RSA-3072", Some(86401), Err((Long, "rule \"mesh\": validity 86401s exceeds the maximum 86400s"))),
        // A caller's rules are tried in order; the first that allows wins, else the first denial.
        ("mesh-ca", NONE, MESH, "fallback", NONE, NONE, P256, None, Ok("mesh-fallback")),
        ("mesh-ca", &["mesh"], MESH, "fallback", NONE, NONE, P256, None, Ok("mesh-fallback")),
        ("mesh-ca", &["mesh"], MESH, "other", NONE, NONE, P256, None, Err((Key, "rule \"mesh\""))),
        ("mesh-ca", NONE, MESH, "other", NONE, NONE, P256, None, Err((Cn, "rule \"mesh-fallback\": CN \"other\""))),
        ("mesh-ca2", &["mesh"], MESH, "api", NONE, NONE, "RSA-2048", None, Err((Denied, "no policy rule"))),
    ];

    fn policy() -> Policy {
        let text = format!("{RULES}\n[audit]\npath = \"/tmp/a\"\n");
        let config = ServeConfig::parse(&text).expect("the table's rules parse");
        Policy::compile(&config.policy).expect("the table's rules compile")
    }

    #[test]
    fn decisions_table() {
        let policy = policy();
        for (i, row) in ROWS.iter().enumerate() {
            let (caller_cn, caller_orgs, signer, cn, orgs, sans, key, validity, want) = row;
            let caller = Caller {
                cn: caller_cn.to_string(),
                orgs: caller_orgs.iter().map(|s| s.to_string()).collect(),
            };
            let got = policy.decide(
                &caller,
                signer,
                &Examined::sample(cn, orgs, sans, key),
                validity.map(Duration::from_secs),
            );
            match (want, got) {
                (Ok(rule), Ok(grant)) => assert_eq!(grant.rule, *rule, "row {i}: {row:?}"),
                (Err((code, fragment)), Err(denial)) => {
                    assert_eq!(denial.code, *code, "row {i}: {row:?}: {}", denial.reason);
                    assert!(
                        denial.reason.contains(fragment),
                        "row {i}: {row:?}: {:?} lacks {fragment:?}",
                        denial.reason
                    );
                    // The refusing rule is named (as in its reason) when one matched.
                    let named = denial
                        .reason
                        .strip_prefix("rule \"")
                        .and_then(|r| r.split_once('"'))
                        .map(|(name, _)| name.to_string());
                    assert_eq!(denial.rule, named, "row {i}: {row:?}");
                }
                (want, got) => panic!("row {i}: {row:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn grants_carry_the_rule_maximum() {
        let policy = policy();
        let caller = Caller {
            cn: N1.into(),
            orgs: vec!["system:nodes".into()],
        };
        let grant = policy
            .decide(&caller, KS, &Examined::sample(N1, NODES, NONE, P256), None)
            .expect("allowed");
        assert_eq!(grant.max_validity, Duration::from_secs(30 * 86400));
    }

    /// Rules that do not compile: a fragment of the body, then of the error.
    #[rustfmt::skip]
    const BAD_RULES: &[(&str, &str)] = &[
        ("callers = {}\nsigners = [\"a\"]", "callers needs a cn pattern or orgs"),
        ("callers = { cn = \"x\" }\nsigners = []", "signers is empty"),
        ("callers = { cn = \"(\" }\nsigners = [\"a\"]", "callers.cn: invalid pattern \"(\""),
        ("callers = { cn = \"x\" }\nsigners = [\"a\"]\ncn = \"[\"", "cn: invalid pattern \"[\""),
        ("callers = { cn = \"x\" }\nsigners = [\"a\"]\nip_ranges = [\"10.0.0.0/33\"]", "ip range \"10.0.0.0/33\""),
        ("callers = { cn = \"x\" }\nsigners = [\"a\"]\nkey_types = [\"DSA\"]", "unknown key type \"DSA\""),
        ("callers = { cn = \"x\" }\nsigners = [\"a\"]\nmax_validity = \"1y\"", "invalid duration \"1y\""),
    ];

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        for (body, want) in BAD_RULES {
            let text = format!("[[policy]]\nname = \"r\"\n{body}\n");
            let e = ServeConfig::parse(&text)
                .and_then(|c| Policy::compile(&c.policy))
                .expect_err(body)
                .0;
            assert!(e.contains(want), "{body}: {e}");
        }
        let e = ServeConfig::parse("[[policy]]\nname = \"r\"\ncallers = {}\nsigners = [\"a\"]\n")
            .and_then(|c| Policy::compile(&c.policy))
            .expect_err("no callers")
            .0;
        assert!(e.starts_with("policy rule \"r\": "), "{e}");
    }
}
