//! Rotating the service-account key, in the same four phases: `prepare` makes the new key
//! (on the token or beside `sa.key`); `trust-both` makes `sa.pub` (kube-apiserver's
//! `--service-account-key-file`, which may list several keys) hold old+new, so every API
//! server accepts tokens of either key before any signs with the new one; `reissue` records
//! the new key as the signing key (`kpki-keys.toml`; the token signer's `[jwt] signing_key`)
//! with the old one verify-only; `retire` drops the old public key from `sa.pub`, refused
//! until tokens the old key signed may all have expired (the request's token lifetime after
//! `reissue`). The old key itself is kept.

use std::time::Duration;

use kpki_signer::KeyUri;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::phases::{Choice, choose};
use super::state::{self, State};
use super::{Out, Phase, Report, Request, Target};
use crate::authority::open_key;
use crate::config::ClusterSpec;
use crate::keystore::KeyStore;
use crate::{PkiError, store, x509};

/// `sa.pub` of the PKI.
fn pub_path(spec: &ClusterSpec) -> std::path::PathBuf {
    spec.cert_dir.join("sa.pub")
}

/// The public keys (SPKI DER) `sa.pub` lists, in order; empty when it is absent.
fn listed(spec: &ClusterSpec) -> Result<Vec<Vec<u8>>, PkiError> {
    let path = pub_path(spec);
    let bytes = match kpki_atomic::read::regular_file(&path, kpki_atomic::read::PEM_MAX) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PkiError::io(&path, e)),
    };
    let blocks = pem::parse_many(&bytes)
        .map_err(|e| PkiError::Malformed(format!("{}: not PEM ({e})", path.display())))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "PUBLIC KEY")
        .map(pem::Pem::into_contents)
        .collect())
}

fn set_listed(spec: &ClusterSpec, want: &[&[u8]], written: &mut Out) -> Result<(), PkiError> {
    let now = listed(spec)?;
    if now.len() == want.len() && now.iter().zip(want).all(|(a, b)| a == b) {
        return Ok(());
    }
    let text: String = want.iter().map(|k| x509::to_pem("PUBLIC KEY", k)).collect();
    let path = pub_path(spec);
    if !written.dry {
        store::replace(&path, text.as_bytes(), store::PRIVATE_MODE)?;
    }
    written.push(path.display().to_string());
    Ok(())
}

/// The old and (once prepared) new public key of the state file, DER: the state's two PEM
/// entries, read as for a CA rotation.
fn keys_of(st: &State) -> Result<(Vec<u8>, Option<Vec<u8>>), PkiError> {
    super::phases::certs_of(st)
}

/// The last phase done on this node: the state file's record, or what `sa.pub` shows.
pub(crate) fn node_phase(spec: &ClusterSpec, st: &State) -> Result<Option<Phase>, PkiError> {
    let recorded = st.nodes.get(&spec.node_name).copied();
    let (old, Some(new)) = keys_of(st)? else {
        return Ok(recorded);
    };
    let now = listed(spec)?;
    let seen = if now == [new.clone()] {
        Phase::Retire
    } else if now == [new.clone(), old.clone()] {
        Phase::Reissue
    } else if now.contains(&old) && now.contains(&new) {
        Phase::TrustBoth
    } else {
        Phase::Prepare
    };
    Ok(recorded.max(Some(seen)))
}

/// What the operator restarts after `phase`.
pub(crate) fn restart(phase: Phase) -> Vec<String> {
    let list: &[&str] = match phase {
        Phase::Prepare => &[],
        Phase::TrustBoth | Phase::Retire => &[
            "kube-apiserver (one at a time; sa.pub)",
            "the token signer (kpki serve: SIGHUP after editing [jwt])",
        ],
        Phase::Reissue => &[
            "the token signer (kpki serve: SIGHUP after editing [jwt]) or kube-apiserver and kube-controller-manager with the new signing key file",
        ],
    };
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs `request` (target `sa`).
pub(crate) fn run(
    spec: &ClusterSpec,
    keys: &KeyStore,
    request: &Request,
) -> Result<Report, PkiError> {
    let (phase, st) = match choose(spec, request)? {
        Choice::Done(p, _) => {
            let mut r = report(p, false, Vec::new(), Vec::new());
            r.dry_run = request.dry_run;
            return Ok(r);
        }
        Choice::Run(phase, st) => (phase, st),
    };
    let file = state::path(&spec.cert_dir);
    let config = &spec.sa_key;
    let mut written = Out::new(request.dry_run);
    let mut notes = Vec::new();
    let mut st = match st {
        Some(st) => st,
        None => start(spec, keys, request, &mut written)?,
    };
    let (old, new) = keys_of(&st)?;
    let new_uri = super::with_pin_of(&st.key(&file, "new-key")?, config);
    match (phase, new) {
        (Phase::Prepare, _) if written.dry => match open_key(keys, &new_uri)? {
            Some(k) if k.public_key_spki() == old.as_slice() => return Err(same(&new_uri)),
            Some(k) => st.new_cert = Some(x509::to_pem("PUBLIC KEY", k.public_key_spki())),
            None => written.push(format!("key {} (made on its backend)", st.new_key)),
        },
        (Phase::Prepare, _) => {
            let key = super::phases::open_or_create(keys, spec, &new_uri, config, &old)?;
            st.new_cert = Some(x509::to_pem("PUBLIC KEY", key.public_key_spki()));
        }
        (_, None) => {
            return Err(PkiError::Refused(format!(
                "{}: no new key yet: run --phase prepare",
                state::FILE
            )));
        }
        (Phase::TrustBoth, Some(new)) => {
            set_listed(spec, &[&old, &new], &mut written)?;
            notes.push(format!(
                "token signer: add [[jwt.verify_keys]] key = \"{}\" (it verifies; the old key still signs)",
                st.new_key
            ));
        }
        (Phase::Reissue, Some(new)) => reissue(
            spec,
            &mut st,
            &new_uri,
            (&old, &new),
            &mut written,
            &mut notes,
        )?,
        (Phase::Retire, Some(new)) => {
            retire(spec, &st, request, &new, &mut written)?;
            notes.push(format!(
                "token signer: remove the old key from [[jwt.verify_keys]]; the old key {} is no longer used, kpki keeps it",
                st.old_key
            ));
        }
    }
    st.nodes.insert(spec.node_name.clone(), phase);
    if state::read(&spec.cert_dir)?.as_ref() != Some(&st) {
        if !written.dry {
            state::write(&spec.cert_dir, &st)?;
        }
        written.push(file.display().to_string());
    }
    let dry_run = written.dry;
    let written = written.into_list();
    let changed = !written.is_empty();
    let mut r = report(phase, changed, written, notes);
    r.dry_run = dry_run;
    Ok(r)
}

/// A new rotation of the key `spec` names: refused when the new key is the old one, else
/// recorded in the state file before the new key is made.
fn start(
    spec: &ClusterSpec,
    keys: &KeyStore,
    request: &Request,
    written: &mut Out,
) -> Result<State, PkiError> {
    let config = &spec.sa_key;
    let old = open_key(keys, config)?
        .ok_or_else(|| PkiError::Missing(format!("service-account key {config}: not there")))?;
    let new_uri = request
        .new_key
        .clone()
        .unwrap_or_else(|| super::next_key(config, "sa"));
    if super::same_key(&new_uri, config) {
        return Err(same(&new_uri));
    }
    if let Some(k) = open_key(keys, &super::with_pin_of(&new_uri, config))?
        && k.public_key_spki() == old.public_key_spki()
    {
        return Err(same(&new_uri));
    }
    super::phases::refuse_unstorable_pin(&new_uri, config)?;
    let st = State {
        target: "sa".into(),
        started: now_text(OffsetDateTime::now_utc()),
        old_key: state::storable(config),
        new_key: state::storable(&new_uri),
        old_cert: x509::to_pem("PUBLIC KEY", old.public_key_spki()),
        new_cert: None,
        reissued: None,
        nodes: Default::default(),
    };
    if !written.dry {
        state::write(&spec.cert_dir, &st)?;
    }
    written.push(state::path(&spec.cert_dir).display().to_string());
    Ok(st)
}

/// Reissue: `sa.pub` lists the new key first, the key record names it, and the time the
/// new key began to sign is kept (retire waits from there).
fn reissue(
    spec: &ClusterSpec,
    st: &mut State,
    new_uri: &KeyUri,
    (old, new): (&[u8], &[u8]),
    written: &mut Out,
    notes: &mut Vec<String>,
) -> Result<(), PkiError> {
    set_listed(spec, &[new, old], written)?;
    let mut recorded = spec.clone();
    recorded.sa_key = new_uri.clone();
    if !written.dry {
        crate::recorded::write(&recorded)?;
    }
    st.reissued
        .get_or_insert_with(|| now_text(OffsetDateTime::now_utc()));
    notes.push(format!(
        "token signer: signing_key = \"{}\", and the old key \"{}\" under [[jwt.verify_keys]] with exclude_from_oidc_discovery = true until tokens it signed have expired",
        st.new_key, st.old_key
    ));
    if let KeyUri::File(p) = new_uri {
        notes.push(format!(
            "with file keys: point kube-apiserver's --service-account-signing-key-file and kube-controller-manager's --service-account-private-key-file at {}",
            p.display()
        ));
    }
    Ok(())
}

/// Retire: `sa.pub` holds the new key alone; refused until tokens of the old key may all
/// have expired and while a node the state file knows has not reissued.
fn retire(
    spec: &ClusterSpec,
    st: &State,
    request: &Request,
    new: &[u8],
    written: &mut Out,
) -> Result<(), PkiError> {
    let since = st
        .reissued
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .ok_or_else(|| {
            PkiError::Refused(
                "retire sa: the new key has not signed yet on any node: run --phase reissue first"
                    .into(),
            )
        })?;
    let until = since + request.token_lifetime;
    if OffsetDateTime::now_utc() < until {
        return Err(PkiError::Refused(format!(
            "retire sa: tokens the old key signed may be valid until {} (reissue at {} + token lifetime {}s); sa.pub would drop the key that verifies them",
            now_text(until),
            now_text(since),
            request.token_lifetime.as_secs()
        )));
    }
    if let Some((node, p)) = st
        .nodes
        .iter()
        .find(|(n, p)| **n != spec.node_name && **p < Phase::Reissue)
    {
        return Err(PkiError::Refused(format!(
            "retire sa: node {node} is at {p} ({}): run reissue there first",
            state::FILE
        )));
    }
    set_listed(spec, &[new], written)
}

fn same(uri: &KeyUri) -> PkiError {
    PkiError::Refused(format!(
        "new key {uri}: it is the key being replaced (its public key matches the old one); name another key"
    ))
}

fn now_text(t: OffsetDateTime) -> String {
    let t = x509::whole_seconds(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

fn report(phase: Phase, changed: bool, written: Vec<String>, notes: Vec<String>) -> Report {
    Report {
        target: Target::Sa.name().into(),
        phase,
        changed,
        dry_run: false,
        written,
        restart: if changed { restart(phase) } else { Vec::new() },
        notes,
        next: phase.next(),
    }
}

/// Default token lifetime the retire phase waits for: kube-apiserver's longest (one year).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
