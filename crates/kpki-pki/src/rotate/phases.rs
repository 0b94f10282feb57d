//! The four phases of a CA rotation on one node, each idempotent: which phase runs (the
//! requested one, or the next after this node's last), its preconditions (refused in one
//! line before anything is written), its writes, and the state update that closes it.

use std::sync::Arc;

use kpki_signer::{KeyUri, Signer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::anchors::{self, Anchor};
use super::observe::{self, Issued};
use super::state::{self, State};
use super::{Out, Phase, Report, Request, Status, Target};
use crate::authority::open_key;
use crate::catalogue::{self, CaId};
use crate::config::ClusterSpec;
use crate::keygen::{NewKey, create_keys};
use crate::keystore::KeyStore;
use crate::x509::{self, CaSigner};
use crate::{PkiError, kubeconfig, pair, store};

/// What a run does, once the state and this node's files are read.
pub(crate) enum Choice {
    /// The phase asked for is before this node's last: nothing to do (the phase, the next).
    Done(Phase, Option<Phase>),
    /// Run this phase; the rotation under way, `None` when a new one starts (prepare).
    Run(Phase, Option<State>),
}

/// Chooses the phase `request` runs on this node: the one asked for, or the next after this
/// node's last. Refuses (one line, nothing written) another rotation while one is
/// unfinished, a phase whose predecessor is not done here, a finished rotation run again
/// without `--phase prepare`, and a `--new-key` other than the rotation's.
pub(crate) fn choose(spec: &ClusterSpec, request: &Request) -> Result<Choice, PkiError> {
    let target = request.target;
    let existing = state::read(&spec.cert_dir)?;
    let (st, done) = match existing {
        Some(st) if st.target == target.name() => {
            let done = node_phase(spec, &st)?;
            let finished = done == Some(Phase::Retire) && everyone_retired(&st);
            if finished && request.phase == Some(Phase::Prepare) {
                (None, None)
            } else {
                (Some(st), done)
            }
        }
        Some(st) => {
            let done = node_phase(spec, &st)?;
            if done != Some(Phase::Retire) || !everyone_retired(&st) {
                return Err(PkiError::Refused(format!(
                    "a rotation of {} is unfinished ({}): finish it (kpki ca rotate {}) before rotating {target}",
                    st.target,
                    where_it_stands(&st, spec, done),
                    st.target
                )));
            }
            (None, None)
        }
        None => (None, None),
    };
    let next = done.map_or(Some(Phase::Prepare), Phase::next);
    let phase = match (request.phase, next) {
        // A phase before this node's last is done; the last one runs again (it writes only
        // what differs, e.g. a certificate put back from a backup).
        (Some(p), _) if Some(p) < done => return Ok(Choice::Done(p, next)),
        (Some(p), Some(n)) if p > n => {
            return Err(PkiError::Refused(format!(
                "rotation of {target}: {p} needs {n} first on this node ({})",
                st.as_ref()
                    .map(|s| where_it_stands(s, spec, done))
                    .unwrap_or_else(|| "no rotation started".into())
            )));
        }
        (Some(p), _) => p,
        (None, Some(n)) => n,
        (None, None) => {
            return Err(PkiError::Refused(format!(
                "the rotation of {target} is finished on this node (retired); start a new one with --phase prepare"
            )));
        }
    };
    match &st {
        None if phase != Phase::Prepare => Err(PkiError::Refused(format!(
            "no rotation of {target} was started on this PKI: start one with --phase prepare, or copy {} from the node that started it",
            state::FILE
        ))),
        Some(st) => {
            let file = state::path(&spec.cert_dir);
            if let Some(asked) = &request.new_key
                && !super::same_key(asked, &st.key(&file, "new-key")?)
            {
                return Err(PkiError::Refused(format!(
                    "new key {asked}: the rotation of {} under way uses {}; finish it, or start anew after it",
                    st.target, st.new_key
                )));
            }
            Ok(Choice::Run(phase, Some(st.clone())))
        }
        None => Ok(Choice::Run(phase, None)),
    }
}

/// Runs `request` on the PKI of `spec`.
pub(crate) fn run(
    spec: &ClusterSpec,
    keys: &KeyStore,
    request: &Request,
) -> Result<Report, PkiError> {
    if !request.dry_run {
        tidy(spec)?;
    }
    let id = match request.target {
        Target::Ca(id) => id,
        Target::Sa => return super::sa::run(spec, keys, request),
    };
    let target = request.target;
    let (phase, st) = match choose(spec, request)? {
        Choice::Done(p, next) => {
            let mut r = report(target, p, false, Vec::new(), Vec::new(), next);
            r.dry_run = request.dry_run;
            return Ok(r);
        }
        Choice::Run(phase, st) => (phase, st),
    };
    let mut written = Out::new(request.dry_run);
    let mut notes = Vec::new();
    match (phase, st) {
        (Phase::Prepare, st) => {
            prepare(spec, keys, id, request.new_key.as_ref(), st, &mut written)?
        }
        (Phase::TrustBoth, Some(st)) => trust_both(spec, id, st, &mut written)?,
        (Phase::Reissue, Some(st)) => reissue(spec, keys, id, st, &mut written, &mut notes)?,
        (Phase::Retire, Some(st)) => retire(spec, id, st, &mut written, &mut notes)?,
        (_, None) => return Err(PkiError::internal("rotation state missing")),
    }
    let dry_run = written.dry;
    let written = written.into_list();
    let changed = !written.is_empty();
    let mut r = report(target, phase, changed, written, notes, phase.next());
    r.dry_run = dry_run;
    Ok(r)
}

/// Finishes what a killed run left: staged key/certificate pairs completed or discarded,
/// temporary files (which may hold keys) removed.
pub(crate) fn tidy(spec: &ClusterSpec) -> Result<(), PkiError> {
    for dir in [spec.cert_dir.clone(), spec.cert_dir.join("etcd")] {
        pair::recover(&dir)?;
    }
    for dir in [
        &spec.cert_dir,
        &spec.cert_dir.join("etcd"),
        &spec.kubeconfig_dir,
    ] {
        if dir.is_dir() {
            kpki_atomic::remove_stale_temps(dir).map_err(|e| PkiError::io(dir, e))?;
        }
    }
    Ok(())
}

fn report(
    target: Target,
    phase: Phase,
    changed: bool,
    written: Vec<String>,
    notes: Vec<String>,
    next: Option<Phase>,
) -> Report {
    let restart = match target {
        Target::Ca(id) if changed => restart(id, phase),
        _ => Vec::new(),
    };
    Report {
        target: target.name().into(),
        phase,
        changed,
        dry_run: false,
        written,
        restart,
        notes,
        next,
    }
}

/// What the operator restarts after `phase` of CA `id`, in order.
pub(crate) fn restart(id: CaId, phase: Phase) -> Vec<String> {
    let list: &[&str] = match (id, phase) {
        (_, Phase::Prepare) => &[],
        (CaId::Ca, _) => &[
            "kube-apiserver (one at a time)",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
        ],
        (CaId::EtcdCa, _) => &[
            "etcd (one member at a time, each healthy before the next)",
            "kube-apiserver (one at a time)",
        ],
        (CaId::FrontProxyCa, _) => &["kube-apiserver (one at a time)"],
    };
    list.iter().map(|s| s.to_string()).collect()
}

fn now_text() -> String {
    let now = x509::whole_seconds(OffsetDateTime::now_utc());
    now.format(&Rfc3339).unwrap_or_else(|_| now.to_string())
}

pub(crate) fn everyone_retired(st: &State) -> bool {
    st.nodes.values().all(|p| *p == Phase::Retire)
}

fn where_it_stands(st: &State, spec: &ClusterSpec, done: Option<Phase>) -> String {
    format!(
        "{} is at {}",
        spec.node_name,
        done.map_or("nothing done", Phase::name)
    ) + &st
        .nodes
        .iter()
        .filter(|(n, _)| **n != spec.node_name)
        .map(|(n, p)| format!(", {n} at {p}"))
        .collect::<String>()
}

/// The old and new CA certificates of `st` (DER); the new one `None` before `prepare`.
pub(crate) fn certs_of(st: &State) -> Result<(Vec<u8>, Option<Vec<u8>>), PkiError> {
    let file = state::FILE;
    let one = |pem: &str, field: &str| {
        pem::parse(pem.as_bytes())
            .map(pem::Pem::into_contents)
            .map_err(|e| PkiError::Malformed(format!("{file}: {field} is not PEM ({e})")))
    };
    let old = one(&st.old_cert, "old-cert")?;
    let new = st
        .new_cert
        .as_deref()
        .map(|p| one(p, "new-cert"))
        .transpose()?;
    Ok((old, new))
}

/// The last phase done on this node: what the state file says about it, or what its files
/// show, whichever is further.
pub(crate) fn node_phase(spec: &ClusterSpec, st: &State) -> Result<Option<Phase>, PkiError> {
    let recorded = st.nodes.get(&spec.node_name).copied();
    let Target::Ca(id) = st.target(&state::path(&spec.cert_dir))? else {
        return super::sa::node_phase(spec, st);
    };
    let (old, new) = certs_of(st)?;
    let Some(new) = new else {
        return Ok(recorded);
    };
    let seen = observe::phase_of_files(
        &anchors::list(spec, id)?,
        &observe::issued(spec, id)?,
        &old,
        &new,
    )?;
    Ok(recorded.max(Some(seen)))
}

fn spki_of(der: &[u8]) -> Result<Vec<u8>, PkiError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c.public_key().raw.to_vec())
        .map_err(|e| PkiError::Malformed(format!("CA certificate: {e}")))
}

/// The key at `uri` (with the configuration's PIN for the token), made there when absent;
/// refused when it is the key of `old_spki`.
pub(crate) fn open_or_create(
    keys: &KeyStore,
    spec: &ClusterSpec,
    uri: &KeyUri,
    config: &KeyUri,
    old_spki: &[u8],
) -> Result<Arc<dyn Signer>, PkiError> {
    let uri = super::with_pin_of(uri, config);
    let key = match open_key(keys, &uri)? {
        Some(k) => k,
        None => create_keys(keys, spec.algorithm, vec![uri.clone()])?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::internal("no key made"))?
            .persist()?,
    };
    if key.public_key_spki() == old_spki {
        return Err(matching_key(&uri));
    }
    Ok(key)
}

/// Refuses a new key whose PIN is given inline when the configuration cannot give it again
/// to the later phases (the state file keeps no PIN value).
pub(crate) fn refuse_unstorable_pin(new_key: &KeyUri, config: &KeyUri) -> Result<(), PkiError> {
    let stored: KeyUri = state::storable(new_key)
        .parse()
        .map_err(|e| PkiError::internal(format!("stored key URI: {e}")))?;
    if super::has_pin_value(new_key) && !super::has_pin_value(&super::with_pin_of(&stored, config))
    {
        return Err(PkiError::Refused(format!(
            "new key {stored}: its PIN is given as pin-value, which the rotation state does not keep; use pin-source=file:…"
        )));
    }
    Ok(())
}

fn matching_key(uri: &KeyUri) -> PkiError {
    PkiError::Refused(format!(
        "new key {uri}: it is the key being replaced (its public key matches the old one); name another key"
    ))
}

/// Phase 1: the new key and the new CA certificate.
fn prepare(
    spec: &ClusterSpec,
    keys: &KeyStore,
    id: CaId,
    requested: Option<&KeyUri>,
    existing: Option<State>,
    written: &mut Out,
) -> Result<(), PkiError> {
    let ca = catalogue::ca(id);
    let crt = ca.cert_path(&spec.cert_dir);
    let config = spec.ca_key(id);
    let mut st = match existing {
        Some(st) => st,
        None => {
            let found = crate::authority::find(spec, keys, id)?;
            let old_der = found.cert.ok_or_else(|| crate::certfile::absent(&crt))?;
            let old_spki = spki_of(&old_der)?;
            let new_key = requested
                .cloned()
                .unwrap_or_else(|| super::next_key(&found.key_uri, ca.name));
            if super::same_key(&new_key, &found.key_uri) {
                return Err(matching_key(&new_key));
            }
            if let Some(k) = open_key(keys, &super::with_pin_of(&new_key, config))?
                && k.public_key_spki() == old_spki
            {
                return Err(matching_key(&new_key));
            }
            refuse_unstorable_pin(&new_key, config)?;
            let st = State {
                target: ca.name.into(),
                started: now_text(),
                old_key: state::storable(&found.key_uri),
                new_key: state::storable(&new_key),
                old_cert: x509::to_pem("CERTIFICATE", &old_der),
                new_cert: None,
                reissued: None,
                nodes: Default::default(),
            };
            if !written.dry {
                state::write(&spec.cert_dir, &st)?;
            }
            written.push(state::path(&spec.cert_dir).display().to_string());
            st
        }
    };
    let file = state::path(&spec.cert_dir);
    let (old_der, new_der) = certs_of(&st)?;
    let new_uri = st.key(&file, "new-key")?;
    if written.dry {
        let uri = super::with_pin_of(&new_uri, config);
        match open_key(keys, &uri)? {
            Some(k) if k.public_key_spki() == spki_of(&old_der)? => return Err(matching_key(&uri)),
            Some(k) => {
                let fits = new_der
                    .as_deref()
                    .map(spki_of)
                    .transpose()?
                    .is_some_and(|s| s == k.public_key_spki());
                if !fits {
                    written.push(format!(
                        "new CA certificate for key {new_uri} (in {})",
                        state::FILE
                    ));
                }
            }
            None => {
                written.push(format!("key {new_uri} (made on its backend)"));
                written.push(format!("new CA certificate for it (in {})", state::FILE));
            }
        }
        return close(spec, st, Phase::Prepare, written);
    }
    let key = open_or_create(keys, spec, &new_uri, config, &spki_of(&old_der)?)?;
    let fits = new_der
        .as_deref()
        .map(spki_of)
        .transpose()?
        .is_some_and(|s| s == key.public_key_spki());
    if !fits {
        let now = x509::whole_seconds(OffsetDateTime::now_utc());
        let params = x509::ca_params(ca.cn, key.public_key_spki(), now, spec.ca_validity)?;
        let cert = x509::self_sign(params, Arc::clone(&key))?;
        st.new_cert = Some(cert.pem);
    }
    close(spec, st, Phase::Prepare, written)
}

/// The anchors of CA `id`, each refused unless it trusts the CA the rotation started from.
fn anchors_from(
    spec: &ClusterSpec,
    id: CaId,
    old: &[u8],
    new: &[u8],
) -> Result<Vec<Anchor>, PkiError> {
    let list = anchors::list(spec, id)?;
    if let Some(a) = list
        .iter()
        .find(|a| !anchors::trusts(a, old) && !anchors::trusts(a, new))
    {
        return Err(PkiError::Mismatch(format!(
            "{}: trusts neither the CA this rotation started from nor the new one ({} is another PKI's?)",
            a.path.display(),
            state::FILE
        )));
    }
    Ok(list)
}

fn set_all(list: &[Anchor], want: &[&[u8]], written: &mut Out) -> Result<(), PkiError> {
    for a in list {
        let changes = if written.dry {
            !anchors::holds_exactly(a, want)
        } else {
            anchors::set(a, want)?
        };
        if changes {
            written.push(a.path.display().to_string());
        }
    }
    Ok(())
}

/// Records `phase` as this node's last in the state file, unless the file already says so.
fn close(
    spec: &ClusterSpec,
    mut st: State,
    phase: Phase,
    written: &mut Out,
) -> Result<(), PkiError> {
    let before = state::read(&spec.cert_dir)?;
    st.nodes.insert(spec.node_name.clone(), phase);
    if before.as_ref() != Some(&st) {
        if !written.dry {
            state::write(&spec.cert_dir, &st)?;
        }
        written.push(state::path(&spec.cert_dir).display().to_string());
    }
    Ok(())
}

fn new_of(st: &State) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    match certs_of(st)? {
        (old, Some(new)) => Ok((old, new)),
        (_, None) => Err(PkiError::Refused(format!(
            "{}: no new certificate yet: run --phase prepare",
            state::FILE
        ))),
    }
}

/// Phase 2: every anchor trusts old+new (old first: it still signs).
fn trust_both(spec: &ClusterSpec, id: CaId, st: State, written: &mut Out) -> Result<(), PkiError> {
    let (old, new) = new_of(&st)?;
    let list = anchors_from(spec, id, &old, &new)?;
    set_all(&list, &[&old, &new], written)?;
    close(spec, st, Phase::TrustBoth, written)
}

/// Phase 3: the bundles list the new CA first, every certificate of the CA is signed by it,
/// and the key record names the new key.
fn reissue(
    spec: &ClusterSpec,
    keys: &KeyStore,
    id: CaId,
    mut st: State,
    written: &mut Out,
    notes: &mut Vec<String>,
) -> Result<(), PkiError> {
    let file = state::path(&spec.cert_dir);
    let (old, new) = new_of(&st)?;
    let list = anchors_from(spec, id, &old, &new)?;
    let config = spec.ca_key(id);
    let new_uri = super::with_pin_of(&st.key(&file, "new-key")?, config);
    let key = open_key(keys, &new_uri)?.ok_or_else(|| {
        PkiError::Missing(format!(
            "new key {new_uri} of the rotation of {} is not there (copy it, or reach the same token, as on the node that ran prepare)",
            st.target
        ))
    })?;
    if key.public_key_spki() != spki_of(&new)? {
        return Err(PkiError::Mismatch(format!(
            "new key {new_uri} does not match the new CA certificate in {}",
            state::FILE
        )));
    }
    set_all(&list, &[&new, &old], written)?;
    let signer = CaSigner::new(&new, key)?;
    let items = observe::issued(spec, id)?;
    let todo = observe::not_reissued(&items, &new)?;
    let start = x509::whole_seconds(OffsetDateTime::now_utc());
    let bundle = anchors::bundle_pem(&[&new, &old]);
    for item in &todo {
        if !written.dry {
            reissue_one(spec, keys, &signer, item, start, &bundle)?;
        }
        written.push(item.file().display().to_string());
    }
    for skipped in catalogue::KUBECONFIGS.iter().filter(|k| {
        let p = k.path(&spec.kubeconfig_dir);
        id == CaId::Ca && p.exists() && !items.iter().any(|i| i.file() == p)
    }) {
        notes.push(format!(
            "{}: no embedded client certificate (the kubelet's own); make sure its signer uses the new CA key",
            skipped.file
        ));
    }
    let mut recorded = spec.clone();
    for (i, uri) in recorded.ca_keys.iter_mut() {
        if *i == id {
            *uri = new_uri.clone();
        }
    }
    if !written.dry {
        crate::recorded::write(&recorded)?;
    }
    if !super::same_key(config, &new_uri) {
        notes.push(format!(
            "{} now records {} as the {} key; where kpki.toml, KPKI__KEYS__ or --key {}=… name {}, change them",
            crate::recorded::FILE,
            state::storable(&new_uri),
            st.target,
            st.target,
            state::storable(config)
        ));
    }
    st.reissued.get_or_insert_with(now_text);
    close(spec, st, Phase::Reissue, written)
}

fn reissue_one(
    spec: &ClusterSpec,
    keys: &KeyStore,
    signer: &CaSigner,
    item: &Issued,
    start: OffsetDateTime,
    bundle: &str,
) -> Result<(), PkiError> {
    let der = item.cert()?;
    let profile = crate::renew::profile_of(&der, item.file())?;
    let target = match item {
        Issued::Leaf { key, .. } => KeyUri::file(key),
        Issued::Kubeconfig { path, .. } => KeyUri::file(path),
    };
    let new = create_keys(keys, spec.algorithm, vec![target])?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::internal("no key made"))?;
    let NewKey::Soft(key, key_pem) = new else {
        return Err(PkiError::internal("reissued keys are software keys"));
    };
    let cert = signer.issue(
        x509::leaf_params(&profile, start, spec.cert_validity)?,
        Arc::new(*key),
    )?;
    match item {
        Issued::Leaf { key, crt, .. } => {
            pair::replace(key, key_pem.as_bytes(), crt, cert.pem.as_bytes())
        }
        Issued::Kubeconfig { path, .. } => {
            let text = observe::read_text(path)?;
            let mut doc = kubeconfig::Document::parse(path, &text)?;
            doc.set_credentials(path, bundle, &cert.pem, &key_pem)?;
            store::replace(path, doc.render(path)?.as_bytes(), store::PRIVATE_MODE)
        }
    }
}

/// Phase 4: the bundles hold the new CA alone; refused while a certificate here, or a node
/// the state file knows, still depends on the old CA.
fn retire(
    spec: &ClusterSpec,
    id: CaId,
    st: State,
    written: &mut Out,
    notes: &mut Vec<String>,
) -> Result<(), PkiError> {
    let (old, new) = new_of(&st)?;
    let list = anchors_from(spec, id, &old, &new)?;
    let items = observe::issued(spec, id)?;
    if let Some(item) = observe::not_reissued(&items, &new)?.first() {
        return Err(PkiError::Refused(format!(
            "retire {}: {} ({}) is still signed by the old CA; the bundle would drop the CA signing it: run --phase reissue first",
            st.target,
            item.file().display(),
            item.name()
        )));
    }
    if let Some((node, p)) = st
        .nodes
        .iter()
        .find(|(n, p)| **n != spec.node_name && **p < Phase::Reissue)
    {
        return Err(PkiError::Refused(format!(
            "retire {}: node {node} is at {p} ({}): its certificates are still signed by the old CA; run reissue there first and copy {} back",
            st.target,
            state::FILE,
            state::FILE
        )));
    }
    set_all(&list, &[&new], written)?;
    notes.push(format!(
        "the old key {} is no longer used by this PKI; kpki keeps it (remove it yourself once every node has retired)",
        st.old_key
    ));
    close(spec, st, Phase::Retire, written)
}

/// Where the rotation of the PKI of `spec` stands on this node.
pub(crate) fn status(spec: &ClusterSpec) -> Result<Status, PkiError> {
    let Some(st) = state::read(&spec.cert_dir)? else {
        return Ok(Status {
            target: None,
            started: None,
            old_key: None,
            new_key: None,
            node: spec.node_name.clone(),
            phase: None,
            nodes: Default::default(),
            behind: false,
            finished: false,
            next: None,
            restart: Vec::new(),
            notes: vec!["no rotation was started on this PKI".into()],
        });
    };
    let file = state::path(&spec.cert_dir);
    let target = st.target(&file)?;
    let phase = node_phase(spec, &st)?;
    let mut nodes = st.nodes.clone();
    if let Some(p) = phase {
        nodes.insert(spec.node_name.clone(), p);
    }
    let furthest = nodes.values().copied().max();
    let behind = phase < furthest;
    let finished = phase == Some(Phase::Retire) && nodes.values().all(|p| *p == Phase::Retire);
    let mut notes = Vec::new();
    if behind {
        let ahead: Vec<String> = nodes
            .iter()
            .filter(|(_, p)| Some(**p) > phase)
            .map(|(n, p)| format!("{n} at {p}"))
            .collect();
        notes.push(format!(
            "this node is behind ({}): run kpki ca rotate {target} here",
            ahead.join(", ")
        ));
    }
    let laggards: Vec<String> = nodes
        .iter()
        .filter(|(_, p)| Some(**p) < phase)
        .map(|(n, p)| format!("{n} at {p}"))
        .collect();
    if !laggards.is_empty() {
        notes.push(format!(
            "other nodes are behind ({}): bring them to {} before the next phase here",
            laggards.join(", "),
            phase.map_or("prepare", Phase::name)
        ));
    }
    if phase == Some(Phase::Retire) {
        notes.push(format!(
            "the old key {} is no longer used; kpki keeps it",
            st.old_key
        ));
    }
    let restart = match (target, phase) {
        (Target::Ca(id), Some(p)) => restart(id, p),
        (Target::Sa, Some(p)) => super::sa::restart(p),
        _ => Vec::new(),
    };
    Ok(Status {
        target: Some(st.target.clone()),
        started: Some(st.started.clone()),
        old_key: Some(st.old_key.clone()),
        new_key: Some(st.new_key.clone()),
        node: spec.node_name.clone(),
        phase,
        next: if finished {
            None
        } else {
            phase.map_or(Some(Phase::Prepare), Phase::next)
        },
        nodes,
        behind,
        finished,
        restart,
        notes,
    })
}
