//! The running daemon's shared parts: the current state (swapped on reload), the audit
//! trail, metrics and readiness.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use kpki_pki::keystore::KeyStore;

use crate::audit::AuditLog;
use crate::config::{ConfigError, ServeConfig};
use crate::limits::DeniedLimiter;
use crate::metrics::Metrics;
use crate::state::State;

/// Shared by every connection and request.
pub struct App {
    state: RwLock<Arc<State>>,
    /// The audit trail (with the HTTPS listener).
    pub audit: Option<AuditLog>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-caller budgets of denied requests.
    pub denied: DeniedLimiter,
    /// Per part: usable, and why not.
    ready: [AtomicBool; PARTS],
    reasons: Mutex<[String; PARTS]>,
    keys: KeyStore,
    config_path: PathBuf,
}

impl App {
    /// The daemon for the configuration at `config_path`, already built into `state`.
    pub fn new(
        config_path: PathBuf,
        state: State,
        audit: Option<AuditLog>,
        metrics: Arc<Metrics>,
        keys: KeyStore,
    ) -> App {
        metrics.ready.set(1);
        App {
            state: RwLock::new(Arc::new(state)),
            audit,
            metrics,
            denied: DeniedLimiter::default(),
            ready: std::array::from_fn(|_| AtomicBool::new(true)),
            reasons: Mutex::new(std::array::from_fn(|_| String::new())),
            keys,
            config_path,
        }
    }

    /// The current state (a snapshot; a reload does not change it under a request).
    pub fn state(&self) -> Arc<State> {
        match self.state.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the configuration file; on any error the current state stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let config = ServeConfig::load(&self.config_path)?;
        crate::limits::check_denied_rate(config.audit.as_ref())
            .map_err(|e| ConfigError(format!("config {}: {e}", self.config_path.display())))?;
        let old = self.state();
        let address = |c: &ServeConfig| c.listen.as_ref().map(|l| l.address);
        let audit = |c: &ServeConfig| {
            c.audit.as_ref().map(|a| {
                (
                    a.path.clone(),
                    a.checkpoint_key.clone(),
                    a.checkpoint_every,
                    (a.syslog, a.syslog_socket.clone(), a.syslog_facility.clone()),
                )
            })
        };
        let socket = |c: &ServeConfig| c.jwt.as_ref().map(|j| (j.socket.clone(), j.socket_uid));
        let kubernetes = |c: &ServeConfig| format!("{:?}", c.kubernetes);
        if address(&config) != address(&old.config)
            || audit(&config) != audit(&old.config)
            || socket(&config) != socket(&old.config)
            || kubernetes(&config) != kubernetes(&old.config)
        {
            return Err(ConfigError(format!(
                "config {}: listen.address, audit.path, audit.checkpoint_key, audit.checkpoint_every, audit.syslog*, jwt.socket, jwt.socket_uid and [kubernetes] need a restart",
                self.config_path.display()
            )));
        }
        let mut new = State::build(config, &self.keys, &self.metrics)
            .map_err(|e| ConfigError(format!("config {}: {e}", self.config_path.display())))?;
        // data_timestamp changes only when the token key set does.
        if let (Some(old_keys), Some(new_keys)) = (old.jwt.as_ref(), new.jwt.as_mut())
            && old_keys.same_key_set(new_keys)
            && let Some(k) = Arc::get_mut(new_keys)
        {
            k.data_timestamp = old_keys.data_timestamp;
        }
        match self.state.write() {
            Ok(mut s) => *s = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        Ok(())
    }

    /// True when the CA keys, the token signing key and a backend-held TLS key are usable
    /// and the audit volume has room (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.iter().all(|r| r.load(Ordering::Acquire))
    }

    /// True when `part` answered its last probe (its signing is attempted).
    pub fn part_ready(&self, part: Part) -> bool {
        self.ready[part as usize].load(Ordering::Acquire)
    }

    /// Why the daemon is not ready (empty when it is).
    pub fn not_ready_reason(&self) -> String {
        self.reasons
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    /// Records whether `part` is usable (`reason` says why not); logs transitions.
    pub fn set_ready(&self, part: Part, ready: bool, reason: &str) {
        if let Ok(mut r) = self.reasons.lock() {
            r[part as usize] = if ready {
                String::new()
            } else {
                reason.to_string()
            };
        }
        if self.ready[part as usize].swap(ready, Ordering::AcqRel) != ready {
            if ready {
                tracing::info!(part = part.name(), "usable again");
            } else {
                tracing::warn!(part = part.name(), reason, "unavailable");
            }
        }
        self.metrics.ready.set(i64::from(self.is_ready()));
    }
}

/// What readiness is tracked for: each gates its own kind of signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The CA keys (certificate issuance).
    CaKeys = 0,
    /// The service-account token signing key.
    TokenKey = 1,
    /// Free space on the audit log's volume (above `audit.min_free_bytes`).
    AuditDisk = 2,
    /// The mTLS listener's key when a key backend holds it (handshakes are signed there).
    TlsKey = 3,
}

/// How many parts readiness tracks.
const PARTS: usize = 4;

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::CaKeys => "CA keys",
            Part::TokenKey => "token signing key",
            Part::AuditDisk => "audit volume",
            Part::TlsKey => "TLS key",
        }
    }
}
