//! What a configuration file turns into: the TLS server config, the compiled policy and the
//! CAs with their keys opened. Built whole, then swapped in, so a reload is all or nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kpki_pki::keystore::KeyStore;
use kpki_pki::x509::CaSigner;
use kpki_signer::Signer;

use crate::config::{self, ConfigError, ServeConfig};
use crate::jwt::keys::JwtKeys;
use crate::lane::Lane;
use crate::metrics::{MeteredSigner, Metrics};
use crate::policy::Policy;
use crate::tls;

/// One CA ready to sign.
pub struct Ca {
    /// Its name in `[cas]`.
    pub name: String,
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// The issuer (key behind a metering wrapper).
    pub signer: CaSigner,
    /// The key, for readiness probes.
    pub key: Arc<dyn Signer>,
    /// The key URI as printed (never a PIN value).
    pub key_uri: String,
    /// Longest validity it grants.
    pub max_validity: Duration,
    /// The threads that make its token calls (a key with sessions; a software key signs
    /// where the request is).
    pub(crate) lane: Option<Lane>,
}

/// Everything a request needs, from one configuration.
pub struct State {
    /// The configuration it was built from.
    pub config: ServeConfig,
    /// rustls server configuration (with the HTTPS listener).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The listener's key when a key backend holds it (`listen.key = "pkcs11:…"`): its
    /// printed URI and the key, probed for readiness.
    pub tls_key: Option<(String, Arc<dyn Signer>)>,
    /// Compiled policy.
    pub policy: Policy,
    /// CAs by name.
    pub cas: BTreeMap<String, Arc<Ca>>,
    /// The token signer's keys (with `[jwt]`).
    pub jwt: Option<Arc<JwtKeys>>,
    /// Request timeout.
    pub request_timeout: Duration,
    /// SIGTERM grace period.
    pub shutdown_grace: Duration,
    /// Readiness probe period.
    pub probe_interval: Duration,
}

impl State {
    /// Builds the state for `config`: reads certificates, opens keys, compiles rules.
    pub fn build(
        config: ServeConfig,
        keys: &KeyStore,
        metrics: &Arc<Metrics>,
    ) -> Result<State, ConfigError> {
        let policy = Policy::compile(&config.policy)?;
        let server_tls = config
            .listen
            .as_ref()
            .map(|l| tls::server_config(l, keys))
            .transpose()?;
        let tls_key = server_tls.as_ref().and_then(|t| {
            let key = t.key.as_ref()?;
            Some((key.uri().to_string(), Arc::clone(key)))
        });
        let tls = server_tls.map(|t| t.config);
        let mut cas = BTreeMap::new();
        for (name, c) in &config.cas {
            let lane_threads = config.signing.pool_size;
            cas.insert(
                name.clone(),
                Arc::new(open_ca(name, c, keys, metrics, lane_threads)?),
            );
        }
        for (signer, s) in &config.signers {
            if !cas.contains_key(&s.ca) {
                return Err(ConfigError(format!(
                    "signer {signer:?}: unknown CA {:?} (not in [cas])",
                    s.ca
                )));
            }
        }
        if config.listen.is_some() && config.ca_for(&config.cfssl.default_profile).is_none() {
            return Err(ConfigError(format!(
                "cfssl.default_profile {:?} has no CA",
                config.cfssl.default_profile
            )));
        }
        Ok(State {
            request_timeout: config.limits.request_timeout.get(),
            shutdown_grace: config.limits.shutdown_grace.get(),
            probe_interval: config.signing.probe_interval.get(),
            jwt: config
                .jwt
                .as_ref()
                .map(|j| JwtKeys::build(j, keys).map(Arc::new))
                .transpose()?,
            config,
            tls,
            tls_key,
            policy,
            cas,
        })
    }

    /// The CA that signs for `signer`.
    pub fn ca_for(&self, signer: &str) -> Option<&Arc<Ca>> {
        self.config.ca_for(signer).and_then(|n| self.cas.get(n))
    }
}

fn open_ca(
    name: &str,
    c: &config::CaConfig,
    keys: &KeyStore,
    metrics: &Arc<Metrics>,
    lane_threads: usize,
) -> Result<Ca, ConfigError> {
    let what = format!("CA {name:?}");
    let uri = &c.key;
    let key = keys
        .open(uri)
        .map_err(|e| ConfigError(format!("{what}: {e}")))?;
    let key = MeteredSigner::wrap(key, name, metrics);
    let (cert_der, signer) = kpki_pki::authority::load(&c.cert, Arc::clone(&key))
        .map_err(|e| ConfigError(format!("{what}: {e}")))?;
    let cert_pem = kpki_pki::x509::to_pem("CERTIFICATE", &cert_der);
    let lane = key
        .concurrency_gate()
        .map(|_| Lane::new(name, lane_threads))
        .transpose()
        .map_err(|e| ConfigError(format!("{what}: cannot start its signing threads: {e}")))?;
    Ok(Ca {
        name: name.into(),
        cert_pem,
        cert_der,
        signer,
        key_uri: uri.to_string(),
        key,
        max_validity: c.max_validity.get(),
        lane,
    })
}
