//! Resource bounds of the daemon's listeners and of what callers can make it write.
//!
//! - [`ConnectionLimits`] (`[connections]`): a connection cap per listener (mTLS, operations,
//!   token-signer socket) fitted under the process's file-descriptor limit with descriptors
//!   kept in reserve, so one listener can never starve another of descriptors; TLS handshake,
//!   request-header, request-body and idle timeouts; HTTP/2 stream and window limits sized to
//!   the body limit.
//! - [`Gate`]: one listener's cap. A connection over the cap is accepted and closed at once
//!   (the kernel's backlog does not fill), counted, and logged at most once per
//!   [`LOG_EVERY`].
//! - [`Activity`], [`track`] and [`drive`]: a connection with no request in service for its
//!   idle timeout is shut down (GOAWAY on HTTP/2), and closed outright when it does not go
//!   within [`CLOSE_GRACE`]; a request body that has not arrived within the body timeout
//!   fails (the request is answered 400 and audited like any unreadable body).
//! - [`DeniedLimiter`]: per caller, a token bucket of denied requests. A caller that spent
//!   its burst is refused with `rate_limited` before its request is examined, and only the
//!   first refusal of each spell is audited.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper_util::server::graceful::GracefulConnection;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use kpki_pki::GoDuration;

use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::policy::Caller;

/// Shortest interval between two log lines about the same cap.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a connection told to go (idle, or the daemon stopping after its grace) may take
/// before it is closed outright.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Descriptors the daemon needs besides its connections' sockets when none are configured.
const MIN_RESERVED_FDS: u64 = 64;

/// `[connections]`: caps and timeouts of every listener. Read at start; a reload keeps the
/// values the daemon started with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Most connections of the mTLS listener at once (handshakes included).
    pub max_connections: usize,
    /// Most connections of the plain-HTTP operations listener at once.
    pub max_ops_connections: usize,
    /// Most connections of the token-signer socket at once.
    pub max_socket_connections: usize,
    /// File descriptors kept free of connections (audit file, tokens, key files, the
    /// Kubernetes client); the caps shrink to fit the descriptor limit minus this.
    pub reserved_fds: usize,
    /// Longest TLS handshake (Go duration).
    pub handshake_timeout: GoDuration,
    /// Longest wait for a request's headers once its first byte arrived (HTTP/1.1).
    pub header_timeout: GoDuration,
    /// Longest wait for a whole request body, from the request's start.
    pub body_timeout: GoDuration,
    /// An mTLS or socket connection with no request in service this long is closed.
    pub idle_timeout: GoDuration,
    /// An operations connection with no request in service this long is closed.
    pub ops_idle_timeout: GoDuration,
    /// Most HTTP/2 streams at once on one connection (mTLS, operations and socket).
    pub max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 4096,
            max_ops_connections: 128,
            max_socket_connections: 64,
            reserved_fds: 256,
            handshake_timeout: GoDuration(Duration::from_secs(10)),
            header_timeout: GoDuration(Duration::from_secs(10)),
            body_timeout: GoDuration(Duration::from_secs(10)),
            idle_timeout: GoDuration(Duration::from_secs(60)),
            ops_idle_timeout: GoDuration(Duration::from_secs(10)),
            max_concurrent_streams: 16,
        }
    }
}

/// Default of `audit.min_free_bytes`: 64 MiB.
pub fn default_min_free_bytes() -> u64 {
    64 << 20
}

/// Default of `audit.denied_burst`.
pub fn default_denied_burst() -> u32 {
    20
}

/// Default of `audit.denied_per_second`.
pub fn default_denied_per_second() -> f64 {
    1.0
}

/// Checks `[audit]`'s denied-request budget: `denied_per_second` a finite number ≥ 0.
pub fn check_denied_rate(audit: Option<&crate::config::AuditConfig>) -> Result<(), ConfigError> {
    match audit {
        Some(a) if !(a.denied_per_second.is_finite() && a.denied_per_second >= 0.0) => {
            Err(ConfigError(format!(
                "audit.denied_per_second: {} is not a number of requests per second ≥ 0",
                a.denied_per_second
            )))
        }
        _ => Ok(()),
    }
}

/// [`ConnectionLimits`] checked, with durations parsed and caps fitted to the descriptor
/// limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    /// mTLS connection cap.
    pub mtls: usize,
    /// Operations connection cap.
    pub ops: usize,
    /// Token-signer socket connection cap.
    pub socket: usize,
    /// TLS handshake timeout.
    pub handshake: Duration,
    /// Header read timeout.
    pub header: Duration,
    /// Body read timeout.
    pub body: Duration,
    /// Idle timeout of mTLS and socket connections.
    pub idle: Duration,
    /// Idle timeout of operations connections.
    pub ops_idle: Duration,
    /// HTTP/2 streams per connection.
    pub streams: u32,
}

impl ConnectionLimits {
    /// Checks the values and fits the caps under `fd_limit` descriptors (see
    /// [`fit_caps`]).
    pub fn resolve(&self, fd_limit: u64) -> Result<Bounds, ConfigError> {
        let positive = |what: &str, d: &GoDuration| {
            let d = d.get();
            if d.is_zero() {
                return Err(ConfigError(format!("connections.{what}: must be above 0")));
            }
            Ok(d)
        };
        for (what, n) in [
            ("max_connections", self.max_connections),
            ("max_ops_connections", self.max_ops_connections),
            ("max_socket_connections", self.max_socket_connections),
            (
                "max_concurrent_streams",
                self.max_concurrent_streams as usize,
            ),
        ] {
            if n == 0 {
                return Err(ConfigError(format!("connections.{what}: must be above 0")));
            }
        }
        let (mtls, ops, socket) = fit_caps(
            fd_limit,
            self.reserved_fds as u64,
            (
                self.max_connections,
                self.max_ops_connections,
                self.max_socket_connections,
            ),
        )
        .ok_or_else(|| {
            ConfigError(format!(
                "connections.reserved_fds: {} leaves too few of the {fd_limit} file descriptors (RLIMIT_NOFILE) for connections",
                self.reserved_fds
            ))
        })?;
        Ok(Bounds {
            mtls,
            ops,
            socket,
            handshake: positive("handshake_timeout", &self.handshake_timeout)?,
            header: positive("header_timeout", &self.header_timeout)?,
            body: positive("body_timeout", &self.body_timeout)?,
            idle: positive("idle_timeout", &self.idle_timeout)?,
            ops_idle: positive("ops_idle_timeout", &self.ops_idle_timeout)?,
            streams: self.max_concurrent_streams,
        })
    }
}

/// The caps (mTLS, operations, socket) that fit in `fd_limit` descriptors with `reserved`
/// (at least `MIN_RESERVED_FDS`) kept free: as configured when they fit; otherwise the
/// operations and socket caps are held to an eighth of what is left each and the mTLS
/// listener gets the rest. `None` when fewer than 16 descriptors would be left.
pub fn fit_caps(
    fd_limit: u64,
    reserved: u64,
    (mtls, ops, socket): (usize, usize, usize),
) -> Option<(usize, usize, usize)> {
    let left = usize::try_from(fd_limit.saturating_sub(reserved.max(MIN_RESERVED_FDS)))
        .unwrap_or(usize::MAX);
    if left < 16 {
        return None;
    }
    if mtls.saturating_add(ops).saturating_add(socket) <= left {
        return Some((mtls, ops, socket));
    }
    let ops = ops.min(left / 8).max(1);
    let socket = socket.min(left / 8).max(1);
    Some((mtls.min(left - ops - socket), ops, socket))
}

/// Raises the soft descriptor limit to the hard one and returns it.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum
        && limit.current != Some(hard)
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return hard;
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// A log line that is written at most once per [`LOG_EVERY`]; the lines held back are
/// counted into the next.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    /// Milliseconds since `epoch` of the last line (0: none yet).
    last: AtomicU64,
    held: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl RateLimitedLog {
    /// `Some(lines held back since the last one)` when a line is due now.
    pub fn due(&self) -> Option<u64> {
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now = u64::try_from(epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every
            || self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

/// One listener's connection cap.
pub struct Gate {
    listener: &'static str,
    cap: usize,
    slots: Arc<Semaphore>,
    log: RateLimitedLog,
    metrics: Arc<Metrics>,
}

impl Gate {
    /// A cap of `cap` connections on `listener` (`mtls`, `ops`, `socket`).
    pub fn new(listener: &'static str, cap: usize, metrics: &Arc<Metrics>) -> Arc<Gate> {
        Arc::new(Gate {
            listener,
            cap,
            slots: Arc::new(Semaphore::new(cap)),
            log: RateLimitedLog::default(),
            metrics: Arc::clone(metrics),
        })
    }

    /// A slot for a new connection, held until the connection ends; `None` (counted and
    /// logged) when the listener is at its cap.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                self.metrics.connection_opened(self.listener);
                Some(Slot {
                    _permit: permit,
                    gate: Arc::clone(self),
                })
            }
            Err(_) => {
                self.metrics.connection_refused(self.listener);
                if let Some(held) = self.log.due() {
                    tracing::warn!(
                        listener = self.listener,
                        cap = self.cap,
                        refused_since_last_line = held,
                        "connection cap reached: new connections are closed at once"
                    );
                }
                None
            }
        }
    }

    /// Waits until every connection has ended, or `limit` passed; true when all ended.
    pub async fn drained(&self, limit: Duration) -> bool {
        let cap = u32::try_from(self.cap).unwrap_or(u32::MAX);
        tokio::time::timeout(limit, self.slots.acquire_many(cap))
            .await
            .is_ok()
    }
}

/// A connection's place under its listener's cap.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.metrics.connection_closed(self.gate.listener);
    }
}

/// When a connection last served, and how many of its requests are in service.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last request start or end.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// A connection that starts now, with nothing in service.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn stamp(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Release);
    }

    /// When the connection becomes idle if nothing happens meanwhile; `None` while a
    /// request is in service.
    pub fn idle_at(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.start + Duration::from_millis(self.last.load(Ordering::Acquire)) + idle)
    }

    fn begin(self: &Arc<Self>) -> InService {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.stamp();
        InService(Arc::clone(self))
    }
}

/// A request in service; ends on drop (also when the request is cancelled).
struct InService(Arc<Activity>);

impl Drop for InService {
    fn drop(&mut self) {
        self.0.stamp();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`track`] needs of a connection.
#[derive(Clone)]
pub struct Tracked {
    /// The connection's activity.
    pub activity: Arc<Activity>,
    /// The body timeout.
    pub body_timeout: Duration,
}

/// Middleware: counts the request in service on its connection and puts a deadline of
/// `body_timeout` on its body.
pub async fn track(State(t): State<Tracked>, request: Request, next: Next) -> Response {
    let _in_service = t.activity.begin();
    let request = request.map(|b| Body::new(DeadlineBody::new(b, t.body_timeout)));
    next.run(request).await
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl DeadlineBody {
    fn new(inner: Body, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the body did not arrive within connections.body_timeout ({:?})",
                    self.limit
                ),
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// How [`drive`] watches one connection.
pub struct Watch<'a> {
    /// The connection's requests in service.
    pub activity: &'a Activity,
    /// Its idle timeout.
    pub idle: Duration,
    /// How long it may finish its requests once the daemon stops.
    pub grace: Duration,
    /// The peer (for log lines).
    pub remote: SocketAddr,
    /// The listener (`mtls`, `ops`).
    pub listener: &'static str,
    /// Where idle closes are counted.
    pub metrics: &'a Metrics,
}

/// Serves `conn` until it ends, it has had no request in service for `w.idle`, or `stop`
/// turns true; in the last two cases it is shut down gracefully and closed outright after
/// [`CLOSE_GRACE`] (after `w.grace` when stopping).
pub async fn drive<C>(conn: C, w: Watch<'_>, mut stop: tokio::sync::watch::Receiver<bool>)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let Watch {
        activity,
        idle,
        grace,
        remote,
        listener,
        metrics,
    } = w;
    let mut conn = std::pin::pin!(conn);
    let mut closing: Option<Instant> = None;
    let stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
        closing = Some(Instant::now() + grace);
    }
    loop {
        let wake = closing
            .or_else(|| activity.idle_at(idle))
            .unwrap_or_else(|| Instant::now() + idle);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, listener, error = %e, "connection ended");
                }
                return;
            }
            changed = stop.changed(), if closing.is_none() => {
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + grace);
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if closing.is_some() {
                    tracing::debug!(%remote, listener, "connection closed: it did not finish in time");
                    return;
                }
                if activity.idle_at(idle).is_some_and(|at| at <= Instant::now()) {
                    metrics.connection_idle(listener);
                    tracing::debug!(%remote, listener, "idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSE_GRACE);
                }
            }
        }
    }
}

/// One caller's budget of denied requests.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// A refusal of the current spell was audited.
    audited: bool,
}

/// What [`DeniedLimiter::check`] says about a caller's next request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Go on.
    Go,
    /// Refuse with `rate_limited`; `first` on the spell's first refusal (the one audited);
    /// `retry` is when a denied request is allowed again.
    Refuse {
        /// The spell's first refusal.
        first: bool,
        /// Until the caller's next denied request is allowed.
        retry: Duration,
    },
}

/// Above this many callers tracked, those whose budget is full again are forgotten.
const TRACKED_CALLERS: usize = 4096;

/// Per-caller token buckets of denied requests (`audit.denied_burst`,
/// `audit.denied_per_second`).
#[derive(Debug, Default)]
pub struct DeniedLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

fn caller_key(caller: &Caller) -> String {
    let mut key = caller.cn.clone();
    for o in &caller.orgs {
        key.push('\0');
        key.push_str(o);
    }
    key
}

impl DeniedLimiter {
    fn refill(b: &mut Bucket, now: Instant, burst: f64, rate: f64) {
        let gained = now.duration_since(b.at).as_secs_f64() * rate;
        b.tokens = (b.tokens + gained).min(burst);
        b.at = now;
    }

    /// Whether `caller` may be served now, under `burst` and `rate` (burst 0: no limit).
    pub fn check(&self, caller: &Caller, burst: u32, rate: f64, now: Instant) -> Verdict {
        if burst == 0 {
            return Verdict::Go;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(b) = buckets.get_mut(&caller_key(caller)) else {
            return Verdict::Go;
        };
        Self::refill(b, now, f64::from(burst), rate);
        if b.tokens >= 1.0 {
            b.audited = false;
            return Verdict::Go;
        }
        let first = !b.audited;
        b.audited = true;
        let retry = if rate > 0.0 {
            Duration::from_secs_f64(((1.0 - b.tokens) / rate).min(86_400.0))
        } else {
            Duration::from_secs(86_400)
        };
        Verdict::Refuse { first, retry }
    }

    /// Spends one token of `caller`'s budget for a denied request.
    pub fn denied(&self, caller: &Caller, burst: u32, rate: f64, now: Instant) {
        if burst == 0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= TRACKED_CALLERS {
            let full = f64::from(burst);
            buckets.retain(|_, b| {
                Self::refill(b, now, full, rate);
                b.tokens < full
            });
        }
        let b = buckets.entry(caller_key(caller)).or_insert(Bucket {
            tokens: f64::from(burst),
            at: now,
            audited: false,
        });
        Self::refill(b, now, f64::from(burst), rate);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_descriptor_limit() {
        // (fd limit, reserved, configured) → caps.
        type Caps = (usize, usize, usize);
        let cases: [(u64, u64, Caps, Option<Caps>); 5] = [
            (65536, 256, (4096, 128, 64), Some((4096, 128, 64))),
            (2048, 256, (4096, 128, 64), Some((1600, 128, 64))),
            (1024, 256, (4096, 128, 64), Some((608, 96, 64))),
            (1024, 0, (100, 10, 10), Some((100, 10, 10))),
            (70, 256, (4096, 128, 64), None),
        ];
        for (limit, reserved, configured, want) in cases {
            let got = fit_caps(limit, reserved, configured);
            assert_eq!(got, want, "{limit} {reserved} {configured:?}");
            if let Some((a, b, c)) = got {
                assert!(a + b + c + reserved.max(MIN_RESERVED_FDS) as usize <= limit as usize);
            }
        }
    }

    #[test]
    fn limits_resolve_and_refuse_bad_values() {
        let b = ConnectionLimits::default().resolve(1 << 20).unwrap();
        assert_eq!((b.mtls, b.ops, b.socket, b.streams), (4096, 128, 64, 16));
        assert_eq!(b.idle, Duration::from_secs(60));
        assert_eq!(b.ops_idle, Duration::from_secs(10));
        let bad = [
            (
                ConnectionLimits {
                    idle_timeout: GoDuration(Duration::ZERO),
                    ..ConnectionLimits::default()
                },
                "connections.idle_timeout: must be above 0",
            ),
            (
                ConnectionLimits {
                    max_ops_connections: 0,
                    ..ConnectionLimits::default()
                },
                "connections.max_ops_connections: must be above 0",
            ),
        ];
        for (limits, want) in bad {
            let e = limits.resolve(1 << 20).unwrap_err().0;
            assert!(e.starts_with(want), "{e}");
        }
        let e = ConnectionLimits::default().resolve(100).unwrap_err().0;
        assert!(
            e.contains("leaves too few of the 100 file descriptors"),
            "{e}"
        );
    }

    #[test]
    fn denied_rate_must_be_a_rate() {
        let audit = |rate: &str| -> crate::config::AuditConfig {
            toml::from_str(&format!("path = \"/x\"\ndenied_per_second = {rate}")).unwrap()
        };
        for (rate, ok) in [
            ("0.0", true),
            ("2.5", true),
            ("-1.0", false),
            ("nan", false),
        ] {
            let got = check_denied_rate(Some(&audit(rate)));
            assert_eq!(got.is_ok(), ok, "{rate}");
        }
        assert!(check_denied_rate(None).is_ok());
    }

    #[test]
    fn rate_limited_log_holds_back_lines() {
        let log = RateLimitedLog::default();
        assert_eq!(log.due(), Some(0));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        assert_eq!(log.held.load(Ordering::Relaxed), 2);
    }

    fn caller(cn: &str) -> Caller {
        Caller {
            cn: cn.into(),
            orgs: vec!["dev".into()],
        }
    }

    #[test]
    fn denied_requests_are_limited_per_caller() {
        let limiter = DeniedLimiter::default();
        let t0 = Instant::now();
        let (mallory, alice) = (caller("mallory"), caller("alice"));
        for _ in 0..3 {
            assert_eq!(limiter.check(&mallory, 3, 1.0, t0), Verdict::Go);
            limiter.denied(&mallory, 3, 1.0, t0);
        }
        // Spent: the first refusal of the spell is the audited one.
        assert!(matches!(
            limiter.check(&mallory, 3, 1.0, t0),
            Verdict::Refuse { first: true, retry } if retry == Duration::from_secs(1)
        ));
        assert!(matches!(
            limiter.check(&mallory, 3, 1.0, t0 + Duration::from_millis(500)),
            Verdict::Refuse { first: false, .. }
        ));
        // Another caller is not affected; the burst 0 turns the limit off.
        assert_eq!(limiter.check(&alice, 3, 1.0, t0), Verdict::Go);
        assert_eq!(limiter.check(&mallory, 0, 1.0, t0), Verdict::Go);
        // One token back after a second: one more denied request, then a new spell.
        let t1 = t0 + Duration::from_millis(1000);
        assert_eq!(limiter.check(&mallory, 3, 1.0, t1), Verdict::Go);
        limiter.denied(&mallory, 3, 1.0, t1);
        assert!(matches!(
            limiter.check(&mallory, 3, 1.0, t1),
            Verdict::Refuse { first: true, .. }
        ));
        // The same CN with other organizations is another caller.
        let other = Caller {
            cn: "mallory".into(),
            orgs: vec![],
        };
        assert_eq!(limiter.check(&other, 3, 1.0, t1), Verdict::Go);
    }

    #[test]
    fn activity_is_idle_only_without_requests_in_service() {
        let a = Activity::new();
        let idle = Duration::from_secs(5);
        let at = a.idle_at(idle).unwrap();
        assert!(at <= Instant::now() + idle);
        let request = a.begin();
        assert_eq!(a.idle_at(idle), None);
        drop(request);
        assert!(a.idle_at(idle).unwrap() >= at);
    }
}
