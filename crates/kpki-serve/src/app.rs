//! The running daemon's shared parts: the current state (swapped on reload), the audit
//! trail, metrics and readiness.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use kpki_pki::keystore::KeyStore;

use crate::audit::AuditLog;
use crate::config::{ConfigError, ServeConfig};
use crate::metrics::Metrics;
use crate::state::State;

/// Shared by every connection and request.
pub struct App {
    state: RwLock<Arc<State>>,
    /// The audit trail.
    pub audit: AuditLog,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    not_ready_reason: Mutex<String>,
    keys: KeyStore,
    config_path: PathBuf,
}

impl App {
    /// The daemon for the configuration at `config_path`, already built into `state`.
    pub fn new(
        config_path: PathBuf,
        state: State,
        audit: AuditLog,
        metrics: Arc<Metrics>,
        keys: KeyStore,
    ) -> App {
        metrics.ready.set(1);
        App {
            state: RwLock::new(Arc::new(state)),
            audit,
            metrics,
            ready: AtomicBool::new(true),
            not_ready_reason: Mutex::new(String::new()),
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
        let old = self.state();
        if config.audit.path != old.config.audit.path
            || config.listen.address != old.config.listen.address
        {
            return Err(ConfigError(format!(
                "config {}: audit.path and listen.address need a restart",
                self.config_path.display()
            )));
        }
        let new = State::build(config, &self.keys, &self.metrics)
            .map_err(|e| ConfigError(format!("config {}: {e}", self.config_path.display())))?;
        match self.state.write() {
            Ok(mut s) => *s = Arc::new(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
        }
        Ok(())
    }

    /// True when every CA key answered its last probe.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Why the daemon is not ready (empty when it is).
    pub fn not_ready_reason(&self) -> String {
        self.not_ready_reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Records readiness; logs transitions.
    pub fn set_ready(&self, ready: bool, reason: &str) {
        if let Ok(mut r) = self.not_ready_reason.lock() {
            *r = if ready {
                String::new()
            } else {
                reason.to_string()
            };
        }
        let was = self.ready.swap(ready, Ordering::AcqRel);
        self.metrics.ready.set(i64::from(ready));
        if was != ready {
            if ready {
                tracing::info!("ready: every CA key is usable");
            } else {
                tracing::warn!(reason, "not ready");
            }
        }
    }
}
