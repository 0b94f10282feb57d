//! What the controller reads from a CertificateSigningRequest object: its requester (the
//! identity the policy judges), the signing request it carries, when it was approved, and
//! the reference audit lines name it by (the signing request itself is
//! `kpki_pki::csr_object::request_of`).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::audit::CsrRef;
use crate::issue::{Ask, sha256_hex};
use crate::policy::Caller;

/// The object's name and uid.
pub(crate) fn reference(object: &CertificateSigningRequest) -> CsrRef {
    CsrRef {
        name: object.name_any(),
        uid: object.uid().unwrap_or_default(),
    }
}

/// Who created the object (`spec.username`, `spec.groups`), as the API server recorded it:
/// the caller the policy judges.
pub(crate) fn requester(object: &CertificateSigningRequest) -> Caller {
    Caller {
        cn: object.spec.username.clone().unwrap_or_default(),
        orgs: object.spec.groups.clone().unwrap_or_default(),
    }
}

/// What the object asks of its signer.
pub(crate) fn ask(object: &CertificateSigningRequest) -> Ask {
    Ask {
        csr_pem: String::from_utf8_lossy(&object.spec.request.0).into_owned(),
        signer: object.spec.signer_name.clone(),
        expiration_seconds: object.spec.expiration_seconds.map(i64::from),
        usages: object.spec.usages.clone().unwrap_or_default(),
    }
}

/// SHA-256 of `spec.request` (the audit line's `request_sha256`).
pub(crate) fn request_sha256(object: &CertificateSigningRequest) -> String {
    sha256_hex(&object.spec.request.0)
}

/// When the `Approved` condition was last set, if it says.
pub(crate) fn approved_at(object: &CertificateSigningRequest) -> Option<Timestamp> {
    object
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Approved")?
        .last_update_time
        .as_ref()
        .map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestSpec,
        CertificateSigningRequestStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn jane() -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: ObjectMeta {
                name: Some("jane".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            spec: CertificateSigningRequestSpec {
                request: ByteString(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".to_vec()),
                signer_name: "kubernetes.io/kube-apiserver-client".into(),
                expiration_seconds: Some(86400),
                usages: Some(vec!["client auth".into()]),
                username: Some("kubernetes-admin".into()),
                groups: Some(vec!["kubeadm:cluster-admins".into(), "system:authenticated".into()]),
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    last_update_time: Some(Time(Timestamp::from_second(1_700_000_000).unwrap())),
                    ..Default::default()
                }]),
                certificate: None,
            }),
        }
    }

    #[test]
    fn reads_what_the_signer_and_audit_need() {
        let o = jane();
        assert_eq!(
            reference(&o),
            CsrRef {
                name: "jane".into(),
                uid: "u-1".into()
            }
        );
        let r = requester(&o);
        assert_eq!(r.cn, "kubernetes-admin");
        assert_eq!(r.orgs, ["kubeadm:cluster-admins", "system:authenticated"]);
        let a = ask(&o);
        assert_eq!(a.signer, "kubernetes.io/kube-apiserver-client");
        assert_eq!(a.expiration_seconds, Some(86400));
        assert_eq!(a.usages, ["client auth"]);
        assert!(a.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert_eq!(approved_at(&o).map(|t| t.as_second()), Some(1_700_000_000));
        assert_eq!(request_sha256(&o).len(), 64);
    }

    #[test]
    fn absent_fields_read_as_empty() {
        let mut o = jane();
        o.spec.username = None;
        o.spec.groups = None;
        o.spec.usages = None;
        o.spec.request = ByteString(b"not pem".to_vec());
        o.status = None;
        assert_eq!(requester(&o).cn, "");
        assert!(requester(&o).orgs.is_empty());
        assert!(ask(&o).usages.is_empty());
        assert!(approved_at(&o).is_none());
    }
}
