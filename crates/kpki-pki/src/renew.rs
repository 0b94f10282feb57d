//! `certs renew <name>|all`: kubeadm's renewal (keep CN, O, DNS and IP SANs and EKUs; new key
//! of the configured algorithm; validity from this run's start), signed by each CA on its
//! configured backend — token-held CAs included. Pairs are replaced through `crate::pair`;
//! kubeconfigs get new embedded client credentials and, as kubeadm does, the current
//! cluster's `certificate-authority-data` from the `ca.crt` on disk (with its chain file when
//! the CA is an intermediate, see `chain`); everything else is kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kpki_signer::KeyUri;
use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::authority::LoadedCa;
use crate::catalogue::{self, CaId, Usage};
use crate::config::ClusterSpec;
use crate::keygen::{NewKey, create_keys};
use crate::keystore::KeyStore;
use crate::sans::AltNames;
use crate::subject::{Attr, Subject};
use crate::x509::{self, Profile};
use crate::{PkiError, kubeconfig, pair, store};

/// What `renew` did.
#[derive(Debug, Default, Serialize)]
pub struct RenewReport {
    /// Names renewed.
    pub renewed: Vec<String>,
    /// Names whose file is missing.
    pub missing: Vec<String>,
    /// Names whose CA key is absent (external CA).
    pub external: Vec<String>,
    /// Components to restart so they use the new certificates.
    pub restart: Vec<&'static str>,
    /// A dry run's plan: what would be renewed (nothing was written).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_renew: Vec<PlannedRenewal>,
}

/// One renewal a dry run would make.
#[derive(Debug, Serialize)]
pub struct PlannedRenewal {
    /// kubeadm's name.
    pub name: &'static str,
    /// The certificate file, or the kubeconfig, replaced.
    pub path: PathBuf,
    /// The CA that would sign.
    pub ca: &'static str,
    /// Its key's URI (never a PIN value).
    pub ca_key: String,
}

/// One certificate `renew` issued.
#[derive(Debug, Clone)]
pub struct Renewed {
    /// The renewed name (`apiserver`, `admin.conf`, …).
    pub name: String,
    /// The certificate (PEM).
    pub pem: String,
    /// The URI of the CA key that signed it.
    pub ca_key: String,
}

/// Every name `renew` accepts besides `all`, in kubeadm's order.
pub fn names(spec: &ClusterSpec) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = catalogue::leaves(spec.local_etcd())
        .map(|l| l.name)
        .collect();
    v.extend(catalogue::renewable_kubeconfigs().map(|k| k.file));
    v.sort();
    v
}

enum Target {
    Leaf {
        key: PathBuf,
        crt: PathBuf,
    },
    Kubeconfig {
        path: PathBuf,
        doc: Zeroizing<String>,
    },
}

struct Job {
    name: &'static str,
    long_name: &'static str,
    restart: &'static [&'static str],
    ca: CaId,
    profile: Profile,
    target: Target,
}

/// The renewal profile of an existing certificate: CN, O, DNS/IP SANs and EKUs.
pub(crate) fn profile_of(der: &[u8], what: &Path) -> Result<Profile, PkiError> {
    let c = crate::certfile::parse_at(what, der)?;
    let subject = Subject::known_of(c.subject());
    let cn = subject
        .values(Attr::CommonName)
        .next()
        .unwrap_or_default()
        .to_string();
    let orgs = subject.orgs();
    let AltNames { mut dns, ips } = crate::certfile::alt_names(&c);
    dns.sort();
    dns.dedup();
    let mut usages = Vec::new();
    if let Ok(Some(eku)) = c.extended_key_usage() {
        if eku.value.server_auth {
            usages.push(Usage::ServerAuth);
        }
        if eku.value.client_auth {
            usages.push(Usage::ClientAuth);
        }
    }
    Ok(Profile {
        cn,
        orgs,
        usages,
        sans: AltNames { dns, ips },
    })
}

/// The renewal profile of a kubeconfig's embedded client certificate; refuses a kubeconfig
/// without an embedded CA or client certificate in its current context.
fn kubeconfig_profile(path: &Path, doc: &str) -> Result<Profile, PkiError> {
    let mut doc = kubeconfig::Document::parse(path, doc)?;
    let der = doc.embedded_client_cert(path)?;
    profile_of(&der, path)
}

/// The renewal job of every selected entry whose file exists; the others are reported missing.
fn collect_jobs(
    spec: &ClusterSpec,
    selected: &dyn Fn(&str) -> bool,
    report: &mut RenewReport,
    progress: &mut dyn FnMut(String),
) -> Result<Vec<Job>, PkiError> {
    let mut jobs = Vec::new();
    for leaf in catalogue::leaves(spec.local_etcd()).filter(|l| selected(l.name)) {
        let crt = leaf.cert_path(&spec.cert_dir);
        let key = leaf.key_path(&spec.cert_dir);
        if !crt.exists() {
            progress(format!("MISSING! {}", leaf.long_name));
            report.missing.push(leaf.name.into());
            continue;
        }
        // A chain file is renewed from its first certificate (kubeadm's reader); the renewed
        // file holds the new certificate, followed by its CA's chain when the CA is an
        // intermediate (`chain::served`).
        let chain = crate::certfile::read_existing(&crt)?;
        let profile = profile_of(chain.first().map(Vec::as_slice).unwrap_or_default(), &crt)?;
        jobs.push(Job {
            name: leaf.name,
            long_name: leaf.long_name,
            restart: leaf.restart,
            ca: leaf.ca,
            profile,
            target: Target::Leaf { key, crt },
        });
    }
    for kc in catalogue::renewable_kubeconfigs().filter(|k| selected(k.file)) {
        let path = kc.path(&spec.kubeconfig_dir);
        let Ok(text) = std::fs::read_to_string(&path) else {
            progress(format!("MISSING! {}", kc.long_name));
            report.missing.push(kc.file.into());
            continue;
        };
        let doc = Zeroizing::new(text);
        let profile = kubeconfig_profile(&path, &doc)?;
        jobs.push(Job {
            name: kc.file,
            long_name: kc.long_name,
            restart: kc.restart,
            ca: CaId::Ca,
            profile,
            target: Target::Kubeconfig { path, doc },
        });
    }
    Ok(jobs)
}

/// Renews `which` (a name from [`names`] or `all`). Every certificate signed is pushed onto
/// `issued` as soon as it is signed, so that the caller can audit it even when a later step
/// fails.
pub fn renew(
    spec: &ClusterSpec,
    keys: &KeyStore,
    which: &str,
    progress: &mut dyn FnMut(String),
    issued: &mut Vec<Renewed>,
) -> Result<RenewReport, PkiError> {
    renew_or_plan(spec, keys, which, false, progress, issued)
}

/// What [`renew`] would do for `which`, without doing it: the files are read and each CA key
/// needed is opened (an unreachable or absent key fails here as it fails `renew`); the
/// report's `would_renew` lists each renewal. Writes nothing, makes no key, and leaves a
/// renewal a killed run staged for the next `renew` to finish.
pub fn dry_run(
    spec: &ClusterSpec,
    keys: &KeyStore,
    which: &str,
    progress: &mut dyn FnMut(String),
) -> Result<RenewReport, PkiError> {
    renew_or_plan(spec, keys, which, true, progress, &mut Vec::new())
}

fn renew_or_plan(
    spec: &ClusterSpec,
    keys: &KeyStore,
    which: &str,
    dry_run: bool,
    progress: &mut dyn FnMut(String),
    issued: &mut Vec<Renewed>,
) -> Result<RenewReport, PkiError> {
    let all = names(spec);
    if which != "all" && !all.contains(&which) {
        return Err(PkiError::Malformed(format!(
            "unknown certificate name {which:?}: expected all or one of {}",
            all.join(", ")
        )));
    }
    let selected = |n: &str| which == "all" || which == n;
    let staged_dirs = if dry_run {
        Vec::new()
    } else {
        vec![spec.cert_dir.clone(), spec.cert_dir.join("etcd")]
    };
    for dir in staged_dirs {
        for crt in pair::recover(&dir)? {
            progress(format!(
                "[renew] Completed the interrupted renewal of {}",
                crt.display()
            ));
        }
    }
    let start = x509::whole_seconds(OffsetDateTime::now_utc());
    let mut report = RenewReport::default();
    let mut jobs = collect_jobs(spec, &selected, &mut report, progress)?;

    let mut signers: HashMap<CaId, Option<LoadedCa>> = HashMap::new();
    for id in [CaId::Ca, CaId::FrontProxyCa, CaId::EtcdCa] {
        if jobs.iter().any(|j| j.ca == id) {
            signers.insert(id, crate::authority::open(spec, keys, id)?);
        }
    }
    jobs.retain(|j| {
        let external = matches!(signers.get(&j.ca), Some(None));
        if external {
            let ca = catalogue::ca(j.ca).name;
            progress(format!(
                "Detected external {ca}, {} can't be renewed",
                j.long_name
            ));
            report.external.push(j.name.into());
        }
        !external
    });
    if dry_run {
        plan_report(spec, jobs, &mut report, progress);
        sort_restarts(&mut report);
        return Ok(report);
    }

    // Name constraints are checked for every job before any key is made or file replaced.
    for job in &jobs {
        let ca = signers
            .get(&job.ca)
            .and_then(Option::as_ref)
            .ok_or_else(|| PkiError::internal("CA signer missing"))?;
        ca.signer
            .permits(&job.profile.sans)
            .map_err(|e| PkiError::Refused(format!("cannot renew {}: {e}", job.name)))?;
    }
    let targets = jobs
        .iter()
        .map(|j| match &j.target {
            Target::Leaf { key, .. } => KeyUri::file(key),
            Target::Kubeconfig { path, .. } => KeyUri::file(path),
        })
        .collect();
    let fresh = create_keys(keys, spec.algorithm, targets)?;
    for (job, new) in jobs.into_iter().zip(fresh) {
        let NewKey::Soft(key, key_pem) = new else {
            return Err(PkiError::internal("renewed keys are software keys"));
        };
        let ca = signers
            .get(&job.ca)
            .and_then(Option::as_ref)
            .ok_or_else(|| PkiError::internal("CA signer missing"))?;
        let cert = ca.signer.issue(
            x509::leaf_params(&job.profile, start, spec.cert_validity)?,
            Arc::new(*key),
        )?;
        issued.push(Renewed {
            name: job.name.into(),
            pem: cert.pem.clone(),
            ca_key: spec.ca_key(job.ca).to_string(),
        });
        match job.target {
            Target::Leaf { key, crt } => {
                let file = ca.leaf_file(&cert.pem);
                pair::replace(&key, key_pem.as_bytes(), &crt, file.as_bytes())?
            }
            Target::Kubeconfig { path, doc } => {
                // kubeadm refreshes the embedded CA from the ca.crt on disk (the CA may have
                // been replaced since the file was written).
                let ca_pem = ca.trust_pem();
                let mut doc = kubeconfig::Document::parse(&path, &doc)?;
                doc.set_credentials(&path, &ca_pem, &cert.pem, &key_pem)?;
                store::replace(&path, doc.render(&path)?.as_bytes(), store::PRIVATE_MODE)?
            }
        }
        progress(format!("{} renewed", job.long_name));
        report.renewed.push(job.name.into());
        for r in job.restart {
            if !report.restart.contains(r) {
                report.restart.push(r);
            }
        }
    }
    sort_restarts(&mut report);
    Ok(report)
}

/// Fills a dry run's report: what each job would replace, and with which CA.
fn plan_report(
    spec: &ClusterSpec,
    jobs: Vec<Job>,
    report: &mut RenewReport,
    progress: &mut dyn FnMut(String),
) {
    for job in jobs {
        let ca = catalogue::ca(job.ca).name;
        let ca_key = spec.ca_key(job.ca).to_string();
        let path = match job.target {
            Target::Leaf { crt, .. } => crt,
            Target::Kubeconfig { path, .. } => path,
        };
        progress(format!(
            "[dry-run] {} would be renewed: {} (new key), signed by {ca} with {ca_key}",
            job.long_name,
            path.display()
        ));
        for r in job.restart {
            if !report.restart.contains(r) {
                report.restart.push(r);
            }
        }
        report.would_renew.push(PlannedRenewal {
            name: job.name,
            path,
            ca,
            ca_key,
        });
    }
}

/// Orders the components to restart as kubeadm lists them.
fn sort_restarts(report: &mut RenewReport) {
    let order = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "etcd",
    ];
    report
        .restart
        .sort_by_key(|c| order.iter().position(|o| o == c).unwrap_or(order.len()));
}
