//! Where a `certificates.k8s.io/v1` CertificateSigningRequest stands, read from its
//! conditions and certificate the way kube-controller-manager's signer and approver read
//! them: a `Denied` condition (any status) ends it, a `Failed` one (status `True`, or empty as
//! older objects carry) ends it, a certificate means it was issued, an `Approved` condition
//! means a signer may sign.

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The stage of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Denied by an approver (its reason, if any): never signed.
    Denied(Option<String>),
    /// Marked failed by a signer (its reason, if any): never signed.
    Failed(Option<String>),
    /// `status.certificate` is set (immutable from then on).
    Issued,
    /// Approved and not yet signed: a signer's work.
    Approved,
    /// Neither approved nor denied: an approver's (or a human's) work.
    AwaitingApproval,
}

/// The stage of `object`.
pub fn stage(object: &CertificateSigningRequest) -> Stage {
    let Some(status) = &object.status else {
        return Stage::AwaitingApproval;
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let is_true = |s: &str| s.is_empty() || s == "True";
    if let Some(c) = conditions.iter().find(|c| c.type_ == "Denied") {
        return Stage::Denied(c.reason.clone());
    }
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "Failed" && is_true(&c.status))
    {
        return Stage::Failed(c.reason.clone());
    }
    if status.certificate.as_ref().is_some_and(|c| !c.0.is_empty()) {
        return Stage::Issued;
    }
    if conditions
        .iter()
        .any(|c| c.type_ == "Approved" && is_true(&c.status))
    {
        return Stage::Approved;
    }
    Stage::AwaitingApproval
}

/// A condition of type `kind` (`Approved`, `Failed`), status `True`, set now (whole seconds,
/// as the API server records times).
pub fn condition(kind: &str, reason: &str, message: String) -> CertificateSigningRequestCondition {
    let secs = time::OffsetDateTime::now_utc().unix_timestamp();
    let now = Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH));
    CertificateSigningRequestCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };

    use super::*;

    fn object(conditions: &[(&str, &str)], certificate: &str) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| CertificateSigningRequestCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            reason: Some(format!("{t}Reason")),
                            ..Default::default()
                        })
                        .collect(),
                ),
                certificate: Some(ByteString(certificate.as_bytes().to_vec())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn stages_follow_the_upstream_reading_of_conditions() {
        let denied = Stage::Denied(Some("DeniedReason".into()));
        let failed = Stage::Failed(Some("FailedReason".into()));
        type Conditions<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Conditions, &str, Stage)] = &[
            (&[], "", Stage::AwaitingApproval),
            (&[("Approved", "True")], "", Stage::Approved),
            (&[("Approved", "")], "", Stage::Approved),
            (&[("Approved", "False")], "", Stage::AwaitingApproval),
            (&[("Approved", "True")], "PEM", Stage::Issued),
            (&[("Denied", "True")], "", denied.clone()),
            (&[("Denied", "False")], "", denied.clone()),
            (
                &[("Approved", "True"), ("Denied", "True")],
                "",
                denied.clone(),
            ),
            (
                &[("Approved", "True"), ("Failed", "True")],
                "",
                failed.clone(),
            ),
            (&[("Approved", "True"), ("Failed", "")], "", failed.clone()),
            (
                &[("Approved", "True"), ("Failed", "False")],
                "",
                Stage::Approved,
            ),
            (&[("Failed", "True")], "PEM", failed),
            (&[("Denied", "True")], "PEM", denied),
            (&[("SomethingElse", "True")], "", Stage::AwaitingApproval),
        ];
        for (conditions, cert, want) in cases {
            assert_eq!(
                &stage(&object(conditions, cert)),
                want,
                "{conditions:?} {cert:?}"
            );
        }
        assert_eq!(
            stage(&CertificateSigningRequest::default()),
            Stage::AwaitingApproval
        );
    }
}
