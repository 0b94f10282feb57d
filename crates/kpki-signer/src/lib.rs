//! Core types of kpki, shared by every key backend and by the PKI library:
//! [`KeyAlgorithm`] (kubeadm's names), [`KeyUri`] (`file:` and RFC 7512 `pkcs11:`),
//! the [`Signer`] and [`KeyBackend`] traits, SubjectPublicKeyInfo helpers and the
//! adapter that lets rcgen sign certificates with any [`Signer`].
//!
//! This crate knows nothing about files, tokens or Kubernetes.
//!
//! Modules: `algorithm` ([`KeyAlgorithm`]), `error` ([`KeyError`]), `material`
//! ([`KeyMaterial`], a key to import), `rcgen_adapter` ([`RcgenSigner`]), [`spki`]
//! (SubjectPublicKeyInfo reading and digests), `traits` ([`Signer`], [`KeyBackend`],
//! [`KeyInfo`]) and `uri` ([`KeyUri`], [`Pkcs11Uri`], [`PinSource`]).

mod algorithm;
mod error;
mod material;
mod rcgen_adapter;
pub mod spki;
mod traits;
mod uri;

pub use algorithm::KeyAlgorithm;
pub use error::{KeyError, Result};
pub use material::KeyMaterial;
pub use rcgen_adapter::RcgenSigner;
pub use traits::{AsyncSign, KeyBackend, KeyInfo, KeyProtection, Signer};
pub use uri::{KeyUri, PinSource, Pkcs11Uri};
