//! The `certificates.k8s.io/v1` CertificateSigningRequest object (k8s-openapi types): read
//! one in YAML or JSON, and hand it back approved with `status.certificate` set.

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestStatus,
};

use crate::PkiError;
use crate::csr::SignRequest;
use crate::csr_stage::{Stage, condition, stage};

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
    let refusal = |what: &str, reason: Option<String>| {
        let reason = reason.map(|r| format!(" (reason {r})")).unwrap_or_default();
        Err(refused(format!(
            "CertificateSigningRequest {name:?} was {what}{reason}; it is not signed"
        )))
    };
    match stage(object) {
        Stage::Denied(reason) => return refusal("denied", reason),
        Stage::Failed(reason) => return refusal("failed", reason),
        Stage::Issued => {
            return Err(refused(format!(
                "CertificateSigningRequest {name:?} already has status.certificate; it is not signed again"
            )));
        }
        Stage::Approved | Stage::AwaitingApproval => {}
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
    let status = object
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if !conditions.iter().any(|c| c.type_ == "Approved") {
        conditions.push(condition(
            "Approved",
            "KpkiApprove",
            "approved and signed by kpki".into(),
        ));
    }
    status.certificate = Some(ByteString(certificate_pem.as_bytes().to_vec()));
    Ok(())
}
