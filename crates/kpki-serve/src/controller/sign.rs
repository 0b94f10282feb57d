//! One reconcile of one CertificateSigningRequest: skip what is not ours or not approved,
//! sign what is (through the same issuance as `/v1/sign`: signer rules, policy with the
//! requester as caller, the CA's key, the audit line), and write the result through the
//! `/status` subresource. A request the rules or the policy refuse gets a `Failed`
//! condition; an outage leaves it pending and it is tried again. A certificate is issued
//! once per object: when writing it fails it is kept and written again, never re-signed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestStatus,
};
use kpki_pki::csr_stage::{Stage, stage};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};

use super::config::Settings;
use super::{approve, object};
use crate::app::{App, Part};
use crate::error_code::{Failure, Fault};
use crate::issue::{self, Context};

/// Status writes tried before the reconcile gives up and is retried later.
const WRITE_ATTEMPTS: usize = 5;

/// How soon a request that could not be finished is looked at again.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// What every reconcile shares.
pub(crate) struct Ctx {
    /// The daemon (state, CAs, audit, metrics, readiness).
    pub app: Arc<App>,
    /// The cluster.
    pub client: Client,
    /// CertificateSigningRequests (cluster-scoped).
    pub api: Api<CertificateSigningRequest>,
    /// The `[kubernetes]` settings.
    pub settings: Settings,
    /// Certificates issued whose write has not succeeded yet, by object uid.
    pub issued: Mutex<HashMap<String, String>>,
}

/// Why a reconcile did not finish; the request is looked at again after [`RETRY`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    /// The CA key, the audit trail or the signer cannot serve now.
    #[error("{0}")]
    Unavailable(String),
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// The object changed under every write attempt.
    #[error("status of {0:?} kept changing: {WRITE_ATTEMPTS} writes conflicted")]
    Conflicts(String),
}

/// Looks at one object.
pub(crate) async fn reconcile(
    object: Arc<CertificateSigningRequest>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    let signer = object.spec.signer_name.as_str();
    if !ctx.settings.signers.iter().any(|s| s == signer) {
        return Ok(Action::await_change());
    }
    match stage(&object) {
        Stage::Approved => sign(&object, &ctx).await,
        Stage::AwaitingApproval if ctx.settings.approve.iter().any(|s| s == signer) => {
            approve::consider(&object, &ctx).await
        }
        _ => {
            forget(&ctx, &object);
            Ok(Action::await_change())
        }
    }
}

/// Logs a reconcile that did not finish and schedules the next look.
pub(crate) fn error_policy(
    object: Arc<CertificateSigningRequest>,
    error: &ReconcileError,
    _ctx: Arc<Ctx>,
) -> Action {
    tracing::warn!(csr = %object.name_any(), error = %error, "certificate signing request not finished; trying again");
    Action::requeue(RETRY)
}

fn forget(ctx: &Ctx, object: &CertificateSigningRequest) {
    if let (Some(uid), Ok(mut issued)) = (object.uid(), ctx.issued.lock()) {
        issued.remove(&uid);
    }
}

async fn sign(object: &CertificateSigningRequest, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let uid = object.uid().unwrap_or_default();
    let kept = ctx.issued.lock().ok().and_then(|i| i.get(&uid).cloned());
    let certificate = match kept {
        Some(pem) => pem,
        None => match issue_for(object, ctx).await? {
            Ok(pem) => {
                if let Ok(mut issued) = ctx.issued.lock() {
                    issued.insert(uid.clone(), pem.clone());
                }
                pem
            }
            Err(refusal) => return mark_failed(object, ctx, &refusal).await,
        },
    };
    let written = write_status(ctx, object, |status| {
        status.certificate = Some(ByteString(certificate.clone().into_bytes()));
    })
    .await?;
    forget(ctx, object);
    if written {
        let m = &ctx.app.metrics.csr;
        m.signed.inc();
        if let Some(at) = object::approved_at(object) {
            let waited = k8s_openapi::jiff::Timestamp::now().duration_since(at);
            m.approval_to_certificate_seconds
                .observe(waited.as_secs_f64().max(0.0));
        }
        tracing::info!(csr = %object.name_any(), signer = %object.spec.signer_name, "certificate written");
    }
    Ok(Action::await_change())
}

/// Issues the object's certificate: `Ok(Ok(pem))`, `Ok(Err(refusal))` when the signer rules
/// or the policy refuse it, `Err` when something that may come back (the CA key, the audit
/// trail) is unavailable.
async fn issue_for(
    object: &CertificateSigningRequest,
    ctx: &Ctx,
) -> Result<Result<String, Failure>, ReconcileError> {
    // During an outage nothing is decided: no audit line per retry, nothing marked Failed.
    if !ctx.app.part_ready(Part::CaKeys) {
        return Err(ReconcileError::Unavailable(format!(
            "CA key unavailable: {}",
            ctx.app.not_ready_reason()
        )));
    }
    let context = Context {
        caller: object::requester(object),
        remote: None,
        endpoint: "controller",
        body_sha256: object::request_sha256(object),
        csr: Some(object::reference(object)),
    };
    match issue::issue(Arc::clone(&ctx.app), context, Ok(object::ask(object))).await {
        Ok(answer) => Ok(Ok(answer.certificate)),
        Err(f) if f.code.fault() == Fault::Caller => Ok(Err(f)),
        Err(f) => Err(ReconcileError::Unavailable(format!(
            "{}: {}",
            f.code, f.message
        ))),
    }
}

/// Adds the `Failed` condition kube-controller-manager's signer adds for a request its rules
/// refuse (reason `SignerValidationFailure`), naming kpki's code.
async fn mark_failed(
    object: &CertificateSigningRequest,
    ctx: &Ctx,
    refusal: &Failure,
) -> Result<Action, ReconcileError> {
    let condition = kpki_pki::csr_stage::condition(
        "Failed",
        "SignerValidationFailure",
        format!("{}: {}", refusal.code, refusal.message),
    );
    let written = write_status(ctx, object, |status| {
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(condition.clone());
    })
    .await?;
    if written {
        ctx.app.metrics.csr.failed.inc();
        tracing::info!(csr = %object.name_any(), code = %refusal.code, reason = %refusal.message, "certificate signing request failed");
    }
    Ok(Action::await_change())
}

/// Writes `change` through `/status` with the object's resourceVersion. On a conflict the
/// object is read again: if it is no longer approved-and-unsigned (another writer finished
/// it, it was denied) nothing is written (`Ok(false)`); otherwise the change is applied to
/// the fresh object and written again. A deleted object is `Ok(false)`.
async fn write_status(
    ctx: &Ctx,
    object: &CertificateSigningRequest,
    change: impl Fn(&mut CertificateSigningRequestStatus),
) -> Result<bool, ReconcileError> {
    let name = object.name_any();
    let mut current = object.clone();
    for _ in 0..WRITE_ATTEMPTS {
        let mut next = current.clone();
        change(next.status.get_or_insert_with(Default::default));
        match ctx
            .api
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
            Err(kube::Error::Api(e)) if e.code == 409 => match ctx.api.get_status(&name).await {
                Ok(fresh) if stage(&fresh) == Stage::Approved && fresh.uid() == object.uid() => {
                    current = fresh;
                }
                Ok(_) => return Ok(false),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Err(ReconcileError::Conflicts(name))
}
