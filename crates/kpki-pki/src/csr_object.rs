//! The `certificates.k8s.io/v1` CertificateSigningRequest object (k8s-openapi types): read
//! one in YAML or JSON, and hand it back approved with `status.certificate` set.

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::PkiError;
use crate::csr::SignRequest;

/// What `kpki sign` was given.
pub enum Input {
    /// A PEM PKCS#10 request (DER inside).
    Pem(Vec<u8>),
    /// A CertificateSigningRequest object.
    Object(Box<CertificateSigningRequest>),
}

fn refused(msg: impl Into<String>) -> PkiError {
    PkiError::Refused(msg.into())
}

fn malformed(msg: impl Into<String>) -> PkiError {
    PkiError::Malformed(msg.into())
}

fn pem_request(bytes: &[u8]) -> Result<Vec<u8>, PkiError> {
    let block =
        pem::parse(bytes).map_err(|e| malformed(format!("not a PEM certificate request ({e})")))?;
    match block.tag() {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => Ok(block.into_contents()),
        other => Err(malformed(format!(
            "PEM block is {other:?}, not CERTIFICATE REQUEST"
        ))),
    }
}

/// Reads a PEM request or a CertificateSigningRequest object (YAML or JSON).
pub fn read(bytes: &[u8]) -> Result<Input, PkiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| malformed("input is neither PEM nor a YAML/JSON object (binary data)"))?;
    if text.trim_start().starts_with("-----BEGIN") {
        return pem_request(bytes).map(Input::Pem);
    }
    crate::yaml_guard::check(text)
        .map_err(|e| malformed(format!("not a CertificateSigningRequest object: {e}")))?;
    let object: CertificateSigningRequest = serde_norway::from_str(text)
        .map_err(|e| malformed(format!("not a CertificateSigningRequest object: {e}")))?;
    if object.metadata.name.is_none() && object.metadata.generate_name.is_none() {
        return Err(malformed("CertificateSigningRequest has no metadata.name"));
    }
    Ok(Input::Object(Box::new(object)))
}

/// Refuses an object the Kubernetes signers would not sign, or that the API server would not
/// hold: `Denied` (any status) or `Failed` (status `True` or empty) as kube-controller-manager's
/// signer skips them; a certificate already issued (`status.certificate` is immutable); and
/// `spec.usages` that the API server's validation rejects (empty, unknown, duplicated).
pub(crate) fn check_signable(object: &CertificateSigningRequest) -> Result<(), PkiError> {
    let name = object
        .metadata
        .name
        .as_deref()
        .or(object.metadata.generate_name.as_deref())
        .unwrap_or_default();
    if let Some(status) = &object.status {
        for c in status.conditions.iter().flatten() {
            let is_true = c.status.is_empty() || c.status == "True";
            let what = match c.type_.as_str() {
                "Denied" => Some("denied"),
                "Failed" if is_true => Some("failed"),
                _ => None,
            };
            if let Some(what) = what {
                let reason = c
                    .reason
                    .as_deref()
                    .map(|r| format!(" (reason {r})"))
                    .unwrap_or_default();
                return Err(refused(format!(
                    "CertificateSigningRequest {name:?} was {what}{reason}; it is not signed"
                )));
            }
        }
        if status.certificate.as_ref().is_some_and(|c| !c.0.is_empty()) {
            return Err(refused(format!(
                "CertificateSigningRequest {name:?} already has status.certificate; it is not signed again"
            )));
        }
    }
    crate::signers::check_spec_usages(object.spec.usages.as_deref().unwrap_or_default()).map_err(
        |e| {
            crate::csr::CsrError::new(
                e.refusal,
                format!("CertificateSigningRequest {name:?}: {e}"),
            )
            .into()
        },
    )
}

/// The signing request an object asks for (`--signer-name` may override the object's);
/// refuses what `check_signable` refuses.
pub fn request_of(
    object: &CertificateSigningRequest,
    signer_override: Option<&str>,
) -> Result<SignRequest, PkiError> {
    check_signable(object)?;
    let csr_der = pem_request(&object.spec.request.0)?;
    Ok(SignRequest {
        csr_der,
        signer_name: signer_override
            .map(str::to_string)
            .unwrap_or_else(|| object.spec.signer_name.clone()),
        usages: object.spec.usages.clone().unwrap_or_default(),
        expiration_seconds: object.spec.expiration_seconds.map(i64::from),
        allow_system_masters: false,
    })
}

/// Marks the object approved and stores the issued certificate PEM in `status.certificate`.
pub fn approve(
    object: &mut CertificateSigningRequest,
    certificate_pem: &str,
) -> Result<(), PkiError> {
    let secs = time::OffsetDateTime::now_utc().unix_timestamp();
    let now = k8s_openapi::jiff::Timestamp::from_second(secs)
        .map_err(|e| PkiError::internal(format!("clock: {e}")))?;
    let status = object
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if !conditions.iter().any(|c| c.type_ == "Approved") {
        conditions.push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("KpkiApprove".into()),
            message: Some("approved and signed by kpki".into()),
            last_update_time: Some(Time(now)),
            last_transition_time: Some(Time(now)),
        });
    }
    status.certificate = Some(ByteString(certificate_pem.as_bytes().to_vec()));
    Ok(())
}
