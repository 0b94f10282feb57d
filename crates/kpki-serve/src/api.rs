//! The HTTP API: `POST /v1/sign`, `GET /v1/ca`, cfssl's `POST /api/v1/cfssl/sign` and
//! `/info`, and `/healthz`, `/readyz`, `/metrics`. JSON in and out; errors carry a stable
//! code ([`crate::error_code`] maps every failure to its answer). A caller that spent its
//! budget of denied requests is refused `rate_limited` before its request is examined
//! ([`crate::limits::DeniedLimiter`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::App;
use crate::audit::{self, Decision, Event, Record};
use crate::error_code::{self, Endpoint, ErrorCode, Failure, Fault};
use crate::issue::{self, Answer, Ask, Context};
use crate::limits::Verdict;
use crate::policy::Caller;

/// The connection a request arrived on: the verified caller and its address.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Identity from the client certificate.
    pub caller: Caller,
    /// Remote address.
    pub remote: SocketAddr,
}

/// `POST /v1/sign` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    csr: String,
    signer_name: Option<String>,
    profile: Option<String>,
    expiration_seconds: Option<i64>,
    #[serde(default)]
    usages: Vec<String>,
}

/// `POST /v1/sign` answer.
#[derive(Debug, Serialize)]
struct SignReply {
    certificate: String,
    chain: Vec<String>,
    serial: String,
    not_after: String,
}

/// `POST /api/v1/cfssl/sign` body (fields cfssl sends and kpki does not use are ignored).
#[derive(Debug, Deserialize)]
struct CfsslSignBody {
    certificate_request: String,
    #[serde(default)]
    hosts: Option<Vec<String>>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    subject: Option<serde_json::Value>,
    #[serde(default)]
    profile: Option<String>,
}

/// `POST /api/v1/cfssl/info` body.
#[derive(Debug, Default, Deserialize)]
struct CfsslInfoBody {
    #[serde(default)]
    profile: Option<String>,
}

/// The mTLS API and the operations endpoints.
pub fn router(app: Arc<App>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/sign", post(v1_sign))
        .route("/v1/ca", get(v1_ca))
        .route("/api/v1/cfssl/sign", post(cfssl_sign))
        .route("/api/v1/cfssl/info", post(cfssl_info))
        .merge(ops_router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

/// `/healthz`, `/readyz`, `/metrics` alone (the plain-HTTP operations listener); any other
/// path or method is answered with a JSON error body.
pub fn ops_router() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// 404 `not_found` with an error body.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let f = Failure::new(
        ErrorCode::NotFound,
        format!("no endpoint at {} {}", method, uri.path()),
    );
    let (status, body) = error_code::reply_unrouted(uri.path(), &f);
    (status, Json(body)).into_response()
}

/// 405 `method_not_allowed` with an error body (axum adds `Allow`).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let f = Failure::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not take {method}", uri.path()),
    );
    let (status, body) = error_code::reply_unrouted(uri.path(), &f);
    (status, Json(body)).into_response()
}

/// `endpoint`'s answer to `f`; a bug is also logged, since no caller can act on it.
fn error_response(endpoint: Endpoint, f: &Failure) -> Response {
    if f.code.fault() == Fault::Bug {
        tracing::error!(endpoint = endpoint.path(), code = %f.code, message = %f.message, "internal error");
    }
    let (status, body) = error_code::reply(endpoint, f);
    (status, Json(body)).into_response()
}

fn body_failure(r: &BytesRejection) -> Failure {
    Failure::unreadable_body(r.status() == StatusCode::PAYLOAD_TOO_LARGE, r)
}

/// The `rate_limited` refusal when `conn`'s caller has spent its budget of denied
/// requests: counted, and audited on the first refusal of each spell only.
fn rate_limited(app: &App, conn: &Conn, endpoint: Endpoint, body_sha256: &str) -> Option<Failure> {
    let (burst, rate) = app
        .state()
        .config
        .audit
        .as_ref()
        .map_or((0, 0.0), |a| (a.denied_burst, a.denied_per_second));
    let Verdict::Refuse { first, retry } =
        app.denied.check(&conn.caller, burst, rate, Instant::now())
    else {
        return None;
    };
    let failure = Failure::new(
        ErrorCode::RateLimited,
        format!(
            "too many denied requests from this caller (audit.denied_burst {burst}, audit.denied_per_second {rate}); retry in {} s",
            retry.as_secs().max(1)
        ),
    );
    app.metrics
        .count(endpoint.path(), "", Some(ErrorCode::RateLimited));
    if first && app.audit.is_some() {
        let record = Record {
            caller: Some(audit::Caller {
                cn: conn.caller.cn.clone(),
                orgs: conn.caller.orgs.clone(),
            }),
            remote: Some(conn.remote.to_string()),
            endpoint: Some(endpoint.path().to_string()),
            request_sha256: Some(body_sha256.to_string()),
            decision: Some(Decision::Deny),
            code: Some(ErrorCode::RateLimited.to_string()),
            reason: Some(format!(
                "{}; the caller's further refusals until then are not audited (counted in kpki_requests_total)",
                failure.message
            )),
            ..Record::new(Event::Decision)
        };
        if let Err(e) = crate::issue::append_audit(app, record) {
            tracing::error!(error = %e, "audit write failed");
            return Some(Failure::audit_failed());
        }
    }
    Some(failure)
}

/// Spends one of the caller's denied requests when `result` is a refusal it caused.
fn note_denied<T>(app: &App, caller: &Caller, result: &Result<T, Failure>) {
    if let Err(f) = result
        && f.code.decision() == Decision::Deny
        && let Some(a) = app.state().config.audit.as_ref()
    {
        app.denied
            .denied(caller, a.denied_burst, a.denied_per_second, Instant::now());
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| Failure::bad_json(&e))
}

/// What a `POST /v1/sign` body asks for.
pub(crate) fn sign_ask(body: &[u8]) -> Result<Ask, Failure> {
    let b = parse::<SignBody>(body)?;
    let signer = b.signer_name.or(b.profile).ok_or_else(|| {
        Failure::new(
            ErrorCode::BadRequest,
            "signer_name (or profile) is required",
        )
    })?;
    Ok(Ask {
        csr_pem: b.csr,
        signer,
        expiration_seconds: b.expiration_seconds,
        usages: b.usages,
    })
}

/// What a cfssl `POST /api/v1/cfssl/sign` body asks for; no profile means `default_profile`.
pub(crate) fn cfssl_ask(body: &[u8], default_profile: String) -> Result<Ask, Failure> {
    let b = parse::<CfsslSignBody>(body)?;
    let hosts = b.hosts.unwrap_or_default();
    if !hosts.is_empty() || b.hostname.is_some_and(|h| !h.is_empty()) {
        return Err(Failure::new(
            ErrorCode::HostsNotSupported,
            "hosts overrides are not supported; put the SANs in the CSR",
        ));
    }
    if b.subject.as_ref().is_some_and(|s| !s.is_null()) {
        return Err(Failure::new(
            ErrorCode::SubjectNotSupported,
            "subject overrides are not supported; the subject comes from the CSR",
        ));
    }
    Ok(Ask {
        csr_pem: b.certificate_request,
        signer: b
            .profile
            .filter(|p| !p.is_empty())
            .unwrap_or(default_profile),
        expiration_seconds: None,
        usages: vec![],
    })
}

async fn v1_sign(
    State(app): State<Arc<App>>,
    Extension(conn): Extension<Conn>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body_sha256 = issue::sha256_hex(body.as_deref().unwrap_or_default());
    if let Some(f) = rate_limited(&app, &conn, Endpoint::Sign, &body_sha256) {
        return error_response(Endpoint::Sign, &f);
    }
    let ask = body
        .map_err(|r| body_failure(&r))
        .and_then(|b| sign_ask(&b));
    let ctx = Context {
        caller: conn.caller.clone(),
        remote: Some(conn.remote),
        endpoint: Endpoint::Sign.path(),
        csr: None,
        body_sha256,
    };
    let result = issue::issue(Arc::clone(&app), ctx, ask).await;
    note_denied(&app, &conn.caller, &result);
    match result {
        Ok(Answer {
            certificate,
            chain,
            serial,
            not_after,
        }) => Json(SignReply {
            certificate,
            chain,
            serial,
            not_after,
        })
        .into_response(),
        Err(f) => error_response(Endpoint::Sign, &f),
    }
}

#[derive(Debug, Deserialize)]
struct CaQuery {
    signer: Option<String>,
}

async fn v1_ca(State(app): State<Arc<App>>, Query(q): Query<CaQuery>) -> Response {
    let state = app.state();
    if let Some(signer) = q.signer {
        return match state.ca_for(&signer) {
            Some(ca) => {
                Json(json!({ "signer": signer, "certificate": ca.cert_pem })).into_response()
            }
            None => error_response(
                Endpoint::Ca,
                &Failure::new(
                    ErrorCode::UnknownSigner,
                    format!("no CA is configured for signer {signer:?}"),
                ),
            ),
        };
    }
    let mut names: Vec<String> = state.config.signers.keys().cloned().collect();
    if state.cas.contains_key("ca") {
        names.extend(
            [
                kpki_pki::csr::KUBE_APISERVER_CLIENT,
                kpki_pki::csr::KUBE_APISERVER_CLIENT_KUBELET,
                kpki_pki::csr::KUBELET_SERVING,
            ]
            .map(String::from),
        );
    }
    let signers: BTreeMap<String, String> = names
        .into_iter()
        .filter_map(|n| state.ca_for(&n).map(|ca| (n, ca.cert_pem.clone())))
        .collect();
    Json(json!({ "signers": signers })).into_response()
}

fn cfssl_reply(endpoint: Endpoint, result: Result<serde_json::Value, Failure>) -> Response {
    match result {
        Ok(v) => Json(json!({ "success": true, "result": v, "errors": [], "messages": [] }))
            .into_response(),
        Err(f) => error_response(endpoint, &f),
    }
}

async fn cfssl_sign(
    State(app): State<Arc<App>>,
    Extension(conn): Extension<Conn>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body_sha256 = issue::sha256_hex(body.as_deref().unwrap_or_default());
    if let Some(f) = rate_limited(&app, &conn, Endpoint::CfsslSign, &body_sha256) {
        return error_response(Endpoint::CfsslSign, &f);
    }
    let default_profile = app.state().config.cfssl.default_profile.clone();
    let ask = body
        .map_err(|r| body_failure(&r))
        .and_then(|b| cfssl_ask(&b, default_profile));
    let ctx = Context {
        caller: conn.caller.clone(),
        remote: Some(conn.remote),
        endpoint: Endpoint::CfsslSign.path(),
        csr: None,
        body_sha256,
    };
    let result = issue::issue(Arc::clone(&app), ctx, ask).await;
    note_denied(&app, &conn.caller, &result);
    cfssl_reply(
        Endpoint::CfsslSign,
        result.map(|a| json!({ "certificate": a.certificate })),
    )
}

async fn cfssl_info(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let state = app.state();
    let result = body
        .map_err(|r| body_failure(&r))
        .and_then(|b| {
            if b.iter().all(u8::is_ascii_whitespace) {
                Ok(CfsslInfoBody::default())
            } else {
                parse::<CfsslInfoBody>(&b)
            }
        })
        .and_then(|b| {
            let profile = b
                .profile
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| state.config.cfssl.default_profile.clone());
            let ca = state.ca_for(&profile).ok_or_else(|| {
                Failure::new(
                    ErrorCode::UnknownSigner,
                    format!("no CA is configured for profile {profile:?}"),
                )
            })?;
            let usages = state
                .config
                .signers
                .get(&profile)
                .map(|s| s.usages.clone())
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| {
                    let eku = if profile == kpki_pki::csr::KUBELET_SERVING {
                        "server auth"
                    } else {
                        "client auth"
                    };
                    vec![
                        "digital signature".into(),
                        "key encipherment".into(),
                        eku.into(),
                    ]
                });
            Ok(json!({
                "certificate": ca.cert_pem,
                "usages": usages,
                "expiry": format!("{}h", ca.max_validity.as_secs() / 3600),
            }))
        });
    cfssl_reply(Endpoint::CfsslInfo, result)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", app.not_ready_reason()),
        )
            .into_response()
    }
}

/// `/metrics`: OpenMetrics when the scraper's `Accept` asks for it, the classic text format
/// otherwise.
async fn metrics(State(app): State<Arc<App>>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = crate::exposition::wants_openmetrics(accept);
    let content_type = if openmetrics {
        crate::exposition::OPENMETRICS
    } else {
        crate::exposition::CLASSIC
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        app.metrics.render(openmetrics),
    )
        .into_response()
}
