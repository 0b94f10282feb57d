//! One issuance, whatever the endpoint: find the CA, examine the request (proof of
//! possession, Kubernetes signer rules), apply the policy, sign off the async runtime behind
//! the key's session gate, write the audit line, and only then answer. The work runs in its
//! own task: a client that goes away mid-request cannot leave a signature unaudited.

use std::net::SocketAddr;
use std::sync::Arc;
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
/// as `Err` and is audited like any other decision. Runs to the end (audit line included)
/// even when the caller disconnects.
pub async fn issue(
    app: Arc<App>,
    ctx: Context,
    ask: Result<Ask, Failure>,
) -> Result<Answer, Failure> {
    match tokio::spawn(issue_task(app, ctx, ask)).await {
        Ok(result) => result,
        Err(e) => Err(Failure::bug("issuance task", e)),
    }
}

async fn issue_task(
    app: Arc<App>,
    ctx: Context,
    ask: Result<Ask, Failure>,
) -> Result<Answer, Failure> {
    let start = Instant::now();
    let state = app.state();
    let signer = ask.as_ref().map(|a| a.signer.clone()).unwrap_or_default();
    let ca = state.ca_for(&signer).cloned();
    let Outcome {
        examined,
        rule,
        result,
    } = match (ask, ca.clone()) {
        (Err(f), _) => Outcome::early(Err(f)),
        (Ok(ask), None) => Outcome::early(Err(Failure::new(
            ErrorCode::UnknownSigner,
            format!("no CA is configured for signer {:?}", ask.signer),
        ))),
        (Ok(ask), Some(ca)) => decide_and_sign(&app, &state, ca, &ctx.caller, ask).await,
    };
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
        signer_name: Some(signer.clone()).filter(|s| !s.is_empty()),
        subject: examined.as_ref().map(|e| e.subject.display()),
        sans: examined
            .as_ref()
            .map(Examined::san_strings)
            .unwrap_or_default(),
        decision: None,
        rule,
        code: None,
        reason: None,
        serial: None,
        not_after: None,
        key_uri: ca.as_ref().map(|c| c.key_uri.clone()),
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
    let audited = append_audit(&app, record);
    let result = match audited {
        Ok(()) => result,
        Err(e) => {
            tracing::error!(error = %e, "audit write failed; answer withheld");
            Err(Failure::audit_failed())
        }
    };
    // Metric labels carry only names the configuration knows: callers cannot grow the set.
    let label = if state.config.signers.contains_key(&signer)
        || signers::BUILT_IN.contains(&signer.as_str())
    {
        signer.as_str()
    } else {
        "other"
    };
    app.metrics
        .count(ctx.endpoint, label, result.as_ref().err().map(|f| f.code));
    if result.is_ok() {
        app.metrics
            .issuance_seconds
            .observe(start.elapsed().as_secs_f64());
    }
    result
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
    examined: Option<Examined>,
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
            examined: Some(examined),
            rule,
            result,
        }
    }
}

/// Examines and decides on the async worker (tens of microseconds of CPU), then waits for a
/// session of the CA's key and signs on a blocking thread: refused requests never hold a
/// session.
async fn decide_and_sign(
    app: &Arc<App>,
    state: &Arc<crate::state::State>,
    ca: Arc<Ca>,
    caller: &Caller,
    ask: Ask,
) -> Outcome {
    let (signer, request) = match sign_request(state, ask) {
        Ok(r) => r,
        Err(f) => return Outcome::early(Err(f)),
    };
    let examined = match csr::examine_for(&signer, &request) {
        Ok(e) => e,
        Err(e) => return Outcome::early(Err(e.into())),
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
            return Outcome::examined(examined, rule, Err(d.into()));
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
        return Outcome::examined(examined, rule, Err(f));
    }
    let permit = match session(&ca, state.request_timeout).await {
        Ok(p) => p,
        Err(f) => return Outcome::examined(examined, rule, Err(f)),
    };
    let max_validity = ca.max_validity.min(grant.max_validity);
    // The session goes with the call: the blocking task gives it back when the token returns,
    // so a token that stops answering never gets more calls than sessions, even once the
    // requests waiting for it have been answered.
    let gated = permit.map(tokio::sync::SemaphorePermit::forget).is_some();
    let examined = Arc::new(examined);
    let wait = state.request_timeout;
    let mut job = tokio::task::spawn_blocking({
        let (ca, examined) = (Arc::clone(&ca), Arc::clone(&examined));
        move || {
            let started = Instant::now();
            let result = sign(&ca, &request, &examined, max_validity);
            if gated && let Some(gate) = ca.key.concurrency_gate() {
                gate.add_permits(1);
            }
            if started.elapsed() > wait {
                tracing::warn!(
                    ca = %ca.name,
                    took = ?started.elapsed(),
                    ok = result.is_ok(),
                    "a token call returned after its request was answered; nothing was delivered"
                );
            }
            result
        }
    });
    let joined = match tokio::time::timeout(wait, &mut job).await {
        Ok(joined) => joined,
        Err(_) => {
            let f = Failure::new(
                ErrorCode::HsmUnavailable,
                format!(
                    "CA \"{}\": the token did not answer within {wait:?}; no certificate was delivered",
                    ca.name
                ),
            );
            app.set_ready(Part::CaKeys, false, &f.message);
            return Outcome::examined(Examined::clone(&examined), rule, Err(f));
        }
    };
    let result = match joined {
        Ok(r) => r,
        Err(e) => return Outcome::early(Err(Failure::bug("signing task", e))),
    };
    if let Err(f) = &result
        && f.code == ErrorCode::HsmUnavailable
    {
        app.set_ready(Part::CaKeys, false, &f.message);
    }
    let examined = Arc::try_unwrap(examined).unwrap_or_else(|shared| Examined::clone(&shared));
    Outcome::examined(examined, rule, result)
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

/// Waits for a session of the CA's key without holding a blocking thread; gives up after
/// `timeout` rather than queueing without bound.
async fn session(
    ca: &Ca,
    timeout: Duration,
) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, Failure> {
    let Some(gate) = ca.key.concurrency_gate() else {
        return Ok(None);
    };
    match tokio::time::timeout(timeout, gate.acquire()).await {
        Ok(Ok(p)) => Ok(Some(p)),
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
        ca_der: &ca.cert_der,
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
