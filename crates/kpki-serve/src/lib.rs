//! `kpki serve`: the signing daemon. An mTLS HTTPS API (its own and cfssl's) issues
//! certificates with CA keys on their backends (PKCS#11 tokens or files) under a
//! Kubernetes-aware policy, writes a hash-chained audit trail, exports Prometheus metrics,
//! reloads on SIGHUP, drains on SIGTERM and rides out HSM outages. With `[jwt]` it also
//! signs kube-apiserver's service-account tokens (ExternalJWTSigner over a unix socket).
//!
//! Modules: [`server`] runs the daemon from a [`config`] file, building a [`state`] (TLS
//! from [`tls`], the compiled [`policy`], the CAs) held with the [`audit`] trail and
//! [`metrics`] by [`app`]; [`api`] routes requests, [`issue`] carries one issuance through,
//! [`error_code`] holds the closed list of error codes and maps every failure to its
//! answer; [`jwt`] is the token signer; [`controller`] signs the cluster's
//! CertificateSigningRequests.

pub mod api;
pub mod app;
pub mod audit;
pub mod check;
pub mod config;
pub mod controller;
pub mod error_code;
mod exposition;
#[doc(hidden)]
pub mod fuzzing;
pub mod issue;
pub mod jwt;
mod lane;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod policy;
mod process_metrics;
pub mod server;
pub mod state;
pub mod tls;
mod tls_key;

pub use server::{Parts, serve};
