//! `kpki inspect`: what a file holds — certificates (PEM, DER, bundles), certificate
//! requests, kubeconfigs (every embedded certificate with its cluster/user), private key files
//! and public keys. Private keys are described by algorithm and public fingerprint only; no
//! key material ever reaches the output.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kpki_signer::{KeyError, KeyUri, Signer, spki};
use kpki_soft::SoftKey;
use serde::Serialize;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;
use zeroize::Zeroizing;

use crate::{PkiError, kubeconfig};

/// What one file (or one part of it) is.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Item {
    /// An X.509 certificate.
    Certificate(CertificateInfo),
    /// A PKCS#10 certificate request.
    CertificateRequest(RequestInfo),
    /// A private key (described, never shown).
    PrivateKey(PublicKeyInfo),
    /// A public key (`sa.pub`).
    PublicKey(PublicKeyInfo),
    /// A certificate embedded in a kubeconfig.
    KubeconfigCertificate {
        /// What the certificate is for (`cluster <name>` or `user <name>`).
        owner: String,
        /// The certificate.
        certificate: CertificateInfo,
    },
}

/// The fields `openssl x509 -text` reports.
#[derive(Debug, Serialize)]
pub struct CertificateInfo {
    /// Subject, openssl style (`O = x, CN = y`).
    pub subject: String,
    /// Issuer, openssl style.
    pub issuer: String,
    /// Serial, lower-case colon hex.
    pub serial: String,
    /// NotBefore, openssl style (`Nov 22 22:36:23 2027 GMT`).
    pub not_before: String,
    /// NotAfter, openssl style.
    pub not_after: String,
    /// Signature algorithm (openssl's long name).
    pub signature_algorithm: String,
    /// Public key algorithm (kubeadm name, or the OID's name).
    pub public_key: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<String>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// Key usages, openssl's words; `critical` is reported separately.
    pub key_usage: Vec<String>,
    /// Whether KeyUsage is critical.
    pub key_usage_critical: bool,
    /// Extended key usages, openssl's words.
    pub extended_key_usage: Vec<String>,
    /// BasicConstraints CA flag, if present.
    pub is_ca: Option<bool>,
    /// Path length constraint.
    pub path_len: Option<u32>,
    /// Subject key identifier, upper-case colon hex.
    pub subject_key_id: Option<String>,
    /// Authority key identifier, upper-case colon hex.
    pub authority_key_id: Option<String>,
    /// SHA-256 of the DER, upper-case colon hex (`openssl x509 -fingerprint -sha256`).
    pub sha256_fingerprint: String,
    /// SHA-256 of the SubjectPublicKeyInfo, lower-case hex.
    pub spki_sha256: String,
}

/// What a certificate request asks for.
#[derive(Debug, Serialize)]
pub struct RequestInfo {
    /// Subject, openssl style.
    pub subject: String,
    /// Public key algorithm.
    pub public_key: String,
    /// Signature algorithm.
    pub signature_algorithm: String,
    /// Whether the request's own signature verifies (proof of possession).
    pub signature_valid: bool,
    /// Requested DNS SANs.
    pub dns_names: Vec<String>,
    /// Requested IP SANs.
    pub ip_addresses: Vec<String>,
    /// Requested email SANs.
    pub emails: Vec<String>,
    /// Requested URI SANs.
    pub uris: Vec<String>,
    /// SHA-256 of the SubjectPublicKeyInfo, lower-case hex.
    pub spki_sha256: String,
}

/// A key described by its public half.
#[derive(Debug, Serialize)]
pub struct PublicKeyInfo {
    /// Algorithm (kubeadm name, or a description).
    pub algorithm: String,
    /// SHA-256 of the SubjectPublicKeyInfo, lower-case hex.
    pub spki_sha256: String,
}

fn colon_hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect::<Vec<_>>()
        .join(":")
}

fn name_text(name: &X509Name<'_>) -> String {
    let mut parts = Vec::new();
    for rdn in name.iter() {
        for attr in rdn.iter() {
            let key = oid2abbrev(attr.attr_type(), oid_registry())
                .map(str::to_string)
                .unwrap_or_else(|_| attr.attr_type().to_id_string());
            let value = attr
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|_| hex::encode(attr.attr_value().data));
            parts.push(format!("{key} = {value}"));
        }
    }
    parts.join(", ")
}

fn openssl_time(t: x509_parser::time::ASN1Time) -> String {
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT"
    );
    t.to_datetime().format(&format).unwrap_or_default()
}

fn algorithm_name(spki_der: &[u8]) -> String {
    match spki::algorithm_of(spki_der) {
        Ok(a) => a.to_string(),
        Err(e) => e.to_string(),
    }
}

fn signature_name(oid: &x509_parser::oid_registry::Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption".into(),
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption".into(),
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption".into(),
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256".into(),
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384".into(),
        "1.3.101.112" => "ED25519".into(),
        other => x509_parser::objects::oid2sn(oid, oid_registry())
            .map(str::to_string)
            .unwrap_or_else(|_| other.to_string()),
    }
}

#[derive(Default)]
struct Sans {
    dns: Vec<String>,
    ips: Vec<String>,
    emails: Vec<String>,
    uris: Vec<String>,
}

fn sans_of<'a>(names: impl Iterator<Item = &'a GeneralName<'a>>) -> Sans {
    let mut s = Sans::default();
    for n in names {
        match n {
            GeneralName::DNSName(d) => s.dns.push(d.to_string()),
            GeneralName::RFC822Name(e) => s.emails.push(e.to_string()),
            GeneralName::URI(u) => s.uris.push(u.to_string()),
            GeneralName::IPAddress(b) => s.ips.push(
                crate::certfile::ip_of(b).map_or_else(|| hex::encode(b), |ip| ip.to_string()),
            ),
            _ => {}
        }
    }
    s
}

fn certificate_info(der: &[u8]) -> Result<CertificateInfo, String> {
    let (_, c) =
        X509Certificate::from_der(der).map_err(|e| format!("malformed certificate ({e})"))?;
    let mut info = CertificateInfo {
        subject: name_text(c.subject()),
        issuer: name_text(c.issuer()),
        serial: colon_hex(c.raw_serial(), false),
        not_before: openssl_time(c.validity().not_before),
        not_after: openssl_time(c.validity().not_after),
        signature_algorithm: signature_name(&c.signature_algorithm.algorithm),
        public_key: algorithm_name(c.public_key().raw),
        dns_names: vec![],
        ip_addresses: vec![],
        emails: vec![],
        uris: vec![],
        key_usage: vec![],
        key_usage_critical: false,
        extended_key_usage: vec![],
        is_ca: None,
        path_len: None,
        subject_key_id: None,
        authority_key_id: None,
        sha256_fingerprint: colon_hex(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref(),
            true,
        ),
        spki_sha256: spki::sha256_hex(c.public_key().raw),
    };
    for ext in c.extensions() {
        apply_extension(&mut info, ext);
    }
    Ok(info)
}

fn apply_extension(info: &mut CertificateInfo, ext: &X509Extension<'_>) {
    match ext.parsed_extension() {
        ParsedExtension::SubjectAlternativeName(san) => {
            let s = sans_of(san.general_names.iter());
            (info.dns_names, info.ip_addresses, info.emails, info.uris) =
                (s.dns, s.ips, s.emails, s.uris);
        }
        ParsedExtension::KeyUsage(ku) => {
            info.key_usage_critical = ext.critical;
            for (on, word) in [
                (ku.digital_signature(), "Digital Signature"),
                (ku.non_repudiation(), "Non Repudiation"),
                (ku.key_encipherment(), "Key Encipherment"),
                (ku.data_encipherment(), "Data Encipherment"),
                (ku.key_agreement(), "Key Agreement"),
                (ku.key_cert_sign(), "Certificate Sign"),
                (ku.crl_sign(), "CRL Sign"),
                (ku.encipher_only(), "Encipher Only"),
                (ku.decipher_only(), "Decipher Only"),
            ] {
                if on {
                    info.key_usage.push(word.into());
                }
            }
        }
        ParsedExtension::ExtendedKeyUsage(eku) => {
            for (on, word) in [
                (eku.server_auth, "TLS Web Server Authentication"),
                (eku.client_auth, "TLS Web Client Authentication"),
                (eku.code_signing, "Code Signing"),
                (eku.email_protection, "E-mail Protection"),
                (eku.time_stamping, "Time Stamping"),
                (eku.ocsp_signing, "OCSP Signing"),
                (eku.any, "Any Extended Key Usage"),
            ] {
                if on {
                    info.extended_key_usage.push(word.into());
                }
            }
            info.extended_key_usage
                .extend(eku.other.iter().map(|o| o.to_id_string()));
        }
        ParsedExtension::BasicConstraints(bc) => {
            info.is_ca = Some(bc.ca);
            info.path_len = bc.path_len_constraint;
        }
        ParsedExtension::SubjectKeyIdentifier(k) => {
            info.subject_key_id = Some(colon_hex(k.0, true))
        }
        ParsedExtension::AuthorityKeyIdentifier(a) => {
            info.authority_key_id = a.key_identifier.as_ref().map(|k| colon_hex(k.0, true));
        }
        _ => {}
    }
}

fn request_info(der: &[u8]) -> Result<RequestInfo, String> {
    let (_, r) = X509CertificationRequest::from_der(der)
        .map_err(|e| format!("malformed certificate request ({e})"))?;
    let cri = &r.certification_request_info;
    let mut sans = Sans::default();
    if let Some(exts) = r.requested_extensions() {
        for e in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = e {
                sans = sans_of(san.general_names.iter());
            }
        }
    }
    Ok(RequestInfo {
        subject: name_text(&cri.subject),
        public_key: algorithm_name(cri.subject_pki.raw),
        signature_algorithm: signature_name(&r.signature_algorithm.algorithm),
        signature_valid: r.verify_signature().is_ok(),
        dns_names: sans.dns,
        ip_addresses: sans.ips,
        emails: sans.emails,
        uris: sans.uris,
        spki_sha256: spki::sha256_hex(cri.subject_pki.raw),
    })
}

fn private_key_info(path: &Path, text: &str) -> Result<PublicKeyInfo, KeyError> {
    let key = SoftKey::from_pem(KeyUri::file(path), path, text)?;
    Ok(PublicKeyInfo {
        algorithm: key.algorithm().to_string(),
        spki_sha256: spki::sha256_hex(key.public_key_spki()),
    })
}

fn kubeconfig_items(text: &str) -> Result<Vec<Item>, String> {
    let cfg = kubeconfig::parse(text).map_err(|e| e.to_string())?;
    let mut items = Vec::new();
    let decode = |data: &str| {
        STANDARD
            .decode(data.trim())
            .map_err(|e| format!("embedded data is not base64 ({e})"))
    };
    for c in &cfg.clusters {
        if let Some(data) = &c.cluster.certificate_authority_data {
            for block in
                pem::parse_many(decode(data)?).map_err(|e| format!("cluster {}: {e}", c.name))?
            {
                items.push(Item::KubeconfigCertificate {
                    owner: format!("cluster {} (certificate-authority-data)", c.name),
                    certificate: certificate_info(block.contents())?,
                });
            }
        }
    }
    for u in &cfg.users {
        if let Some(data) = &u.user.client_certificate_data {
            for block in
                pem::parse_many(decode(data)?).map_err(|e| format!("user {}: {e}", u.name))?
            {
                items.push(Item::KubeconfigCertificate {
                    owner: format!("user {} (client-certificate-data)", u.name),
                    certificate: certificate_info(block.contents())?,
                });
            }
        }
    }
    Ok(items)
}

/// Describes what the file at `path` holds.
pub fn inspect(path: &Path) -> Result<Vec<Item>, PkiError> {
    let bad = |problem: String| PkiError::Malformed(format!("{}: {problem}", path.display()));
    let bytes = Zeroizing::new(
        kpki_atomic::read::input(path, kpki_atomic::read::PEM_MAX)
            .map_err(|e| PkiError::io(path, e))?,
    );
    if bytes.starts_with(b"-----BEGIN ")
        || std::str::from_utf8(&bytes).is_ok_and(|t| t.contains("\n-----BEGIN "))
    {
        let blocks =
            pem::parse_many(&bytes[..]).map_err(|e| bad(format!("malformed PEM ({e})")))?;
        let mut items = Vec::new();
        for block in &blocks {
            items.push(match block.tag() {
                "CERTIFICATE" => {
                    Item::Certificate(certificate_info(block.contents()).map_err(bad)?)
                }
                "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => {
                    Item::CertificateRequest(request_info(block.contents()).map_err(bad)?)
                }
                "PUBLIC KEY" => Item::PublicKey(PublicKeyInfo {
                    algorithm: algorithm_name(block.contents()),
                    spki_sha256: spki::sha256_hex(block.contents()),
                }),
                "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "PRIVATE KEY" => {
                    let one = Zeroizing::new(pem::encode(block));
                    Item::PrivateKey(private_key_info(path, &one)?)
                }
                other => {
                    return Err(bad(format!(
                        "PEM block {other:?} is not a certificate, request or key"
                    )));
                }
            });
        }
        if items.is_empty() {
            return Err(bad("malformed PEM: no complete BEGIN/END block".into()));
        }
        return Ok(items);
    }
    if let Ok(info) = certificate_info(&bytes) {
        return Ok(vec![Item::Certificate(info)]);
    }
    if let Ok(info) = request_info(&bytes) {
        return Ok(vec![Item::CertificateRequest(info)]);
    }
    if let Some(items) = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| kubeconfig_items(t).ok())
    {
        return Ok(items);
    }
    Err(bad(
        "not a certificate, certificate request, key or kubeconfig (PEM or DER)".into(),
    ))
}

fn certificate_text(c: &CertificateInfo, out: &mut String) {
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("Subject: {}", c.subject));
    line(format!("Issuer: {}", c.issuer));
    line(format!("Serial Number: {}", c.serial));
    line(format!("Not Before: {}", c.not_before));
    line(format!("Not After : {}", c.not_after));
    line(format!("Signature Algorithm: {}", c.signature_algorithm));
    line(format!("Public Key: {}", c.public_key));
    if !c.dns_names.is_empty()
        || !c.ip_addresses.is_empty()
        || !c.emails.is_empty()
        || !c.uris.is_empty()
    {
        let mut names: Vec<String> = c.dns_names.iter().map(|d| format!("DNS:{d}")).collect();
        names.extend(c.ip_addresses.iter().map(|i| format!("IP Address:{i}")));
        names.extend(c.emails.iter().map(|e| format!("email:{e}")));
        names.extend(c.uris.iter().map(|u| format!("URI:{u}")));
        line(format!("Subject Alternative Name: {}", names.join(", ")));
    }
    if !c.key_usage.is_empty() {
        line(format!(
            "Key Usage: {}{}",
            if c.key_usage_critical {
                "critical, "
            } else {
                ""
            },
            c.key_usage.join(", ")
        ));
    }
    if !c.extended_key_usage.is_empty() {
        line(format!(
            "Extended Key Usage: {}",
            c.extended_key_usage.join(", ")
        ));
    }
    if let Some(ca) = c.is_ca {
        let path = c
            .path_len
            .map(|p| format!(", pathlen:{p}"))
            .unwrap_or_default();
        line(format!(
            "Basic Constraints: CA:{}{path}",
            if ca { "TRUE" } else { "FALSE" }
        ));
    }
    if let Some(k) = &c.subject_key_id {
        line(format!("Subject Key Identifier: {k}"));
    }
    if let Some(k) = &c.authority_key_id {
        line(format!("Authority Key Identifier: {k}"));
    }
    line(format!("SHA256 Fingerprint: {}", c.sha256_fingerprint));
    line(format!("Public Key SHA256: {}", c.spki_sha256));
}

/// Human-readable text close to `openssl x509 -text -noout`.
pub fn render_text(items: &[Item]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match item {
            Item::Certificate(c) => {
                out.push_str("Certificate\n");
                certificate_text(c, &mut out);
            }
            Item::KubeconfigCertificate { owner, certificate } => {
                out.push_str(&format!("Certificate of {owner}\n"));
                certificate_text(certificate, &mut out);
            }
            Item::CertificateRequest(r) => {
                out.push_str("Certificate Request\n");
                out.push_str(&format!(
                    "Subject: {}\nPublic Key: {}\nSignature Algorithm: {}\nSignature: {}\n",
                    r.subject,
                    r.public_key,
                    r.signature_algorithm,
                    if r.signature_valid {
                        "valid"
                    } else {
                        "INVALID"
                    }
                ));
                let mut names: Vec<String> =
                    r.dns_names.iter().map(|d| format!("DNS:{d}")).collect();
                names.extend(r.ip_addresses.iter().map(|i| format!("IP Address:{i}")));
                names.extend(r.emails.iter().map(|e| format!("email:{e}")));
                names.extend(r.uris.iter().map(|u| format!("URI:{u}")));
                if !names.is_empty() {
                    out.push_str(&format!(
                        "Requested Subject Alternative Name: {}\n",
                        names.join(", ")
                    ));
                }
                out.push_str(&format!("Public Key SHA256: {}\n", r.spki_sha256));
            }
            Item::PrivateKey(k) => out.push_str(&format!(
                "Private Key (not shown)\nAlgorithm: {}\nPublic Key SHA256: {}\n",
                k.algorithm, k.spki_sha256
            )),
            Item::PublicKey(k) => out.push_str(&format!(
                "Public Key\nAlgorithm: {}\nPublic Key SHA256: {}\n",
                k.algorithm, k.spki_sha256
            )),
        }
    }
    out
}
