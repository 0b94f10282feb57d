//! The daemon's life: load the configuration, open CAs and the audit trail, accept mTLS
//! connections (HTTP/1.1 keep-alive and HTTP/2), probe CA keys for readiness, reload on
//! SIGHUP, drain on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use kpki_pki::keystore::KeyStore;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, Conn};
use crate::app::App;
use crate::audit::{AuditLog, SyncMode};
use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::state::State;
use crate::tls;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the daemon for the configuration file `config_path` until SIGTERM or SIGINT.
pub async fn serve(config_path: PathBuf) -> Result<(), String> {
    let config = ServeConfig::load(&config_path).map_err(|e| e.to_string())?;
    let metrics = Metrics::new();
    let keys = KeyStore::with_pool_size(config.signing.pool_size.max(1));
    let state = State::build(config, &keys, &metrics)
        .map_err(|e| format!("config {}: {e}", config_path.display()))?;
    let sync = if state.config.audit.fsync {
        SyncMode::Fsync
    } else {
        SyncMode::Flush
    };
    let audit = AuditLog::open(&state.config.audit.path, sync).map_err(|e| e.to_string())?;
    let address = state.config.listen.address;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("listen.address {address}: {e}"))?;
    let ops = match state.config.listen.ops_address {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| format!("listen.ops_address {a}: {e}"))?,
        ),
        None => None,
    };
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = signals else {
        return Err("cannot install signal handlers".into());
    };
    let app = Arc::new(App::new(config_path, state, audit, metrics, keys));
    tracing::info!(%address, cas = app.state().cas.len(), "kpki serve listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(ops) = ops {
        let router = api::ops_router().with_state(Arc::clone(&app));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = axum::serve(ops, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "operations listener failed");
            }
        });
    }
    tokio::spawn(probe_loop(Arc::clone(&app), stop_rx));

    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    tokio::spawn(connection(Arc::clone(&app), tcp, remote, graceful.watcher()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match app.reload() {
                Ok(()) => tracing::info!("configuration reloaded"),
                Err(e) => tracing::error!(error = %e, "reload refused; the previous configuration stays"),
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = app.state().shutdown_grace;
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: draining connections"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    app.audit.close().map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn connection(app: Arc<App>, tcp: TcpStream, remote: SocketAddr, watcher: Watcher) {
    let state = app.state();
    let acceptor = TlsAcceptor::from(Arc::clone(&state.tls));
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let Some(caller) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(tls::caller)
    else {
        tracing::info!(%remote, "client certificate unreadable");
        return;
    };
    tracing::debug!(%remote, cn = %caller.cn, "caller connected");
    let router = api::router(Arc::clone(&app), state.config.limits.max_body_bytes)
        .layer(Extension(Conn { caller, remote }));
    drop(state);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%remote, error = %e, "connection ended");
    }
}

/// Probes every CA key each `signing.probe_interval`; readiness follows.
async fn probe_loop(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let state = app.state();
        tokio::select! {
            _ = tokio::time::sleep(state.probe_interval) => {}
            _ = stop.changed() => return,
        }
        let mut down = None;
        for ca in state.cas.values() {
            let key = Arc::clone(&ca.key);
            let probe = tokio::task::spawn_blocking(move || key.is_available());
            let ok = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, probe).await,
                Ok(Ok(true))
            );
            if !ok {
                down = Some(format!("CA {:?}: key {} unavailable", ca.name, ca.key_uri));
                break;
            }
        }
        app.set_ready(down.is_none(), down.as_deref().unwrap_or(""));
    }
}
