//! Signing PKCS#10 requests the way the Kubernetes CSR signers do (reference §6): proof of
//! possession, the signer's rules ([`crate::signers`]: subject, SANs, usages), validity from
//! `expirationSeconds` clipped to the CA, subject and SANs from the request, every other
//! requested extension dropped, and the public key taken from the request's
//! SubjectPublicKeyInfo (never from its signature algorithm).

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{CertificateParams, SanType};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::PkiError;
use crate::signers::{self, KubeSigner, Purpose};
use crate::subject::Subject;
use crate::x509::{self, CaSigner, Issued};

/// The signer names and the usage vocabulary; their home is [`crate::signers`].
pub use crate::signers::{KUBE_APISERVER_CLIENT, KUBE_APISERVER_CLIENT_KUBELET, KUBELET_SERVING};

/// The smallest `expirationSeconds` Kubernetes accepts.
pub(crate) const MIN_EXPIRATION_SECONDS: i64 = 600;

/// A signing request with the fields of a CertificateSigningRequest's spec.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// DER PKCS#10.
    pub csr_der: Vec<u8>,
    /// `spec.signerName`.
    pub signer_name: String,
    /// `spec.usages` (Kubernetes words); empty means the signer's defaults.
    pub usages: Vec<String>,
    /// `spec.expirationSeconds`.
    pub expiration_seconds: Option<i64>,
    /// Allow `O=system:masters` for kube-apiserver-client (refused by default).
    pub allow_system_masters: bool,
}

/// The CA that signs and the longest validity it grants.
pub struct Authority<'a> {
    /// The CA's issuer (which knows the CA certificate's NotAfter).
    pub signer: &'a CaSigner,
    /// `--cluster-signing-duration`.
    pub max_validity: Duration,
}

/// Why a request was refused; [`Refusal::code`] is a stable word for APIs and audit lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a well-formed PKCS#10 request, or a subject/SAN kpki cannot carry.
    Malformed,
    /// The request's key type or size is not accepted.
    UnsupportedKey,
    /// The request's own signature does not verify.
    ProofOfPossession,
    /// A built-in signer's subject or SAN rule.
    SignerRule,
    /// `O=system:masters` asked of kube-apiserver-client.
    SystemMasters,
    /// The usages asked are not allowed.
    Usage,
    /// The validity asked is not allowed.
    Validity,
    /// The CA can no longer sign.
    CaExpired,
}

impl Refusal {
    /// Stable code: `malformed_csr`, `unsupported_key`, `proof_of_possession`, `signer_rule`,
    /// `system_masters`, `usage`, `validity`, `ca_expired`.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed_csr",
            Refusal::UnsupportedKey => "unsupported_key",
            Refusal::ProofOfPossession => "proof_of_possession",
            Refusal::SignerRule => "signer_rule",
            Refusal::SystemMasters => "system_masters",
            Refusal::Usage => "usage",
            Refusal::Validity => "validity",
            Refusal::CaExpired => "ca_expired",
        }
    }
}

/// A refused request: why, and one line saying so.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CsrError {
    /// The kind of refusal.
    pub refusal: Refusal,
    /// One line naming the problem.
    pub message: String,
}

/// A request refused, or the CA's key failing.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request was refused.
    #[error(transparent)]
    Refused(#[from] CsrError),
    /// The CA's key could not sign.
    #[error(transparent)]
    Key(#[from] kpki_signer::KeyError),
}

impl From<x509::IssueError> for SignError {
    fn from(e: x509::IssueError) -> SignError {
        match e {
            x509::IssueError::Key(k) => SignError::Key(k),
            x509::IssueError::Names(m) => SignError::Refused(CsrError::new(Refusal::SignerRule, m)),
        }
    }
}

impl From<SignError> for PkiError {
    fn from(e: SignError) -> PkiError {
        match e {
            SignError::Refused(r) => r.into(),
            SignError::Key(k) => PkiError::Key(k),
        }
    }
}

impl CsrError {
    /// A refusal of kind `refusal` saying `msg`.
    pub(crate) fn new(refusal: Refusal, msg: impl Into<String>) -> CsrError {
        CsrError {
            refusal,
            message: msg.into(),
        }
    }
}

fn refusal(refusal: Refusal, msg: impl Into<String>) -> CsrError {
    CsrError::new(refusal, msg)
}

fn malformed(msg: impl Into<String>) -> CsrError {
    refusal(Refusal::Malformed, msg)
}

/// What a request asks for, once parsed, proven and checked against its signer's rules.
#[derive(Debug, Clone)]
pub struct Examined {
    /// The subject, every value in order.
    pub subject: Subject,
    /// O values (groups).
    pub orgs: Vec<String>,
    /// CN (empty when absent).
    pub cn: String,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// IP SANs.
    pub ips: Vec<IpAddr>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// The request's key, e.g. `RSA-2048`, `ECDSA-P256`, `Ed25519`.
    pub key: String,
    /// Usages (Kubernetes words) after the signer's defaults and rules.
    pub usages: Vec<String>,
    /// The request's SubjectPublicKeyInfo (DER).
    pub spki_der: Vec<u8>,
}

#[cfg(any(test, feature = "testing"))]
impl Examined {
    /// A request as examined, for the tables of rules (here and in the daemon's policy): CN,
    /// O values, SANs written as [`Examined::san_strings`] writes them, key name. Panics on a
    /// SAN it cannot read: the tables are code.
    #[allow(clippy::panic, clippy::expect_used)]
    pub fn sample(cn: &str, orgs: &[&str], sans: &[&str], key: &str) -> Examined {
        let orgs: Vec<String> = orgs.iter().map(|s| s.to_string()).collect();
        let mut e = Examined {
            subject: Subject::groups_then_name(&orgs, cn),
            orgs,
            cn: cn.to_string(),
            dns: vec![],
            ips: vec![],
            emails: vec![],
            uris: vec![],
            key: key.to_string(),
            usages: vec![],
            spki_der: vec![],
        };
        for san in sans {
            match san.split_once(':') {
                Some(("DNS", v)) => e.dns.push(v.into()),
                Some(("IP", v)) => e.ips.push(v.parse().expect("an IP address in the table")),
                Some(("email", v)) => e.emails.push(v.into()),
                Some(("URI", v)) => e.uris.push(v.into()),
                _ => panic!("bad SAN in table: {san}"),
            }
        }
        e
    }
}

impl Examined {
    /// SANs as `DNS:…`, `IP:…`, `email:…`, `URI:…`.
    pub fn san_strings(&self) -> Vec<String> {
        let mut v: Vec<String> = self.dns.iter().map(|d| format!("DNS:{d}")).collect();
        v.extend(self.ips.iter().map(|i| format!("IP:{i}")));
        v.extend(self.emails.iter().map(|e| format!("email:{e}")));
        v.extend(self.uris.iter().map(|u| format!("URI:{u}")));
        v
    }
}

fn parse_request(csr: &X509CertificationRequest<'_>) -> Result<Examined, CsrError> {
    let (subject, dropped) = Subject::from_name(&csr.certification_request_info.subject);
    if !dropped.is_empty() {
        tracing::info!(attributes = ?dropped, "subject attributes dropped as the Kubernetes signers drop them");
    }
    let cn = subject
        .single_cn()
        .map_err(|e| malformed(e.to_string()))?
        .to_string();
    let orgs = subject.orgs();
    let mut req = Examined {
        subject,
        orgs,
        cn,
        dns: vec![],
        ips: vec![],
        emails: vec![],
        uris: vec![],
        key: String::new(),
        usages: vec![],
        spki_der: csr.certification_request_info.subject_pki.raw.to_vec(),
    };
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            // Only SANs are honoured; key usages, basic constraints and the rest are dropped.
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => req.dns.push(d.to_string()),
                        GeneralName::RFC822Name(e) => req.emails.push(e.to_string()),
                        GeneralName::URI(u) => req.uris.push(u.to_string()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => req
                                .ips
                                .extend(<[u8; 4]>::try_from(*b).ok().map(IpAddr::from)),
                            16 => req
                                .ips
                                .extend(<[u8; 16]>::try_from(*b).ok().map(IpAddr::from)),
                            _ => return Err(malformed("malformed IP address SAN")),
                        },
                        other => return Err(malformed(format!("unsupported SAN type {other:?}"))),
                    }
                }
            }
        }
    }
    Ok(req)
}

/// Checks the key the request carries (RSA ≥ 2048, EC P-256/P-384, or Ed25519) and names it.
fn check_key(csr: &X509CertificationRequest<'_>) -> Result<String, CsrError> {
    let bad = |msg: String| refusal(Refusal::UnsupportedKey, msg);
    let spki = &csr.certification_request_info.subject_pki;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => Ok(format!("RSA-{}", rsa.key_size())),
        Ok(PublicKey::RSA(rsa)) => Err(bad(format!(
            "unsupported key size RSA-{} (at least 2048 bits)",
            rsa.key_size()
        ))),
        Ok(PublicKey::EC(_)) => {
            let params = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match params.as_deref() {
                Some("1.2.840.10045.3.1.7") => Ok("ECDSA-P256".into()),
                Some("1.3.132.0.34") => Ok("ECDSA-P384".into()),
                other => Err(bad(format!(
                    "unsupported EC curve {}",
                    other.unwrap_or("(none)")
                ))),
            }
        }
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => Ok("Ed25519".into()),
        _ => Err(bad(format!(
            "unsupported public key algorithm {}",
            spki.algorithm.algorithm.to_id_string()
        ))),
    }
}

fn apply_usages(p: &mut CertificateParams, usages: &[String]) -> Result<(), CsrError> {
    for u in usages {
        match signers::purpose(u)? {
            Purpose::Key(k) => p.key_usages.push(k),
            Purpose::Extended(e) => p.extended_key_usages.push(e),
        }
    }
    Ok(())
}

/// Parses `request`, checks its key, its proof of possession and the rules of the signer
/// its `signer_name` chooses.
pub fn examine(request: &SignRequest) -> Result<Examined, CsrError> {
    examine_for(&KubeSigner::for_name(&request.signer_name), request)
}

/// Parses `request`, checks its key, its proof of possession and `signer`'s rules (chosen
/// by the caller, e.g. narrowed to configured usages; `request.signer_name` is not read).
pub fn examine_for(signer: &KubeSigner, request: &SignRequest) -> Result<Examined, CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(&request.csr_der)
        .map_err(|e| malformed(format!("malformed certificate request ({e})")))?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes after the certificate request"));
    }
    let key = check_key(&csr)?;
    csr.verify_signature().map_err(|_| {
        refusal(
            Refusal::ProofOfPossession,
            "the request's signature does not verify (no proof of possession of its key)",
        )
    })?;
    let mut req = parse_request(&csr)?;
    crate::names::check(&req.dns, &req.emails, &req.uris).map_err(malformed)?;
    req.key = key;
    req.usages = signer.validate(request, &req)?;
    Ok(req)
}

/// The NotAfter a request gets: `expirationSeconds` (≥ 600) or the authority's maximum,
/// back-dated like the Kubernetes signer, clipped to the CA's NotAfter.
pub fn not_after(
    request: &SignRequest,
    authority: &Authority<'_>,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, CsrError> {
    let ca_not_after = authority.signer.ca_not_after();
    if ca_not_after <= now {
        return Err(refusal(
            Refusal::CaExpired,
            "the CA certificate has expired; it cannot sign",
        ));
    }
    let mut ttl = authority.max_validity;
    if let Some(secs) = request.expiration_seconds {
        if secs < MIN_EXPIRATION_SECONDS {
            return Err(refusal(
                Refusal::Validity,
                format!(
                    "expirationSeconds {secs} is below the minimum of {MIN_EXPIRATION_SECONDS}"
                ),
            ));
        }
        ttl = ttl.min(Duration::from_secs(secs.unsigned_abs()));
    }
    let now = x509::whole_seconds(now);
    let not_after = if ttl >= Duration::from_secs(8 * 3600) {
        now + ttl - x509::BACKDATE
    } else {
        now + ttl
    };
    Ok(not_after.min(ca_not_after))
}

/// Signs `request` with `authority` at time `now` under the signer rules.
pub fn sign(
    request: &SignRequest,
    authority: &Authority<'_>,
    now: OffsetDateTime,
) -> Result<Issued, PkiError> {
    let examined = examine(request)?;
    let not_after = not_after(request, authority, now)?;
    Ok(issue(&examined, authority, now, not_after)?.cert)
}

/// A certificate issued for a request, with the serial and NotAfter it was given.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate.
    pub cert: Issued,
    /// Its serial (big-endian, positive).
    pub serial: Vec<u8>,
    /// Its NotAfter.
    pub not_after: OffsetDateTime,
}

/// Issues the certificate for an examined request, valid from `now` − 5 min to `not_after`.
pub fn issue(
    req: &Examined,
    authority: &Authority<'_>,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Leaf, SignError> {
    let now = x509::whole_seconds(now);
    let mut p = CertificateParams::default();
    for d in &req.dns {
        p.subject_alt_names.push(SanType::DnsName(
            d.as_str()
                .try_into()
                .map_err(|e| malformed(format!("DNS SAN {d:?}: {e}")))?,
        ));
    }
    for ip in &req.ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    for e in &req.emails {
        p.subject_alt_names.push(SanType::Rfc822Name(
            e.as_str()
                .try_into()
                .map_err(|err| malformed(format!("email SAN {e:?}: {err}")))?,
        ));
    }
    for u in &req.uris {
        p.subject_alt_names.push(SanType::URI(
            u.as_str()
                .try_into()
                .map_err(|err| malformed(format!("URI SAN {u:?}: {err}")))?,
        ));
    }
    apply_usages(&mut p, &req.usages)?;
    x509::mark_leaf(&mut p);
    let serial = x509::random_serial_128()?;
    p.serial_number = Some(serial.clone());
    p.not_before = now - x509::BACKDATE;
    p.not_after = not_after;
    // The key comes from the request's SubjectPublicKeyInfo (curve included), not from its
    // signature algorithm: a P-384 key signed with SHA-256 stays a P-384 key.
    let public = rcgen::SubjectPublicKeyInfo::from_der(&req.spki_der)
        .map_err(|e| malformed(format!("request public key: {e}")))?;
    let cert = authority
        .signer
        .issue_with(x509::Draft::new(p, req.subject.clone()), &public)?;
    Ok(Leaf {
        cert,
        serial: serial.to_bytes(),
        not_after: x509::whole_seconds(not_after),
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{DistinguishedName, DnType, KeyPair, SignatureAlgorithm};

    use super::*;
    use crate::signers::{KUBE_APISERVER_CLIENT as KAC, KUBE_APISERVER_CLIENT_KUBELET as KCK};
    use crate::signers::{KUBELET_SERVING as KS, LEGACY_UNKNOWN};

    const DS: &str = "digital signature";
    const KE: &str = "key encipherment";
    const CA: &str = "client auth";
    const SA: &str = "server auth";
    const NONE: &[&str] = &[];
    const NODE: &str = "system:node:n1";
    const NODES: &[&str] = &["system:nodes"];

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn algorithm(key: &str) -> &'static SignatureAlgorithm {
        match key {
            "ECDSA-P256" => &rcgen::PKCS_ECDSA_P256_SHA256,
            "ECDSA-P384" => &rcgen::PKCS_ECDSA_P384_SHA384,
            "Ed25519" => &rcgen::PKCS_ED25519,
            other => panic!("no generator for {other} in this table"),
        }
    }

    /// A PKCS#10 request signed by a fresh key of kind `key`.
    fn request_der(cn: &str, orgs: &[&str], sans: &[&str], key: &str) -> Vec<u8> {
        let requester = KeyPair::generate_for(algorithm(key)).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        for san in sans {
            let name = match san.split_once(':') {
                Some(("DNS", v)) => SanType::DnsName(v.try_into().unwrap()),
                Some(("IP", v)) => SanType::IpAddress(v.parse().unwrap()),
                Some(("email", v)) => SanType::Rfc822Name(v.try_into().unwrap()),
                Some(("URI", v)) => SanType::URI(v.try_into().unwrap()),
                _ => panic!("bad SAN in table: {san}"),
            };
            params.subject_alt_names.push(name);
        }
        params.serialize_request(&requester).unwrap().der().to_vec()
    }

    fn sign_request(csr_der: Vec<u8>, signer: &str, usages: &[&str]) -> SignRequest {
        SignRequest {
            csr_der,
            signer_name: signer.into(),
            usages: strings(usages),
            expiration_seconds: None,
            allow_system_masters: false,
        }
    }

    /// Real requests through `examine_for`: signer, configured usages, CN, O values, SANs,
    /// key, asked usages, and the usages granted or the refusal.
    #[rustfmt::skip]
    #[allow(clippy::type_complexity)]
    const ROWS: &[(&str, &[&str], &str, &[&str], &[&str], &str, &[&str], Result<&[&str], Refusal>)] = &[
        (KAC, NONE, "jane", &["dev"], NONE, "ECDSA-P256", NONE, Ok(&[CA, DS, KE])),
        (KAC, NONE, "root", &["system:masters"], NONE, "ECDSA-P256", NONE, Err(Refusal::SystemMasters)),
        (KAC, NONE, "jane", NONE, NONE, "Ed25519", &[DS, SA], Err(Refusal::Usage)),
        (KCK, NONE, NODE, NODES, NONE, "ECDSA-P384", &[DS, CA], Ok(&[CA, DS])),
        (KCK, NONE, NODE, NODES, &["IP:10.0.0.1"], "ECDSA-P256", NONE, Err(Refusal::SignerRule)),
        (KS, NONE, NODE, NODES, &["DNS:n1", "IP:10.0.0.1", "IP:fd00::1"], "ECDSA-P256", NONE, Ok(&[DS, KE, SA])),
        (KS, NONE, NODE, NODES, &["DNS:n1", "email:n1@example.com"], "ECDSA-P256", NONE, Err(Refusal::SignerRule)),
        (KS, NONE, NODE, NODES, &["URI:spiffe://c/n1"], "ECDSA-P256", NONE, Err(Refusal::SignerRule)),
        (KS, NONE, NODE, NODES, NONE, "ECDSA-P256", NONE, Err(Refusal::SignerRule)),
        (KS, NONE, "n1", NODES, &["DNS:n1"], "ECDSA-P256", NONE, Err(Refusal::SignerRule)),
        (LEGACY_UNKNOWN, NONE, "jane", NONE, NONE, "ECDSA-P256", NONE, Err(Refusal::SignerRule)),
        ("example.com/mesh", NONE, "api", NONE, &["DNS:api.svc", "URI:spiffe://c/api"], "Ed25519", &[SA, "code signing"], Ok(&["code signing", SA])),
        ("example.com/mesh", &[DS, SA], "api", NONE, NONE, "ECDSA-P256", &[CA], Err(Refusal::Usage)),
        ("example.com/mesh", &[DS, SA], "api", NONE, NONE, "ECDSA-P256", NONE, Ok(&[DS, SA])),
        ("example.com/mesh", NONE, "api", NONE, NONE, "ECDSA-P256", &["cert sign"], Err(Refusal::Usage)),
    ];

    #[test]
    fn real_requests_meet_their_signers_rules() {
        for (i, row) in ROWS.iter().enumerate() {
            let (signer, configured, cn, orgs, sans, key, usages, want) = *row;
            let request = sign_request(request_der(cn, orgs, sans, key), signer, usages);
            let chosen = KubeSigner::for_name(signer).with_usages(&strings(configured));
            match (want, examine_for(&chosen, &request)) {
                (Ok(want), Ok(e)) => {
                    assert_eq!(e.usages, strings(want), "row {i}");
                    assert_eq!(e.cn, cn, "row {i}");
                    assert_eq!(e.orgs, strings(orgs), "row {i}");
                    assert_eq!(e.key, key, "row {i}");
                    assert_eq!(e.san_strings(), strings(sans), "row {i}");
                }
                (Err(want), Err(e)) => assert_eq!(e.refusal, want, "row {i}: {}", e.message),
                (want, got) => panic!("row {i}: want {want:?}, got {got:?}"),
            }
            if configured.is_empty() {
                let plain = examine(&request).map(|e| e.usages).map_err(|e| e.refusal);
                assert_eq!(
                    plain,
                    want.map(strings),
                    "row {i}: examine chooses the same signer"
                );
            }
        }
    }

    #[test]
    fn requests_are_proven_and_well_formed() {
        let good = request_der("jane", NONE, NONE, "ECDSA-P256");
        let mut tampered = good.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let mut trailing = good.clone();
        trailing.push(0);
        let cases: &[(Vec<u8>, Refusal, &str)] = &[
            (tampered, Refusal::ProofOfPossession, "does not verify"),
            (trailing, Refusal::Malformed, "trailing bytes"),
            (
                b"not DER".to_vec(),
                Refusal::Malformed,
                "malformed certificate request",
            ),
            (vec![], Refusal::Malformed, "malformed certificate request"),
        ];
        for (der, refusal, fragment) in cases {
            let e = examine(&sign_request(der.clone(), KAC, NONE)).expect_err(fragment);
            assert_eq!(e.refusal, *refusal, "{}", e.message);
            assert!(e.message.contains(fragment), "{}", e.message);
        }
        assert!(examine(&sign_request(good, KAC, NONE)).is_ok());
    }
}
