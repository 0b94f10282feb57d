//! The Kubernetes PKI library of kpki: configuration ([`config`], [`kubeadm_yaml`]), the kubeadm
//! catalogue as data ([`catalogue`]), SAN rules ([`sans`]), one validator per Kubernetes signerName
//! ([`signers`]) and signing requests under it ([`csr`]), certificate profiles and issuance through
//! any key backend ([`x509`]), kubeconfigs ([`kubeconfig`]), atomic storage ([`store`]), key
//! backend selection ([`keystore`]) and `kpki init` ([`init`]).

pub mod authority;
pub mod catalogue;
pub mod certfile;
pub mod config;
pub mod csr;
pub mod csr_object;
mod duration;
mod error;
pub mod expiration;
pub mod gencsr;
pub mod init;
pub mod inspect;
mod keygen;
pub mod keystore;
pub(crate) mod kubeadm_yaml;
pub mod kubeconfig;
pub mod onboard;
pub mod pair;
pub mod renew;
pub mod sans;
pub mod signers;
pub mod store;
mod strict;
pub mod subject;
pub mod x509;

pub use duration::{DurationError, GoDuration};
pub use error::PkiError;
