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

use crate::catalogue::Usage;
use crate::sans::AltNames;
use crate::subject::{self, Subject};

/// kubeadm back-dates NotBefore by five minutes.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// What goes into a certificate's subject and extensions.
#[derive(Debug, Clone)]
pub struct Profile {
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
pub fn random_serial() -> Result<SerialNumber, KeyError> {
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
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
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
    p.distinguished_name.push(DnType::CommonName, cn);
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
pub fn leaf_params(
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
pub fn mark_leaf(p: &mut CertificateParams) {
    p.is_ca = IsCa::NoCa;
    let mut bc = CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    bc.set_criticality(true);
    p.custom_extensions.push(bc);
    p.use_authority_key_identifier_extension = true;
}

/// A random positive 128-bit serial, as the Kubernetes CSR signer issues.
pub fn random_serial_128() -> Result<SerialNumber, KeyError> {
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

/// A CA that signs: its certificate (parsed once) and its key on any backend.
pub struct CaSigner {
    issuer: Issuer<'static, RcgenSigner>,
}

impl CaSigner {
    /// A signer for the CA certificate `cert_der` whose key is `key`.
    pub fn new(cert_der: &[u8], key: Arc<dyn Signer>) -> Result<CaSigner, KeyError> {
        let issuer = Issuer::from_ca_cert_der(&cert_der.into(), RcgenSigner::new(key)?)
            .map_err(|e| KeyError::Crypto(format!("CA certificate: {e}")))?;
        Ok(CaSigner { issuer })
    }

    /// Issues a certificate for the public key `public` from `draft`.
    pub fn issue_with(
        &self,
        draft: Draft,
        public: &impl rcgen::PublicKeyData,
    ) -> Result<Issued, KeyError> {
        let cert = draft
            .params
            .signed_by(public, &self.issuer)
            .map_err(|e| self.issuer.key().explain(e))?;
        self.finish(cert, &draft.subject)
    }

    /// Issues a certificate for `subject_key` from `draft`.
    pub fn issue(&self, draft: Draft, subject_key: Arc<dyn Signer>) -> Result<Issued, KeyError> {
        let public = RcgenSigner::new(subject_key)?;
        self.issue_with(draft, &public)
    }

    /// rcgen keeps one value per attribute: a subject with several is written into the TBS
    /// afterwards and the certificate signed again.
    fn finish(&self, cert: rcgen::Certificate, subject: &Subject) -> Result<Issued, KeyError> {
        if !subject.is_multi_valued() {
            return Ok(Issued::from(cert));
        }
        let parts = subject::replace_subject(cert.der(), subject)?;
        let signature = rcgen::SigningKey::sign(self.issuer.key(), &parts.tbs)
            .map_err(|e| self.issuer.key().explain(e))?;
        let der = parts.assemble(&signature)?;
        let pem = to_pem("CERTIFICATE", &der);
        Ok(Issued { der, pem })
    }
}
