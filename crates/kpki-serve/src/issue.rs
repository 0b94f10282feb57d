//! One issuance, whatever the endpoint: find the CA, examine the request (proof of
//! possession, Kubernetes signer rules), apply the policy, sign (a token key off the async
//! runtime, behind the key's session gate), write the audit line, and only then answer. A
//! client that goes away mid-request cannot leave a decision unaudited (see [`issue`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use kpki_pki::csr::{self, Authority, Examined, SignError, SignRequest};
use kpki_pki::signers::{self, KubeSigner};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::app::{App, Part};
use crate::audit::{self, Decision, Event, Record, SyncMode};
use crate::error_code::{ErrorCode, Failure};
use crate::policy::Caller;
use crate::state::Ca;

/// What a caller asks for.
#[derive(Debug, Clone)]
pub struct Ask {
    /// PEM PKCS#10 request.
    pub csr_pem: String,
    /// Signer name or profile.
    pub signer: String,
    /// Requested validity in seconds.
    pub expiration_seconds: Option<i64>,
    /// Requested usages (Kubernetes words); empty: the signer's.
    pub usages: Vec<String>,
}

/// Who asks, from where, through which endpoint, with which body.
pub struct Context {
    /// The caller's identity.
    pub caller: Caller,
    /// Remote address (none for the CSR controller, whose requests come from the API
    /// server's objects).
    pub remote: Option<SocketAddr>,
    /// API path, or `controller` for the CSR controller.
    pub endpoint: &'static str,
    /// The CertificateSigningRequest object (CSR controller only).
    pub csr: Option<audit::CsrRef>,
    /// SHA-256 (hex) of the raw request body.
    pub body_sha256: String,
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Certificate PEM.
    pub certificate: String,
    /// The issuing CA's certificate PEM.
    pub chain: Vec<String>,
    /// Serial, lowercase hex.
    pub serial: String,
    /// NotAfter, RFC 3339.
    pub not_after: String,
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Issues what `ask` asks for `ctx.caller`; a request that could not even be read arrives
/// as `Err` and is audited like any other decision. Every decision is audited before it is
/// answered, and a caller that goes away cannot leave one unaudited: a refusal is decided
/// and written without a pause; a token signature runs, and is audited, on a signing thread
/// that finishes whatever happens to this future; a wait for a session runs in its own task.
///
/// The request moves between threads as little as it can: a key that signs in software
/// signs right here; a token key once, to one of the CA's signing threads, which signs and
/// writes the audit line (token calls may hang, and the runtime's workers must not).
pub async fn issue(
    app: Arc<App>,
    ctx: Context,
    ask: Result<Ask, Failure>,
) -> Result<Answer, Failure> {
    let state = app.state();
    let signer = ask.as_ref().map(|a| a.signer.clone()).unwrap_or_default();
    let ca = state.ca_for(&signer).cloned();
    let trail = Trail {
        app,
        key_uri: ca.as_ref().map(|c| c.key_uri.clone()),
        ctx,
        signer,
        start: Instant::now(),
    };
    let job = match (ask, ca) {
        (Err(f), _) => return trail.close(Outcome::early(Err(f)), Thread::Worker),
        (Ok(ask), None) => {
            let f = Failure::new(
                ErrorCode::UnknownSigner,
                format!("no CA is configured for signer {:?}", ask.signer),
            );
            return trail.close(Outcome::early(Err(f)), Thread::Worker);
        }
        (Ok(ask), Some(ca)) => match decide(&trail.app, &state, ca, &trail.ctx.caller, ask) {
            Decided::Sign(job) => job,
            Decided::Refused(outcome) => return trail.close(outcome, Thread::Worker),
        },
    };
    let ca = Arc::clone(&job.ca);
    let Some(gate) = ca.key.concurrency_gate() else {
        // A software key: signing is a few microseconds of CPU, as cheap as the hand-off.
        let result = sign(&job.ca, &job.request, &job.examined, job.max_validity);
        return trail.close(job.outcome(result), Thread::Worker);
    };
    let timeout = state.request_timeout;
    match gate.try_acquire() {
        Ok(permit) => {
            // The session goes with the call: the signing thread gives it back when the token
            // returns, so a token that stops answering never gets more calls than sessions.
            permit.forget();
            sign_on_token(Arc::new(trail), job, timeout).await
        }
        Err(tokio::sync::TryAcquireError::Closed) => trail.close(
            job.outcome(Err(Failure::new(
                ErrorCode::ShuttingDown,
                "the daemon is stopping",
            ))),
            Thread::Worker,
        ),
        Err(tokio::sync::TryAcquireError::NoPermits) => {
            // Every session is busy: the wait (bounded by the request timeout) and what
            // follows run in their own task, so that a caller going away mid-wait still
            // leaves its decision in the audit trail.
            let waited = tokio::spawn(async move {
                match session(&job.ca, timeout).await {
                    Ok(()) => sign_on_token(Arc::new(trail), job, timeout).await,
                    Err(f) => trail.close(job.outcome(Err(f)), Thread::Worker),
                }
            });
            match waited.await {
                Ok(result) => result,
                Err(e) => {
                    // The task panicked (a bug), so its decision may not be audited.
                    let f = Failure::bug("issuance task", e);
                    tracing::error!(error = %f.message, "issuance task failed");
                    Err(f)
                }
            }
        }
    }
}

/// Where [`Trail::close`] runs: an async worker hands a slow audit append (fsync, a
/// checkpoint's signature) to a blocking thread; a blocking thread just appends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Thread {
    Worker,
    Blocking,
}

/// What the audit line and the metrics of one request need, whatever its outcome.
struct Trail {
    app: Arc<App>,
    ctx: Context,
    /// The signer or profile asked for (empty when the body could not be read).
    signer: String,
    /// The CA key's printed URI (when a CA serves the signer).
    key_uri: Option<String>,
    start: Instant,
}

impl Trail {
    /// Audits `outcome` and counts it; the answer, or `audit_failed` when the audit line
    /// could not be written (a certificate is never delivered unaudited).
    fn close(&self, outcome: Outcome, on: Thread) -> Result<Answer, Failure> {
        let Outcome {
            examined,
            rule,
            result,
        } = outcome;
        let ctx = &self.ctx;
        let mut record = Record {
            time: now_rfc3339(),
            event: Event::Decision,
            caller: Some(audit::Caller {
                cn: ctx.caller.cn.clone(),
                orgs: ctx.caller.orgs.clone(),
            }),
            remote: ctx.remote.map(|r| r.to_string()),
            endpoint: Some(ctx.endpoint.to_string()),
            request_sha256: Some(ctx.body_sha256.clone()),
            signer_name: Some(self.signer.clone()).filter(|s| !s.is_empty()),
            subject: examined.as_deref().map(|e| e.subject.display()),
            sans: examined
                .as_deref()
                .map(Examined::san_strings)
                .unwrap_or_default(),
            decision: None,
            rule,
            code: None,
            reason: None,
            serial: None,
            not_after: None,
            key_uri: self.key_uri.clone(),
            csr: ctx.csr.clone(),
            checkpoint: None,
        };
        match &result {
            Ok(a) => {
                record.decision = Some(Decision::Allow);
                record.serial = Some(a.serial.clone());
                record.not_after = Some(a.not_after.clone());
            }
            Err(f) => {
                record.decision = Some(f.code.decision());
                record.code = Some(f.code.to_string());
                record.reason = Some(f.message.clone());
            }
        }
        let audited = match (self.app.audit.as_ref(), on) {
            (Some(log), Thread::Blocking) => log.append(record).map(|_| ()),
            (Some(_), Thread::Worker) => append_audit(&self.app, record),
            (None, _) => Ok(()),
        };
        let result = match audited {
            Ok(()) => result,
            Err(e) => {
                tracing::error!(error = %e, "audit write failed; answer withheld");
                Err(Failure::audit_failed())
            }
        };
        let app = &self.app;
        // Metric labels carry only names the configuration knows: callers cannot grow the
        // set.
        let known = app.state().config.signers.contains_key(&self.signer)
            || signers::BUILT_IN.contains(&self.signer.as_str());
        let label = if known { self.signer.as_str() } else { "other" };
        app.metrics
            .count(ctx.endpoint, label, result.as_ref().err().map(|f| f.code));
        if result.is_ok() {
            app.metrics
                .issuance_seconds
                .observe(self.start.elapsed().as_secs_f64());
        }
        result
    }
}

/// Appends `record` to the daemon's audit trail (if it writes one) from an async task: a
/// plain append is one write(2); with fsync it waits for the disk, and a checkpoint for its
/// signature, so the runtime worker hands its other tasks on meanwhile.
pub(crate) fn append_audit(app: &App, record: Record) -> Result<(), audit::AuditError> {
    match app.audit.as_ref() {
        Some(log) if log.sync_mode() == SyncMode::Fsync || log.checkpoint_due() => {
            tokio::task::block_in_place(|| log.append(record)).map(|_| ())
        }
        Some(log) => log.append(record).map(|_| ()),
        None => Ok(()),
    }
}

/// What examining, deciding and signing came to.
struct Outcome {
    /// The request as read (when it could be).
    examined: Option<Arc<Examined>>,
    /// The policy rule that allowed it, or that matched the caller and refused it.
    rule: Option<String>,
    /// The certificate, or why not.
    result: Result<Answer, Failure>,
}

impl Outcome {
    /// Decided before the request was read or the policy consulted.
    fn early(result: Result<Answer, Failure>) -> Outcome {
        Outcome {
            examined: None,
            rule: None,
            result,
        }
    }

    fn examined(
        examined: Examined,
        rule: Option<String>,
        result: Result<Answer, Failure>,
    ) -> Outcome {
        Outcome {
            examined: Some(Arc::new(examined)),
            rule,
            result,
        }
    }
}

/// A request the policy allowed, ready to be signed.
struct Job {
    ca: Arc<Ca>,
    request: SignRequest,
    examined: Arc<Examined>,
    /// The rule that allowed it.
    rule: Option<String>,
    /// The least of the CA's and the rule's longest validity.
    max_validity: Duration,
}

impl Job {
    /// This request's outcome: `result`.
    fn outcome(&self, result: Result<Answer, Failure>) -> Outcome {
        Outcome {
            examined: Some(Arc::clone(&self.examined)),
            rule: self.rule.clone(),
            result,
        }
    }
}

/// What [`decide`] came to.
enum Decided {
    /// Allowed: sign it.
    Sign(Job),
    /// Refused (or unreadable): audit and answer this.
    Refused(Outcome),
}

/// Examines the request (proof of possession, the signer's rules), applies the policy and
/// checks that the CA key is usable: a [`Job`] to sign, or the refusal. Synchronous (tens of
/// microseconds of CPU on the async worker), so a refusal is audited before anything else
/// can happen to the request.
fn decide(
    app: &App,
    state: &crate::state::State,
    ca: Arc<Ca>,
    caller: &Caller,
    ask: Ask,
) -> Decided {
    let (signer, request) = match sign_request(state, ask) {
        Ok(r) => r,
        Err(f) => return Decided::Refused(Outcome::early(Err(f))),
    };
    let examined = match csr::examine_for(&signer, &request) {
        Ok(e) => e,
        Err(e) => return Decided::Refused(Outcome::early(Err(e.into()))),
    };
    let asked = request
        .expiration_seconds
        .map(|s| Duration::from_secs(s.max(0).unsigned_abs()));
    let grant = match state
        .policy
        .decide(caller, &request.signer_name, &examined, asked)
    {
        Ok(g) => g,
        Err(d) => {
            let rule = d.rule.clone();
            return Decided::Refused(Outcome::examined(examined, rule, Err(d.into())));
        }
    };
    let rule = Some(grant.rule.clone());
    if !app.part_ready(Part::CaKeys) {
        let f = Failure::new(
            ErrorCode::HsmUnavailable,
            format!(
                "CA key unavailable (nothing was sent to the token): {}",
                app.not_ready_reason()
            ),
        );
        return Decided::Refused(Outcome::examined(examined, rule, Err(f)));
    }
    let max_validity = ca.max_validity.min(grant.max_validity);
    Decided::Sign(Job {
        ca,
        request,
        examined: Arc::new(examined),
        rule,
        max_validity,
    })
}

/// Signs `job` on one of its CA's signing threads with one of its key's sessions (already
/// taken); that thread also writes the audit line. Answers `hsm_unavailable` when the token
/// has not returned within `timeout`. Exactly one of the two audits the request: whichever claims
/// it first. When this future is dropped before either did (the caller went away), a task
/// takes over the timeout.
async fn sign_on_token(trail: Arc<Trail>, job: Job, timeout: Duration) -> Result<Answer, Failure> {
    let claimed = Arc::new(AtomicBool::new(false));
    let deadline = tokio::time::Instant::now() + timeout;
    let fallback = job.outcome(Err(token_timeout(&job.ca.name, timeout)));
    let ca_name = job.ca.name.clone();
    let ca = Arc::clone(&job.ca);
    let call = {
        let (trail, claimed) = (Arc::clone(&trail), Arc::clone(&claimed));
        move || {
            let started = Instant::now();
            let result = {
                let _session = GiveBack(job.ca.key.concurrency_gate());
                sign(&job.ca, &job.request, &job.examined, job.max_validity)
            };
            if claimed.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    ca = %job.ca.name,
                    took = ?started.elapsed(),
                    ok = result.is_ok(),
                    "a token call returned after its request was answered; nothing was delivered"
                );
                return None;
            }
            if let Err(f) = &result
                && f.code == ErrorCode::HsmUnavailable
            {
                trail.app.set_ready(Part::CaKeys, false, &f.message);
            }
            Some(trail.close(job.outcome(result), Thread::Blocking))
        }
    };
    let mut handle = match &ca.lane {
        Some(lane) => lane.run(call),
        None => tokio::task::spawn_blocking(call),
    };
    let mut watch = TimeoutWatch {
        trail: Some(trail),
        claimed,
        deadline,
        fallback: Some(fallback),
    };
    let joined = match tokio::time::timeout_at(deadline, &mut handle).await {
        Ok(joined) => joined,
        Err(_) => match watch.claim() {
            Some((trail, outcome)) => return expired(&trail, outcome),
            // The token returned just now: its audit line is being written.
            None => handle.await,
        },
    };
    match joined {
        Ok(Some(result)) => {
            watch.disarm();
            result
        }
        Ok(None) => {
            watch.disarm();
            Err(Failure::bug(
                "signing task",
                format!("CA \"{ca_name}\": the request was answered twice"),
            ))
        }
        Err(e) => {
            // The signing call panicked (a bug); unless it got as far as claiming the
            // request, it is audited here.
            let f = Failure::bug("signing task", e);
            match watch.claim() {
                Some((trail, mut outcome)) => {
                    outcome.result = Err(f);
                    trail.close(outcome, Thread::Worker)
                }
                None => Err(f),
            }
        }
    }
}

/// Audits and answers a token call that did not return in time, and marks the CA keys
/// unready until a probe signs again.
fn expired(trail: &Trail, outcome: Outcome) -> Result<Answer, Failure> {
    if let Err(f) = &outcome.result {
        trail.app.set_ready(Part::CaKeys, false, &f.message);
    }
    trail.close(outcome, Thread::Worker)
}

/// Gives a session back to its gate when the token call ends, however it ends.
struct GiveBack<'a>(Option<&'a tokio::sync::Semaphore>);

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        if let Some(gate) = self.0 {
            gate.add_permits(1);
        }
    }
}

/// The `hsm_unavailable` failure of a token call that did not return within `timeout`.
fn token_timeout(ca: &str, timeout: Duration) -> Failure {
    Failure::new(
        ErrorCode::HsmUnavailable,
        format!(
            "CA \"{ca}\": the token did not answer within {timeout:?}; no certificate was delivered"
        ),
    )
}

/// The timeout of one token call, for whoever reaches it: the request's future, or (when
/// that future is dropped first, the caller having gone away) a task spawned by `Drop`.
struct TimeoutWatch {
    trail: Option<Arc<Trail>>,
    /// Set by whoever answers the request: the signing thread or the timeout.
    claimed: Arc<AtomicBool>,
    deadline: tokio::time::Instant,
    /// The `hsm_unavailable` outcome the timeout answers.
    fallback: Option<Outcome>,
}

impl TimeoutWatch {
    /// The signing thread answered: nothing left to watch.
    fn disarm(&mut self) {
        self.trail = None;
    }

    /// Claims the request for the timeout: the trail and the outcome to audit, or `None`
    /// when the signing thread claimed it first.
    fn claim(&mut self) -> Option<(Arc<Trail>, Outcome)> {
        let trail = self.trail.take()?;
        let outcome = self.fallback.take()?;
        (!self.claimed.swap(true, Ordering::AcqRel)).then_some((trail, outcome))
    }
}

impl Drop for TimeoutWatch {
    fn drop(&mut self) {
        if self.trail.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut watch = TimeoutWatch {
            trail: self.trail.take(),
            claimed: Arc::clone(&self.claimed),
            deadline: self.deadline,
            fallback: self.fallback.take(),
        };
        runtime.spawn(async move {
            tokio::time::sleep_until(watch.deadline).await;
            if let Some((trail, outcome)) = watch.claim() {
                let _ = expired(&trail, outcome);
            }
        });
    }
}

/// The signer (with the usages its configuration allows) and the request `ask` carries.
fn sign_request(
    state: &crate::state::State,
    ask: Ask,
) -> Result<(KubeSigner, SignRequest), Failure> {
    let malformed = |m: String| Failure::new(ErrorCode::MalformedCsr, m);
    let csr_der = match pem::parse(ask.csr_pem.as_bytes()) {
        Ok(p) if p.tag() == "CERTIFICATE REQUEST" || p.tag() == "NEW CERTIFICATE REQUEST" => {
            p.into_contents()
        }
        Ok(p) => {
            return Err(malformed(format!(
                "expected a CERTIFICATE REQUEST PEM block, got {}",
                p.tag()
            )));
        }
        Err(e) => return Err(malformed(format!("the request is not PEM ({e})"))),
    };
    // A signer's configured usages are its default and the most a request may ask.
    let configured = state
        .config
        .signers
        .get(&ask.signer)
        .map(|s| s.usages.as_slice())
        .unwrap_or_default();
    let signer = KubeSigner::for_name(&ask.signer).with_usages(configured);
    let request = SignRequest {
        csr_der,
        signer_name: ask.signer,
        usages: ask.usages,
        expiration_seconds: ask.expiration_seconds,
        // The policy decides about system:masters (only where a rule lists it).
        allow_system_masters: true,
    };
    Ok((signer, request))
}

/// Waits for a session of the CA's key without holding a blocking thread and takes it (the
/// signing thread gives it back); gives up after `timeout` rather than queueing
/// without bound.
async fn session(ca: &Ca, timeout: Duration) -> Result<(), Failure> {
    let Some(gate) = ca.key.concurrency_gate() else {
        return Ok(());
    };
    match tokio::time::timeout(timeout, gate.acquire()).await {
        Ok(Ok(p)) => {
            p.forget();
            Ok(())
        }
        Ok(Err(_)) => Err(Failure::new(
            ErrorCode::ShuttingDown,
            "the daemon is stopping",
        )),
        Err(_) => Err(Failure::new(
            ErrorCode::Busy,
            "no signing session became free within the request timeout",
        )),
    }
}

fn sign(
    ca: &Ca,
    request: &SignRequest,
    examined: &Examined,
    max_validity: Duration,
) -> Result<Answer, Failure> {
    let authority = Authority {
        signer: &ca.signer,
        max_validity,
    };
    let now = OffsetDateTime::now_utc();
    let leaf = csr::not_after(request, &authority, now)
        .map_err(SignError::from)
        .and_then(|not_after| csr::issue(examined, &authority, now, not_after))
        .map_err(|e| Failure::signing(&ca.name, e))?;
    Ok(Answer {
        serial: hex::encode(&leaf.serial),
        not_after: leaf.not_after.format(&Rfc3339).unwrap_or_default(),
        certificate: leaf.cert.pem,
        chain: vec![ca.cert_pem.clone()],
    })
}
