//! Certificate profiles as kubeadm produces them (reference §1.4) and issuance through any
//! [`Signer`]: CA and leaf parameters, random serials, one start time per run.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use kpki_signer::{KeyError, RcgenSigner, Signer, spki};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::catalogue::Usage;
use crate::constraints::{self, NameRules};
use crate::sans::AltNames;
use crate::subject::{self, Subject};

/// kubeadm back-dates NotBefore by five minutes.
pub(crate) const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// What goes into a certificate's subject and extensions.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    /// Subject CN.
    pub cn: String,
    /// Subject O values (kubeadm's catalogue has at most one).
    pub orgs: Vec<String>,
    /// Extended key usages.
    pub usages: Vec<Usage>,
    /// SANs.
    pub sans: AltNames,
}

/// A random serial in kubeadm's range [1, 2^63 − 2].
pub(crate) fn random_serial() -> Result<SerialNumber, KeyError> {
    let rng = SystemRandom::new();
    loop {
        let mut b = [0u8; 8];
        rng.fill(&mut b)
            .map_err(|_| KeyError::Crypto("no randomness for a serial".into()))?;
        let v = u64::from_be_bytes(b) & 0x7fff_ffff_ffff_ffff;
        if v != 0 && v != 0x7fff_ffff_ffff_ffff {
            let bytes = v.to_be_bytes();
            let first = bytes.iter().position(|x| *x != 0).unwrap_or(7);
            return Ok(SerialNumber::from_slice(&bytes[first..]));
        }
    }
}

/// Truncates to whole seconds (X.509 times carry no fractions).
pub(crate) fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn validity(p: &mut CertificateParams, start: OffsetDateTime, period: Duration) {
    p.not_before = start - BACKDATE;
    p.not_after = start + period;
}

/// The subject key identifier kubeadm's Go writes: SHA-1 of the subjectPublicKey bits.
pub fn subject_key_id(spki_der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let bits = spki::subject_public_key(spki_der)?;
    Ok(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &bits)
        .as_ref()
        .to_vec())
}

/// Parameters of a self-signed CA certificate (`CN=<cn>`, DNS SAN = CN, SKID, CA:TRUE).
pub fn ca_params(
    cn: &str,
    ca_spki: &[u8],
    start: OffsetDateTime,
    period: Duration,
) -> Result<CertificateParams, KeyError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, crate::subject::dn_value(cn));
    p.subject_alt_names =
        vec![SanType::DnsName(cn.try_into().map_err(|e| {
            KeyError::Crypto(format!("CA name {cn:?}: {e}"))
        })?)];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    p.key_identifier_method = KeyIdMethod::PreSpecified(subject_key_id(ca_spki)?);
    p.serial_number = Some(random_serial()?);
    validity(&mut p, start, period);
    Ok(p)
}

/// What to issue: rcgen's parameters and the full subject (which may hold several values of
/// one attribute, which rcgen cannot).
#[derive(Debug)]
pub struct Draft {
    /// Extensions, validity, serial; the DN holds the subject's first value of each attribute.
    pub params: CertificateParams,
    /// The subject the certificate carries.
    pub subject: Subject,
}

impl Draft {
    /// A draft whose DN is set from `subject`.
    pub fn new(mut params: CertificateParams, subject: Subject) -> Draft {
        params.distinguished_name = subject.to_rcgen();
        Draft { params, subject }
    }
}

/// Parameters of a leaf: O values then CN, KU digitalSignature+keyEncipherment, the profile's
/// EKUs, BasicConstraints CA:FALSE (critical), AKID, no SKID.
pub(crate) fn leaf_params(
    profile: &Profile,
    start: OffsetDateTime,
    period: Duration,
) -> Result<Draft, KeyError> {
    let mut p = CertificateParams::default();
    for name in &profile.sans.dns {
        p.subject_alt_names.push(SanType::DnsName(
            name.as_str()
                .try_into()
                .map_err(|e| KeyError::Crypto(format!("DNS SAN {name:?}: {e}")))?,
        ));
    }
    for ip in &profile.sans.ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    mark_leaf(&mut p);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = profile
        .usages
        .iter()
        .map(|u| match u {
            Usage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    p.serial_number = Some(random_serial()?);
    validity(&mut p, start, period);
    Ok(Draft::new(
        p,
        Subject::groups_then_name(&profile.orgs, &profile.cn),
    ))
}

/// Makes `p` a leaf as Go writes them: BasicConstraints CA:FALSE (critical, present), no
/// SKID, an AKID naming the issuer's key.
pub(crate) fn mark_leaf(p: &mut CertificateParams) {
    p.is_ca = IsCa::NoCa;
    let mut bc = CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    bc.set_criticality(true);
    p.custom_extensions.push(bc);
    p.use_authority_key_identifier_extension = true;
}

/// A random positive 128-bit serial, as the Kubernetes CSR signer issues.
pub(crate) fn random_serial_128() -> Result<SerialNumber, KeyError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| KeyError::Crypto("no randomness for a serial".into()))?;
    b[0] &= 0x7f;
    b[0] |= 0x01; // positive and never zero
    Ok(SerialNumber::from_slice(&b))
}

/// `der` as one PEM block of type `tag`, LF line endings (as kubeadm writes files).
pub fn to_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// An issued certificate in both encodings.
#[derive(Debug, Clone)]
pub struct Issued {
    /// DER.
    pub der: Vec<u8>,
    /// PEM (LF line endings).
    pub pem: String,
}

impl From<rcgen::Certificate> for Issued {
    fn from(c: rcgen::Certificate) -> Issued {
        Issued {
            pem: c.pem(),
            der: c.der().to_vec(),
        }
    }
}

/// Self-signs a CA certificate with its key.
pub fn self_sign(params: CertificateParams, key: Arc<dyn Signer>) -> Result<Issued, KeyError> {
    let signer = RcgenSigner::new(key)?;
    params
        .self_signed(&signer)
        .map(Issued::from)
        .map_err(|e| signer.explain(e))
}

/// A CA that signs: its name and key identifier (read once from its certificate) and its key
/// on any backend.
///
/// rcgen lays the certificate out; the issuer and subject names are then written in from the
/// CA certificate's own subject bytes and the full [`Subject`], and the result is signed once.
/// rcgen's own issuer name (re-encoded from the CA certificate, one value per attribute type)
/// never reaches a certificate: a CA named `DC=com, DC=example, CN=k8s-ca` would otherwise
/// issue certificates whose issuer is not its subject.
pub struct CaSigner {
    key: RcgenSigner,
    /// The CA certificate's subject, DER, exactly as encoded there.
    issuer_name: Vec<u8>,
    /// The CA's subject key identifier (the leaves' AKID).
    key_id: KeyIdMethod,
    /// The name constraints of the CA and of the issuers above it (see `chain`).
    names: Vec<NameRules>,
    /// The CA certificate's NotAfter, which no certificate it issues outlives.
    not_after: OffsetDateTime,
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CA's key could not sign, or the certificate could not be laid out.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A SAN lies outside the name constraints of the CA or of an issuer above it.
    #[error("{0}")]
    Names(String),
}

impl From<IssueError> for crate::PkiError {
    fn from(e: IssueError) -> crate::PkiError {
        match e {
            IssueError::Key(k) => crate::PkiError::Key(k),
            IssueError::Names(m) => crate::PkiError::Refused(m),
        }
    }
}

/// The CA key as rcgen sees it while laying a certificate out: its algorithm and public key,
/// and an empty signature (the one real signature is made over the final TBS).
struct Layout<'a>(&'a RcgenSigner);

impl rcgen::PublicKeyData for Layout<'_> {
    fn der_bytes(&self) -> &[u8] {
        rcgen::PublicKeyData::der_bytes(self.0)
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        rcgen::PublicKeyData::algorithm(self.0)
    }
}

impl rcgen::SigningKey for Layout<'_> {
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(Vec::new())
    }
}

impl CaSigner {
    /// A signer for the CA certificate `cert_der` whose key is `key`.
    pub fn new(cert_der: &[u8], key: Arc<dyn Signer>) -> Result<CaSigner, KeyError> {
        let (_, ca) = X509Certificate::from_der(cert_der)
            .map_err(|e| KeyError::Crypto(format!("CA certificate: {e}")))?;
        let skid = ca
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        let names = NameRules::of(&ca)
            .map_err(KeyError::Crypto)?
            .into_iter()
            .collect();
        Ok(CaSigner {
            key: RcgenSigner::new(key)?,
            issuer_name: ca.tbs_certificate.subject.as_raw().to_vec(),
            key_id: skid.map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified),
            names,
            not_after: ca.validity().not_after.to_datetime(),
        })
    }

    /// The same signer, also bound by the name constraints of the issuers above the CA
    /// (`chain`, the CA's `<base>-chain.crt`; the CA certificate is `cert_der`).
    pub(crate) fn within_chain(
        mut self,
        cert_der: &[u8],
        chain: &[Vec<u8>],
    ) -> Result<CaSigner, crate::PkiError> {
        self.names = crate::chain::name_rules(cert_der, chain)?;
        Ok(self)
    }

    /// The CA certificate's NotAfter.
    pub fn ca_not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The CA certificate's subject (DER), which every certificate it issues names as issuer.
    #[cfg(test)]
    pub(crate) fn issuer_name(&self) -> &[u8] {
        &self.issuer_name
    }

    /// Refuses `sans` when a name constraint of the CA, or of an issuer above it, excludes
    /// one (the check issuance makes, for callers that check before writing anything).
    pub(crate) fn permits(&self, sans: &AltNames) -> Result<(), IssueError> {
        constraints::check_all(&self.names, &constraints::of_alt_names(sans))
            .map_err(IssueError::Names)
    }

    /// Issues a certificate for the public key `public` from `draft`.
    pub(crate) fn issue_with(
        &self,
        draft: Draft,
        public: &impl rcgen::PublicKeyData,
    ) -> Result<Issued, IssueError> {
        constraints::check_all(&self.names, &constraints::sans_of_params(&draft.params))
            .map_err(IssueError::Names)?;
        let mut params = CertificateParams::default();
        params.key_identifier_method = self.key_id.clone();
        let layout = Issuer::new(params, Layout(&self.key));
        let laid_out = draft
            .params
            .signed_by(public, &layout)
            .map_err(|e| KeyError::Crypto(format!("laying out the certificate: {e}")))?;
        let parts = subject::rewrite_names(laid_out.der(), &self.issuer_name, &draft.subject)?;
        let signature =
            rcgen::SigningKey::sign(&self.key, &parts.tbs).map_err(|e| self.key.explain(e))?;
        let der = parts.assemble(&signature)?;
        let pem = to_pem("CERTIFICATE", &der);
        Ok(Issued { der, pem })
    }

    /// Issues a certificate for `subject_key` from `draft`.
    pub fn issue(&self, draft: Draft, subject_key: Arc<dyn Signer>) -> Result<Issued, IssueError> {
        let public = RcgenSigner::new(subject_key)?;
        self.issue_with(draft, &public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpki_signer::{KeyAlgorithm, KeyUri};

    /// `DC=com, DC=example, CN=k8s-ca` as OpenSSL encodes it (IA5String DCs, UTF8String CN).
    const DC_NAME: &[u8] = &[
        48, 63, 49, 19, 48, 17, 6, 10, 9, 146, 38, 137, 147, 242, 44, 100, 1, 25, 22, 3, 99, 111,
        109, 49, 23, 48, 21, 6, 10, 9, 146, 38, 137, 147, 242, 44, 100, 1, 25, 22, 7, 101, 120, 97,
        109, 112, 108, 101, 49, 15, 48, 13, 6, 3, 85, 4, 3, 12, 6, 107, 56, 115, 45, 99, 97,
    ];

    fn key(alg: KeyAlgorithm) -> Arc<dyn Signer> {
        Arc::new(
            kpki_soft::SoftKey::generate(KeyUri::file("/dev/null"), alg)
                .unwrap()
                .0,
        )
    }

    /// A self-signed CA whose subject and issuer are `name` (raw DER).
    fn ca_named(name: &[u8], key: &Arc<dyn Signer>) -> Vec<u8> {
        let start = whole_seconds(OffsetDateTime::now_utc());
        let params = ca_params("k8s-ca", key.public_key_spki(), start, BACKDATE * 100).unwrap();
        let plain = self_sign(params, Arc::clone(key)).unwrap();
        let parts = subject::replace_names(&plain.der, name, name).unwrap();
        let signature = key.sign(&parts.tbs).unwrap();
        parts.assemble(&signature).unwrap()
    }

    #[test]
    fn issuer_is_the_ca_subject_byte_for_byte() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let ca_key = key(alg);
            let ca_der = ca_named(DC_NAME, &ca_key);
            let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
            assert_eq!(ca.tbs_certificate.subject.as_raw(), DC_NAME);
            let signer = CaSigner::new(&ca_der, Arc::clone(&ca_key)).unwrap();
            assert_eq!(signer.issuer_name(), DC_NAME);
            let profile = Profile {
                cn: "kube-apiserver-kubelet-client".into(),
                orgs: vec!["kubeadm:cluster-admins".into(), "second".into()],
                usages: vec![Usage::ClientAuth],
                sans: AltNames::default(),
            };
            let start = whole_seconds(OffsetDateTime::now_utc());
            let draft = leaf_params(&profile, start, BACKDATE * 10).unwrap();
            let leaf = signer.issue(draft, key(KeyAlgorithm::EcdsaP256)).unwrap();
            let (_, cert) = X509Certificate::from_der(&leaf.der).unwrap();
            assert_eq!(cert.tbs_certificate.issuer.as_raw(), DC_NAME, "{alg}");
            assert_eq!(
                cert.subject().to_string(),
                "O=kubeadm:cluster-admins, O=second, CN=kube-apiserver-kubelet-client"
            );
            cert.verify_signature(Some(ca.public_key())).unwrap();
            // The AKID is the CA's SKID.
            let skid = ca
                .iter_extensions()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                    _ => None,
                });
            let akid = cert
                .iter_extensions()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::AuthorityKeyIdentifier(a) => {
                        a.key_identifier.as_ref().map(|k| k.0.to_vec())
                    }
                    _ => None,
                });
            assert!(skid.is_some());
            assert_eq!(akid, skid);
        }
    }

    #[test]
    fn issuance_keeps_to_the_name_constraints_of_the_ca() {
        let ca_key = key(KeyAlgorithm::EcdsaP256);
        let start = whole_seconds(OffsetDateTime::now_utc());
        let mut params =
            ca_params("k8s-ca", ca_key.public_key_spki(), start, BACKDATE * 100).unwrap();
        params.subject_alt_names.clear();
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.com".into())],
            excluded_subtrees: vec![rcgen::GeneralSubtree::DnsName("bad.example.com".into())],
        });
        let ca_der = self_sign(params, Arc::clone(&ca_key)).unwrap().der;
        let signer = CaSigner::new(&ca_der, ca_key).unwrap();
        // (DNS SAN, issued)
        for (dns, issued) in [
            ("api.example.com", true),
            ("example.com", true),
            ("kubernetes", false),
            ("x.bad.example.com", false),
        ] {
            let profile = Profile {
                cn: "kube-apiserver".into(),
                orgs: vec![],
                usages: vec![Usage::ServerAuth],
                sans: AltNames {
                    dns: vec![dns.into()],
                    ips: vec![],
                },
            };
            let draft = leaf_params(&profile, start, BACKDATE * 10).unwrap();
            let got = signer.issue(draft, key(KeyAlgorithm::EcdsaP256));
            assert_eq!(
                signer.permits(&profile.sans).is_ok(),
                issued,
                "{dns}: permits"
            );
            match got {
                Ok(_) => assert!(issued, "{dns}: issued"),
                Err(IssueError::Names(m)) => {
                    assert!(!issued, "{dns}: {m}");
                    assert!(
                        m.starts_with(&format!(
                            "DNS name {dns} is outside the name constraints of CA CN=k8s-ca"
                        )),
                        "{m}"
                    );
                }
                Err(e) => panic!("{dns}: {e}"),
            }
        }
    }

    /// The daemon's and `kpki sign`'s path (`csr::examine` + `csr::issue`) under the same CA.
    #[test]
    fn requests_signed_by_a_dc_ca_name_its_exact_subject() {
        let ca_key = key(KeyAlgorithm::Rsa2048);
        let ca_der = ca_named(DC_NAME, &ca_key);
        let signer = CaSigner::new(&ca_der, Arc::clone(&ca_key)).unwrap();
        let requester = rcgen::KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "jane");
        let csr_der = params.serialize_request(&requester).unwrap().der().to_vec();
        let request = crate::csr::SignRequest {
            csr_der,
            signer_name: crate::csr::KUBE_APISERVER_CLIENT.into(),
            usages: vec![],
            expiration_seconds: None,
            allow_system_masters: false,
        };
        let authority = crate::csr::Authority {
            signer: &signer,
            max_validity: BACKDATE * 100,
        };
        let now = OffsetDateTime::now_utc();
        let examined = crate::csr::examine(&request).unwrap();
        let not_after = crate::csr::not_after(&request, &authority, now).unwrap();
        let leaf = crate::csr::issue(&examined, &authority, now, not_after).unwrap();
        let (_, cert) = X509Certificate::from_der(&leaf.cert.der).unwrap();
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(cert.tbs_certificate.issuer.as_raw(), DC_NAME);
        assert_eq!(cert.subject().to_string(), "CN=jane");
        cert.verify_signature(Some(ca.public_key())).unwrap();
    }
}
