//! `kpki init`: the kubeadm PKI and kubeconfigs, with each CA key on its configured backend.
//!
//! Two phases. First everything that exists is read and checked (CA certificates and keys,
//! leaves, kubeconfigs) and every token is reached, without writing. Then what is missing is
//! made: CA keys and self-signed certificates, leaf keys (generated in parallel) and
//! certificates, `sa.key`/`sa.pub`, kubeconfigs. Every file is written atomically and a
//! leaf's key is written before its certificate, so a run killed at any point leaves a state
//! the next run completes: a leaf key without its certificate is reused, never replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kpki_signer::{KeyUri, Signer, spki};
use kpki_soft::SoftBackend;
use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::catalogue::{self, CaId, CaSpec, KUBECONFIGS, KubeconfigSpec, LeafSpec};
use crate::certfile;
use crate::chain;
use crate::config::ClusterSpec;
use crate::constraints;
use crate::keygen::{NewKey, create_keys};
use crate::keystore::KeyStore;
use crate::sans::{AltNames, alt_names};
use crate::store::{self, CERT_MODE, PRIVATE_MODE};
use crate::x509::{self, CaSigner, Profile};
use crate::{PkiError, authority, kubeconfig};

/// What happened to one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Catalogue name (`ca`, `apiserver`, `admin.conf`, `sa`).
    pub name: String,
    /// `certificate`, `key`, `public-key` or `kubeconfig`.
    pub kind: &'static str,
    /// Path, or the key URI for token-held keys.
    pub path: String,
    /// `generated` or `kept`; in a dry run's plan `generate`, `keep`, or `external` (a CA
    /// key absent in kubeadm's external-CA mode).
    pub action: &'static str,
    /// SHA-256 of the certificate DER or of the key's SubjectPublicKeyInfo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Everything `init` did.
#[derive(Debug, Default, Serialize)]
pub struct InitReport {
    /// Certificate directory.
    pub cert_dir: PathBuf,
    /// Kubeconfig directory.
    pub kubeconfig_dir: PathBuf,
    /// Files in the order they were handled.
    pub files: Vec<FileReport>,
    /// True for a dry run's plan: nothing was written.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// A CA after phase one: its certificate and key, if present; after its phase-two step,
/// its issuer (certificate parsed once, key on its backend) unless the key is absent.
struct CaState {
    spec: CaSpec,
    cert: Option<Vec<u8>>,
    key: Option<Arc<dyn Signer>>,
    key_uri: KeyUri,
    /// The issuers above the CA when it is an intermediate (`<base>-chain.crt`).
    chain: Vec<Vec<u8>>,
    /// Every certificate of the CA file (old and new CA while a rotation trusts both).
    bundle: Vec<Vec<u8>>,
    signer: Option<CaSigner>,
}

impl CaState {
    /// Issues a leaf certificate for `key`; refuses for a CA whose key is absent.
    fn issue(
        &self,
        profile: &Profile,
        key: Arc<dyn Signer>,
        start: OffsetDateTime,
        period: std::time::Duration,
    ) -> Result<x509::Issued, PkiError> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            PkiError::Missing(format!(
                "cannot issue {:?}: the {} key {} is absent (external CA); provide the certificate or the key",
                profile.cn, self.spec.name, self.key_uri
            ))
        })?;
        Ok(signer.issue(x509::leaf_params(profile, start, period)?, key)?)
    }
}

fn find_ca(cas: &[CaState], id: CaId) -> Result<&CaState, PkiError> {
    cas.iter()
        .find(|c| c.spec.id == id)
        .ok_or_else(|| PkiError::internal("CA not configured"))
}

/// A leaf after phase one.
enum LeafPlan {
    /// Valid as it is: its certificate DER, then the intermediates of its file.
    Keep { chain: Vec<Vec<u8>> },
    /// To issue, reusing the key when one is on disk.
    Issue { key: Option<Arc<dyn Signer>> },
}

/// What phase one found: every CA, leaf and kubeconfig of the cluster with what to do about
/// it, and the service-account key if it exists.
struct Plan {
    cas: Vec<CaState>,
    leaves: Vec<(&'static LeafSpec, LeafPlan)>,
    /// Each kubeconfig, `true` when it is kept.
    kubeconfigs: Vec<(&'static KubeconfigSpec, bool)>,
    sa: Option<Arc<dyn Signer>>,
}

/// Phase one: reads and checks what exists and reaches every configured token; writes nothing.
fn plan(spec: &ClusterSpec, keys: &KeyStore) -> Result<Plan, PkiError> {
    let local_etcd = spec.local_etcd();
    let mut cas: Vec<CaState> = Vec::new();
    for ca in catalogue::cas(local_etcd) {
        cas.push(inspect_ca(spec, keys, ca.id)?);
    }
    let mut leaves = Vec::new();
    for leaf in catalogue::leaves(local_etcd) {
        let ca = find_ca(&cas, leaf.ca)?;
        let plan = inspect_leaf(spec, leaf, ca)?;
        if matches!(plan, LeafPlan::Issue { .. }) {
            check_names(spec, leaf, ca)?;
        }
        leaves.push((leaf, plan));
    }
    let ca_root = find_ca(&cas, CaId::Ca)?;
    let mut kubeconfigs = Vec::new();
    for kc in KUBECONFIGS.iter() {
        kubeconfigs.push((kc, inspect_kubeconfig(spec, kc, ca_root)?));
    }
    let sa = authority::open_key(keys, &spec.sa_key)?;
    Ok(Plan {
        cas,
        leaves,
        kubeconfigs,
        sa,
    })
}

impl Plan {
    /// Which CAs need a new key, and where every new key of this run goes, in the order
    /// phase two takes them: new CA keys, `sa`, leaf keys, kubeconfig keys.
    fn key_targets(&self, spec: &ClusterSpec) -> (Vec<bool>, Vec<KeyUri>) {
        let new_cas: Vec<bool> = self
            .cas
            .iter()
            .map(|c| c.cert.is_none() && c.key.is_none())
            .collect();
        let targets = self
            .cas
            .iter()
            .zip(&new_cas)
            .filter(|(_, new)| **new)
            .map(|(c, _)| c.key_uri.clone())
            .chain(self.sa.is_none().then(|| spec.sa_key.clone()))
            .chain(
                self.leaves
                    .iter()
                    .filter(|(_, p)| matches!(p, LeafPlan::Issue { key: None }))
                    .map(|(leaf, _)| KeyUri::file(leaf.key_path(&spec.cert_dir))),
            )
            .chain(
                self.kubeconfigs
                    .iter()
                    .filter(|(_, keep)| !*keep)
                    .map(|(kc, _)| KeyUri::file(kc.path(&spec.kubeconfig_dir))),
            )
            .collect();
        (new_cas, targets)
    }
}

/// Phase two's state: the keys made for this run (taken in order), the report, the progress.
struct Writer<'a> {
    spec: &'a ClusterSpec,
    start: OffsetDateTime,
    fresh: std::vec::IntoIter<NewKey>,
    report: InitReport,
    progress: &'a mut dyn FnMut(String),
}

impl Writer<'_> {
    fn next_key(&mut self) -> Result<NewKey, PkiError> {
        self.fresh
            .next()
            .ok_or_else(|| PkiError::internal("key creation came up short"))
    }

    /// Keeps or issues `leaf` as planned.
    fn leaf(&mut self, cas: &[CaState], leaf: &LeafSpec, plan: LeafPlan) -> Result<(), PkiError> {
        let spec = self.spec;
        let crt = leaf.cert_path(&spec.cert_dir);
        let key = match plan {
            LeafPlan::Keep { chain } => {
                (self.progress)(format!(
                    "[certs] Using existing {} certificate and key on disk",
                    leaf.name
                ));
                let der = chain.first().map(Vec::as_slice).unwrap_or_default();
                push_cert(&mut self.report, leaf.name, &crt, "kept", der);
                return Ok(());
            }
            LeafPlan::Issue { key: Some(k) } => k,
            LeafPlan::Issue { key: None } => self.next_key()?.persist()?,
        };
        let sans = alt_names(spec, leaf.sans);
        let profile = Profile {
            cn: leaf.cn.for_node(&spec.node_name),
            orgs: leaf.orgs.iter().map(|s| s.to_string()).collect(),
            usages: leaf.usages.to_vec(),
            sans: sans.clone(),
        };
        (self.progress)(format!(
            "[certs] Generating {:?} certificate and key",
            leaf.name
        ));
        if !sans.dns.is_empty() {
            (self.progress)(format!(
                "[certs] {} serving cert is signed for DNS names {:?} and IPs {:?}",
                leaf.name,
                sans.dns,
                sans.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>()
            ));
        }
        let ca = find_ca(cas, leaf.ca)?;
        let cert = ca.issue(&profile, Arc::clone(&key), self.start, spec.cert_validity)?;
        let ca_der = ca.cert.as_deref().unwrap_or_default();
        let file = chain::leaf_file(&cert.pem, ca_der, &ca.chain);
        store::create(&crt, file.as_bytes(), CERT_MODE)?;
        self.report.files.push(FileReport {
            name: leaf.name.into(),
            kind: "key",
            path: leaf.key_path(&spec.cert_dir).display().to_string(),
            action: "generated",
            sha256: Some(spki::sha256_hex(key.public_key_spki())),
        });
        push_cert(&mut self.report, leaf.name, &crt, "generated", &cert.der);
        Ok(())
    }

    /// Keeps `kc`, or writes it with a new client certificate from `root` (whose certificate
    /// is `ca_pem`).
    fn kubeconfig(
        &mut self,
        root: &CaState,
        ca_pem: &str,
        kc: &KubeconfigSpec,
        keep: bool,
    ) -> Result<(), PkiError> {
        let spec = self.spec;
        let path = kc.path(&spec.kubeconfig_dir);
        if keep {
            (self.progress)(format!(
                "[kubeconfig] Using existing kubeconfig file: {:?}",
                path.display().to_string()
            ));
            self.report.files.push(FileReport {
                name: kc.file.into(),
                kind: "kubeconfig",
                path: path.display().to_string(),
                action: "kept",
                sha256: None,
            });
            return Ok(());
        }
        let NewKey::Soft(key, key_pem) = self.next_key()? else {
            return Err(PkiError::internal(
                "a kubeconfig key must be a software key",
            ));
        };
        let cn = kc.cn.for_node(&spec.node_name);
        let profile = Profile {
            cn: cn.clone(),
            orgs: kc.orgs.iter().map(|s| s.to_string()).collect(),
            usages: vec![crate::catalogue::Usage::ClientAuth],
            sans: AltNames::default(),
        };
        let cert = root.issue(&profile, Arc::new(*key), self.start, spec.cert_validity)?;
        let server = kc.server_url(spec);
        let yaml = kubeconfig::render(
            &spec.cluster_name,
            &server,
            ca_pem,
            &cn,
            &cert.pem,
            &key_pem,
        )?;
        (self.progress)(format!(
            "[kubeconfig] Writing {:?} kubeconfig file",
            kc.file
        ));
        store::create(&path, yaml.as_bytes(), PRIVATE_MODE)?;
        self.report.files.push(FileReport {
            name: kc.file.into(),
            kind: "kubeconfig",
            path: path.display().to_string(),
            action: "generated",
            sha256: Some(spki::sha256_hex(&cert.der)),
        });
        Ok(())
    }
}

/// Runs `kpki init` for `spec`; `progress` receives kubeadm-style lines.
pub fn run(
    spec: &ClusterSpec,
    keys: &KeyStore,
    progress: &mut dyn FnMut(String),
) -> Result<InitReport, PkiError> {
    let start = x509::whole_seconds(OffsetDateTime::now_utc());
    // A renewal killed half-way left staged pairs: finish them before judging any pair.
    for dir in [spec.cert_dir.clone(), spec.cert_dir.join("etcd")] {
        crate::pair::recover(&dir)?;
    }
    let plan = plan(spec, keys)?;

    // Phase two: make what is missing, after clearing what a killed run left half-written.
    for dir in [
        spec.cert_dir.clone(),
        spec.cert_dir.join("etcd"),
        spec.kubeconfig_dir.clone(),
    ] {
        kpki_atomic::remove_stale_temps(&dir).map_err(|e| PkiError::io(&dir, e))?;
    }
    progress(format!(
        "[certs] Using certificateDir folder {:?}",
        spec.cert_dir.display().to_string()
    ));
    // Every key this run needs, made at once: software keys on all cores while the tokens
    // generate theirs.
    let (new_cas, targets) = plan.key_targets(spec);
    let fresh = create_keys(keys, spec.algorithm, targets)?.into_iter();
    let Plan {
        mut cas,
        leaves,
        kubeconfigs,
        sa,
    } = plan;
    // Key generation can take a while on a token: a kept leaf that expired meanwhile is
    // refused before anything is written.
    let now = OffsetDateTime::now_utc();
    for (leaf, plan) in &leaves {
        if let LeafPlan::Keep { chain } = plan {
            check_kept(spec, leaf, find_ca(&cas, leaf.ca)?, chain, now)?;
        }
    }
    let mut w = Writer {
        spec,
        start,
        fresh,
        report: InitReport {
            cert_dir: spec.cert_dir.clone(),
            kubeconfig_dir: spec.kubeconfig_dir.clone(),
            files: Vec::new(),
            dry_run: false,
        },
        progress,
    };
    for (ca, new) in cas.iter_mut().zip(new_cas) {
        let key = if new { Some(w.next_key()?) } else { None };
        ensure_ca(spec, ca, key, start, &mut w.report, w.progress)?;
    }
    let sa_new = if sa.is_none() {
        Some(w.next_key()?)
    } else {
        None
    };
    for (leaf, plan) in leaves {
        w.leaf(&cas, leaf, plan)?;
    }
    ensure_sa(spec, sa, sa_new, &mut w.report, w.progress)?;

    (w.progress)(format!(
        "[kubeconfig] Using kubeconfig folder {:?}",
        spec.kubeconfig_dir.display().to_string()
    ));
    let root = find_ca(&cas, CaId::Ca)?;
    let ca_pem = chain::trust_pem(&root.bundle, &root.chain);
    for (kc, keep) in kubeconfigs {
        w.kubeconfig(root, &ca_pem, kc, keep)?;
    }
    crate::recorded::write(spec)?;
    Ok(w.report)
}

/// What [`run`] would do for `spec`, without doing it: phase one alone (every file read and
/// checked, every configured key opened, so a wrong PIN, an unreachable token or an absent
/// key fails here as it fails `run`), then each CA, leaf, kubeconfig, `sa` and the key
/// record with `generate`, `keep` or `external`. Writes nothing and makes no key; a renewal
/// a killed run left staged is not finished (the next `run` finishes it first).
pub fn dry_run(spec: &ClusterSpec, keys: &KeyStore) -> Result<InitReport, PkiError> {
    let plan = plan(spec, keys)?;
    let mut files = Vec::new();
    let mut row = |name: &str, kind: &'static str, path: String, action, sha256| {
        files.push(FileReport {
            name: name.into(),
            kind,
            path,
            action,
            sha256,
        })
    };
    let generate_or_keep = |present: bool| if present { "keep" } else { "generate" };
    for ca in &plan.cas {
        let key_action = match (&ca.key, &ca.cert) {
            (Some(_), _) => "keep",
            (None, Some(_)) => "external",
            (None, None) => "generate",
        };
        let key_sha = ca
            .key
            .as_ref()
            .map(|k| spki::sha256_hex(k.public_key_spki()));
        row(
            ca.spec.name,
            "key",
            ca.key_uri.to_string(),
            key_action,
            key_sha,
        );
        let crt = ca.spec.cert_path(&spec.cert_dir).display().to_string();
        let cert_sha = ca.cert.as_deref().map(spki::sha256_hex);
        row(
            ca.spec.name,
            "certificate",
            crt,
            generate_or_keep(ca.cert.is_some()),
            cert_sha,
        );
    }
    for (leaf, p) in &plan.leaves {
        let (key, cert) = match p {
            LeafPlan::Keep { chain } => (true, chain.first().map(|d| spki::sha256_hex(d))),
            LeafPlan::Issue { key } => (key.is_some(), None),
        };
        let key_path = leaf.key_path(&spec.cert_dir).display().to_string();
        row(leaf.name, "key", key_path, generate_or_keep(key), None);
        let crt = leaf.cert_path(&spec.cert_dir).display().to_string();
        row(
            leaf.name,
            "certificate",
            crt,
            generate_or_keep(cert.is_some()),
            cert,
        );
    }
    let sa_sha = plan
        .sa
        .as_ref()
        .map(|k| spki::sha256_hex(k.public_key_spki()));
    row(
        "sa",
        "key",
        spec.sa_key.to_string(),
        generate_or_keep(sa_sha.is_some()),
        sa_sha,
    );
    let sa_pub = spec.cert_dir.join("sa.pub");
    let pub_present = plan.sa.is_some() && sa_pub.exists();
    row(
        "sa",
        "public-key",
        sa_pub.display().to_string(),
        generate_or_keep(pub_present),
        None,
    );
    for (kc, keep) in &plan.kubeconfigs {
        let path = kc.path(&spec.kubeconfig_dir).display().to_string();
        row(kc.file, "kubeconfig", path, generate_or_keep(*keep), None);
    }
    if let Some(same) = crate::recorded::is_current(spec)? {
        let path = spec
            .cert_dir
            .join(crate::recorded::FILE)
            .display()
            .to_string();
        row("keys", "record", path, generate_or_keep(same), None);
    }
    Ok(InitReport {
        cert_dir: spec.cert_dir.clone(),
        kubeconfig_dir: spec.kubeconfig_dir.clone(),
        files,
        dry_run: true,
    })
}

fn push_cert(report: &mut InitReport, name: &str, crt: &Path, action: &'static str, der: &[u8]) {
    report.files.push(FileReport {
        name: name.into(),
        kind: "certificate",
        path: crt.display().to_string(),
        action,
        sha256: Some(spki::sha256_hex(der)),
    });
}

/// Reads CA `id` as [`authority::find`] finds it (the signing certificate of a bundle; a
/// certificate whose configured key is gone is refused there).
fn inspect_ca(spec: &ClusterSpec, keys: &KeyStore, id: CaId) -> Result<CaState, PkiError> {
    let found = authority::find(spec, keys, id)?;
    Ok(CaState {
        spec: *found.spec,
        cert: found.cert,
        key: found.key,
        key_uri: found.key_uri,
        chain: found.chain,
        bundle: found.bundle,
        signer: None,
    })
}

fn ensure_ca(
    spec: &ClusterSpec,
    ca: &mut CaState,
    new_key: Option<NewKey>,
    start: OffsetDateTime,
    report: &mut InitReport,
    progress: &mut dyn FnMut(String),
) -> Result<(), PkiError> {
    let crt = ca.spec.cert_path(&spec.cert_dir);
    if ca.cert.is_some() {
        let how = if ca.key.is_some() {
            ""
        } else {
            " (external CA: no key)"
        };
        progress(format!(
            "[certs] Using existing {} certificate authority{how}",
            ca.spec.name
        ));
        let der = ca.cert.as_deref().unwrap_or_default();
        push_cert(report, ca.spec.name, &crt, "kept", der);
        if let Some(k) = &ca.key {
            ca.signer = Some(CaSigner::new(der, Arc::clone(k))?.within_chain(der, &ca.chain)?);
            report.files.push(FileReport {
                name: ca.spec.name.into(),
                kind: "key",
                path: ca.key_uri.to_string(),
                action: "kept",
                sha256: Some(spki::sha256_hex(k.public_key_spki())),
            });
        }
        return Ok(());
    }
    let (key, action) = match (ca.key.take(), new_key) {
        (Some(k), _) => (k, "kept"),
        (None, Some(new)) => (new.persist()?, "generated"),
        (None, None) => {
            return Err(PkiError::internal(format!(
                "{}: no key to sign the CA certificate with",
                ca.spec.name
            )));
        }
    };
    let where_ = if ca.key_uri.is_pkcs11() {
        format!(" (key on token: {})", ca.key_uri)
    } else {
        String::new()
    };
    progress(format!(
        "[certs] Generating {:?} certificate and key{where_}",
        ca.spec.name
    ));
    let params = x509::ca_params(ca.spec.cn, key.public_key_spki(), start, spec.ca_validity)?;
    let cert = x509::self_sign(params, Arc::clone(&key))?;
    store::create(&crt, cert.pem.as_bytes(), CERT_MODE)?;
    report.files.push(FileReport {
        name: ca.spec.name.into(),
        kind: "key",
        path: ca.key_uri.to_string(),
        action,
        sha256: Some(spki::sha256_hex(key.public_key_spki())),
    });
    push_cert(report, ca.spec.name, &crt, "generated", &cert.der);
    ca.signer = Some(CaSigner::new(&cert.der, Arc::clone(&key))?);
    ca.bundle = vec![cert.der.clone()];
    ca.cert = Some(cert.der);
    ca.key = Some(key);
    Ok(())
}

fn inspect_leaf(spec: &ClusterSpec, leaf: &LeafSpec, ca: &CaState) -> Result<LeafPlan, PkiError> {
    let crt = leaf.cert_path(&spec.cert_dir);
    let key_path = leaf.key_path(&spec.cert_dir);
    let chain = certfile::read(&crt)?;
    let key: Option<Arc<dyn Signer>> = if key_path.exists() {
        Some(Arc::new(SoftBackend.open_file(&key_path)?))
    } else {
        None
    };
    let Some(chain) = chain else {
        return Ok(LeafPlan::Issue { key });
    };
    let Some(key) = key else {
        return Err(PkiError::Missing(format!(
            "{}: certificate exists but its key {} is missing",
            crt.display(),
            key_path.display()
        )));
    };
    let der = chain.first().map(Vec::as_slice).unwrap_or_default();
    let parsed = certfile::parse_at(&crt, der)?;
    if parsed.public_key().raw != key.public_key_spki() {
        return Err(PkiError::Mismatch(format!(
            "{}: certificate does not match key {}",
            crt.display(),
            key_path.display()
        )));
    }
    check_kept(spec, leaf, ca, &chain, OffsetDateTime::now_utc())?;
    let expected = alt_names(spec, leaf.sans);
    let have = certfile::alt_names(&parsed);
    for d in &expected.dns {
        if !have.dns.contains(d) {
            return Err(PkiError::Mismatch(format!(
                "{}: lacks the required DNS SAN {d}",
                crt.display()
            )));
        }
    }
    for ip in &expected.ips {
        if !have.ips.contains(ip) {
            return Err(PkiError::Mismatch(format!(
                "{}: lacks the required IP SAN {ip}",
                crt.display()
            )));
        }
    }
    Ok(LeafPlan::Keep { chain })
}

/// Refuses, before anything is written, a leaf to issue whose SANs a name constraint of its
/// CA (or of an issuer above it) excludes.
fn check_names(spec: &ClusterSpec, leaf: &LeafSpec, ca: &CaState) -> Result<(), PkiError> {
    let Some(der) = &ca.cert else {
        return Ok(());
    };
    let rules = chain::name_rules(der, &ca.chain)?;
    let sans = constraints::of_alt_names(&alt_names(spec, leaf.sans));
    constraints::check_all(&rules, &sans)
        .map_err(|m| PkiError::Refused(format!("cannot issue {}: {m}", leaf.name)))
}

/// Refuses a leaf that cannot be kept at time `now`: its chain must reach its CA certificate
/// and every certificate on it must be valid then. kubeadm's certs phase refuses the same
/// files (its `VerifyCertChain` checks validity at the current time); the message names the
/// file and the way out.
fn check_kept(
    spec: &ClusterSpec,
    leaf: &LeafSpec,
    ca: &CaState,
    chain: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<(), PkiError> {
    let crt = leaf.cert_path(&spec.cert_dir);
    let ca_crt = ca.spec.cert_path(&spec.cert_dir);
    let Some(ca_der) = &ca.cert else {
        return Err(PkiError::Missing(format!(
            "{}: exists but its CA {}.crt does not",
            crt.display(),
            ca.spec.base
        )));
    };
    certfile::verify_chain(&crt, chain, &ca_crt, ca_der, now).map_err(|e| match e {
        certfile::ChainError::Period {
            message,
            of_ca: false,
        } => PkiError::Refused(format!(
            "{message}; kubeadm refuses it too: run `kpki certs renew {}`, or remove {} and its key so that init issues it again",
            leaf.name,
            crt.display()
        )),
        other => other.into(),
    })
}

/// True when the kubeconfig exists and is valid (kept); refuses one whose CA differs.
fn inspect_kubeconfig(
    spec: &ClusterSpec,
    kc: &KubeconfigSpec,
    ca: &CaState,
) -> Result<bool, PkiError> {
    let path = kc.path(&spec.kubeconfig_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(PkiError::io(&path, e)),
    };
    let cfg = kubeconfig::parse(&text).map_err(|e| e.in_file(&path))?;
    let have = cfg.current_ca_pem().ok_or_else(|| {
        PkiError::Missing(format!(
            "{}: no certificate-authority-data in the current context",
            path.display()
        ))
    })?;
    // The CA file and the chain as kpki writes them, the CA file alone as kubeadm writes it,
    // or the signing CA alone.
    let want = ca.cert.as_deref().map(|d| {
        [
            chain::trust_pem(&ca.bundle, &ca.chain),
            chain::trust_pem(&ca.bundle, &[]),
            x509::to_pem("CERTIFICATE", d),
        ]
    });
    match want {
        Some(w) if w.iter().any(|pem| pem.trim() == have.trim()) => Ok(true),
        Some(_) => Err(PkiError::Mismatch(format!(
            "{}: embeds a different CA than {}/ca.crt",
            path.display(),
            spec.cert_dir.display()
        ))),
        None => Err(PkiError::Missing(format!(
            "{}: exists but ca.crt does not",
            path.display()
        ))),
    }
}

fn ensure_sa(
    spec: &ClusterSpec,
    existing: Option<Arc<dyn Signer>>,
    new_key: Option<NewKey>,
    report: &mut InitReport,
    progress: &mut dyn FnMut(String),
) -> Result<(), PkiError> {
    let pub_path = spec.cert_dir.join("sa.pub");
    let (key, action) = match (existing, new_key) {
        (Some(k), _) => {
            progress("[certs] Using the existing \"sa\" key".into());
            (k, "kept")
        }
        (None, Some(new)) => {
            progress("[certs] Generating \"sa\" key and public key".into());
            (new.persist()?, "generated")
        }
        (None, None) => return Err(PkiError::internal("no service-account key")),
    };
    report.files.push(FileReport {
        name: "sa".into(),
        kind: "key",
        path: spec.sa_key.to_string(),
        action,
        sha256: Some(spki::sha256_hex(key.public_key_spki())),
    });
    let pem = x509::to_pem("PUBLIC KEY", key.public_key_spki());
    let pub_action = match std::fs::read_to_string(&pub_path) {
        Ok(existing) if existing.trim() == pem.trim() => "kept",
        Ok(_) => {
            return Err(PkiError::Mismatch(format!(
                "{}: does not match the service-account key {}",
                pub_path.display(),
                spec.sa_key
            )));
        }
        Err(_) => {
            store::create(&pub_path, pem.as_bytes(), PRIVATE_MODE)?;
            "generated"
        }
    };
    report.files.push(FileReport {
        name: "sa".into(),
        kind: "public-key",
        path: pub_path.display().to_string(),
        action: pub_action,
        sha256: Some(spki::sha256_hex(key.public_key_spki())),
    });
    Ok(())
}

/// Groups report entries by action (for summaries).
pub fn counts(report: &InitReport) -> HashMap<&'static str, usize> {
    let mut m = HashMap::new();
    for f in &report.files {
        *m.entry(f.action).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use std::fs;

    use kpki_signer::KeyAlgorithm;

    use super::*;
    use crate::config::{ClusterSettings, EtcdMode, Settings, resolve};

    /// What a row does to a complete PKI before planning (paths under the node's directory:
    /// certificates in `pki/`, kubeconfigs beside it).
    #[derive(Debug, Clone, Copy)]
    enum Op {
        /// Remove every file: nothing is on disk.
        Clear,
        /// Remove a file.
        Remove(&'static str),
        /// Replace a file's contents with another file's.
        Put {
            from: &'static str,
            to: &'static str,
        },
        /// Replace a file's contents with text that is no PEM.
        Garble(&'static str),
    }
    use Op::{Clear, Garble, Put, Remove};

    /// One row: what is done, external etcd, then either what the plan changes (every CA,
    /// leaf, kubeconfig and `sa` entry not kept as it is, `name=what`) with the new keys'
    /// targets in order, or the error's kind and a fragment of its line.
    type Row = (
        &'static [Op],
        bool,
        Result<(&'static [&'static str], &'static [&'static str]), (&'static str, &'static str)>,
    );

    const ALL_NEW: &[&str] = &[
        "ca=new",
        "front-proxy-ca=new",
        "etcd-ca=new",
        "apiserver=issue",
        "apiserver-kubelet-client=issue",
        "front-proxy-client=issue",
        "etcd-server=issue",
        "etcd-peer=issue",
        "etcd-healthcheck-client=issue",
        "apiserver-etcd-client=issue",
        "admin.conf=make",
        "super-admin.conf=make",
        "controller-manager.conf=make",
        "scheduler.conf=make",
        "kubelet.conf=make",
        "sa=new",
    ];
    const ALL_TARGETS: &[&str] = &[
        "pki/ca.key",
        "pki/front-proxy-ca.key",
        "pki/etcd/ca.key",
        "pki/sa.key",
        "pki/apiserver.key",
        "pki/apiserver-kubelet-client.key",
        "pki/front-proxy-client.key",
        "pki/etcd/server.key",
        "pki/etcd/peer.key",
        "pki/etcd/healthcheck-client.key",
        "pki/apiserver-etcd-client.key",
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
        "kubelet.conf",
    ];

    #[rustfmt::skip]
    const ROWS: &[Row] = &[
        (&[], false, Ok((&[], &[]))),
        (&[Clear], false, Ok((ALL_NEW, ALL_TARGETS))),
        // External etcd: no etcd CA, no etcd leaves, whatever is on disk.
        (&[Clear], true, Ok((
            &["ca=new", "front-proxy-ca=new", "apiserver=issue", "apiserver-kubelet-client=issue",
              "front-proxy-client=issue", "admin.conf=make", "super-admin.conf=make",
              "controller-manager.conf=make", "scheduler.conf=make", "kubelet.conf=make", "sa=new"],
            &["pki/ca.key", "pki/front-proxy-ca.key", "pki/sa.key", "pki/apiserver.key",
              "pki/apiserver-kubelet-client.key", "pki/front-proxy-client.key", "admin.conf",
              "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"],
        ))),
        (&[], true, Ok((&[], &[]))),
        // A leaf whose certificate is gone is issued again for the key on disk.
        (&[Remove("pki/apiserver.crt")], false, Ok((&["apiserver=reuse"], &[]))),
        (&[Remove("pki/etcd/peer.crt")], false, Ok((&["etcd-peer=reuse"], &[]))),
        (&[Remove("pki/apiserver.crt"), Remove("pki/apiserver.key")], false,
            Ok((&["apiserver=issue"], &["pki/apiserver.key"]))),
        (&[Remove("pki/etcd/server.crt"), Remove("pki/etcd/server.key")], true, Ok((&[], &[]))),
        (&[Remove("admin.conf")], false, Ok((&["admin.conf=make"], &["admin.conf"]))),
        (&[Remove("kubelet.conf"), Remove("scheduler.conf")], false,
            Ok((&["scheduler.conf=make", "kubelet.conf=make"], &["scheduler.conf", "kubelet.conf"]))),
        (&[Remove("pki/sa.key"), Remove("pki/sa.pub")], false, Ok((&["sa=new"], &["pki/sa.key"]))),
        // A CA with its key but no certificate self-signs that key; without either, a new CA.
        (&[Remove("pki/front-proxy-ca.crt"), Remove("pki/front-proxy-client.crt"),
           Remove("pki/front-proxy-client.key")], false,
            Ok((&["front-proxy-ca=key", "front-proxy-client=issue"], &["pki/front-proxy-client.key"]))),
        (&[Remove("pki/front-proxy-ca.crt"), Remove("pki/front-proxy-ca.key"),
           Remove("pki/front-proxy-client.crt"), Remove("pki/front-proxy-client.key")], false,
            Ok((&["front-proxy-ca=new", "front-proxy-client=issue"],
                &["pki/front-proxy-ca.key", "pki/front-proxy-client.key"]))),
        // An external CA: its certificate without its key; leaves signed by it are kept.
        (&[Remove("pki/ca.key")], false, Ok((&["ca=external"], &[]))),
        (&[Remove("pki/etcd/ca.key")], false, Ok((&["etcd-ca=external"], &[]))),
        // A CA file may hold more certificates: the one matching the key signs.
        (&[Put { from: "pki/ca.crt+pki/front-proxy-ca.crt", to: "pki/ca.crt" }], false, Ok((&[], &[]))),
        (&[Put { from: "pki/front-proxy-ca.crt+pki/ca.crt", to: "pki/ca.crt" }], false, Ok((&[], &[]))),
        // What init refuses, before writing anything.
        (&[Remove("pki/apiserver.key")], false,
            Err(("missing", "apiserver.crt: certificate exists but its key"))),
        (&[Put { from: "pki/apiserver-kubelet-client.key", to: "pki/apiserver.key" }], false,
            Err(("mismatch", "apiserver.crt: certificate does not match key"))),
        (&[Put { from: "pki/front-proxy-client.crt", to: "pki/apiserver.crt" },
           Put { from: "pki/front-proxy-client.key", to: "pki/apiserver.key" }], false,
            Err(("mismatch", "apiserver.crt: "))),
        (&[Put { from: "pki/front-proxy-ca.crt", to: "pki/ca.crt" }], false,
            Err(("mismatch", "ca.crt: CA certificate does not match its key"))),
        (&[Put { from: "pki/apiserver.crt", to: "pki/ca.crt" }, Remove("pki/ca.key")], false,
            Err(("mismatch", "ca.crt: not a CA certificate"))),
        (&[Garble("pki/ca.crt")], false, Err(("malformed", "ca.crt: not a PEM certificate"))),
        (&[Garble("pki/apiserver.crt")], false, Err(("malformed", "apiserver.crt: not a PEM certificate"))),
        (&[Remove("pki/ca.crt")], false, Err(("missing", "exists but its CA ca.crt does not"))),
        (&[Garble("admin.conf")], false, Err(("malformed", "admin.conf: not a kubeconfig"))),
        (&[Put { from: "pki/front-proxy-ca.crt", to: "pki/ca.crt" }, Remove("pki/ca.key")], false,
            Err(("mismatch", "apiserver.crt: "))),
    ];

    fn spec(dir: &Path, external_etcd: bool) -> ClusterSpec {
        let settings = Settings {
            cert_dir: Some(dir.join("pki")),
            kubeconfig_dir: Some(dir.to_path_buf()),
            cluster: ClusterSettings {
                node_name: Some("cp1".into()),
                advertise_address: Some("10.0.0.10".into()),
                encryption_algorithm: Some(KeyAlgorithm::EcdsaP256),
                etcd: external_etcd.then_some(EtcdMode::External),
                ..Default::default()
            },
            ..Default::default()
        };
        resolve(&settings).expect("the test node resolves")
    }

    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).expect("mkdir");
        for entry in fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }

    fn apply(dir: &Path, op: Op) {
        match op {
            Clear => {
                fs::remove_dir_all(dir).expect("clear");
                fs::create_dir_all(dir).expect("mkdir");
            }
            Remove(p) => fs::remove_file(dir.join(p)).expect(p),
            Put { from, to } => {
                let bytes: Vec<u8> = from
                    .split('+')
                    .flat_map(|f| fs::read(dir.join(f)).expect(f))
                    .collect();
                fs::write(dir.join(to), bytes).expect(to);
            }
            Garble(p) => fs::write(dir.join(p), "not PEM\n").expect(p),
        }
    }

    fn kind(e: &PkiError) -> &'static str {
        match e {
            PkiError::Missing(_) => "missing",
            PkiError::Mismatch(_) => "mismatch",
            PkiError::Malformed(_) => "malformed",
            PkiError::Refused(_) => "refused",
            PkiError::Request(_) => "request",
            PkiError::Internal(_) => "internal",
            PkiError::Key(_) => "key",
            PkiError::CaKey { .. } => "ca-key",
            PkiError::Config(_) => "config",
            PkiError::Io { .. } => "io",
        }
    }

    /// Every entry the plan does not keep as it is, then the new keys' targets relative to
    /// `dir`.
    fn summary(spec: &ClusterSpec, dir: &Path, plan: &Plan) -> (Vec<String>, Vec<String>) {
        let mut changes = Vec::new();
        for ca in &plan.cas {
            match (&ca.cert, &ca.key) {
                (Some(_), Some(_)) => {}
                (Some(_), None) => changes.push(format!("{}=external", ca.spec.name)),
                (None, Some(_)) => changes.push(format!("{}=key", ca.spec.name)),
                (None, None) => changes.push(format!("{}=new", ca.spec.name)),
            }
        }
        for (leaf, p) in &plan.leaves {
            match p {
                LeafPlan::Keep { .. } => {}
                LeafPlan::Issue { key: Some(_) } => changes.push(format!("{}=reuse", leaf.name)),
                LeafPlan::Issue { key: None } => changes.push(format!("{}=issue", leaf.name)),
            }
        }
        for (kc, keep) in &plan.kubeconfigs {
            if !keep {
                changes.push(format!("{}=make", kc.file));
            }
        }
        if plan.sa.is_none() {
            changes.push("sa=new".into());
        }
        let (_, targets) = plan.key_targets(spec);
        let targets = targets
            .iter()
            .map(|t| {
                let path = t.as_file().expect("software targets in this table");
                path.strip_prefix(dir)
                    .expect("under the node")
                    .display()
                    .to_string()
            })
            .collect();
        (changes, targets)
    }

    #[test]
    fn plan_table() {
        let complete = tempfile::tempdir().expect("tempdir");
        let keys = KeyStore::default();
        run(&spec(complete.path(), false), &keys, &mut |_| {}).expect("a complete PKI");
        for (i, (ops, external, want)) in ROWS.iter().enumerate() {
            let node = tempfile::tempdir().expect("tempdir");
            copy_tree(complete.path(), node.path());
            for op in *ops {
                apply(node.path(), *op);
            }
            let spec = spec(node.path(), *external);
            let got = plan(&spec, &keys).map(|p| summary(&spec, node.path(), &p));
            match (want, got) {
                (Ok((changes, targets)), Ok((got_changes, got_targets))) => {
                    assert_eq!(got_changes, *changes, "row {i}: {ops:?}");
                    assert_eq!(got_targets, *targets, "row {i}: {ops:?}");
                }
                (Err((want_kind, fragment)), Err(e)) => {
                    assert_eq!(kind(&e), *want_kind, "row {i}: {ops:?}: {e}");
                    assert!(
                        e.to_string().contains(fragment),
                        "row {i}: {ops:?}: {e} lacks {fragment:?}"
                    );
                }
                (want, got) => panic!("row {i}: {ops:?}: want {want:?}, got {got:?}"),
            }
        }
    }
}
