//! The Kubernetes PKI library of kpki. It picks the key backend a key URI names
//! ([`keystore`]); certificate catalogue and issuance build on it.

pub mod keystore;
