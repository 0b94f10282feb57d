//! Where `kpki init` found or made each CA key (and `sa`), recorded beside the PKI in
//! `<cert_dir>/kpki-keys.toml`, so that every later command on that directory (renew,
//! check-expiration, sign, kubeconfig, node add) finds keys on tokens without `--key` flags.
//! Flags, `KPKI__…` variables and kpki.toml still win; a recorded URI only fills in what they
//! leave unset. Never holds a PIN value (`pin-value` is dropped; `pin-source` files stay).
//! Keys at kubeadm's default file paths are not recorded.

use std::path::Path;

use kpki_signer::KeyUri;
use serde::Deserialize;

use crate::PkiError;
use crate::config::{ConfigError, KeySettings};
use crate::store::{self, CERT_MODE};

/// The record's file name in the certificate directory.
pub const FILE: &str = "kpki-keys.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    #[serde(default)]
    keys: KeySettings,
}

/// The keys recorded for the PKI in `cert_dir` (none when there is no record).
pub(crate) fn read(cert_dir: &Path) -> Result<KeySettings, ConfigError> {
    let path = cert_dir.join(FILE);
    let bytes = match kpki_atomic::read::regular_file(&path, kpki_atomic::read::CONFIG_MAX) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeySettings::default()),
        Err(e) => return Err(ConfigError(format!("{}: {e}", path.display()))),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigError(format!("{}: not UTF-8 text", path.display())))?;
    let record: Record = toml::from_str(&text).map_err(|e| {
        ConfigError(format!(
            "{}: {}",
            path.display(),
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        ))
    })?;
    Ok(record.keys)
}

/// Fills the keys `settings` leaves unset from `recorded`.
pub(crate) fn fill(settings: &mut KeySettings, recorded: KeySettings) {
    settings.ca = settings.ca.take().or(recorded.ca);
    settings.front_proxy_ca = settings.front_proxy_ca.take().or(recorded.front_proxy_ca);
    settings.etcd_ca = settings.etcd_ca.take().or(recorded.etcd_ca);
    settings.sa = settings.sa.take().or(recorded.sa);
}

/// The URI as recorded: without a PIN value.
fn recordable(uri: &KeyUri) -> String {
    match uri {
        KeyUri::Pkcs11(u) => KeyUri::Pkcs11(u.without_pin_value()).to_string(),
        KeyUri::File(_) => uri.to_string(),
    }
}

/// The record's text for keys `(name, uri, default path)`: the keys not at their default
/// file; `None` when every key is at its default.
fn text(keys: &[(&str, &KeyUri, &Path)]) -> Option<String> {
    let lines: Vec<String> = keys
        .iter()
        .filter(|(_, uri, default)| uri.as_file() != Some(*default))
        .map(|(name, uri, _)| {
            let value = toml::Value::String(recordable(uri)).to_string();
            format!("{name} = {value}")
        })
        .collect();
    (!lines.is_empty()).then(|| {
        format!(
            "# Written by kpki init: where this PKI's keys live (flags, KPKI__ variables and\n\
             # kpki.toml override it). No PIN values.\n[keys]\n{}\n",
            lines.join("\n")
        )
    })
}

/// Whether [`write`] would leave the record as it is: `None` when it writes none (every key
/// at kubeadm's default file), `Some(true)` when the record on disk already says the same.
pub(crate) fn is_current(spec: &crate::config::ClusterSpec) -> Result<Option<bool>, PkiError> {
    let Some(want) = record_text(spec) else {
        return Ok(None);
    };
    let path = spec.cert_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(have) => Ok(Some(have == want.as_bytes())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(false)),
        Err(e) => Err(PkiError::io(&path, e)),
    }
}

/// Records the key locations of `spec` beside its PKI (replacing an earlier record); does
/// nothing when every key is at kubeadm's default file.
pub(crate) fn write(spec: &crate::config::ClusterSpec) -> Result<(), PkiError> {
    match record_text(spec) {
        Some(t) => store::replace(&spec.cert_dir.join(FILE), t.as_bytes(), CERT_MODE),
        None => Ok(()),
    }
}

/// The record's text for `spec`; `None` when every key is at kubeadm's default file.
fn record_text(spec: &crate::config::ClusterSpec) -> Option<String> {
    let dir = &spec.cert_dir;
    let defaults = [
        dir.join("ca.key"),
        dir.join("front-proxy-ca.key"),
        dir.join("etcd/ca.key"),
        dir.join("sa.key"),
    ];
    let names = ["ca", "front-proxy-ca", "etcd-ca"];
    let mut keys: Vec<(&str, &KeyUri, &Path)> = spec
        .ca_keys
        .iter()
        .zip(names)
        .zip(&defaults)
        .map(|(((_, uri), name), default)| (name, uri, default.as_path()))
        .collect();
    keys.push(("sa", &spec.sa_key, defaults[3].as_path()));
    text(&keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_keys_off_their_default_files_and_never_a_pin() {
        let d = Path::new("/p");
        let token: KeyUri = "pkcs11:token=k8s;object=ca?module-path=/m.so&pin-value=1234"
            .parse()
            .unwrap();
        let token_file_pin: KeyUri =
            "pkcs11:token=k8s;object=sa?module-path=/m.so&pin-source=file:/etc/kpki/pin"
                .parse()
                .unwrap();
        let default = KeyUri::file("/p/front-proxy-ca.key");
        let moved = KeyUri::file("/keys/etcd-ca.key");
        let (ca_file, sa_file) = (KeyUri::file("/p/ca.key"), KeyUri::file("/p/sa.key"));
        let (ca_path, fp_path, etcd_path, sa_path) = (
            d.join("ca.key"),
            d.join("front-proxy-ca.key"),
            d.join("etcd/ca.key"),
            d.join("sa.key"),
        );
        let all_default: [(&str, &KeyUri, &Path); 2] =
            [("ca", &ca_file, &ca_path), ("sa", &sa_file, &sa_path)];
        assert_eq!(text(&all_default), None);
        let mixed: [(&str, &KeyUri, &Path); 4] = [
            ("ca", &token, &ca_path),
            ("front-proxy-ca", &default, &fp_path),
            ("etcd-ca", &moved, &etcd_path),
            ("sa", &token_file_pin, &sa_path),
        ];
        let t = text(&mixed).unwrap();
        assert!(!t.contains("1234") && !t.contains("pin-value"), "{t}");
        assert!(!t.contains("front-proxy-ca ="), "{t}");
        assert!(t.contains("etcd-ca = \"file:/keys/etcd-ca.key\""), "{t}");
        assert!(t.contains("pin-source=file:/etc/kpki/pin"), "{t}");
        // What is written reads back as the same keys (the PIN value dropped).
        let back: Record = toml::from_str(&t).unwrap();
        assert_eq!(back.keys.etcd_ca, Some(moved.clone()));
        assert_eq!(back.keys.sa, Some(token_file_pin.clone()));
        let KeyUri::Pkcs11(u) = back.keys.ca.unwrap() else {
            panic!()
        };
        assert!(u.pin.is_none());
        assert_eq!(u.object.as_deref(), Some("ca"));
        assert!(back.keys.front_proxy_ca.is_none());
    }

    #[test]
    fn flags_and_config_win_over_the_record() {
        let flag: KeyUri = "file:/flag/ca.key".parse().unwrap();
        let rec: KeyUri = "file:/rec/ca.key".parse().unwrap();
        let rec_sa: KeyUri = "file:/rec/sa.key".parse().unwrap();
        let mut s = KeySettings {
            ca: Some(flag.clone()),
            ..Default::default()
        };
        fill(
            &mut s,
            KeySettings {
                ca: Some(rec),
                sa: Some(rec_sa.clone()),
                ..Default::default()
            },
        );
        assert_eq!(s.ca, Some(flag));
        assert_eq!(s.sa, Some(rec_sa));
        assert!(s.etcd_ca.is_none() && s.front_proxy_ca.is_none());
    }
}
