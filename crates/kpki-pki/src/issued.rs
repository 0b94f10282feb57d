//! What an audit line records of a certificate kpki issued offline (`kpki sign`, `certs
//! renew`, `node add`, `kubeconfig user`, `ca create`): the certificate handed to its holder,
//! read back from what the command wrote — a PEM file (its first certificate) or a kubeconfig
//! (its first user's client certificate) — in the words the daemon's audit lines use.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::subject::Subject;

/// An issued certificate as an audit line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The subject, e.g. `O=dev, CN=jane`.
    pub subject: String,
    /// DNS and IP SANs as `DNS:…`, `IP:…`, in certificate order.
    pub sans: Vec<String>,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// NotAfter, RFC 3339.
    pub not_after: String,
}

/// The certificate `text` issues: the first `CERTIFICATE` of a PEM text, or the first user
/// client certificate of a kubeconfig.
pub fn issued_certificate(text: &str) -> Result<IssuedCert, String> {
    let pem_text = if text.contains("-----BEGIN ") {
        text.as_bytes().to_vec()
    } else {
        let cfg = crate::kubeconfig::parse(text).map_err(|e| e.to_string())?;
        let data = cfg
            .users
            .iter()
            .find_map(|u| u.user.client_certificate_data.as_deref())
            .ok_or("the kubeconfig has no client certificate")?;
        STANDARD
            .decode(data.trim())
            .map_err(|e| format!("client-certificate-data is not base64 ({e})"))?
    };
    let blocks = pem::parse_many(&pem_text).map_err(|e| format!("malformed PEM ({e})"))?;
    let der = blocks
        .iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or("no CERTIFICATE block")?
        .contents();
    let (_, c) =
        X509Certificate::from_der(der).map_err(|e| format!("malformed certificate ({e})"))?;
    let names = crate::certfile::alt_names(&c);
    let sans = names
        .dns
        .iter()
        .map(|d| format!("DNS:{d}"))
        .chain(names.ips.iter().map(|ip| format!("IP:{ip}")))
        .collect();
    Ok(IssuedCert {
        subject: Subject::known_of(c.subject()).display(),
        sans,
        serial: hex::encode(c.raw_serial()),
        not_after: c
            .validity()
            .not_after
            .to_datetime()
            .format(&Rfc3339)
            .map_err(|e| e.to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pem_files_and_kubeconfigs_and_refuses_the_rest() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example".into(), "10.0.0.1".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "dev");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jane");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x1f, 0x02]));
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        let pem = params.self_signed(&key).unwrap().pem();
        let want = IssuedCert {
            subject: "O=dev, CN=jane".into(),
            sans: vec!["DNS:a.example".into(), "IP:10.0.0.1".into()],
            serial: "1f02".into(),
            not_after: "2030-01-02T00:00:00Z".into(),
        };
        assert_eq!(issued_certificate(&pem).unwrap(), want);
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: \"\"\nclusters: []\ncontexts: []\nusers:\n- name: jane\n  user:\n    client-certificate-data: {}\n",
            STANDARD.encode(&pem)
        );
        assert_eq!(issued_certificate(&kubeconfig).unwrap(), want);
        let rows: [(&str, &str); 3] = [
            (
                "-----BEGIN X-----\nAAAA\n-----END X-----\n",
                "no CERTIFICATE block",
            ),
            (
                "apiVersion: v1\nkind: Config\ncurrent-context: \"\"\nclusters: []\ncontexts: []\nusers:\n- name: u\n  user:\n    token: t\n",
                "no client certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "malformed certificate",
            ),
        ];
        for (text, want) in rows {
            let e = issued_certificate(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
