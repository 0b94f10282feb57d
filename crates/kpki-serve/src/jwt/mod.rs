//! Service-account token signing for kube-apiserver (`--service-account-signing-endpoint`,
//! KEP-740): the ExternalJWTSigner gRPC service on a unix socket, keys on any backend.

pub(crate) mod authority;
pub mod keys;
pub mod service;
pub mod socket;

/// Code generated from the published service definition (`proto/`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// Package `v1` (kube-apiserver 1.34+).
    pub mod v1 {
        tonic::include_proto!("v1");
    }
    /// Package `v1alpha1` (kube-apiserver 1.32–1.33).
    pub mod v1alpha1 {
        tonic::include_proto!("v1alpha1");
    }
}
