//! The rotation's state on disk: `<cert_dir>/kpki-rotation.toml`, written atomically after
//! every step that changes what a later run must know. It names the CA (or `sa`) being
//! rotated, where the old and new keys live (never a PIN value), both certificates (so that
//! copying this one file to another control-plane node carries everything the phases there
//! need, the key itself being on the shared token or copied with it), and the last phase
//! each node reported done. A node's own progress is also read from its files (see
//! `observe`), so a stale copy of this file never takes a node backwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kpki_signer::KeyUri;
use serde::{Deserialize, Serialize};

use super::{Phase, Target};
use crate::PkiError;
use crate::store::{self, CERT_MODE};

/// The state file's name in the certificate directory.
pub const FILE: &str = "kpki-rotation.toml";

/// The state file of the PKI in `cert_dir`.
pub(crate) fn path(cert_dir: &Path) -> PathBuf {
    cert_dir.join(FILE)
}

/// One rotation, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct State {
    /// What is rotated: `ca`, `etcd-ca`, `front-proxy-ca` or `sa`.
    pub target: String,
    /// When the rotation started (RFC 3339).
    pub started: String,
    /// The key in use when the rotation started (no PIN value).
    pub old_key: String,
    /// The new key (no PIN value).
    pub new_key: String,
    /// The CA certificate (or `sa` public key) in use when the rotation started, PEM.
    pub old_cert: String,
    /// The new CA certificate (or public key), PEM; absent until `prepare` made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_cert: Option<String>,
    /// When `reissue` first completed on a node (RFC 3339): the new key signs from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reissued: Option<String>,
    /// The last phase each node (by node name) reported done.
    #[serde(default)]
    pub nodes: BTreeMap<String, Phase>,
}

impl State {
    /// The target this state rotates.
    pub(crate) fn target(&self, file: &Path) -> Result<Target, PkiError> {
        self.target.parse().map_err(|_| {
            PkiError::Malformed(format!(
                "{}: target {:?} is not ca, etcd-ca, front-proxy-ca or sa",
                file.display(),
                self.target
            ))
        })
    }

    /// The key URI stored under `field` (`old-key`/`new-key`), parsed.
    pub(crate) fn key(&self, file: &Path, field: &str) -> Result<KeyUri, PkiError> {
        let text = if field == "old-key" {
            &self.old_key
        } else {
            &self.new_key
        };
        text.parse()
            .map_err(|e| PkiError::Malformed(format!("{}: {field}: {e}", file.display())))
    }
}

/// The URI as stored: without a PIN value.
pub(crate) fn storable(uri: &KeyUri) -> String {
    match uri {
        KeyUri::Pkcs11(u) => KeyUri::Pkcs11(u.without_pin_value()).to_string(),
        KeyUri::File(_) => uri.to_string(),
    }
}

/// The state in `cert_dir`; `Ok(None)` when there is none.
pub(crate) fn read(cert_dir: &Path) -> Result<Option<State>, PkiError> {
    let file = path(cert_dir);
    let bytes = match kpki_atomic::read::regular_file(&file, kpki_atomic::read::CONFIG_MAX) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PkiError::io(&file, e)),
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| PkiError::Malformed(format!("{}: not UTF-8 text", file.display())))?;
    let state: State = toml::from_str(&text).map_err(|e| {
        PkiError::Malformed(format!(
            "{}: {}",
            file.display(),
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        ))
    })?;
    state.target(&file)?;
    state.key(&file, "old-key")?;
    state.key(&file, "new-key")?;
    Ok(Some(state))
}

/// Writes `state` into `cert_dir` atomically (0644: it holds no secret).
pub(crate) fn write(cert_dir: &Path, state: &State) -> Result<(), PkiError> {
    let body =
        toml::to_string(state).map_err(|e| PkiError::internal(format!("rotation state: {e}")))?;
    let text = format!(
        "# The state of a CA rotation, written by kpki ca rotate. Copy it to the other\n\
         # control-plane nodes before running a phase there. No PIN values.\n{body}"
    );
    store::replace(&path(cert_dir), text.as_bytes(), CERT_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_without_pin_values() {
        let dir = tempfile::tempdir().unwrap();
        let token: KeyUri = "pkcs11:token=k8s;object=ca-2?module-path=/m.so&pin-value=1234"
            .parse()
            .unwrap();
        let mut s = State {
            target: "ca".into(),
            started: "2026-01-01T00:00:00Z".into(),
            old_key: storable(&KeyUri::file("/p/ca.key")),
            new_key: storable(&token),
            old_cert: "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n".into(),
            new_cert: Some("NEW\n".into()),
            reissued: None,
            nodes: BTreeMap::new(),
        };
        s.nodes.insert("cp1".into(), Phase::TrustBoth);
        s.nodes.insert("cp2".into(), Phase::Prepare);
        write(dir.path(), &s).unwrap();
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(
            !text.contains("1234") && !text.contains("pin-value"),
            "{text}"
        );
        let back = read(dir.path()).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.target(Path::new("x")).unwrap(),
            Target::Ca(crate::catalogue::CaId::Ca)
        );
        assert!(read(&dir.path().join("absent")).unwrap().is_none());
    }

    #[test]
    fn malformed_states_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let rows: &[(&str, &str)] = &[
            ("target = \"ca\"\n", "missing field"),
            (
                "target = \"root\"\nstarted = \"x\"\nold-key = \"file:/a\"\nnew-key = \"file:/b\"\nold-cert = \"\"\n",
                "target \"root\"",
            ),
            (
                "target = \"ca\"\nstarted = \"x\"\nold-key = \"nope:/a\"\nnew-key = \"file:/b\"\nold-cert = \"\"\n",
                "old-key",
            ),
            (
                "target = \"ca\"\nstarted = \"x\"\nold-key = \"file:/a\"\nnew-key = \"file:/b\"\nold-cert = \"\"\n[nodes]\ncp1 = \"done\"\n",
                "kpki-rotation.toml",
            ),
            ("[[[", "kpki-rotation.toml"),
        ];
        for (text, want) in rows {
            std::fs::write(path(dir.path()), text).unwrap();
            let e = read(dir.path()).expect_err(text).to_string();
            assert!(e.contains(want) && e.contains(FILE), "{text}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
