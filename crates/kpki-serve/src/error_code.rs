//! The daemon's error codes and the one mapping from what went wrong to what a caller sees.
//!
//! [`ErrorCode`] is the closed list of codes the APIs answer with. Each code is one row of
//! the `codes!` table below: its wire word, its HTTP status (and, where it differs, its
//! status on the lookup endpoints), its cfssl error category and who is at fault. Nothing
//! else in the daemon spells a code, a status or a cfssl number: what went wrong inside (a
//! refused CSR, a policy denial, a key failure, an unreadable body, a failed audit write, a
//! bug) becomes a [`Failure`] here, and `reply` turns a failure into the status and JSON
//! body of the endpoint that answers (kpki's `{"error": …}` or cfssl's envelope). The table
//! in `docs/serve.md` is checked against this list by a unit test.

use std::fmt;

use axum::http::StatusCode;
use kpki_pki::csr::{CsrError, Refusal, SignError};
use kpki_signer::KeyError;
use serde_json::json;

use crate::audit::Decision;
use crate::policy::Denial;

/// cfssl's error categories (the thousands of its 4-digit error codes, `errors/error.go`);
/// kpki answers the category alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CfsslCategory {
    /// `PrivateKeyError` (2000): the CA's key could not be used.
    PrivateKey,
    /// `PolicyError` (5000): the request is not allowed.
    Policy,
    /// `APIClientError` (7000): everything else.
    ApiClient,
    /// `CSRError` (9000): the CSR itself is bad.
    Csr,
}

impl CfsslCategory {
    /// The number cfssl clients see in `errors[].code`.
    pub const fn code(self) -> u32 {
        match self {
            CfsslCategory::PrivateKey => 2000,
            CfsslCategory::Policy => 5000,
            CfsslCategory::ApiClient => 7000,
            CfsslCategory::Csr => 9000,
        }
    }
}

/// Who is at fault when a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request is unreadable, malformed or not allowed (4xx; audited as `deny`).
    Caller,
    /// Something the daemon needs cannot serve now: retry later (503).
    Unavailable,
    /// An operation failed on a working daemon: the token or the audit file (500).
    Failed,
    /// An internal invariant broke: a bug in kpki, never the caller's doing (500).
    Bug,
}

/// Where a code is answered: the status of [`ErrorCode::UnknownSigner`] depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The signing endpoints: the signer is a field of the request body.
    Issue,
    /// `GET /v1/ca?signer=` and cfssl `info`: the signer is what is looked up.
    Lookup,
}

/// Every fact about one code.
struct Facts {
    wire: &'static str,
    status: StatusCode,
    lookup_status: StatusCode,
    cfssl: CfsslCategory,
    fault: Fault,
}

/// Defines [`ErrorCode`], [`ErrorCode::ALL`] and the facts of each code from one table.
macro_rules! codes {
    (@lookup $status:ident) => { StatusCode::$status };
    (@lookup $status:ident, $lookup:ident) => { StatusCode::$lookup };
    ($(
        $(#[$doc:meta])*
        $variant:ident => $wire:literal, $status:ident $(/ lookup $lookup:ident)?, $cfssl:ident, $fault:ident;
    )*) => {
        /// A stable error code of the HTTP APIs (the `code` of an error answer, the `code` of
        /// an audit line and of the `kpki_requests_total` metric).
        #[non_exhaustive]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in the order of the documentation's table.
            pub const ALL: &[ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            const fn facts(self) -> Facts {
                match self {
                    $( ErrorCode::$variant => Facts {
                        wire: $wire,
                        status: StatusCode::$status,
                        lookup_status: codes!(@lookup $status $(, $lookup)?),
                        cfssl: CfsslCategory::$cfssl,
                        fault: Fault::$fault,
                    }, )*
                }
            }
        }
    };
}

codes! {
    /// Unreadable body, invalid JSON, unknown field, no `signer_name`/`profile`.
    BadRequest => "bad_request", BAD_REQUEST, ApiClient, Caller;
    /// The body is larger than `limits.max_body_bytes`.
    RequestTooLarge => "request_too_large", PAYLOAD_TOO_LARGE, ApiClient, Caller;
    /// No endpoint at this path.
    NotFound => "not_found", NOT_FOUND, ApiClient, Caller;
    /// The endpoint does not take this method.
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED, ApiClient, Caller;
    /// A cfssl `hosts`/`hostname` override.
    HostsNotSupported => "hosts_not_supported", BAD_REQUEST, ApiClient, Caller;
    /// A cfssl `subject` override.
    SubjectNotSupported => "subject_not_supported", BAD_REQUEST, ApiClient, Caller;
    /// No CA is configured for the signer name.
    UnknownSigner => "unknown_signer", BAD_REQUEST / lookup NOT_FOUND, ApiClient, Caller;
    /// Not a PKCS#10 request in PEM, or a subject or SAN kpki cannot carry.
    MalformedCsr => "malformed_csr", BAD_REQUEST, Csr, Caller;
    /// The request's key type or size is not accepted.
    UnsupportedKey => "unsupported_key", BAD_REQUEST, Csr, Caller;
    /// The request's own signature does not verify.
    ProofOfPossession => "proof_of_possession", BAD_REQUEST, Csr, Caller;
    /// The validity asked is not allowed (below the minimum).
    Validity => "validity", BAD_REQUEST, ApiClient, Caller;
    /// A Kubernetes signer's subject or SAN rule.
    SignerRule => "signer_rule", FORBIDDEN, Policy, Caller;
    /// Usages not allowed for the signer.
    Usage => "usage", FORBIDDEN, Policy, Caller;
    /// No policy rule applies to this caller and signer.
    PolicyDenied => "policy_denied", FORBIDDEN, Policy, Caller;
    /// A `system:node:<name>` caller asked for another CN.
    NodeMismatch => "node_mismatch", FORBIDDEN, Policy, Caller;
    /// `O=system:masters` not listed by the rule.
    SystemMasters => "system_masters", FORBIDDEN, Policy, Caller;
    /// An O value not listed by the rule.
    OrgNotAllowed => "org_not_allowed", FORBIDDEN, Policy, Caller;
    /// The CN does not match the rule's pattern.
    CnNotAllowed => "cn_not_allowed", FORBIDDEN, Policy, Caller;
    /// A SAN outside the rule's lists, or any email SAN.
    SanNotAllowed => "san_not_allowed", FORBIDDEN, Policy, Caller;
    /// The key type is not in the rule's `key_types`.
    KeyNotAllowed => "key_not_allowed", FORBIDDEN, Policy, Caller;
    /// The validity asked exceeds the rule's `max_validity`.
    ValidityTooLong => "validity_too_long", FORBIDDEN, Policy, Caller;
    /// The caller spent its budget of denied requests (`audit.denied_burst`); refused
    /// unexamined until it regains one.
    RateLimited => "rate_limited", TOO_MANY_REQUESTS, ApiClient, Caller;
    /// A CA key is unreachable (known before, or found while signing).
    HsmUnavailable => "hsm_unavailable", SERVICE_UNAVAILABLE, PrivateKey, Unavailable;
    /// No token session became free within the request timeout.
    Busy => "busy", SERVICE_UNAVAILABLE, PrivateKey, Unavailable;
    /// The token's session gate is closed: the daemon is stopping.
    ShuttingDown => "shutting_down", SERVICE_UNAVAILABLE, PrivateKey, Unavailable;
    /// The CA certificate has expired.
    CaExpired => "ca_expired", SERVICE_UNAVAILABLE, PrivateKey, Unavailable;
    /// The token returned an error other than unavailability.
    SigningFailed => "signing_failed", INTERNAL_SERVER_ERROR, PrivateKey, Failed;
    /// The audit line could not be written; nothing is returned.
    AuditFailed => "audit_failed", INTERNAL_SERVER_ERROR, ApiClient, Failed;
    /// An internal invariant broke (a bug).
    Internal => "internal", INTERNAL_SERVER_ERROR, ApiClient, Bug;
}

impl ErrorCode {
    /// The wire word, e.g. `org_not_allowed`.
    pub const fn as_str(self) -> &'static str {
        self.facts().wire
    }

    /// The HTTP status answered on `route`.
    pub const fn status(self, route: Route) -> StatusCode {
        match route {
            Route::Issue => self.facts().status,
            Route::Lookup => self.facts().lookup_status,
        }
    }

    /// The cfssl category answered by the cfssl endpoints.
    pub const fn cfssl_category(self) -> CfsslCategory {
        self.facts().cfssl
    }

    /// Who is at fault.
    pub const fn fault(self) -> Fault {
        self.facts().fault
    }

    /// The audit decision (and metric outcome) of a request failing with this code: `deny`
    /// when the caller is at fault, `error` otherwise.
    pub const fn decision(self) -> Decision {
        match self.fault() {
            Fault::Caller => Decision::Deny,
            Fault::Unavailable | Fault::Failed | Fault::Bug => Decision::Error,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Refusal> for ErrorCode {
    fn from(r: Refusal) -> ErrorCode {
        match r {
            Refusal::Malformed => ErrorCode::MalformedCsr,
            Refusal::UnsupportedKey => ErrorCode::UnsupportedKey,
            Refusal::ProofOfPossession => ErrorCode::ProofOfPossession,
            Refusal::SignerRule => ErrorCode::SignerRule,
            Refusal::SystemMasters => ErrorCode::SystemMasters,
            Refusal::Usage => ErrorCode::Usage,
            Refusal::Validity => ErrorCode::Validity,
            Refusal::CaExpired => ErrorCode::CaExpired,
        }
    }
}

/// A refused or failed request: its code and one line saying what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The code.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A request body that could not be read: `too_large` when it exceeded the limit.
    pub fn unreadable_body(too_large: bool, detail: impl fmt::Display) -> Failure {
        if too_large {
            Failure::new(
                ErrorCode::RequestTooLarge,
                "the request body exceeds the size limit",
            )
        } else {
            Failure::new(
                ErrorCode::BadRequest,
                format!("unreadable request body: {detail}"),
            )
        }
    }

    /// A request body that is not the JSON the endpoint takes.
    pub fn bad_json(e: &serde_json::Error) -> Failure {
        Failure::new(ErrorCode::BadRequest, format!("invalid JSON request: {e}"))
    }

    /// CA `ca`'s key failed to sign: unavailable (the token went away) or another error.
    pub fn key(ca: &str, e: &KeyError) -> Failure {
        let code = if e.is_unavailable() {
            ErrorCode::HsmUnavailable
        } else {
            ErrorCode::SigningFailed
        };
        Failure::new(code, format!("CA {ca:?}: {e}"))
    }

    /// Issuing from CA `ca` was refused or its key failed.
    pub fn signing(ca: &str, e: SignError) -> Failure {
        match e {
            SignError::Refused(r) => r.into(),
            SignError::Key(k) => Failure::key(ca, &k),
        }
    }

    /// The audit line could not be written, so nothing is returned.
    pub fn audit_failed() -> Failure {
        Failure::new(
            ErrorCode::AuditFailed,
            "the audit trail could not be written; nothing was issued",
        )
    }

    /// A bug: `what` failed in a way that cannot be the caller's doing.
    pub fn bug(what: &str, e: impl fmt::Display) -> Failure {
        Failure::new(ErrorCode::Internal, format!("{what} failed: {e}"))
    }
}

impl From<CsrError> for Failure {
    fn from(e: CsrError) -> Failure {
        Failure::new(e.refusal.into(), e.message)
    }
}

impl From<Denial> for Failure {
    fn from(d: Denial) -> Failure {
        Failure::new(d.code, d.reason)
    }
}

/// The API an endpoint belongs to, which decides the shape of its error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/sign`.
    Sign,
    /// `GET /v1/ca`.
    Ca,
    /// `POST /api/v1/cfssl/sign`.
    CfsslSign,
    /// `POST /api/v1/cfssl/info`.
    CfsslInfo,
}

impl Endpoint {
    /// The path, as in audit lines and metric labels.
    pub(crate) const fn path(self) -> &'static str {
        match self {
            Endpoint::Sign => "/v1/sign",
            Endpoint::Ca => "/v1/ca",
            Endpoint::CfsslSign => "/api/v1/cfssl/sign",
            Endpoint::CfsslInfo => "/api/v1/cfssl/info",
        }
    }

    const fn route(self) -> Route {
        match self {
            Endpoint::Sign | Endpoint::CfsslSign => Route::Issue,
            Endpoint::Ca | Endpoint::CfsslInfo => Route::Lookup,
        }
    }

    const fn is_cfssl(self) -> bool {
        matches!(self, Endpoint::CfsslSign | Endpoint::CfsslInfo)
    }
}

/// The status and JSON body `endpoint` answers for `f`: kpki's
/// `{"error": {"code", "message"}}`, or on the cfssl endpoints cfssl's envelope with the
/// code's category and `"<code>: <message>"`.
/// The answer to a request no endpoint takes (`not_found`, `method_not_allowed`): in the
/// cfssl envelope under `/api/v1/cfssl/`, kpki's `{"error": …}` elsewhere.
pub(crate) fn reply_unrouted(path: &str, f: &Failure) -> (StatusCode, serde_json::Value) {
    if path.starts_with("/api/v1/cfssl/") {
        reply(Endpoint::CfsslInfo, f)
    } else {
        reply(Endpoint::Sign, f)
    }
}

pub(crate) fn reply(endpoint: Endpoint, f: &Failure) -> (StatusCode, serde_json::Value) {
    let status = f.code.status(endpoint.route());
    let body = if endpoint.is_cfssl() {
        json!({
            "success": false,
            "result": null,
            "errors": [{
                "code": f.code.cfssl_category().code(),
                "message": format!("{}: {}", f.code, f.message),
            }],
            "messages": [],
        })
    } else {
        json!({ "error": { "code": f.code.as_str(), "message": f.message } })
    };
    (status, body)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const ALL_REFUSALS: [Refusal; 8] = [
        Refusal::Malformed,
        Refusal::UnsupportedKey,
        Refusal::ProofOfPossession,
        Refusal::SignerRule,
        Refusal::SystemMasters,
        Refusal::Usage,
        Refusal::Validity,
        Refusal::CaExpired,
    ];

    /// The rows of the `## Error codes` table of docs/serve.md: code → (HTTP, cfssl) cells.
    fn documented() -> Vec<(String, String, String)> {
        let doc = include_str!("../../../docs/serve.md");
        let section = doc
            .split_once("\n## Error codes\n")
            .map(|(_, rest)| rest)
            .expect("docs/serve.md has an \"## Error codes\" section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut lines = section.lines().filter(|l| l.starts_with('|'));
        let header: Vec<&str> = lines
            .next()
            .expect("the error-code table has a header")
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            header,
            ["", "code", "HTTP", "cfssl", "meaning", ""],
            "error-code table header"
        );
        lines
            .skip(1) // |---|---|
            .map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                assert_eq!(cells.len(), 6, "error-code table row {row:?}");
                let code = cells[1]
                    .strip_prefix('`')
                    .and_then(|c| c.strip_suffix('`'))
                    .unwrap_or_else(|| panic!("code cell {:?} is not `code`", cells[1]));
                (code.to_string(), cells[2].to_string(), cells[3].to_string())
            })
            .collect()
    }

    /// Numbers in a cell, in order (`400 (sign), 404 (…)` → [400, 404]).
    fn numbers(cell: &str) -> Vec<u16> {
        cell.split(|c: char| !c.is_ascii_digit())
            .filter(|s| s.len() == 3 || s.len() == 4)
            .map(|s| s.parse().unwrap())
            .collect()
    }

    #[test]
    fn docs_table_matches_the_codes() {
        let rows = documented();
        let wire: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        let doc_codes: Vec<&str> = rows.iter().map(|(c, _, _)| c.as_str()).collect();
        assert_eq!(
            doc_codes, wire,
            "docs/serve.md error codes (left) vs ErrorCode::ALL (right)"
        );
        for (code, http, cfssl) in &rows {
            let c = ErrorCode::ALL
                .iter()
                .find(|c| c.as_str() == code)
                .copied()
                .unwrap();
            let issue = c.status(Route::Issue).as_u16();
            let lookup = c.status(Route::Lookup).as_u16();
            let want = if issue == lookup {
                vec![issue]
            } else {
                vec![issue, lookup]
            };
            assert_eq!(
                numbers(http),
                want,
                "HTTP status of `{code}` in docs/serve.md"
            );
            assert_eq!(
                numbers(cfssl),
                [u16::try_from(c.cfssl_category().code()).unwrap()],
                "cfssl code of `{code}` in docs/serve.md"
            );
        }
    }

    #[test]
    fn codes_are_distinct_snake_case_words() {
        let mut seen = BTreeMap::new();
        for c in ErrorCode::ALL {
            let w = c.as_str();
            assert!(
                !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{w:?}"
            );
            assert_eq!(seen.insert(w, *c), None, "{w} twice");
            assert_eq!(c.to_string(), w);
        }
        assert_eq!(seen.len(), 29);
    }

    #[test]
    fn fault_agrees_with_the_status_class() {
        for c in ErrorCode::ALL {
            for route in [Route::Issue, Route::Lookup] {
                let s = c.status(route).as_u16();
                let want = match c.fault() {
                    Fault::Caller => (400..500).contains(&s),
                    Fault::Unavailable => s == 503,
                    Fault::Failed | Fault::Bug => s == 500,
                };
                assert!(want, "{c}: {:?} with status {s}", c.fault());
            }
            let d = if c.status(Route::Issue).is_client_error() {
                Decision::Deny
            } else {
                Decision::Error
            };
            assert_eq!(c.decision(), d, "{c}");
        }
    }

    /// The cfssl number as answered before the codes were typed: CSR problems 9000, 403
    /// 5000, 503 and `signing_failed` 2000, otherwise 7000.
    fn cfssl_number_by_status_and_word(status: u16, code: &str) -> u32 {
        match (status, code) {
            (_, "malformed_csr" | "unsupported_key" | "proof_of_possession") => 9000,
            (403, _) => 5000,
            (503, _) | (_, "signing_failed") => 2000,
            _ => 7000,
        }
    }

    #[test]
    fn cfssl_categories_keep_the_documented_rule() {
        for c in ErrorCode::ALL {
            for route in [Route::Issue, Route::Lookup] {
                assert_eq!(
                    c.cfssl_category().code(),
                    cfssl_number_by_status_and_word(c.status(route).as_u16(), c.as_str()),
                    "{c} on {route:?}"
                );
            }
        }
    }

    #[test]
    fn refusals_map_to_their_codes() {
        let words = [
            "malformed_csr",
            "unsupported_key",
            "proof_of_possession",
            "signer_rule",
            "system_masters",
            "usage",
            "validity",
            "ca_expired",
        ];
        for (r, word) in ALL_REFUSALS.into_iter().zip(words) {
            assert_eq!(ErrorCode::from(r).as_str(), word, "{r:?}");
        }
    }

    fn key_error(unavailable: bool) -> KeyError {
        if unavailable {
            KeyError::Unavailable {
                token: "k8s".into(),
                problem: "CKR_DEVICE_REMOVED".into(),
            }
        } else {
            KeyError::Pkcs11 {
                operation: "C_Sign".into(),
                problem: "CKR_FUNCTION_FAILED".into(),
            }
        }
    }

    fn denial(code: ErrorCode, reason: &str) -> Failure {
        Denial {
            code,
            reason: reason.into(),
            rule: None,
        }
        .into()
    }

    fn csr(refusal: Refusal, message: &str) -> CsrError {
        CsrError {
            refusal,
            message: message.into(),
        }
    }

    /// Checks each case: a failure answered on an endpoint gives this status and this body.
    fn check(cases: Vec<(Endpoint, Failure, u16, &str)>) {
        for (endpoint, failure, status, body) in cases {
            let (got_status, got_body) = reply(endpoint, &failure);
            let want: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                (got_status.as_u16(), &got_body),
                (status, &want),
                "{endpoint:?} {failure:?}"
            );
        }
    }

    #[test]
    fn mapper_table_kpki_endpoints() {
        check(vec![
            (
                Endpoint::Sign,
                denial(
                    ErrorCode::OrgNotAllowed,
                    "rule \"onboarding\": O=\"finance\" is not allowed",
                ),
                403,
                r#"{"error":{"code":"org_not_allowed","message":"rule \"onboarding\": O=\"finance\" is not allowed"}}"#,
            ),
            (
                Endpoint::Sign,
                csr(Refusal::Malformed, "not PKCS#10").into(),
                400,
                r#"{"error":{"code":"malformed_csr","message":"not PKCS#10"}}"#,
            ),
            (
                Endpoint::Sign,
                csr(Refusal::CaExpired, "CA certificate expired").into(),
                503,
                r#"{"error":{"code":"ca_expired","message":"CA certificate expired"}}"#,
            ),
            (
                Endpoint::Sign,
                Failure::signing("ca", SignError::Key(key_error(true))),
                503,
                r#"{"error":{"code":"hsm_unavailable","message":"CA \"ca\": token \"k8s\" unavailable: CKR_DEVICE_REMOVED"}}"#,
            ),
            (
                Endpoint::Sign,
                Failure::unreadable_body(true, "length limit exceeded"),
                413,
                r#"{"error":{"code":"request_too_large","message":"the request body exceeds the size limit"}}"#,
            ),
            (
                Endpoint::Sign,
                Failure::bad_json(&serde_json::from_str::<u8>("[").unwrap_err()),
                400,
                r#"{"error":{"code":"bad_request","message":"invalid JSON request: invalid type: sequence, expected u8 at line 1 column 0"}}"#,
            ),
            (
                Endpoint::Sign,
                Failure::new(
                    ErrorCode::UnknownSigner,
                    "no CA is configured for signer \"x\"",
                ),
                400,
                r#"{"error":{"code":"unknown_signer","message":"no CA is configured for signer \"x\""}}"#,
            ),
            (
                Endpoint::Ca,
                Failure::new(
                    ErrorCode::UnknownSigner,
                    "no CA is configured for signer \"x\"",
                ),
                404,
                r#"{"error":{"code":"unknown_signer","message":"no CA is configured for signer \"x\""}}"#,
            ),
            (
                Endpoint::Sign,
                Failure::audit_failed(),
                500,
                r#"{"error":{"code":"audit_failed","message":"the audit trail could not be written; nothing was issued"}}"#,
            ),
        ]);
    }

    #[test]
    fn mapper_table_cfssl_endpoints() {
        check(vec![
            (
                Endpoint::CfsslSign,
                denial(
                    ErrorCode::OrgNotAllowed,
                    "rule \"r\": O=\"x\" is not allowed",
                ),
                403,
                r#"{"success":false,"result":null,"errors":[{"code":5000,"message":"org_not_allowed: rule \"r\": O=\"x\" is not allowed"}],"messages":[]}"#,
            ),
            (
                Endpoint::CfsslSign,
                csr(Refusal::ProofOfPossession, "bad signature").into(),
                400,
                r#"{"success":false,"result":null,"errors":[{"code":9000,"message":"proof_of_possession: bad signature"}],"messages":[]}"#,
            ),
            (
                Endpoint::CfsslSign,
                csr(Refusal::Validity, "too short").into(),
                400,
                r#"{"success":false,"result":null,"errors":[{"code":7000,"message":"validity: too short"}],"messages":[]}"#,
            ),
            (
                Endpoint::CfsslSign,
                Failure::signing(
                    "ca",
                    SignError::Refused(csr(Refusal::SignerRule, "CN must be system:node:x")),
                ),
                403,
                r#"{"success":false,"result":null,"errors":[{"code":5000,"message":"signer_rule: CN must be system:node:x"}],"messages":[]}"#,
            ),
            (
                Endpoint::CfsslSign,
                Failure::key("ca", &key_error(false)),
                500,
                r#"{"success":false,"result":null,"errors":[{"code":2000,"message":"signing_failed: CA \"ca\": PKCS#11 C_Sign failed: CKR_FUNCTION_FAILED"}],"messages":[]}"#,
            ),
            (
                Endpoint::CfsslInfo,
                Failure::unreadable_body(false, "connection reset"),
                400,
                r#"{"success":false,"result":null,"errors":[{"code":7000,"message":"bad_request: unreadable request body: connection reset"}],"messages":[]}"#,
            ),
            (
                Endpoint::CfsslInfo,
                Failure::new(
                    ErrorCode::UnknownSigner,
                    "no CA is configured for profile \"x\"",
                ),
                404,
                r#"{"success":false,"result":null,"errors":[{"code":7000,"message":"unknown_signer: no CA is configured for profile \"x\""}],"messages":[]}"#,
            ),
            (
                Endpoint::CfsslSign,
                Failure::new(ErrorCode::Busy, "no signing session became free"),
                503,
                r#"{"success":false,"result":null,"errors":[{"code":2000,"message":"busy: no signing session became free"}],"messages":[]}"#,
            ),
            (
                Endpoint::CfsslSign,
                Failure::bug("signing task", "panicked"),
                500,
                r#"{"success":false,"result":null,"errors":[{"code":7000,"message":"internal: signing task failed: panicked"}],"messages":[]}"#,
            ),
        ]);
    }

    #[test]
    fn endpoint_paths() {
        let paths = [
            Endpoint::Sign,
            Endpoint::Ca,
            Endpoint::CfsslSign,
            Endpoint::CfsslInfo,
        ]
        .map(Endpoint::path);
        assert_eq!(
            paths,
            [
                "/v1/sign",
                "/v1/ca",
                "/api/v1/cfssl/sign",
                "/api/v1/cfssl/info"
            ]
        );
    }
}
