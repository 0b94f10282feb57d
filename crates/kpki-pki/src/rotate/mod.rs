//! `kpki ca rotate`: replacing a CA (`ca`, `etcd-ca`, `front-proxy-ca`) or the
//! service-account key (`sa`) without downtime, in four resumable phases:
//!
//! 1. `prepare`: a new key on the configured backend (a new label or file, never the old
//!    key) and a new self-signed CA certificate with the same subject and a new subject key
//!    identifier (clients pick the issuer by subject and key identifier, so both CAs may be
//!    trusted at once);
//! 2. `trust-both`: every trust anchor (the CA file, the kubeconfigs' CA data for `ca`)
//!    becomes the bundle old+new, while every certificate is still signed by the old CA;
//! 3. `reissue`: every leaf and kubeconfig client certificate of the CA is signed by the new
//!    CA, and the bundles list the new CA first;
//! 4. `retire`: the bundles shrink to the new CA; the old key is kept and reported unused.
//!
//! Progress is kept in `<cert_dir>/kpki-rotation.toml` (`state`) and read back from the
//! node's files (`observe`), so a run killed anywhere continues where it stopped and every
//! phase run twice changes nothing the second time. `phases` does the work; `sa` rotates the
//! service-account key the same way (`sa.pub` lists both public keys while tokens signed by
//! the old key may still be in use).

mod anchors;
mod observe;
mod phases;
mod sa;
mod state;

use std::collections::BTreeMap;

use kpki_signer::{KeyUri, PinSource};
use serde::{Deserialize, Serialize};

use crate::PkiError;
use crate::catalogue::{self, CaId};
use crate::config::ClusterSpec;
use crate::keystore::KeyStore;

pub use sa::DEFAULT_TOKEN_LIFETIME;
pub use state::FILE as STATE_FILE;

/// A phase of a rotation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// New key and new CA certificate.
    Prepare,
    /// Every trust anchor is the bundle old+new.
    TrustBoth,
    /// Every certificate is signed by the new CA.
    Reissue,
    /// The bundles hold the new CA only.
    Retire,
}

impl Phase {
    /// The phase's name on the command line and in the state file.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::TrustBoth => "trust-both",
            Phase::Reissue => "reissue",
            Phase::Retire => "retire",
        }
    }

    /// The phase after this one.
    pub fn next(self) -> Option<Phase> {
        match self {
            Phase::Prepare => Some(Phase::TrustBoth),
            Phase::TrustBoth => Some(Phase::Reissue),
            Phase::Reissue => Some(Phase::Retire),
            Phase::Retire => None,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;

    fn from_str(text: &str) -> Result<Phase, String> {
        match text {
            "prepare" => Ok(Phase::Prepare),
            "trust-both" => Ok(Phase::TrustBoth),
            "reissue" => Ok(Phase::Reissue),
            "retire" => Ok(Phase::Retire),
            other => Err(format!(
                "phase {other:?}: expected prepare, trust-both, reissue or retire"
            )),
        }
    }
}

/// What a rotation replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One of kubeadm's three CAs.
    Ca(CaId),
    /// The service-account token signing key.
    Sa,
}

impl Target {
    /// The name on the command line (`ca`, `etcd-ca`, `front-proxy-ca`, `sa`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Ca(id) => catalogue::ca(id).name,
            Target::Sa => "sa",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        match text {
            "ca" => Ok(Target::Ca(CaId::Ca)),
            "etcd-ca" => Ok(Target::Ca(CaId::EtcdCa)),
            "front-proxy-ca" => Ok(Target::Ca(CaId::FrontProxyCa)),
            "sa" => Ok(Target::Sa),
            other => Err(format!(
                "{other:?}: expected ca, etcd-ca, front-proxy-ca or sa"
            )),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Request {
    /// What to rotate.
    pub target: Target,
    /// The phase to run; `None`: the next one for this node.
    pub phase: Option<Phase>,
    /// Where the new key goes (`prepare` only); default: beside the old key, under the next
    /// free generation name (`ca.key` → `ca-2.key`, `object=kubernetes-ca` → `kubernetes-ca-2`).
    pub new_key: Option<KeyUri>,
    /// `sa` only: how long a token may live (the retire phase waits this long after
    /// `reissue`); kube-apiserver's `--service-account-max-token-expiration`.
    pub token_lifetime: std::time::Duration,
    /// Only say what the phase would write and which keys it would make: nothing is written,
    /// no key is made, the refusals are those of a real run.
    pub dry_run: bool,
}

/// What a run writes, in order (with `dry` set: what it would write; nothing is written and
/// no key is made).
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// A dry run.
    pub(crate) dry: bool,
    list: Vec<String>,
}

impl Out {
    /// A run's list; `dry` for a dry run.
    pub(crate) fn new(dry: bool) -> Out {
        Out {
            dry,
            list: Vec::new(),
        }
    }

    /// Records `what` as written (or to be written).
    pub(crate) fn push(&mut self, what: String) {
        self.list.push(what);
    }

    /// The list, each entry once, in first-written order.
    pub(crate) fn into_list(self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.list
            .into_iter()
            .filter(|w| seen.insert(w.clone()))
            .collect()
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What is rotated.
    pub target: String,
    /// The phase run.
    pub phase: Phase,
    /// False when the phase had already been done here: nothing was written.
    pub changed: bool,
    /// A dry run: `written` is what the phase would write; nothing was written.
    pub dry_run: bool,
    /// Files written (or, in a dry run, to be written), in order; keys to be made too.
    pub written: Vec<String>,
    /// What the operator must restart now, in order.
    pub restart: Vec<String>,
    /// Other things the operator must know (one line each).
    pub notes: Vec<String>,
    /// The next phase, if any.
    pub next: Option<Phase>,
}

/// Where a node stands, from `--status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// What is rotated; `None` when no rotation was ever started here.
    pub target: Option<String>,
    /// When it started.
    pub started: Option<String>,
    /// The old key (no PIN value).
    pub old_key: Option<String>,
    /// The new key (no PIN value).
    pub new_key: Option<String>,
    /// This node's name.
    pub node: String,
    /// The last phase done on this node.
    pub phase: Option<Phase>,
    /// The last phase each node reported (the state file as copied here).
    pub nodes: BTreeMap<String, Phase>,
    /// This node is behind another node.
    pub behind: bool,
    /// The rotation is done on every node the state file knows.
    pub finished: bool,
    /// The phase to run next on this node.
    pub next: Option<Phase>,
    /// What the operator must restart after this node's last phase.
    pub restart: Vec<String>,
    /// Other things the operator must know.
    pub notes: Vec<String>,
}

/// Runs the phase `request` asks for (or the next one) on the PKI of `spec`.
pub fn run(spec: &ClusterSpec, keys: &KeyStore, request: &Request) -> Result<Report, PkiError> {
    phases::run(spec, keys, request)
}

/// Where the rotation of the PKI of `spec` stands on this node.
pub fn status(spec: &ClusterSpec) -> Result<Status, PkiError> {
    phases::status(spec)
}

/// `uri` with the PIN of `config` when `uri` has none and both name the same PKCS#11 module
/// and token: the state file keeps no PIN value, the configuration may.
pub(crate) fn with_pin_of(uri: &KeyUri, config: &KeyUri) -> KeyUri {
    match (uri, config) {
        (KeyUri::Pkcs11(u), KeyUri::Pkcs11(c))
            if u.pin.is_none()
                && u.module_path == c.module_path
                && u.token == c.token
                && u.serial == c.serial =>
        {
            let mut u = u.clone();
            u.pin = c.pin.clone();
            KeyUri::Pkcs11(u)
        }
        _ => uri.clone(),
    }
}

/// The same key location, ignoring the PIN.
pub(crate) fn same_key(a: &KeyUri, b: &KeyUri) -> bool {
    state::storable(a) == state::storable(b)
}

/// `name` with its generation suffix `-<n>` (n ≥ 2) taken off, and that n (1 without one).
fn generation(name: &str) -> (&str, u32) {
    if let Some((stem, n)) = name.rsplit_once('-')
        && let Ok(n) = n.parse::<u32>()
        && n >= 2
        && !stem.is_empty()
    {
        return (stem, n);
    }
    (name, 1)
}

/// The default place of the next key after `old`: the next generation name beside it
/// (`ca.key` → `ca-2.key`; `object=kubernetes-ca` → `kubernetes-ca-2`, a fresh id), the
/// first whose file does not exist for file keys. `fallback` names an object for a token
/// key found by id only.
pub(crate) fn next_key(old: &KeyUri, fallback: &str) -> KeyUri {
    match old {
        KeyUri::File(p) => {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| fallback.to_string());
            let ext = p
                .extension()
                .map(|e| format!(".{}", e.to_string_lossy()))
                .unwrap_or_default();
            let (base, n) = generation(&stem);
            let mut n = n + 1;
            loop {
                let candidate = p.with_file_name(format!("{base}-{n}{ext}"));
                if !candidate.exists() {
                    return KeyUri::File(candidate);
                }
                n += 1;
            }
        }
        KeyUri::Pkcs11(u) => {
            let mut new = u.clone();
            let object = u.object.clone().unwrap_or_else(|| fallback.to_string());
            let (base, n) = generation(&object);
            new.object = Some(format!("{base}-{}", n + 1));
            new.id = None;
            KeyUri::Pkcs11(new)
        }
    }
}

/// True when `uri` carries a PIN value (never stored, so later phases need the config's).
pub(crate) fn has_pin_value(uri: &KeyUri) -> bool {
    matches!(uri, KeyUri::Pkcs11(u) if matches!(u.pin, Some(PinSource::Value(_))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [
            Phase::Prepare,
            Phase::TrustBoth,
            Phase::Reissue,
            Phase::Retire,
        ] {
            assert_eq!(p.name().parse::<Phase>(), Ok(p));
        }
        assert!("done".parse::<Phase>().is_err());
        for t in ["ca", "etcd-ca", "front-proxy-ca", "sa"] {
            assert_eq!(t.parse::<Target>().unwrap().name(), t);
        }
        assert!("root".parse::<Target>().is_err());
        assert!(Phase::Prepare < Phase::Retire);
        assert_eq!(Phase::Retire.next(), None);
    }

    #[test]
    fn next_keys_are_the_next_generation_and_never_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("ca-3.key"), "taken").unwrap();
        let token = |q: &str| -> KeyUri {
            format!("pkcs11:token=k8s;{q}?module-path=/m.so&pin-source=file:/pin")
                .parse()
                .unwrap()
        };
        let table: Vec<(KeyUri, KeyUri)> = vec![
            (
                KeyUri::file(d.join("ca.key")),
                KeyUri::file(d.join("ca-2.key")),
            ),
            (
                KeyUri::file(d.join("ca-2.key")),
                KeyUri::file(d.join("ca-4.key")),
            ),
            (
                KeyUri::file(d.join("etcd-ca-9.key")),
                KeyUri::file(d.join("etcd-ca-10.key")),
            ),
            (
                KeyUri::file(d.join("x-1.key")),
                KeyUri::file(d.join("x-1-2.key")),
            ),
            (
                token("object=kubernetes-ca"),
                token("object=kubernetes-ca-2"),
            ),
            (token("object=ca-7;id=%01"), token("object=ca-8")),
            (token("id=%01"), token("object=sa-2")),
        ];
        for (old, want) in table {
            let got = next_key(&old, "sa");
            assert_eq!(got, want, "{old}");
            assert!(!same_key(&got, &old));
        }
    }

    #[test]
    fn pins_come_from_the_configuration_for_the_same_token_only() {
        let stored: KeyUri = "pkcs11:token=k8s;object=ca-2?module-path=/m.so"
            .parse()
            .unwrap();
        let config: KeyUri = "pkcs11:token=k8s;object=ca?module-path=/m.so&pin-value=1234"
            .parse()
            .unwrap();
        let other: KeyUri = "pkcs11:token=other;object=ca?module-path=/m.so&pin-value=1234"
            .parse()
            .unwrap();
        let KeyUri::Pkcs11(got) = with_pin_of(&stored, &config) else {
            panic!()
        };
        assert!(got.pin.is_some() && got.object.as_deref() == Some("ca-2"));
        assert_eq!(with_pin_of(&stored, &other), stored);
        assert!(has_pin_value(&config) && !has_pin_value(&stored));
        assert!(same_key(
            &config,
            &"pkcs11:token=k8s;object=ca?module-path=/m.so"
                .parse()
                .unwrap()
        ));
    }
}
