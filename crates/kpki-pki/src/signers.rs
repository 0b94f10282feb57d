//! The Kubernetes signers' rules: one validator per signerName, chosen once from the name.
//!
//! The model is kube-controller-manager's csrsigning controller
//! (`getCSRVerificationFuncForSignerName`, `ValidateKubeletServingCSR`,
//! `ValidateKubeletClientCSR`, `validAPIServerClientUsages`), the API server's validation of
//! `spec.usages` and `spec.signerName`, and the `CertificateSubjectRestriction` admission
//! plugin (`O=system:masters` on `kubernetes.io/kube-apiserver-client`). Each signer carries
//! its default usages, the usages it allows, and its subject and SAN rules;
//! `KubeSigner::validate` is the one check that `kpki sign`, the daemon's APIs and the
//! Certificates API controller run. The usage words kpki can carry into a certificate, and
//! the extension each becomes, are here too (`purpose`).

use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};

use crate::csr::{CsrError, Examined, Refusal, SignRequest};

/// `kubernetes.io/kube-apiserver-client`.
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// `kubernetes.io/kube-apiserver-client-kubelet`.
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// `kubernetes.io/kubelet-serving`.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// `kubernetes.io/legacy-unknown` (not requestable through certificates.k8s.io/v1).
pub(crate) const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// The built-in signers kpki signs for without any configuration.
pub const BUILT_IN: [&str; 3] = [
    KUBE_APISERVER_CLIENT,
    KUBE_APISERVER_CLIENT_KUBELET,
    KUBELET_SERVING,
];

/// The CN prefix of a node's user name (`system:node:<name>`).
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group every node is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The group that bypasses RBAC.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// Every value `spec.usages` may hold (`certificates.k8s.io/v1`).
pub(crate) const KNOWN_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

const CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];
const CLIENT_USAGES_NO_RSA: &[&str] = &["digital signature", "client auth"];
const SERVING_USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];
const SERVING_USAGES_NO_RSA: &[&str] = &["digital signature", "server auth"];

fn usage_error(msg: String) -> CsrError {
    CsrError::new(Refusal::Usage, msg)
}

fn rule_error(msg: String) -> CsrError {
    CsrError::new(Refusal::SignerRule, msg)
}

/// The API server's validation of a CertificateSigningRequest's `spec.usages`: required, each
/// a known value, none twice.
pub(crate) fn check_spec_usages(usages: &[String]) -> Result<(), CsrError> {
    if usages.is_empty() {
        return Err(usage_error(
            "spec.usages: Required value: a CertificateSigningRequest must list its usages".into(),
        ));
    }
    for (i, u) in usages.iter().enumerate() {
        if !KNOWN_USAGES.contains(&u.as_str()) {
            return Err(usage_error(format!(
                "spec.usages[{i}]: Unsupported value: {u:?}"
            )));
        }
        if usages[..i].contains(u) {
            return Err(usage_error(format!(
                "spec.usages[{i}]: Duplicate value: {u:?}"
            )));
        }
    }
    Ok(())
}

/// The certificate extension one usage word becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A KeyUsage bit.
    Key(KeyUsagePurpose),
    /// An ExtendedKeyUsage purpose.
    Extended(ExtendedKeyUsagePurpose),
}

/// What `usage` becomes in a certificate; refuses usages that would make a CA and the words
/// kpki does not issue.
pub(crate) fn purpose(usage: &str) -> Result<Purpose, CsrError> {
    use ExtendedKeyUsagePurpose as E;
    use KeyUsagePurpose as K;
    Ok(match usage {
        "digital signature" => Purpose::Key(K::DigitalSignature),
        "content commitment" => Purpose::Key(K::ContentCommitment),
        "key encipherment" => Purpose::Key(K::KeyEncipherment),
        "key agreement" => Purpose::Key(K::KeyAgreement),
        "data encipherment" => Purpose::Key(K::DataEncipherment),
        "server auth" => Purpose::Extended(E::ServerAuth),
        "client auth" => Purpose::Extended(E::ClientAuth),
        "code signing" => Purpose::Extended(E::CodeSigning),
        "email protection" => Purpose::Extended(E::EmailProtection),
        "timestamping" => Purpose::Extended(E::TimeStamping),
        "ocsp signing" => Purpose::Extended(E::OcspSigning),
        "any" => Purpose::Extended(E::Any),
        "cert sign" | "crl sign" => {
            return Err(usage_error(format!(
                "usage {usage:?} would make a CA; refused"
            )));
        }
        other => return Err(usage_error(format!("unsupported usage {other:?}"))),
    })
}

/// Which signer a name chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `kubernetes.io/kube-apiserver-client`.
    KubeApiserverClient,
    /// `kubernetes.io/kube-apiserver-client-kubelet`.
    KubeletClient,
    /// `kubernetes.io/kubelet-serving`.
    KubeletServing,
    /// `kubernetes.io/legacy-unknown`: refused.
    LegacyUnknown,
    /// Any other name: no subject or SAN rule; usages as configured.
    Custom,
}

/// The usages a signer allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UsageRule {
    /// Must hold `client auth`; may add only `digital signature` and `key encipherment`.
    ClientAuth,
    /// Exactly one of these sets (duplicates ignored).
    ExactlyOneOf(&'static [&'static [&'static str]]),
    /// Any usage kpki issues.
    Any,
}

/// What a signer requires of the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubjectRule {
    /// Any subject.
    Any,
    /// Any subject but `O=system:masters` (unless explicitly allowed).
    NoSystemMasters,
    /// O exactly `["system:nodes"]` and CN `system:node:<name>`.
    Node,
}

/// What a signer requires of the subject alternative names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SanRule {
    /// Any SANs.
    Any,
    /// No SAN at all.
    None,
    /// At least one DNS name or IP address; no email address or URI.
    DnsOrIp,
}

/// A signer: its name and rules, chosen once by [`KubeSigner::for_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSigner {
    name: String,
    kind: Kind,
    configured: Vec<String>,
}

impl KubeSigner {
    /// The signer `name` chooses; every name not built into Kubernetes is a custom signer.
    pub fn for_name(name: &str) -> KubeSigner {
        let kind = match name {
            KUBE_APISERVER_CLIENT => Kind::KubeApiserverClient,
            KUBE_APISERVER_CLIENT_KUBELET => Kind::KubeletClient,
            KUBELET_SERVING => Kind::KubeletServing,
            LEGACY_UNKNOWN => Kind::LegacyUnknown,
            _ => Kind::Custom,
        };
        KubeSigner {
            name: name.to_string(),
            kind,
            configured: Vec::new(),
        }
    }

    /// The signer narrowed to a configured usage list: the default when a request names
    /// none, and the most a request may ask. An empty list keeps the signer's own.
    pub fn with_usages(mut self, configured: &[String]) -> KubeSigner {
        self.configured = configured.to_vec();
        self
    }

    /// The signerName.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which signer it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether it is one of [`BUILT_IN`].
    #[cfg(test)]
    pub(crate) fn is_built_in(&self) -> bool {
        matches!(
            self.kind,
            Kind::KubeApiserverClient | Kind::KubeletClient | Kind::KubeletServing
        )
    }

    /// The usages a request that names none gets.
    pub(crate) fn default_usages(&self) -> Vec<String> {
        if !self.configured.is_empty() {
            return self.configured.clone();
        }
        let d = match self.kind {
            Kind::KubeletServing => SERVING_USAGES,
            _ => CLIENT_USAGES,
        };
        d.iter().map(|s| s.to_string()).collect()
    }

    /// The signer's usage rule (before any configured list).
    pub(crate) fn usage_rule(&self) -> UsageRule {
        match self.kind {
            Kind::KubeApiserverClient => UsageRule::ClientAuth,
            Kind::KubeletClient => UsageRule::ExactlyOneOf(&[CLIENT_USAGES, CLIENT_USAGES_NO_RSA]),
            Kind::KubeletServing => {
                UsageRule::ExactlyOneOf(&[SERVING_USAGES, SERVING_USAGES_NO_RSA])
            }
            Kind::LegacyUnknown | Kind::Custom => UsageRule::Any,
        }
    }

    /// The signer's subject rule.
    pub(crate) fn subject_rule(&self) -> SubjectRule {
        match self.kind {
            Kind::KubeApiserverClient => SubjectRule::NoSystemMasters,
            Kind::KubeletClient | Kind::KubeletServing => SubjectRule::Node,
            Kind::LegacyUnknown | Kind::Custom => SubjectRule::Any,
        }
    }

    /// The signer's SAN rule.
    pub(crate) fn san_rule(&self) -> SanRule {
        match self.kind {
            Kind::KubeletClient => SanRule::None,
            Kind::KubeletServing => SanRule::DnsOrIp,
            Kind::KubeApiserverClient | Kind::LegacyUnknown | Kind::Custom => SanRule::Any,
        }
    }

    /// Checks an examined request against the signer's rules (refusal, subject, SANs,
    /// usages, in that order) and returns the usages the certificate gets: the request's
    /// (or the signer's defaults), sorted, each once. `request.signer_name` is not read: the
    /// signer was chosen already.
    pub(crate) fn validate(
        &self,
        request: &SignRequest,
        examined: &Examined,
    ) -> Result<Vec<String>, CsrError> {
        if self.kind == Kind::LegacyUnknown {
            return Err(rule_error(format!(
                "{LEGACY_UNKNOWN} cannot be requested through certificates.k8s.io/v1"
            )));
        }
        self.check_subject(examined, request.allow_system_masters)?;
        self.check_sans(examined)?;
        self.usages(&request.usages)
    }

    fn check_subject(&self, req: &Examined, allow_system_masters: bool) -> Result<(), CsrError> {
        let name = &self.name;
        match self.subject_rule() {
            SubjectRule::Any => Ok(()),
            SubjectRule::NoSystemMasters
                if !allow_system_masters && req.orgs.iter().any(|o| o == SYSTEM_MASTERS) =>
            {
                Err(CsrError::new(
                    Refusal::SystemMasters,
                    "O=system:masters is refused (it bypasses RBAC); pass --allow-system-masters to issue it anyway",
                ))
            }
            SubjectRule::NoSystemMasters => Ok(()),
            SubjectRule::Node => {
                if req.orgs != [NODES_GROUP] {
                    return Err(rule_error(format!(
                        "{name} requires O exactly [\"{NODES_GROUP}\"]; got {:?}",
                        req.orgs
                    )));
                }
                match req.cn.strip_prefix(NODE_USER_PREFIX) {
                    Some(node) if !node.is_empty() => Ok(()),
                    _ => Err(rule_error(format!(
                        "{name} requires CN {NODE_USER_PREFIX}<name>; got {:?}",
                        req.cn
                    ))),
                }
            }
        }
    }

    fn check_sans(&self, req: &Examined) -> Result<(), CsrError> {
        let name = &self.name;
        match self.san_rule() {
            SanRule::Any => Ok(()),
            SanRule::None => {
                let none = req.dns.is_empty()
                    && req.ips.is_empty()
                    && req.emails.is_empty()
                    && req.uris.is_empty();
                if none {
                    Ok(())
                } else {
                    Err(rule_error(format!(
                        "{name} allows no subject alternative names"
                    )))
                }
            }
            SanRule::DnsOrIp => {
                if req.dns.is_empty() && req.ips.is_empty() {
                    return Err(rule_error(format!(
                        "{name} requires at least one DNS or IP subject alternative name"
                    )));
                }
                if !req.emails.is_empty() || !req.uris.is_empty() {
                    return Err(rule_error(format!(
                        "{name} forbids email and URI subject alternative names"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The usages of a request asking `asked`: the configured list bounds what may be asked,
    /// none asked means the defaults, then the signer's rule and what kpki can issue.
    fn usages(&self, asked: &[String]) -> Result<Vec<String>, CsrError> {
        let name = &self.name;
        if !self.configured.is_empty()
            && let Some(u) = asked.iter().find(|u| !self.configured.contains(u))
        {
            return Err(usage_error(format!(
                "usage {u:?} is not allowed for signer {name:?} (allowed: {})",
                self.configured.join(", ")
            )));
        }
        let mut usages = if asked.is_empty() {
            self.default_usages()
        } else {
            asked.to_vec()
        };
        usages.sort();
        usages.dedup();
        let set: Vec<&str> = usages.iter().map(String::as_str).collect();
        match self.usage_rule() {
            UsageRule::Any => {}
            UsageRule::ClientAuth => {
                let optional = ["client auth", "digital signature", "key encipherment"];
                if !set.contains(&"client auth") || !set.iter().all(|u| optional.contains(u)) {
                    return Err(usage_error(format!(
                        "{name} requires \"client auth\" and allows only \"digital signature\" and \"key encipherment\" besides; got {set:?}"
                    )));
                }
            }
            UsageRule::ExactlyOneOf(options) => {
                let matches = options.iter().any(|o| {
                    let mut o = o.to_vec();
                    o.sort_unstable();
                    o == set
                });
                if !matches {
                    let eku = if self.kind == Kind::KubeletServing {
                        "server auth"
                    } else {
                        "client auth"
                    };
                    return Err(usage_error(format!(
                        "{name} requires exactly digital signature, (key encipherment,) {eku}; got {set:?}"
                    )));
                }
            }
        }
        for u in &usages {
            purpose(u)?;
        }
        Ok(usages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Refusal::{SignerRule as Rule, SystemMasters as Masters, Usage};

    const KAC: &str = KUBE_APISERVER_CLIENT;
    const KCK: &str = KUBE_APISERVER_CLIENT_KUBELET;
    const KS: &str = KUBELET_SERVING;
    const MESH: &str = "example.com/mesh";
    const NODE: &str = "system:node:n1";
    const NODES: &[&str] = &[NODES_GROUP];
    const DS: &str = "digital signature";
    const KE: &str = "key encipherment";
    const CA: &str = "client auth";
    const SA: &str = "server auth";
    const NONE: &[&str] = &[];
    const CLIENT_SORTED: &[&str] = &[CA, DS, KE];
    const SERVING_SORTED: &[&str] = &[DS, KE, SA];
    const P256: &str = "ECDSA-P256";
    const RSA: &str = "RSA-2048";

    /// One row: signer, configured usages, CN, O values, SANs (`DNS:`, `IP:`, `email:`,
    /// `URI:`), key, asked usages, `allow_system_masters`, and the usages granted or the
    /// refusal with a fragment of its line.
    type Row = (
        &'static str,
        &'static [&'static str],
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static str,
        &'static [&'static str],
        bool,
        Result<&'static [&'static str], (Refusal, &'static str)>,
    );

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn run(row: &Row) -> Result<Vec<String>, CsrError> {
        let (signer, configured, cn, orgs, sans, key, usages, masters, _) = *row;
        let request = SignRequest {
            csr_der: vec![],
            signer_name: signer.to_string(),
            usages: strings(usages),
            expiration_seconds: None,
            allow_system_masters: masters,
        };
        KubeSigner::for_name(signer)
            .with_usages(&strings(configured))
            .validate(&request, &Examined::sample(cn, orgs, sans, key))
    }

    fn check(rows: &[Row]) -> usize {
        for (i, row) in rows.iter().enumerate() {
            match (&row.8, run(row)) {
                (Ok(want), Ok(got)) => assert_eq!(got, strings(want), "row {i}: {row:?}"),
                (Err((refusal, fragment)), Err(e)) => {
                    assert_eq!(e.refusal, *refusal, "row {i}: {row:?}: {}", e.message);
                    assert!(
                        e.message.contains(fragment),
                        "row {i}: {row:?}: {:?} lacks {fragment:?}",
                        e.message
                    );
                }
                (want, got) => panic!("row {i}: {row:?}: want {want:?}, got {got:?}"),
            }
        }
        rows.len()
    }

    /// `validAPIServerClientUsages` and `CertificateSubjectRestriction`.
    #[rustfmt::skip]
    const KUBE_APISERVER_CLIENT_ROWS: &[Row] = &[
        (KAC, NONE, "jane", &["dev"], NONE, P256, NONE, false, Ok(CLIENT_SORTED)),
        (KAC, NONE, "jane", NONE, NONE, P256, &[CA], false, Ok(&[CA])),
        (KAC, NONE, "jane", NONE, NONE, P256, &[DS, CA], false, Ok(&[CA, DS])),
        (KAC, NONE, "jane", NONE, NONE, RSA, &[KE, CA], false, Ok(&[CA, KE])),
        (KAC, NONE, "jane", NONE, NONE, RSA, &[KE, DS, CA], false, Ok(CLIENT_SORTED)),
        (KAC, NONE, "jane", NONE, NONE, P256, &[CA, CA, DS], false, Ok(&[CA, DS])),
        (KAC, NONE, "jane", NONE, NONE, P256, &[DS, SA], false, Err((Usage, "requires \"client auth\""))),
        (KAC, NONE, "jane", NONE, NONE, P256, &[DS], false, Err((Usage, "requires \"client auth\""))),
        (KAC, NONE, "jane", NONE, NONE, P256, &[CA, SA], false, Err((Usage, "allows only"))),
        (KAC, NONE, "jane", NONE, NONE, P256, &[CA, "code signing"], false, Err((Usage, "allows only"))),
        (KAC, NONE, "jane", NONE, NONE, P256, &[CA, "any"], false, Err((Usage, "allows only"))),
        (KAC, NONE, "jane", NONE, NONE, P256, &[CA, "signing"], false, Err((Usage, "allows only"))),
        (KAC, NONE, "jane", NONE, NONE, P256, &[CA, "cert sign"], false, Err((Usage, "allows only"))),
        (KAC, NONE, "root", &[SYSTEM_MASTERS], NONE, P256, NONE, false, Err((Masters, "bypasses RBAC"))),
        (KAC, NONE, "root", &["dev", SYSTEM_MASTERS], NONE, P256, NONE, false, Err((Masters, "system:masters"))),
        (KAC, NONE, "root", &[SYSTEM_MASTERS], NONE, P256, NONE, true, Ok(CLIENT_SORTED)),
        (KAC, NONE, "root", &["System:Masters"], NONE, P256, NONE, false, Ok(CLIENT_SORTED)),
        (KAC, NONE, "", NONE, NONE, P256, NONE, false, Ok(CLIENT_SORTED)),
        (KAC, NONE, NODE, NODES, NONE, P256, NONE, false, Ok(CLIENT_SORTED)),
        (KAC, NONE, "jane", NONE, &["DNS:a.example", "IP:10.0.0.1", "email:j@example.com", "URI:spiffe://c/j"], P256, NONE, false, Ok(CLIENT_SORTED)),
        (KAC, NONE, "jane", NONE, NONE, "Ed25519", NONE, false, Ok(CLIENT_SORTED)),
        (KAC, NONE, "jane", NONE, NONE, "ECDSA-P384", &[KE, CA], false, Ok(&[CA, KE])),
    ];

    /// `ValidateKubeletClientCSR`.
    #[rustfmt::skip]
    const KUBELET_CLIENT_ROWS: &[Row] = &[
        (KCK, NONE, NODE, NODES, NONE, P256, NONE, false, Ok(CLIENT_SORTED)),
        (KCK, NONE, NODE, NODES, NONE, P256, &[DS, CA], false, Ok(&[CA, DS])),
        (KCK, NONE, NODE, NODES, NONE, RSA, &[DS, KE, CA], false, Ok(CLIENT_SORTED)),
        (KCK, NONE, NODE, NODES, NONE, RSA, &[DS, CA], false, Ok(&[CA, DS])),
        (KCK, NONE, NODE, NODES, NONE, P256, &[KE, DS, CA], false, Ok(CLIENT_SORTED)),
        (KCK, NONE, NODE, NODES, NONE, P256, &[DS, CA, DS], false, Ok(&[CA, DS])),
        (KCK, NONE, NODE, NODES, NONE, P256, &[KE, CA], false, Err((Usage, "requires exactly digital signature, (key encipherment,) client auth"))),
        (KCK, NONE, NODE, NODES, NONE, P256, &[CA], false, Err((Usage, "requires exactly"))),
        (KCK, NONE, NODE, NODES, NONE, P256, &[DS, KE, CA, SA], false, Err((Usage, "requires exactly"))),
        (KCK, NONE, NODE, NODES, NONE, P256, &[DS, KE, SA], false, Err((Usage, "client auth; got"))),
        (KCK, NONE, NODE, NONE, NONE, P256, NONE, false, Err((Rule, "requires O exactly [\"system:nodes\"]; got []"))),
        (KCK, NONE, NODE, &[NODES_GROUP, "dev"], NONE, P256, NONE, false, Err((Rule, "requires O exactly"))),
        (KCK, NONE, NODE, &["dev", NODES_GROUP], NONE, P256, NONE, false, Err((Rule, "requires O exactly"))),
        (KCK, NONE, NODE, &[NODES_GROUP, NODES_GROUP], NONE, P256, NONE, false, Err((Rule, "requires O exactly"))),
        (KCK, NONE, NODE, &["dev"], NONE, P256, NONE, false, Err((Rule, "got [\"dev\"]"))),
        (KCK, NONE, NODE, &[SYSTEM_MASTERS], NONE, P256, NONE, true, Err((Rule, "requires O exactly"))),
        (KCK, NONE, "n1", NODES, NONE, P256, NONE, false, Err((Rule, "requires CN system:node:<name>; got \"n1\""))),
        (KCK, NONE, "system:node:", NODES, NONE, P256, NONE, false, Err((Rule, "requires CN"))),
        (KCK, NONE, "", NODES, NONE, P256, NONE, false, Err((Rule, "requires CN"))),
        (KCK, NONE, "System:Node:n1", NODES, NONE, P256, NONE, false, Err((Rule, "requires CN"))),
        (KCK, NONE, "system:nodes:n1", NODES, NONE, P256, NONE, false, Err((Rule, "requires CN"))),
        (KCK, NONE, NODE, NODES, &["DNS:n1"], P256, NONE, false, Err((Rule, "allows no subject alternative names"))),
        (KCK, NONE, NODE, NODES, &["IP:10.0.0.1"], P256, NONE, false, Err((Rule, "allows no subject"))),
        (KCK, NONE, NODE, NODES, &["IP:fd00::1"], P256, NONE, false, Err((Rule, "allows no subject"))),
        (KCK, NONE, NODE, NODES, &["email:n1@example.com"], P256, NONE, false, Err((Rule, "allows no subject"))),
        (KCK, NONE, NODE, NODES, &["URI:spiffe://c/n1"], P256, NONE, false, Err((Rule, "allows no subject"))),
        // The subject is checked before the SANs, the SANs before the usages.
        (KCK, NONE, "n1", NODES, &["DNS:n1"], P256, NONE, false, Err((Rule, "requires CN"))),
        (KCK, NONE, NODE, NODES, &["DNS:n1"], P256, &[SA], false, Err((Rule, "allows no subject"))),
    ];

    /// `ValidateKubeletServingCSR`.
    #[rustfmt::skip]
    const KUBELET_SERVING_ROWS: &[Row] = &[
        (KS, NONE, NODE, NODES, &["DNS:n1"], P256, NONE, false, Ok(SERVING_SORTED)),
        (KS, NONE, NODE, NODES, &["IP:10.0.0.1"], P256, NONE, false, Ok(SERVING_SORTED)),
        (KS, NONE, NODE, NODES, &["IP:fd00::1"], P256, NONE, false, Ok(SERVING_SORTED)),
        (KS, NONE, NODE, NODES, &["DNS:n1", "DNS:n1.example.com", "IP:10.0.0.1"], P256, NONE, false, Ok(SERVING_SORTED)),
        (KS, NONE, NODE, NODES, &["DNS:n1"], P256, &[DS, SA], false, Ok(&[DS, SA])),
        (KS, NONE, NODE, NODES, &["DNS:n1"], RSA, &[DS, SA], false, Ok(&[DS, SA])),
        (KS, NONE, NODE, NODES, &["DNS:n1"], RSA, &[SA, KE, DS], false, Ok(SERVING_SORTED)),
        (KS, NONE, NODE, NODES, &["DNS:n1"], "ECDSA-P384", &[DS, KE, SA], false, Ok(SERVING_SORTED)),
        (KS, NONE, NODE, NODES, &["DNS:n1"], "Ed25519", &[DS, SA], false, Ok(&[DS, SA])),
        (KS, NONE, NODE, NODES, &["DNS:n1"], P256, &[SA, DS, SA], false, Ok(&[DS, SA])),
        (KS, NONE, NODE, NODES, &["DNS:n1"], P256, &[DS, KE, SA, CA], false, Err((Usage, "requires exactly digital signature, (key encipherment,) server auth"))),
        (KS, NONE, NODE, NODES, &["DNS:n1"], P256, &[SA], false, Err((Usage, "requires exactly"))),
        (KS, NONE, NODE, NODES, &["DNS:n1"], P256, &[KE, SA], false, Err((Usage, "requires exactly"))),
        (KS, NONE, NODE, NODES, &["DNS:n1"], P256, &[DS, CA], false, Err((Usage, "server auth; got"))),
        (KS, NONE, NODE, NODES, &["DNS:n1"], P256, &[DS, SA, "any"], false, Err((Usage, "requires exactly"))),
        (KS, NONE, NODE, NODES, NONE, P256, NONE, false, Err((Rule, "requires at least one DNS or IP"))),
        (KS, NONE, NODE, NODES, &["email:n1@example.com"], P256, NONE, false, Err((Rule, "requires at least one DNS or IP"))),
        (KS, NONE, NODE, NODES, &["URI:spiffe://c/n1"], P256, NONE, false, Err((Rule, "requires at least one DNS or IP"))),
        (KS, NONE, NODE, NODES, &["DNS:n1", "email:n1@example.com"], P256, NONE, false, Err((Rule, "forbids email and URI"))),
        (KS, NONE, NODE, NODES, &["IP:10.0.0.1", "URI:spiffe://c/n1"], P256, NONE, false, Err((Rule, "forbids email and URI"))),
        (KS, NONE, NODE, &["dev"], &["DNS:n1"], P256, NONE, false, Err((Rule, "requires O exactly"))),
        (KS, NONE, NODE, NONE, &["DNS:n1"], P256, NONE, false, Err((Rule, "requires O exactly"))),
        (KS, NONE, "n1", NODES, &["DNS:n1"], P256, NONE, false, Err((Rule, "requires CN"))),
        (KS, NONE, "system:node:", NODES, &["DNS:n1"], P256, NONE, false, Err((Rule, "requires CN"))),
        // The subject is checked before the SANs, the SANs before the usages.
        (KS, NONE, NODE, &["dev"], NONE, P256, NONE, false, Err((Rule, "requires O exactly"))),
        (KS, NONE, NODE, NODES, NONE, P256, &[CA], false, Err((Rule, "requires at least one"))),
    ];

    /// `kubernetes.io/legacy-unknown` cannot be requested through certificates.k8s.io/v1.
    #[rustfmt::skip]
    const LEGACY_ROWS: &[Row] = &[
        (LEGACY_UNKNOWN, NONE, "jane", NONE, NONE, P256, NONE, false, Err((Rule, "cannot be requested through certificates.k8s.io/v1"))),
        (LEGACY_UNKNOWN, NONE, NODE, NODES, &["DNS:n1"], P256, &[DS, SA], true, Err((Rule, "legacy-unknown"))),
        (LEGACY_UNKNOWN, &[DS, CA], "jane", NONE, NONE, P256, &[CA], true, Err((Rule, "cannot be requested"))),
    ];

    /// Custom signers: no subject or SAN rule; usages as configured, within what kpki issues.
    #[rustfmt::skip]
    const CUSTOM_ROWS: &[Row] = &[
        (MESH, NONE, "api", NONE, NONE, P256, NONE, false, Ok(CLIENT_SORTED)),
        (MESH, NONE, "api", NONE, NONE, P256, &[SA], false, Ok(&[SA])),
        (MESH, NONE, "api", NONE, NONE, P256, &["code signing", "email protection", "timestamping", "ocsp signing", "any"], false, Ok(&["any", "code signing", "email protection", "ocsp signing", "timestamping"])),
        (MESH, NONE, "api", NONE, NONE, RSA, &["content commitment", "key agreement", "data encipherment"], false, Ok(&["content commitment", "data encipherment", "key agreement"])),
        (MESH, NONE, "api", NONE, NONE, P256, &[SA, SA], false, Ok(&[SA])),
        (MESH, NONE, "api", NONE, NONE, P256, &[DS, "cert sign"], false, Err((Usage, "usage \"cert sign\" would make a CA"))),
        (MESH, NONE, "api", NONE, NONE, P256, &["crl sign"], false, Err((Usage, "would make a CA"))),
        (MESH, NONE, "api", NONE, NONE, P256, &["signing"], false, Err((Usage, "unsupported usage \"signing\""))),
        (MESH, NONE, "api", NONE, NONE, P256, &["s/mime"], false, Err((Usage, "unsupported usage"))),
        (MESH, NONE, "api", NONE, NONE, P256, &["encipher only"], false, Err((Usage, "unsupported usage"))),
        (MESH, NONE, "api", NONE, NONE, P256, &["client-auth"], false, Err((Usage, "unsupported usage \"client-auth\""))),
        (MESH, NONE, "root", &[SYSTEM_MASTERS], NONE, P256, NONE, false, Ok(CLIENT_SORTED)),
        (MESH, NONE, "", NONE, &["DNS:a.svc", "IP:10.96.0.1", "email:a@example.com", "URI:spiffe://c/a"], P256, NONE, false, Ok(CLIENT_SORTED)),
        (MESH, NONE, NODE, NODES, NONE, P256, NONE, false, Ok(CLIENT_SORTED)),
        ("kubernetes.io/other", NONE, "api", NONE, NONE, P256, &[SA], false, Ok(&[SA])),
        // A configured list is the default and the most a request may ask.
        (MESH, &[DS, KE, SA, CA], "api", NONE, NONE, P256, NONE, false, Ok(&[CA, DS, KE, SA])),
        (MESH, &[DS, KE, SA, CA], "api", NONE, NONE, P256, &[SA], false, Ok(&[SA])),
        (MESH, &[DS, KE, SA, CA], "api", NONE, NONE, P256, &[DS, "code signing"], false, Err((Usage, "usage \"code signing\" is not allowed for signer \"example.com/mesh\" (allowed: digital signature, key encipherment, server auth, client auth)"))),
        (MESH, &[DS, "cert sign"], "api", NONE, NONE, P256, NONE, false, Err((Usage, "would make a CA"))),
        // Narrowing a built-in signer keeps its own rules.
        (KS, &[DS, SA], NODE, NODES, &["DNS:n1"], P256, NONE, false, Ok(&[DS, SA])),
        (KS, &[DS, SA], NODE, NODES, &["DNS:n1"], P256, &[DS, KE, SA], false, Err((Usage, "is not allowed for signer"))),
        (KAC, &[DS, KE, SA, CA], "jane", NONE, NONE, P256, NONE, false, Err((Usage, "requires \"client auth\" and allows only"))),
        (KCK, &[DS, CA], "n1", NODES, NONE, P256, NONE, false, Err((Rule, "requires CN"))),
    ];

    #[test]
    fn signer_rules_table() {
        let n = check(KUBE_APISERVER_CLIENT_ROWS)
            + check(KUBELET_CLIENT_ROWS)
            + check(KUBELET_SERVING_ROWS)
            + check(LEGACY_ROWS)
            + check(CUSTOM_ROWS);
        assert!(n >= 100, "{n} rows");
    }

    #[test]
    fn names_choose_signers_once() {
        use {SanRule as N, SubjectRule as S, UsageRule as U};
        let kubelet_client = U::ExactlyOneOf(&[CLIENT_USAGES, CLIENT_USAGES_NO_RSA]);
        let kubelet_serving = U::ExactlyOneOf(&[SERVING_USAGES, SERVING_USAGES_NO_RSA]);
        #[rustfmt::skip]
        let table: &[(&str, Kind, bool, U, S, N)] = &[
            (KAC, Kind::KubeApiserverClient, true, U::ClientAuth, S::NoSystemMasters, N::Any),
            (KCK, Kind::KubeletClient, true, kubelet_client, S::Node, N::None),
            (KS, Kind::KubeletServing, true, kubelet_serving, S::Node, N::DnsOrIp),
            (LEGACY_UNKNOWN, Kind::LegacyUnknown, false, U::Any, S::Any, N::Any),
            (MESH, Kind::Custom, false, U::Any, S::Any, N::Any),
            ("kubernetes.io/other", Kind::Custom, false, U::Any, S::Any, N::Any),
            ("Kubernetes.io/kubelet-serving", Kind::Custom, false, U::Any, S::Any, N::Any),
            ("kubernetes.io/kubelet-serving/", Kind::Custom, false, U::Any, S::Any, N::Any),
            ("", Kind::Custom, false, U::Any, S::Any, N::Any),
        ];
        for (name, kind, built_in, usages, subject, sans) in table {
            let s = KubeSigner::for_name(name);
            assert_eq!(s.name(), *name);
            assert_eq!(s.kind(), *kind, "{name}");
            assert_eq!(s.is_built_in(), *built_in, "{name}");
            assert_eq!(s.is_built_in(), BUILT_IN.contains(name), "{name}");
            assert_eq!(s.usage_rule(), *usages, "{name}");
            assert_eq!(s.subject_rule(), *subject, "{name}");
            assert_eq!(s.san_rule(), *sans, "{name}");
        }
    }

    #[test]
    fn default_usages_per_signer() {
        let table: &[(&str, &[&str], &[&str])] = &[
            (KAC, NONE, &[DS, KE, CA]),
            (KCK, NONE, &[DS, KE, CA]),
            (KS, NONE, &[DS, KE, SA]),
            (MESH, NONE, &[DS, KE, CA]),
            (MESH, &[SA], &[SA]),
            (KS, &[DS, SA], &[DS, SA]),
        ];
        for (name, configured, want) in table {
            let s = KubeSigner::for_name(name).with_usages(&strings(configured));
            assert_eq!(s.default_usages(), strings(want), "{name} {configured:?}");
        }
    }

    #[test]
    fn every_known_usage_is_issued_or_refused_by_name() {
        use {ExtendedKeyUsagePurpose as E, KeyUsagePurpose as K};
        let issued: &[(&str, Purpose)] = &[
            (DS, Purpose::Key(K::DigitalSignature)),
            ("content commitment", Purpose::Key(K::ContentCommitment)),
            (KE, Purpose::Key(K::KeyEncipherment)),
            ("key agreement", Purpose::Key(K::KeyAgreement)),
            ("data encipherment", Purpose::Key(K::DataEncipherment)),
            ("any", Purpose::Extended(E::Any)),
            (SA, Purpose::Extended(E::ServerAuth)),
            (CA, Purpose::Extended(E::ClientAuth)),
            ("code signing", Purpose::Extended(E::CodeSigning)),
            ("email protection", Purpose::Extended(E::EmailProtection)),
            ("timestamping", Purpose::Extended(E::TimeStamping)),
            ("ocsp signing", Purpose::Extended(E::OcspSigning)),
        ];
        let refused: &[(&str, &str)] = &[
            ("cert sign", "would make a CA"),
            ("crl sign", "would make a CA"),
            ("signing", "unsupported usage"),
            ("encipher only", "unsupported usage"),
            ("decipher only", "unsupported usage"),
            ("s/mime", "unsupported usage"),
            ("ipsec end system", "unsupported usage"),
            ("ipsec tunnel", "unsupported usage"),
            ("ipsec user", "unsupported usage"),
            ("microsoft sgc", "unsupported usage"),
            ("netscape sgc", "unsupported usage"),
        ];
        for (u, want) in issued {
            assert_eq!(purpose(u).map_err(|e| e.message), Ok(want.clone()), "{u}");
        }
        for (u, want) in refused {
            let e = purpose(u).expect_err(u);
            assert_eq!(e.refusal, Refusal::Usage, "{u}");
            assert!(e.message.contains(want), "{u}: {}", e.message);
        }
        let mut all: Vec<&str> = issued.iter().map(|r| r.0).collect();
        all.extend(refused.iter().map(|r| r.0));
        all.sort_unstable();
        let mut known = KNOWN_USAGES.to_vec();
        known.sort_unstable();
        assert_eq!(all, known, "every spec.usages value is classified once");
    }

    #[test]
    fn spec_usages_are_validated_as_the_api_server_does() {
        let v = |u: &[&str]| check_spec_usages(&strings(u)).map_err(|e| e.message);
        let good: &[&[&str]] = &[
            &[DS, CA],
            &["s/mime", "netscape sgc"],
            &[SA],
            &["cert sign"],
            KNOWN_USAGES,
        ];
        for usages in good {
            assert_eq!(v(usages), Ok(()), "{usages:?}");
        }
        #[rustfmt::skip]
        let bad: &[(&[&str], &str)] = &[
            (&[], "spec.usages: Required value"),
            (&[CA, CA], "spec.usages[1]: Duplicate value: \"client auth\""),
            (&[CA, DS, CA], "spec.usages[2]: Duplicate value: \"client auth\""),
            (&["client-auth"], "spec.usages[0]: Unsupported value: \"client-auth\""),
            (&["Client Auth"], "Unsupported value"),
            (&[DS, ""], "spec.usages[1]: Unsupported value: \"\""),
            (&[" client auth"], "Unsupported value"),
        ];
        for (usages, want) in bad {
            let e = v(usages).expect_err(want);
            assert!(e.contains(want), "{usages:?}: {e}");
        }
    }
}
