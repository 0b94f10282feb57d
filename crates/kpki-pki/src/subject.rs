//! Certificate subjects as ordered attribute lists, one RDN per value as Go's `pkix.Name`
//! writes them, so a user in several groups gets several O values.

use der::asn1::{Any, PrintableStringRef, Utf8StringRef};
use der::{Decode, Encode, Tagged};
use kpki_signer::KeyError;
use rcgen::{DistinguishedName, DnType, DnValue};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};
use x509_parser::x509::X509Name;

use crate::PkiError;

/// A subject attribute kpki issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    /// CN.
    CommonName,
    /// O (a Kubernetes group).
    Organization,
    /// OU.
    OrganizationalUnit,
    /// C.
    Country,
    /// ST.
    State,
    /// L.
    Locality,
    /// street.
    StreetAddress,
    /// postalCode.
    PostalCode,
    /// serialNumber.
    SerialNumber,
}

/// Each attribute with its OID and short name.
const ATTRIBUTES: &[(Attr, &str, &str)] = &[
    (Attr::CommonName, "2.5.4.3", "CN"),
    (Attr::Organization, "2.5.4.10", "O"),
    (Attr::OrganizationalUnit, "2.5.4.11", "OU"),
    (Attr::Country, "2.5.4.6", "C"),
    (Attr::State, "2.5.4.8", "ST"),
    (Attr::Locality, "2.5.4.7", "L"),
    (Attr::StreetAddress, "2.5.4.9", "street"),
    (Attr::PostalCode, "2.5.4.17", "postalCode"),
    (Attr::SerialNumber, "2.5.4.5", "serialNumber"),
];

impl Attr {
    /// The attribute with dotted OID `oid`, if kpki issues it.
    pub(crate) fn from_oid(oid: &str) -> Option<Attr> {
        ATTRIBUTES.iter().find(|a| a.1 == oid).map(|a| a.0)
    }

    fn entry(self) -> &'static (Attr, &'static str, &'static str) {
        // Every variant has a row; the fallback is the CN row and is never reached.
        ATTRIBUTES
            .iter()
            .find(|a| a.0 == self)
            .unwrap_or(&ATTRIBUTES[0])
    }

    /// Dotted OID.
    pub fn oid(self) -> &'static str {
        self.entry().1
    }

    /// The attribute whose short name is `name` (`CN`, `O`, ...; case ignored).
    pub(crate) fn from_short_name(name: &str) -> Option<Attr> {
        ATTRIBUTES
            .iter()
            .find(|a| a.2.eq_ignore_ascii_case(name))
            .map(|a| a.0)
    }

    /// Short name (`CN`, `O`, ...).
    pub(crate) fn short_name(self) -> &'static str {
        self.entry().2
    }

    fn dn_type(self) -> DnType {
        match self {
            Attr::CommonName => DnType::CommonName,
            Attr::Organization => DnType::OrganizationName,
            Attr::OrganizationalUnit => DnType::OrganizationalUnitName,
            Attr::Country => DnType::CountryName,
            Attr::State => DnType::StateOrProvinceName,
            Attr::Locality => DnType::LocalityName,
            Attr::StreetAddress => DnType::CustomDnType(vec![2, 5, 4, 9]),
            Attr::PostalCode => DnType::CustomDnType(vec![2, 5, 4, 17]),
            Attr::SerialNumber => DnType::CustomDnType(vec![2, 5, 4, 5]),
        }
    }
}

/// An ordered subject; several values of one attribute are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    attrs: Vec<(Attr, String)>,
}

impl Subject {
    /// The subject a Kubernetes signer issues for a request named `name`: the attributes Go's
    /// `pkix.Name` carries over (C, ST, L, street, postalCode, O, OU, CN, serialNumber), every
    /// value, in request order. Any other attribute (emailAddress, DC, UID, ...) and any value
    /// that is not a string is dropped, as kube-controller-manager's signer drops them; their
    /// OIDs are returned beside the subject.
    pub(crate) fn from_name(name: &X509Name<'_>) -> (Subject, Vec<String>) {
        let mut subject = Subject::default();
        let mut dropped = Vec::new();
        for attr in name.iter_attributes() {
            let oid = attr.attr_type().to_id_string();
            match (Attr::from_oid(&oid), attr.as_str()) {
                (Some(ty), Ok(value)) => subject.push(ty, value),
                _ => dropped.push(oid),
            }
        }
        (subject, dropped)
    }

    /// The attributes of `name` kpki knows, in order; others are skipped.
    pub fn known_of(name: &X509Name<'_>) -> Subject {
        Subject::from_name(name).0
    }

    /// The CN (empty when absent); `Err` when there are several: Go (kube-apiserver, the
    /// kubelet) honours the last, so rules checking one name would let peers see another.
    pub fn single_cn(&self) -> Result<&str, PkiError> {
        let mut cns = self.values(Attr::CommonName);
        let cn = cns.next().unwrap_or_default();
        match cns.next() {
            Some(_) => Err(PkiError::Malformed(
                "subject has more than one CN; a certificate names one user".into(),
            )),
            None => Ok(cn),
        }
    }

    /// The O values (groups), in order.
    pub fn orgs(&self) -> Vec<String> {
        self.values(Attr::Organization)
            .map(str::to_string)
            .collect()
    }

    /// Kubernetes' usual subject: one O per group, then CN.
    pub(crate) fn groups_then_name(groups: &[String], cn: &str) -> Subject {
        let mut s = Subject::default();
        for g in groups {
            s.push(Attr::Organization, g.clone());
        }
        s.push(Attr::CommonName, cn);
        s
    }

    /// Appends one attribute value (its own RDN).
    pub fn push(&mut self, attr: Attr, value: impl Into<String>) {
        self.attrs.push((attr, value.into()));
    }

    /// Every value of `attr`, in order.
    pub fn values(&self, attr: Attr) -> impl Iterator<Item = &str> {
        self.attrs
            .iter()
            .filter(move |(a, _)| *a == attr)
            .map(|(_, v)| v.as_str())
    }

    /// True when some attribute has more than one value.
    #[cfg(test)]
    pub(crate) fn is_multi_valued(&self) -> bool {
        self.attrs
            .iter()
            .enumerate()
            .any(|(i, (a, _))| self.attrs[..i].iter().any(|(b, _)| b == a))
    }

    /// The subject as rcgen holds it: the first value of each attribute.
    pub(crate) fn to_rcgen(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for (i, (attr, value)) in self.attrs.iter().enumerate() {
            if self.attrs[..i].iter().any(|(b, _)| b == attr) {
                continue;
            }
            dn.push(attr.dn_type(), dn_value(value));
        }
        dn
    }

    /// The DER `Name`: one single-valued RDN per attribute, in order.
    pub(crate) fn to_der(&self) -> Result<Vec<u8>, KeyError> {
        let bad = |e: der::Error| KeyError::Crypto(format!("encoding the subject: {e}"));
        let mut rdns = RdnSequence::default();
        for (attr, value) in &self.attrs {
            let oid = der::oid::ObjectIdentifier::new(attr.oid())
                .map_err(|e| KeyError::Crypto(format!("OID {}: {e}", attr.oid())))?;
            let value = if go_printable(value) {
                Any::encode_from(&PrintableStringRef::new(value).map_err(bad)?)
            } else {
                Any::encode_from(&Utf8StringRef::new(value).map_err(bad)?)
            }
            .map_err(bad)?;
            let rdn =
                RelativeDistinguishedName::try_from(vec![AttributeTypeAndValue { oid, value }])
                    .map_err(bad)?;
            rdns.push(rdn);
        }
        rdns.to_der().map_err(bad)
    }

    /// `O=a, O=b, CN=c` for messages.
    pub fn display(&self) -> String {
        self.attrs
            .iter()
            .map(|(a, v)| format!("{}={v}", a.short_name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Rewrites the names of the DER certificate `cert` (as rcgen wrote it, signature not yet
/// valid): the issuer becomes `issuer_der`, the issuing CA's subject exactly as its own
/// certificate encodes it (Go and OpenSSL chain certificates by these bytes), and the subject
/// becomes `subject` with every value. Returns the TBS to sign; [`Parts::assemble`] adds the
/// signature.
pub(crate) fn rewrite_names(
    cert: &[u8],
    issuer_der: &[u8],
    subject: &Subject,
) -> Result<Parts, KeyError> {
    replace_names(cert, issuer_der, &subject.to_der()?)
}

/// [`rewrite_names`] with the subject already encoded (`subject_der`, a DER `Name`).
pub(crate) fn replace_names(
    cert: &[u8],
    issuer_der: &[u8],
    subject_der: &[u8],
) -> Result<Parts, KeyError> {
    let bad = |e: der::Error| KeyError::Crypto(format!("writing the certificate names: {e}"));
    let outer = Vec::<Any>::from_der(cert).map_err(bad)?;
    let [tbs, algorithm, _signature] = <[Any; 3]>::try_from(outer)
        .map_err(|_| KeyError::Crypto("writing the certificate names: not a certificate".into()))?;
    let mut fields = Vec::<Any>::from_der(&tbs.to_der().map_err(bad)?).map_err(bad)?;
    // v3 TBS: [0] version, serial, signature, issuer, validity, subject, spki, [3] extensions.
    if fields.len() < 7 || !fields[0].tag().is_context_specific() {
        return Err(KeyError::Crypto(
            "writing the certificate names: not a v3 certificate".into(),
        ));
    }
    fields[3] = Any::from_der(issuer_der).map_err(bad)?;
    fields[5] = Any::from_der(subject_der).map_err(bad)?;
    Ok(Parts {
        tbs: fields.to_der().map_err(bad)?,
        algorithm,
    })
}

/// A certificate taken apart for re-signing.
pub(crate) struct Parts {
    /// The DER TBSCertificate to sign.
    pub tbs: Vec<u8>,
    algorithm: Any,
}

impl Parts {
    /// The DER certificate: TBS, the unchanged signature algorithm, `signature`.
    pub(crate) fn assemble(self, signature: &[u8]) -> Result<Vec<u8>, KeyError> {
        let bad = |e: der::Error| KeyError::Crypto(format!("assembling the certificate: {e}"));
        let sig = der::asn1::BitString::from_bytes(signature).map_err(bad)?;
        let parts = vec![
            Any::from_der(&self.tbs).map_err(bad)?,
            self.algorithm,
            Any::encode_from(&sig).map_err(bad)?,
        ];
        parts.to_der().map_err(bad)
    }
}

/// True when Go's `encoding/asn1` writes `value` as a PrintableString: every byte is
/// `A-Z a-z 0-9 ' ( ) + , - . / : = ?` or a space. Otherwise Go (and so kubeadm and
/// kube-controller-manager) writes a UTF8String; kpki encodes names the same way so its
/// certificates carry the bytes kubeadm's would.
pub(crate) fn go_printable(value: &str) -> bool {
    value.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'\'' | b'(' | b')' | b'+' | b',' | b'-' | b'.' | b'/' | b' ' | b':' | b'=' | b'?'
            )
    })
}

/// A name attribute value encoded as Go encodes it (see [`go_printable`]).
pub(crate) fn dn_value(value: &str) -> DnValue {
    if go_printable(value)
        && let Ok(p) = rcgen::string::PrintableString::try_from(value)
    {
        return DnValue::PrintableString(p);
    }
    DnValue::Utf8String(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_encoded_as_go_encodes_them() {
        // (value, PrintableString?) — Go's encoding/asn1 rule, as kubeadm's names use it.
        let table = [
            ("kubernetes", true),
            ("system:nodes", true),
            ("system:node:cp1", true),
            ("kube-apiserver-kubelet-client", true),
            ("a b'(x)+,-./:=?", true),
            ("", true),
            ("*.example.com", false),
            ("R&D", false),
            ("jane_doe", false),
            ("jane@example.com", false),
            ("Zürich", false),
            ("tab\there", false),
        ];
        for (value, printable) in table {
            assert_eq!(go_printable(value), printable, "{value:?}");
            let s = Subject::groups_then_name(&[], value);
            let der = s.to_der().unwrap();
            // …SET { SEQUENCE { OID 2.5.4.3, <tag> len value } }: the tag sits before the value.
            let tag = der[der.len() - value.len() - 2];
            assert_eq!(tag, if printable { 0x13 } else { 0x0c }, "{value:?}");
            let rcgen_printable = matches!(dn_value(value), DnValue::PrintableString(_));
            assert_eq!(rcgen_printable, printable, "{value:?}");
        }
    }

    #[test]
    fn keeps_every_group_in_order() {
        let s = Subject::groups_then_name(&["a".into(), "b".into()], "jane");
        assert!(s.is_multi_valued());
        assert_eq!(s.values(Attr::Organization).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(s.display(), "O=a, O=b, CN=jane");
        let dn = s.to_rcgen();
        assert_eq!(dn.iter().count(), 2);
        let der = s.to_der().unwrap();
        let (_, name) =
            <x509_parser::x509::X509Name as x509_parser::prelude::FromDer<_>>::from_der(&der)
                .unwrap();
        assert_eq!(name.to_string(), "O=a, O=b, CN=jane");
    }

    #[test]
    fn single_values_are_not_multi_valued() {
        let s = Subject::groups_then_name(&["system:nodes".into()], "system:node:n1");
        assert!(!s.is_multi_valued());
    }

    #[test]
    fn attributes_go_does_not_carry_are_dropped() {
        // C=DE, DC=example, O=dev, emailAddress=j@example.com, serialNumber=42, CN=jane
        let name = [
            (vec![85u8, 4, 6], "DE", 0x13u8),
            (
                vec![9, 146, 38, 137, 147, 242, 44, 100, 1, 25],
                "example",
                0x16,
            ),
            (vec![85, 4, 10], "dev", 0x0c),
            (
                vec![42, 134, 72, 134, 247, 13, 1, 9, 1],
                "j@example.com",
                0x16,
            ),
            (vec![85, 4, 5], "42", 0x13),
            (vec![85, 4, 3], "jane", 0x0c),
        ];
        let tlv = |tag: u8, body: &[u8]| {
            let mut v = vec![tag, u8::try_from(body.len()).unwrap()];
            v.extend_from_slice(body);
            v
        };
        let mut rdns = Vec::new();
        for (oid, value, tag) in &name {
            let mut atv = tlv(0x06, oid);
            atv.extend(tlv(*tag, value.as_bytes()));
            rdns.extend(tlv(0x31, &tlv(0x30, &atv)));
        }
        let der = tlv(0x30, &rdns);
        let (_, parsed) = <X509Name as x509_parser::prelude::FromDer<_>>::from_der(&der).unwrap();
        let (subject, dropped) = Subject::from_name(&parsed);
        assert_eq!(subject.display(), "C=DE, O=dev, serialNumber=42, CN=jane");
        assert_eq!(
            dropped,
            ["0.9.2342.19200300.100.1.25", "1.2.840.113549.1.9.1"]
        );
    }
}
