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
pub mod csr_stage;
mod duration;
pub mod expiration;
pub mod gencsr;
pub mod init;
pub mod inspect;
mod keygen;
pub mod keystore;
pub mod kubeadm_yaml;
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

pub use duration::parse_go_duration;

/// An error of a PKI operation: one line naming the file or key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Existing material is wrong or a precondition fails; nothing was changed for it.
    #[error("{0}")]
    Refused(String),
    /// A key backend failed.
    #[error(transparent)]
    Key(#[from] kpki_signer::KeyError),
    /// Configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Writing a file failed.
    #[error("{0}")]
    Io(String),
}
