//! The ExternalJWTSigner RPCs, served identically in packages `v1` (kube-apiserver 1.34+) and
//! `v1alpha1` (1.32–1.33): `Sign` checks the claims and signs `header.claims` with the
//! current key off the async runtime; `FetchKeys` and `Metadata` answer from memory.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kpki_signer::{AsyncSign, KeyAlgorithm, spki};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Code, Request, Response, Status};

use crate::app::{App, Part};
use crate::audit::{self, Decision, Event, Record};
use crate::jwt::keys::JwtKeys;
use crate::jwt::proto;

/// The service behind both packages.
#[derive(Clone)]
pub struct JwtService {
    app: Arc<App>,
}

impl JwtService {
    /// The service of the daemon `app`.
    pub fn new(app: Arc<App>) -> JwtService {
        JwtService { app }
    }

    fn keys(&self) -> Result<Arc<JwtKeys>, Status> {
        self.app
            .state()
            .jwt
            .clone()
            .ok_or_else(|| Status::failed_precondition("no [jwt] section is configured"))
    }

    /// Refuses callers whose uid is not allowed (SO_PEERCRED of the socket connection).
    fn check_peer<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let state = self.app.state();
        let allowed: &[u32] = state
            .config
            .jwt
            .as_ref()
            .map(|j| j.allowed_uids.as_slice())
            .unwrap_or_default();
        if allowed.is_empty() {
            return Ok(());
        }
        let uid = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid());
        match uid {
            Some(uid) if allowed.contains(&uid) => Ok(()),
            Some(uid) => Err(Status::permission_denied(format!(
                "peer uid {uid} may not use this signer (allowed uids: {allowed:?})"
            ))),
            None => Err(Status::permission_denied(
                "the peer's credentials are unknown; refusing",
            )),
        }
    }

    /// The `Sign` RPC of package `package` (`v1`, `v1alpha1`): checks the peer and signs,
    /// counts the call in `kpki_jwt_sign_total{result}` and, with `jwt.audit`, writes a
    /// `token` record before answering (a call whose record cannot be written is refused).
    async fn sign_call<T>(
        &self,
        request: &Request<T>,
        claims: &str,
        package: &str,
    ) -> Result<(String, String), Status> {
        let mut result = match self.check_peer(request) {
            Ok(()) => self.sign_claims(claims).await,
            Err(e) => Err(e),
        };
        if self
            .app
            .state()
            .config
            .jwt
            .as_ref()
            .is_some_and(|j| j.audit)
        {
            let record = self.token_record(request, claims, package, &result);
            if let Err(e) = crate::issue::append_audit(&self.app, record) {
                tracing::error!(error = %e, "audit write failed; token withheld");
                result = Err(Status::internal(
                    "audit_failed: the audit record could not be written",
                ));
            }
        }
        let label = match &result {
            Ok(_) => "ok",
            Err(s) => code_word(s.code()),
        };
        self.app
            .metrics
            .jwt_sign
            .get_or_create(&crate::metrics::JwtSignLabels {
                result: label.into(),
            })
            .inc();
        result
    }

    /// The audit record of a `Sign` call: the peer's uid, the claims' digest and subject,
    /// the outcome and the signing key.
    fn token_record<T>(
        &self,
        request: &Request<T>,
        claims: &str,
        package: &str,
        result: &Result<(String, String), Status>,
    ) -> Record {
        let uid = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .map(|c| c.uid());
        let subject = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
            .and_then(|v| v.get("sub").and_then(|s| s.as_str()).map(str::to_string));
        let (decision, code, reason) = match result {
            Ok(_) => (Decision::Allow, None, None),
            Err(s) => (
                match s.code() {
                    Code::PermissionDenied => Decision::Deny,
                    _ => Decision::Error,
                },
                Some(code_word(s.code()).to_string()),
                Some(s.message().to_string()),
            ),
        };
        Record {
            caller: Some(audit::Caller {
                cn: uid.map_or_else(|| "uid unknown".to_string(), |u| format!("uid:{u}")),
                orgs: Vec::new(),
            }),
            endpoint: Some(format!("/{package}.ExternalJWTSigner/Sign")),
            request_sha256: Some(crate::issue::sha256_hex(claims.as_bytes())),
            subject,
            decision: Some(decision),
            code,
            reason,
            key_uri: self.keys().ok().map(|k| k.signing_uri.to_string()),
            ..Record::new(Event::Token)
        }
    }

    /// Signs `claims` (the base64url JSON payload): (base64url header, base64url signature).
    pub async fn sign_claims(&self, claims: &str) -> Result<(String, String), Status> {
        let keys = self.keys()?;
        if claims.len() > keys.max_claims_bytes {
            return Err(Status::invalid_argument(format!(
                "claims are {} bytes; the limit is {}",
                claims.len(),
                keys.max_claims_bytes
            )));
        }
        let json = URL_SAFE_NO_PAD.decode(claims).map_err(|e| {
            Status::invalid_argument(format!("claims are not unpadded base64url: {e}"))
        })?;
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json)
            .map_err(|e| Status::invalid_argument(format!("claims are not a JSON object: {e}")))?;
        if !self.app.part_ready(Part::TokenKey) {
            return Err(Status::unavailable(format!(
                "token signing key unavailable: {}",
                keys.signing_uri
            )));
        }
        let mut message = String::with_capacity(keys.header.len() + 1 + claims.len());
        message.push_str(&keys.header);
        message.push('.');
        message.push_str(claims);
        let signature = match keys.signing.sign_async(message.into_bytes()).await {
            Ok(s) => s,
            Err(e) if e.is_unavailable() => {
                self.app.set_ready(Part::TokenKey, false, &e.to_string());
                return Err(Status::unavailable(e.to_string()));
            }
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        let raw = match keys.signing.algorithm() {
            KeyAlgorithm::EcdsaP256 => spki::ecdsa_der_to_raw(&signature, 32),
            KeyAlgorithm::EcdsaP384 => spki::ecdsa_der_to_raw(&signature, 48),
            _ => Ok(signature),
        }
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok((keys.header.clone(), URL_SAFE_NO_PAD.encode(raw)))
    }
}

macro_rules! external_jwt_signer {
    ($pkg:ident) => {
        #[tonic::async_trait]
        impl proto::$pkg::external_jwt_signer_server::ExternalJwtSigner for JwtService {
            async fn sign(
                &self,
                request: Request<proto::$pkg::SignJwtRequest>,
            ) -> Result<Response<proto::$pkg::SignJwtResponse>, Status> {
                let (header, signature) = self
                    .sign_call(&request, &request.get_ref().claims, stringify!($pkg))
                    .await?;
                Ok(Response::new(proto::$pkg::SignJwtResponse {
                    header,
                    signature,
                }))
            }

            async fn fetch_keys(
                &self,
                request: Request<proto::$pkg::FetchKeysRequest>,
            ) -> Result<Response<proto::$pkg::FetchKeysResponse>, Status> {
                self.check_peer(&request)?;
                let keys = self.keys()?;
                Ok(Response::new(proto::$pkg::FetchKeysResponse {
                    keys: keys
                        .keys
                        .iter()
                        .map(|k| proto::$pkg::Key {
                            key_id: k.kid.clone(),
                            key: k.spki_der.clone(),
                            exclude_from_oidc_discovery: k.exclude_from_oidc_discovery,
                        })
                        .collect(),
                    data_timestamp: Some(prost_types::Timestamp::from(keys.data_timestamp)),
                    refresh_hint_seconds: keys.refresh_hint_seconds,
                }))
            }

            async fn metadata(
                &self,
                request: Request<proto::$pkg::MetadataRequest>,
            ) -> Result<Response<proto::$pkg::MetadataResponse>, Status> {
                self.check_peer(&request)?;
                let keys = self.keys()?;
                Ok(Response::new(proto::$pkg::MetadataResponse {
                    max_token_expiration_seconds: keys.max_token_expiration_seconds,
                }))
            }
        }
    };
}

external_jwt_signer!(v1);
external_jwt_signer!(v1alpha1);

/// A gRPC status code as a metric label and audit code: snake case.
fn code_word(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_snake_case_words() {
        let rows: [(Code, &str); 5] = [
            (Code::Ok, "ok"),
            (Code::InvalidArgument, "invalid_argument"),
            (Code::PermissionDenied, "permission_denied"),
            (Code::Unavailable, "unavailable"),
            (Code::FailedPrecondition, "failed_precondition"),
        ];
        for (code, word) in rows {
            assert_eq!(code_word(code), word);
        }
        // Every code: one word of lowercase letters and underscores.
        for i in 0..=16 {
            let w = code_word(Code::from_i32(i));
            assert!(
                w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{w}"
            );
        }
    }
}
