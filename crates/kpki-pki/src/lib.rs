//! The Kubernetes PKI library of kpki, in two layers.
//!
//! Concepts, each fact computed in one place: [`catalogue`] (kubeadm's CAs, leaves and
//! kubeconfigs as tables, their paths, the local-etcd filter), `certfile` (one reader of
//! certificate files, one parsed view, one bundle rule), [`authority`] (the only CA loader),
//! `names` (what a requested SAN value must look like), [`kubeconfig`] (reading, rendering and the client certificate of kubeconfigs), `sans`
//! (kubeadm's SAN rules), [`signers`] (one validator per Kubernetes signerName), [`subject`]
//! (distinguished names), [`x509`] (profiles and issuance through any key backend), the
//! configuration ([`config`], `kubeadm_yaml` with its strict decoding in `strict`, Go
//! durations in `duration`), [`PkiError`] (`error`), [`store`] and `pair` (atomic writes
//! with kubeadm's modes, crash-safe key/certificate replacement), `recorded` (the key
//! locations init records beside the PKI), `yaml_guard` (a linear nesting check before
//! YAML is parsed), `keygen` (many keys at
//! once) and [`keystore`] (the key backends by URI scheme, registered by the program).
//!
//! Commands: [`init`] (plan, then write), [`renew`], [`expiration`] (`check-expiration`),
//! [`gencsr`] (`generate-csr`), [`onboard`] (user, component and node credentials),
//! [`inspect`], [`csr`] (signing a PKCS#10 request under its signer's rules),
//! [`csr_object`] (CertificateSigningRequest objects), [`csr_stage`] (where such an object
//! stands) [`ca`] (`ca create`: a CA for any purpose on any backend) and [`intermediate`] (`ca csr`,
//! `ca install`: the cluster CA as an intermediate of an external root, its chain kept as
//! [`chain`] says).

pub mod authority;
pub mod ca;
pub mod catalogue;
pub(crate) mod certfile;
pub mod chain;
pub mod config;
mod constraints;
pub mod csr;
pub mod csr_object;
pub mod csr_stage;
mod duration;
mod error;
pub mod expiration;
#[doc(hidden)]
pub mod fuzzing;
pub mod gencsr;
pub mod init;
pub mod inspect;
pub mod intermediate;
pub mod issued;
mod keygen;
pub mod keystore;
pub(crate) mod kubeadm_yaml;
pub mod kubeconfig;
mod names;
pub mod onboard;
pub(crate) mod pair;
mod recorded;
pub mod renew;
pub mod rotate;
pub(crate) mod sans;
pub mod signers;
pub mod store;
mod strict;
pub mod subject;
pub mod x509;
mod yaml_guard;

pub use duration::{DurationError, GoDuration};
pub use error::PkiError;
