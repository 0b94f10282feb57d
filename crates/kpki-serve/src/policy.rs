//! Issuance policy: which caller (client certificate CN and O values) may ask which signer
//! for what subject, SANs, key and validity. Default deny; `O=system:masters` only where a
//! rule lists it; a `system:node:<name>` caller only for its own node name.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use kpki_pki::csr::Examined;
use kpki_pki::signers::{NODE_USER_PREFIX, SYSTEM_MASTERS};
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
            });
        }
        let mut first_denial = None;
        for rule in self
            .rules
            .iter()
            .filter(|r| r.applies_to(caller) && r.signers.iter().any(|s| s == signer))
        {
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

    fn deny(&self, code: ErrorCode, what: String) -> Denial {
        Denial {
            code,
            reason: format!("rule {:?}: {what}", self.name),
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
