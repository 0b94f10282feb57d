//! `certs check-expiration`: kubeadm's two tables (leaves and kubeconfigs, then CAs), the
//! `CertificateExpirationInfo` (output.kubeadm.k8s.io/v1alpha3) shape, and the residual-time
//! wording of apimachinery's `HumanDuration`.

use std::path::Path;

use serde::Serialize;
use time::OffsetDateTime;

use crate::catalogue::{self, CaId};
use crate::config::ClusterSpec;
use crate::keystore::KeyStore;
use crate::{PkiError, authority, kubeconfig};

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Catalogue name (`apiserver`, `admin.conf`, `ca`).
    pub name: String,
    /// NotAfter, or `None` when the file is missing.
    pub not_after: Option<OffsetDateTime>,
    /// The issuing CA (`None` for CA rows).
    pub ca_name: Option<&'static str>,
    /// True when kpki cannot sign with the CA's configured key (file absent, not on the token).
    pub externally_managed: bool,
}

/// The two lists kubeadm reports, each sorted by name.
#[derive(Debug, Clone)]
pub struct Report {
    /// Leaf certificates and kubeconfig client certificates.
    pub certificates: Vec<Row>,
    /// CA certificates.
    pub authorities: Vec<Row>,
}

fn not_after_of(der: &[u8], what: &Path) -> Result<OffsetDateTime, PkiError> {
    let cert = crate::certfile::parse_at(what, der)?;
    Ok(cert.validity().not_after.to_datetime())
}

/// NotAfter of the certificate file `path` (its first certificate, kubeadm's reader).
fn cert_file_not_after(path: &Path) -> Result<Option<OffsetDateTime>, PkiError> {
    match crate::certfile::read(path)? {
        Some(chain) => {
            not_after_of(chain.first().map(Vec::as_slice).unwrap_or_default(), path).map(Some)
        }
        None => Ok(None),
    }
}

fn kubeconfig_not_after(path: &Path) -> Result<Option<OffsetDateTime>, PkiError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PkiError::io(path, e)),
    };
    let cfg = kubeconfig::parse(&text).map_err(|e| e.in_file(path))?;
    let user = cfg
        .current_user()
        .ok_or_else(|| kubeconfig::no_current_user(path))?;
    let pem_bytes = match (&user.client_certificate_data, &user.client_certificate) {
        (Some(data), _) => kubeconfig::decode_client_data(path, data)?,
        (None, Some(file)) => std::fs::read(file).map_err(|e| PkiError::io(Path::new(file), e))?,
        (None, None) => {
            return Err(PkiError::Missing(format!(
                "{}: no client certificate",
                path.display()
            )));
        }
    };
    not_after_of(&kubeconfig::client_cert_der(path, &pem_bytes)?, path).map(Some)
}

/// Reads every certificate of the catalogue for `spec`.
pub fn check(spec: &ClusterSpec, keys: &KeyStore) -> Result<Report, PkiError> {
    let local_etcd = spec.local_etcd();
    let mut external = Vec::new();
    let mut authorities = Vec::new();
    for ca in catalogue::cas(local_etcd) {
        // The CA row is the signing certificate of its file (a bundle may hold others).
        let found = authority::find(spec, keys, ca.id)?;
        let ext = found.key.is_none();
        external.push((ca.id, ext));
        let not_after = match &found.cert {
            Some(der) => Some(not_after_of(der, &found.crt)?),
            None => None,
        };
        authorities.push(Row {
            name: ca.name.to_string(),
            not_after,
            ca_name: None,
            externally_managed: ext,
        });
    }
    let ext_of = |id: CaId| {
        external
            .iter()
            .find(|(i, _)| *i == id)
            .is_some_and(|(_, e)| *e)
    };
    let ca_name = |id: CaId| Some(catalogue::ca(id).name);
    let mut certificates = Vec::new();
    for leaf in catalogue::leaves(local_etcd) {
        certificates.push(Row {
            name: leaf.name.to_string(),
            not_after: cert_file_not_after(&leaf.cert_path(&spec.cert_dir))?,
            ca_name: ca_name(leaf.ca),
            externally_managed: ext_of(leaf.ca),
        });
    }
    // kubelet.conf is never listed: the kubelet rotates its own client certificate.
    for kc in catalogue::renewable_kubeconfigs() {
        certificates.push(Row {
            name: kc.file.to_string(),
            not_after: kubeconfig_not_after(&kc.path(&spec.kubeconfig_dir))?,
            ca_name: ca_name(CaId::Ca),
            externally_managed: ext_of(CaId::Ca),
        });
    }
    certificates.sort_by(|a, b| a.name.cmp(&b.name));
    authorities.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Report {
        certificates,
        authorities,
    })
}

/// `<major><unit>` followed by `<minor><minor unit>` unless `minor` is zero (`2m5s`, `3h`).
fn two_units(major: i64, unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{unit}")
    } else {
        format!("{major}{unit}{minor}{minor_unit}")
    }
}

/// apimachinery's `HumanDuration` of a signed number of seconds (`<invalid>` below −1 s).
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return two_units(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return two_units(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return two_units(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    if hours < 24 * 365 * 8 {
        return two_units(days / 365, "y", days % 365, "d");
    }
    format!("{}y", days / 365)
}

/// Lays out rows like Go's `tabwriter` with kubeadm's settings (minwidth 10, padding 3):
/// every cell but the last of a line is padded to its column's width.
pub(crate) fn tabulate(rows: &[Vec<String>]) -> String {
    let columns = rows
        .iter()
        .map(|r| r.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|r| c + 1 < r.len())
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(10)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 < row.len() {
                out.push_str(&format!("{cell:<width$}", width = widths[c]));
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

fn expires_text(t: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[month repr:short] [day], [year] [hour]:[minute] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

fn yes_no(b: bool) -> String {
    format!("{:<8}", if b { "yes" } else { "no" })
}

/// One line of a table: name, expiry, residual time, the CA (with `ca_column`) and whether
/// it is externally managed; a missing file shows `!MISSING! <name>` and empty cells.
fn table_row(r: &Row, now: OffsetDateTime, ca_column: bool) -> Vec<String> {
    let Some(t) = r.not_after else {
        let mut cells = vec![format!("!MISSING! {}", r.name)];
        cells.resize(if ca_column { 5 } else { 4 }, String::new());
        return cells;
    };
    let mut cells = vec![
        r.name.clone(),
        expires_text(t),
        human_duration((t - now).whole_seconds()),
    ];
    if ca_column {
        cells.push(r.ca_name.unwrap_or("").to_string());
    }
    cells.push(yes_no(r.externally_managed));
    cells
}

/// The text kubeadm prints: the certificate table, an empty line, the CA table.
pub fn render_text(report: &Report, now: OffsetDateTime) -> String {
    let mut certs = vec![
        [
            "CERTIFICATE",
            "EXPIRES",
            "RESIDUAL TIME",
            "CERTIFICATE AUTHORITY",
            "EXTERNALLY MANAGED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &report.certificates {
        certs.push(table_row(r, now, true));
    }
    let mut cas = vec![
        [
            "CERTIFICATE AUTHORITY",
            "EXPIRES",
            "RESIDUAL TIME",
            "EXTERNALLY MANAGED",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &report.authorities {
        cas.push(table_row(r, now, false));
    }
    format!("{}\n{}", tabulate(&certs), tabulate(&cas))
}

/// `CertificateExpirationInfo` as kubeadm's `-o json|yaml` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpirationInfo {
    /// `output.kubeadm.k8s.io/v1alpha3`.
    pub api_version: &'static str,
    /// `CertificateExpirationInfo`.
    pub kind: &'static str,
    /// Leaf and kubeconfig certificates.
    pub certificates: Vec<ExpirationItem>,
    /// CA certificates.
    pub certificate_authorities: Vec<ExpirationItem>,
}

/// One certificate in [`ExpirationInfo`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpirationItem {
    /// Name.
    pub name: String,
    /// NotAfter, RFC 3339 (null when missing).
    pub expiration_date: Option<String>,
    /// Seconds until NotAfter (negative once expired; 0 when missing).
    pub residual_time: i64,
    /// See [`Row::externally_managed`].
    pub externally_managed: bool,
    /// Issuing CA; omitted for CAs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_name: Option<&'static str>,
    /// True when the file is missing.
    pub missing: bool,
}

/// The report in kubeadm's structured shape.
pub fn to_info(report: &Report, now: OffsetDateTime) -> ExpirationInfo {
    let item = |r: &Row| ExpirationItem {
        name: r.name.clone(),
        expiration_date: r.not_after.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
        residual_time: r.not_after.map(|t| (t - now).whole_seconds()).unwrap_or(0),
        externally_managed: r.externally_managed,
        ca_name: r.ca_name,
        missing: r.not_after.is_none(),
    };
    ExpirationInfo {
        api_version: "output.kubeadm.k8s.io/v1alpha3",
        kind: "CertificateExpirationInfo",
        certificates: report.certificates.iter().map(item).collect(),
        certificate_authorities: report.authorities.iter().map(item).collect(),
    }
}

/// True when any present certificate expires before `now + window` (or already has).
pub fn expires_within(report: &Report, now: OffsetDateTime, window: std::time::Duration) -> bool {
    report
        .certificates
        .iter()
        .chain(&report.authorities)
        .filter_map(|r| r.not_after)
        .any(|t| t < now + window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_apimachinery() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (59, "59s"),
            (120, "2m"),
            (121, "2m1s"),
            (150, "2m30s"),
            (7 * 3600, "7h"),
            (3 * 86400, "3d"),
            (2 * 365 * 86400, "2y"),
            (600, "10m"),
            (5 * 3600 + 120, "5h2m"),
            (20 * 3600, "20h"),
            (99 * 3600 + 3599, "4d3h"),
            (364 * 86400 + 86399, "364d"),
            (3 * 365 * 86400 + 10 * 86400, "3y10d"),
            (3649 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn table_rows_with_and_without_the_ca_column() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let row = |present: bool, ext: bool| Row {
            name: "apiserver".into(),
            not_after: present.then(|| now + time::Duration::days(3)),
            ca_name: Some("ca"),
            externally_managed: ext,
        };
        let expires = expires_text(now + time::Duration::days(3));
        let table: &[(Row, bool, Vec<String>)] = &[
            (
                row(true, false),
                true,
                vec![
                    "apiserver".into(),
                    expires.clone(),
                    "3d".into(),
                    "ca".into(),
                    "no      ".into(),
                ],
            ),
            (
                row(true, true),
                false,
                vec![
                    "apiserver".into(),
                    expires.clone(),
                    "3d".into(),
                    "yes     ".into(),
                ],
            ),
            (
                row(false, false),
                true,
                vec![
                    "!MISSING! apiserver".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                ],
            ),
            (
                row(false, true),
                false,
                vec![
                    "!MISSING! apiserver".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                ],
            ),
        ];
        for (i, (r, ca_column, want)) in table.iter().enumerate() {
            assert_eq!(&table_row(r, now, *ca_column), want, "case {i}");
        }
    }

    #[test]
    fn tabulate_pads_all_but_the_last_cell() {
        let rows = vec![
            vec!["A".to_string(), "BB".into(), "x".into()],
            vec!["longer-name".into(), "".into(), "".into()],
        ];
        assert_eq!(
            tabulate(&rows),
            format!(
                "{:<14}{:<10}x\n{:<14}{:<10}\n",
                "A", "BB", "longer-name", ""
            )
        );
    }
}
