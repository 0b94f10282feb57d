//! The daemon's life: load the configuration, open CAs and the audit trail, accept mTLS
//! connections (HTTP/1.1 keep-alive and HTTP/2) and operations connections, each listener
//! under its own connection cap and timeouts ([`crate::limits`]), probe CA keys and the
//! audit volume's free space for readiness, reload on SIGHUP, drain on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kpki_pki::keystore::KeyStore;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, Conn};
use crate::app::{App, Part};
use crate::audit::syslog::SyslogCopy;
use crate::audit::{AuditLog, Checkpointer, SyncMode};
use crate::config::ServeConfig;
use crate::controller;
use crate::jwt;
use crate::limits::{self, Activity, Bounds, Gate, Slot, Tracked, Watch};
use crate::metrics::Metrics;
use crate::state::State;
use crate::tls;

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the audit volume's free space is checked.
const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// What one `kpki serve` process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// The HTTPS API, and the token signer (`[jwt]`) and the CSR controller (`[kubernetes]`)
    /// when configured.
    All,
    /// Only the service-account token signer.
    JwtOnly,
    /// Only the CSR controller (and its `[kubernetes].ops_address` listener).
    ControllerOnly,
}

/// Runs the daemon for the configuration file `config_path` until SIGTERM or SIGINT: the
/// parts `parts` names, with keys from the backends `key_store` registers (given the
/// configured `signing.pool_size`).
pub async fn serve(
    config_path: PathBuf,
    parts: Parts,
    key_store: fn(usize) -> KeyStore,
) -> Result<(), String> {
    let config = ServeConfig::load(&config_path).map_err(|e| e.to_string())?;
    let in_config = |e: String| format!("config {}: {e}", config_path.display());
    check_parts(&config, parts).map_err(in_config)?;
    let controller_settings = match (&config.kubernetes, parts) {
        (Some(k), Parts::All | Parts::ControllerOnly) => {
            let settings = controller::Settings::from_config(k, &config)
                .map_err(|e| in_config(e.to_string()))?;
            let client = controller::connect(&settings).await?;
            Some((settings, client))
        }
        _ => None,
    };
    let bounds = connection_bounds(&config).map_err(|e| in_config(e.to_string()))?;
    let metrics = Metrics::new();
    let keys = key_store(config.signing.pool_size.max(1));
    let state = State::build(config, &keys, &metrics).map_err(|e| in_config(e.to_string()))?;
    // Listeners first: a daemon that cannot bind writes no `open` record.
    let listeners = Listeners::bind(&state.config, parts).await?;
    let audit = open_audit(&state.config, parts, &keys)?;
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = signals else {
        return Err("cannot install signal handlers".into());
    };
    let app = Arc::new(App::new(config_path, state, audit, metrics, keys));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = spawn_parts(
        &app,
        listeners.ops,
        listeners.jwt,
        controller_settings,
        &bounds,
        &stop_rx,
    );
    let listener = listeners.https;
    let gate = Gate::new("mtls", bounds.mtls, &app.metrics);
    // One router for every connection (rebuilt when a reload changes the body limit).
    let mut routes: Option<(usize, Router)> = None;
    if let Some(l) = &listener
        && let Ok(address) = l.local_addr()
    {
        tracing::info!(%address, cas = app.state().cas.len(), "kpki serve listening");
    }
    crate::notify::ready();
    loop {
        tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((tcp, remote)) => match gate.admit() {
                    Some(slot) => {
                        let max_body = app.state().config.limits.max_body_bytes;
                        let router = match &routes {
                            Some((limit, r)) if *limit == max_body => r.clone(),
                            _ => {
                                let r = api::router(Arc::clone(&app), max_body);
                                routes = Some((max_body, r.clone()));
                                r
                            }
                        };
                        tokio::spawn(connection(
                            Arc::clone(&app),
                            router,
                            tcp,
                            remote,
                            slot,
                            bounds.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    None => drop(tcp),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&app),
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    shut_down(&app, &gate, tasks).await
}

/// The connection caps and timeouts, fitted under the (raised) file descriptor limit.
fn connection_bounds(config: &ServeConfig) -> Result<Bounds, crate::config::ConfigError> {
    limits::check_denied_rate(config.audit.as_ref())?;
    let fd_limit = limits::raise_fd_limit();
    let bounds = config.connections.resolve(fd_limit)?;
    tracing::info!(
        fd_limit,
        mtls = bounds.mtls,
        ops = bounds.ops,
        socket = bounds.socket,
        "connection caps"
    );
    Ok(bounds)
}

/// Refuses a configuration that lacks what `parts` needs.
pub(crate) fn check_parts(config: &ServeConfig, parts: Parts) -> Result<(), String> {
    match parts {
        Parts::JwtOnly if config.jwt.is_none() => Err("--jwt-only needs a [jwt] section".into()),
        _ if config.jwt.as_ref().is_some_and(|j| j.audit) && config.audit.is_none() => {
            Err("jwt.audit needs an [audit] section".into())
        }
        Parts::ControllerOnly if config.kubernetes.is_none() || config.audit.is_none() => {
            Err("--controller-only needs a [kubernetes] and an [audit] section".into())
        }
        Parts::All if config.listen.is_none() || config.audit.is_none() => Err(
            "[listen] and [audit] are required (or run the token signer alone with --jwt-only, the CSR controller with --controller-only)"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// The listeners of the parts that run, bound before anything is written.
struct Listeners {
    https: Option<TcpListener>,
    ops: Option<TcpListener>,
    jwt: Option<(tokio::net::UnixListener, PathBuf)>,
}

impl Listeners {
    async fn bind(config: &ServeConfig, parts: Parts) -> Result<Listeners, String> {
        let https = match (&config.listen, parts) {
            (Some(listen), Parts::All) => Some(
                TcpListener::bind(listen.address)
                    .await
                    .map_err(|e| format!("listen.address {}: {e}", listen.address))?,
            ),
            _ => None,
        };
        let ops_address = match parts {
            Parts::All => config.listen.as_ref().and_then(|l| l.ops_address),
            Parts::ControllerOnly => config.kubernetes.as_ref().and_then(|k| k.ops_address),
            Parts::JwtOnly => None,
        };
        let ops = match ops_address {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("ops address {a}: {e}"))?,
            ),
            None => None,
        };
        let jwt = match (&config.jwt, parts) {
            (Some(j), Parts::All | Parts::JwtOnly) => {
                Some((jwt::socket::bind(j)?, j.socket.clone()))
            }
            _ => None,
        };
        Ok(Listeners { https, ops, jwt })
    }
}

/// The audit trail of the parts that write one, with its checkpoint key (opened first: a
/// key that cannot be opened writes nothing).
fn open_audit(
    config: &ServeConfig,
    parts: Parts,
    keys: &KeyStore,
) -> Result<Option<AuditLog>, String> {
    let token_audit = config.jwt.as_ref().is_some_and(|j| j.audit);
    match (&config.audit, parts) {
        (Some(audit), _) if parts != Parts::JwtOnly || token_audit => {
            let sync = if audit.fsync {
                SyncMode::Fsync
            } else {
                SyncMode::Flush
            };
            if audit.checkpoint_every == 0 {
                return Err("audit.checkpoint_every: must be at least 1".into());
            }
            let checkpoints = match &audit.checkpoint_key {
                Some(uri) => {
                    let signer = keys
                        .open(uri)
                        .map_err(|e| format!("audit.checkpoint_key {uri}: {e}"))?;
                    Some(Checkpointer::new(signer, audit.checkpoint_every))
                }
                None => None,
            };
            let copy = match audit.syslog {
                true => Some(SyslogCopy::new(
                    &audit.syslog_socket,
                    &audit.syslog_facility,
                )?),
                false => None,
            };
            if let Some(c) = &checkpoints {
                tracing::info!(key = c.key_id(), every = c.every(), "audit checkpoints");
            }
            AuditLog::open_with(&audit.path, sync, checkpoints, copy)
                .map(Some)
                .map_err(|e| e.to_string())
        }
        _ => Ok(None),
    }
}

/// Tasks that end on the stop signal and are awaited at shutdown.
struct Tasks {
    jwt: Option<tokio::task::JoinHandle<Result<(), String>>>,
    controller: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

/// Starts the ops listener, the token signer, the audit volume watch, the CSR controller and
/// the key probes.
fn spawn_parts(
    app: &Arc<App>,
    ops: Option<TcpListener>,
    jwt_socket: Option<(tokio::net::UnixListener, PathBuf)>,
    controller_settings: Option<(controller::Settings, kube::Client)>,
    bounds: &Bounds,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> Tasks {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    if let Some(ops) = ops {
        let gate = Gate::new("ops", bounds.ops, &app.metrics);
        tokio::spawn(ops_loop(
            Arc::clone(app),
            ops,
            gate,
            bounds.clone(),
            stop_rx.clone(),
        ));
    }
    let jwt = jwt_socket.map(|(listener, path)| {
        tracing::info!(socket = %path.display(), "token signer listening");
        let app = Arc::clone(app);
        let shutdown = stopped(stop_rx.clone());
        let gate = Gate::new("socket", bounds.socket, &app.metrics);
        let bounds = bounds.clone();
        tokio::spawn(async move {
            jwt::socket::serve(app, listener, &path, gate, &bounds, shutdown).await
        })
    });
    if let Some(log) = &app.audit {
        tokio::spawn(disk_watch(
            Arc::clone(app),
            log.path().to_path_buf(),
            stop_rx.clone(),
        ));
    }
    let controller = controller_settings.map(|(settings, client)| {
        tokio::spawn(controller::run(
            Arc::clone(app),
            settings,
            client,
            stop_rx.clone(),
        ))
    });
    tokio::spawn(probe_loop(Arc::clone(app), stop_rx.clone()));
    Tasks { jwt, controller }
}

/// SIGHUP: re-reads the configuration off the accept loop (opening keys may wait on a token).
fn reload(app: &Arc<App>) {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || match app.reload() {
        Ok(()) => tracing::info!("configuration reloaded"),
        Err(e) => tracing::error!(error = %e, "reload refused; the previous configuration stays"),
    });
}

/// Drains connections for the grace period, waits for the other parts, closes the audit
/// trail.
async fn shut_down(app: &Arc<App>, gate: &Gate, tasks: Tasks) -> Result<(), String> {
    let grace = app.state().shutdown_grace;
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: draining connections"
    );
    if !gate.drained(grace + limits::CLOSE_GRACE).await {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    for (task, what) in [
        (tasks.jwt, "token signer"),
        (tasks.controller, "CSR controller"),
    ] {
        let Some(task) = task else { continue };
        match tokio::time::timeout(grace, task).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "{what} failed"),
            Ok(_) => {}
            Err(_) => tracing::warn!("{what} did not stop within the grace period"),
        }
    }
    if let Some(log) = &app.audit {
        log.close().map_err(|e| e.to_string())?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The next connection of the HTTPS listener, or never without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// The hyper server settings of a listener: HTTP/1.1 header timeout and buffer, HTTP/2
/// streams, windows sized to the body limit `max_body`, and header list.
fn http_builder(bounds: &Bounds, max_body: usize) -> auto::Builder<TokioExecutor> {
    let window = u32::try_from(max_body.max(65_535)).unwrap_or(u32::MAX >> 1);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header)
        .max_buf_size(max_body.clamp(16 * 1024, 1 << 20) + 16 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(bounds.streams)
        .initial_stream_window_size(window)
        .initial_connection_window_size(window.saturating_mul(2))
        .max_header_list_size(32 * 1024)
        .max_send_buf_size(64 * 1024);
    builder
}

async fn connection(
    app: Arc<App>,
    router: Router,
    tcp: TcpStream,
    remote: SocketAddr,
    _slot: Slot,
    bounds: Bounds,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let state = app.state();
    let Some(tls) = state.tls.clone() else {
        return;
    };
    let acceptor = TlsAcceptor::from(tls);
    let stream = match tokio::time::timeout(bounds.handshake, acceptor.accept(tcp)).await {
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
        tracing::info!(%remote, "client certificate refused: unreadable subject or more than one CN");
        return;
    };
    tracing::debug!(%remote, cn = %caller.cn, "caller connected");
    let max_body = state.config.limits.max_body_bytes;
    let grace = state.shutdown_grace;
    let activity = Activity::new();
    let service = tower::ServiceBuilder::new()
        .map_request(|r: hyper::Request<hyper::body::Incoming>| r.map(axum::body::Body::new))
        .layer(Extension(Conn { caller, remote }))
        .layer(axum::middleware::from_fn_with_state(
            Tracked {
                activity: Arc::clone(&activity),
                body_timeout: bounds.body,
            },
            limits::track,
        ))
        .service(router);
    drop(state);
    let builder = http_builder(&bounds, max_body);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    let watch = Watch {
        activity: &activity,
        idle: bounds.idle,
        grace,
        remote,
        listener: "mtls",
        metrics: &app.metrics,
    };
    limits::drive(conn, watch, stop).await;
}

/// Accepts operations connections (plain HTTP: `/healthz`, `/readyz`, `/metrics`) under
/// their own cap until `stop`.
async fn ops_loop(
    app: Arc<App>,
    listener: TcpListener,
    gate: Arc<Gate>,
    bounds: Bounds,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let router = api::ops_router().with_state(Arc::clone(&app));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    if let Some(slot) = gate.admit() {
                        tokio::spawn(ops_connection(
                            Arc::clone(&app),
                            router.clone(),
                            tcp,
                            remote,
                            slot,
                            bounds.clone(),
                            stop.clone(),
                        ));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "operations accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    if !gate.drained(limits::CLOSE_GRACE * 2).await {
        tracing::debug!("operations connections closed at shutdown");
    }
}

async fn ops_connection(
    app: Arc<App>,
    router: Router,
    tcp: TcpStream,
    remote: SocketAddr,
    _slot: Slot,
    bounds: Bounds,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let activity = Activity::new();
    let service = tower::ServiceBuilder::new()
        .map_request(|r: hyper::Request<hyper::body::Incoming>| r.map(axum::body::Body::new))
        .layer(axum::middleware::from_fn_with_state(
            Tracked {
                activity: Arc::clone(&activity),
                body_timeout: bounds.body,
            },
            limits::track,
        ))
        .service(router);
    // The operations endpoints take no body: small buffers and few streams.
    let builder = http_builder(
        &Bounds {
            streams: bounds.streams.min(4),
            ..bounds.clone()
        },
        16 * 1024,
    );
    let conn = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
    let watch = Watch {
        activity: &activity,
        idle: bounds.ops_idle,
        grace: limits::CLOSE_GRACE,
        remote,
        listener: "ops",
        metrics: &app.metrics,
    };
    limits::drive(conn, watch, stop).await;
}

/// Watches the free space of the audit log's volume: readiness fails (with a log line)
/// below `audit.min_free_bytes`, and the `kpki_audit_disk_free_bytes` gauge follows.
async fn disk_watch(app: Arc<App>, path: PathBuf, mut stop: tokio::sync::watch::Receiver<bool>) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let failures = limits::RateLimitedLog::default();
    loop {
        let min = app
            .state()
            .config
            .audit
            .as_ref()
            .map_or(0, |a| a.min_free_bytes);
        match rustix::fs::statvfs(&dir) {
            Ok(st) => {
                let free = st.f_bavail.saturating_mul(st.f_frsize);
                app.metrics
                    .audit_disk_free_bytes
                    .set(i64::try_from(free).unwrap_or(i64::MAX));
                let low = min > 0 && free < min;
                let reason = format!(
                    "audit volume {}: {free} bytes free, below audit.min_free_bytes ({min})",
                    dir.display()
                );
                app.set_ready(Part::AuditDisk, !low, &reason);
            }
            Err(e) => {
                if failures.due().is_some() {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot read the audit volume's free space");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(DISK_CHECK_INTERVAL) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Probes every CA key, the token signing key and a backend-held TLS key each
/// `signing.probe_interval`; readiness follows.
async fn probe_loop(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut probes = Probes::default();
    loop {
        let state = app.state();
        tokio::select! {
            _ = tokio::time::sleep(state.probe_interval) => {}
            _ = stop.changed() => return,
        }
        let mut down = None;
        for ca in state.cas.values() {
            if !probes.probe(&ca.key_uri, &ca.key).await {
                down = Some(format!("CA {:?}: key {} unavailable", ca.name, ca.key_uri));
                break;
            }
        }
        app.set_ready(Part::CaKeys, down.is_none(), down.as_deref().unwrap_or(""));
        if let Some(jwt) = &state.jwt {
            let ok = probes.probe(&jwt.signing_uri, &jwt.signing).await;
            let reason = format!("token signing key {} unavailable", jwt.signing_uri);
            app.set_ready(Part::TokenKey, ok, &reason);
        }
        match &state.tls_key {
            Some((uri, key)) => {
                let ok = probes.probe(uri, key).await;
                let reason = format!("listen.key {uri} unavailable");
                app.set_ready(Part::TlsKey, ok, &reason);
            }
            None => app.set_ready(Part::TlsKey, true, ""),
        }
    }
}

/// Key probes, at most one in flight per key: a token that hangs costs one blocked thread,
/// not one per round.
#[derive(Default)]
struct Probes {
    in_flight: std::collections::HashMap<String, Arc<std::sync::atomic::AtomicBool>>,
}

impl Probes {
    /// Whether `key` answers within [`PROBE_TIMEOUT`], off the async runtime; `false` while
    /// its previous probe is still stuck.
    async fn probe(&mut self, uri: &str, key: &Arc<dyn kpki_signer::Signer>) -> bool {
        use std::sync::atomic::Ordering;
        let busy = Arc::clone(self.in_flight.entry(uri.to_string()).or_default());
        if busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        let key = Arc::clone(key);
        let probe = tokio::task::spawn_blocking(move || {
            let ok = key.is_available();
            busy.store(false, Ordering::Release);
            ok
        });
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, probe).await,
            Ok(Ok(true))
        )
    }
}
