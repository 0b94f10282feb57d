//! An HTTPS load client with mutual TLS, shared by the tests and the `kpki-load` benchmark
//! driver: persistent keep-alive connections (HTTP/1.1, or HTTP/2 negotiated with ALPN) that
//! repeat one JSON POST and report status counts, transport errors, throughput and
//! client-side latency percentiles.
//!
//! The same generator drives `kpki serve` and `cfssl serve`, so it speaks plain HTTP over TLS
//! and knows nothing of either API.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Longest wait for the TCP connection, the TLS handshake and the HTTP handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for one request: from sending it to the last byte of its reply body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// First pause of a load worker after a transport error; it doubles on each further error in
/// a row up to [`MAX_BACKOFF`] and resets on the next reply, so a restarting server is not
/// hammered and the request budget is not burnt in a tight loop.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// Longest pause of a load worker after a transport error (see [`FIRST_BACKOFF`]).
pub const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// The client side of mutual TLS: the trust anchors for the server's certificate and an
/// optional client certificate with its key.
#[derive(Clone, Debug, Default)]
pub struct ClientIdentity {
    /// PEM certificates the server's chain must lead to (one or more `CERTIFICATE` blocks).
    pub ca_pem: Vec<u8>,
    /// PEM client certificate, optionally followed by its intermediates; `None` presents no
    /// certificate. Must be given together with `key_pem`.
    pub cert_pem: Option<Vec<u8>>,
    /// PEM private key of the client certificate (PKCS#1, SEC1 or PKCS#8).
    pub key_pem: Option<Vec<u8>>,
}

impl ClientIdentity {
    /// Builds the rustls client configuration (aws-lc-rs provider) with ALPN set for HTTP/2
    /// (`h2`) or HTTP/1.1 (`http/1.1`).
    pub fn client_config(&self, http2: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.context("parsing the CA certificates (PEM)")?;
            roots
                .add(cert)
                .context("adding a CA certificate to the trust anchors")?;
        }
        if roots.is_empty() {
            bail!("no CERTIFICATE block found in the CA PEM");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("choosing TLS protocol versions")?
        .with_root_certificates(roots);
        let mut config = match (&self.cert_pem, &self.key_pem) {
            (Some(cert_pem), Some(key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .context("parsing the client certificate (PEM)")?;
                if chain.is_empty() {
                    bail!("no CERTIFICATE block found in the client certificate PEM");
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .context("parsing the client key (PEM: PKCS#1, SEC1 or PKCS#8)")?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("the client key does not suit the client certificate")?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => bail!("a client certificate was given without its key"),
            (None, Some(_)) => bail!("a client key was given without its certificate"),
        };
        config.alpn_protocols = if http2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Arc::new(config))
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Target {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// Name the server's certificate must match (DNS name or IP address); also sent as SNI
    /// (for DNS names) and as the HTTP authority.
    pub server_name: String,
    /// Trust anchors and client certificate.
    pub identity: ClientIdentity,
    /// Speak HTTP/2 (the server must select `h2` with ALPN) instead of HTTP/1.1.
    pub http2: bool,
}

/// A reply to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The whole response body.
    pub body: Vec<u8>,
}

/// The request half of a hyper client connection.
enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Why a request got no reply.
enum SendError {
    /// The connection was already closed before the request was sent (the server closed an
    /// idle keep-alive connection, or answered the previous request with `Connection: close`):
    /// the request may be repeated on a new connection.
    Closed(anyhow::Error),
    /// The request was sent, or may have been, and failed.
    Failed(anyhow::Error),
}

impl From<SendError> for anyhow::Error {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Closed(e) | SendError::Failed(e) => e,
        }
    }
}

/// One persistent keep-alive connection (HTTP/1.1 by default, or HTTP/2 when
/// [`Target::http2`], negotiated with ALPN). Requests on it are sent one at a time.
///
/// With TLS 1.3 the client finishes its handshake before the server has checked the client
/// certificate, so a server that refuses the certificate may be seen only on the first
/// request, as an error of that request.
pub struct Connection {
    sender: Sender,
    authority: String,
    /// The task driving the connection; it ends with the connection, with its error if any.
    driver: Option<JoinHandle<hyper::Result<()>>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(driver) = &self.driver {
            driver.abort();
        }
    }
}

impl Connection {
    /// Opens a TCP connection to `target.addr`, completes the TLS handshake and the HTTP
    /// handshake, within [`CONNECT_TIMEOUT`].
    pub async fn connect(target: &Target) -> anyhow::Result<Connection> {
        let config = target.identity.client_config(target.http2)?;
        Self::connect_with(target, config).await
    }

    /// [`Connection::connect`] with a prepared TLS configuration (shared by the connections
    /// of a load run).
    async fn connect_with(
        target: &Target,
        config: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Connection> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::open(target, config))
            .await
            .map_err(|_| {
                anyhow!(
                    "connecting to {} ({}) timed out after {CONNECT_TIMEOUT:?}",
                    target.addr,
                    target.server_name
                )
            })?
    }

    async fn open(
        target: &Target,
        config: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Connection> {
        let server_name = ServerName::try_from(target.server_name.clone()).with_context(|| {
            format!(
                "{:?} is neither a DNS name nor an IP address",
                target.server_name
            )
        })?;
        let tcp = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        tcp.set_nodelay(true)
            .with_context(|| format!("setting TCP_NODELAY on the connection to {}", target.addr))?;
        let tls = TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .with_context(|| {
                format!(
                    "TLS handshake with {} at {}",
                    target.server_name, target.addr
                )
            })?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let authority = match target.addr.port() {
            443 => host_for_authority(&target.server_name),
            port => format!("{}:{port}", host_for_authority(&target.server_name)),
        };
        let (sender, driver) = if target.http2 {
            if alpn.as_deref() != Some(b"h2") {
                bail!(
                    "{} at {} did not select HTTP/2 with ALPN (selected: {})",
                    target.server_name,
                    target.addr,
                    alpn.as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_else(|| "nothing".into())
                );
            }
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .context("HTTP/2 handshake")?;
            (Sender::H2(sender), tokio::spawn(conn))
        } else {
            let (sender, conn) = http1::handshake(io).await.context("HTTP/1.1 handshake")?;
            (Sender::H1(sender), tokio::spawn(conn))
        };
        Ok(Connection {
            sender,
            authority,
            driver: Some(driver),
        })
    }

    /// Whether the connection is known to be closed (by the server, or after an error); a
    /// closed connection fails every request.
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Sends `POST path` with `json_body` as `application/json` and reads the whole reply,
    /// within [`REQUEST_TIMEOUT`]. Any status is a reply; an error means no reply.
    pub async fn post(&mut self, path: &str, json_body: impl Into<Bytes>) -> anyhow::Result<Reply> {
        Ok(self
            .request(Method::POST, path, Some(json_body.into()))
            .await?)
    }

    /// Sends `GET path` and reads the whole reply, within [`REQUEST_TIMEOUT`]. Any status is a
    /// reply; an error means no reply.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        Ok(self.request(Method::GET, path, None).await?)
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        json_body: Option<Bytes>,
    ) -> Result<Reply, SendError> {
        let what = format!("{method} {path}");
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, json_body)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(SendError::Closed(e))) => {
                let e = self.connection_error().await.unwrap_or(e);
                Err(SendError::Closed(
                    e.context(format!("{what} on a closed connection")),
                ))
            }
            Ok(Err(SendError::Failed(e))) => {
                let e = self.connection_error().await.unwrap_or(e);
                Err(SendError::Failed(e.context(what)))
            }
            Err(_) => Err(SendError::Failed(anyhow!(
                "{what}: no complete reply within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }

    /// The error that ended the connection, if it has ended with one (waiting briefly for the
    /// connection task, which may finish just after a request sees the failure). It tells more
    /// than the request's own error, e.g. the TLS alert of a server refusing the client.
    async fn connection_error(&mut self) -> Option<anyhow::Error> {
        let driver = self.driver.as_mut()?;
        match tokio::time::timeout(Duration::from_millis(200), driver).await {
            Err(_) => None,
            Ok(ended) => {
                self.driver = None;
                match ended {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(anyhow::Error::new(e)),
                    Err(e) => Some(anyhow!(e).context("the connection task failed")),
                }
            }
        }
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        json_body: Option<Bytes>,
    ) -> Result<Reply, SendError> {
        let h2 = matches!(self.sender, Sender::H2(_));
        let mut builder = Request::builder().method(method);
        builder = if h2 {
            // HTTP/2 carries the scheme and authority as pseudo-headers taken from the URI.
            builder.uri(format!("https://{}{path}", self.authority))
        } else {
            builder.uri(path).header(HOST, &self.authority)
        };
        let body = match json_body {
            Some(body) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                body
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|e| SendError::Failed(anyhow!(e).context("building the request")))?;
        let response: Response<Incoming> = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| SendError::Closed(e.into()))?;
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| SendError::Closed(e.into()))?;
                s.send_request(request).await
            }
        }
        .map_err(|e| SendError::Failed(e.into()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                SendError::Failed(
                    anyhow!(e).context(format!("reading the body of a {status} reply")),
                )
            })?
            .to_bytes();
        Ok(Reply {
            status,
            body: body.to_vec(),
        })
    }
}

/// The host part of an HTTP authority: IPv6 addresses go in brackets.
fn host_for_authority(server_name: &str) -> String {
    if server_name.contains(':') && !server_name.starts_with('[') {
        format!("[{server_name}]")
    } else {
        server_name.to_string()
    }
}

/// What a load run sends.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Server to load.
    pub target: Target,
    /// Request path (with query, if any), e.g. `/api/v1/cfssl/sign`.
    pub path: String,
    /// JSON body of every request (sent as `POST`).
    pub body: Vec<u8>,
    /// Concurrent connections, each sending one request at a time.
    pub connections: usize,
    /// Requests to send in total, across all connections.
    pub requests: u64,
    /// Keep the body of 1 in every N successful (2xx) replies in [`LoadReport::kept`] for
    /// later checks; 0 keeps none.
    pub keep_bodies_every: u64,
}

/// Outcome of a load run.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Requests attempted (= [`LoadSpec::requests`]).
    pub requests: u64,
    /// Replies with a 2xx status.
    pub ok: u64,
    /// Replies by status code (all statuses, including 2xx).
    pub by_status: BTreeMap<u16, u64>,
    /// Requests that got no reply: connection refused or reset, TLS failure, timeout. Each
    /// such failure drops the connection; the next request opens a new one.
    pub transport_errors: u64,
    /// Connections opened again during the run, after an error or after the server closed a
    /// keep-alive connection.
    pub reconnects: u64,
    /// Wall time from the first request (all connections already open) to the last reply.
    pub elapsed: Duration,
    /// Median client-side latency of the requests that got a reply (any status).
    pub p50: Duration,
    /// 90th percentile latency (nearest rank).
    pub p90: Duration,
    /// 99th percentile latency (nearest rank).
    pub p99: Duration,
    /// Highest latency.
    pub max: Duration,
    /// 2xx replies per second of [`LoadReport::elapsed`].
    pub rate: f64,
    /// Bodies kept as [`LoadSpec::keep_bodies_every`] asks, in no particular order.
    pub kept: Vec<Vec<u8>>,
    /// A transport error with its causes, for diagnosis: the first of the first connection
    /// that had any; `None` when there were none.
    pub first_error: Option<String>,
}

/// The callback of a load run, shared by its worker tasks.
type OnReply = Arc<dyn Fn(&Reply) + Send + Sync>;

/// What one worker saw.
#[derive(Default)]
struct WorkerStats {
    latencies: Vec<Duration>,
    by_status: BTreeMap<u16, u64>,
    ok: u64,
    transport_errors: u64,
    reconnects: u64,
    kept: Vec<Vec<u8>>,
    first_error: Option<String>,
}

/// State shared by the workers of a run.
struct Shared {
    spec: LoadSpec,
    body: Bytes,
    config: Arc<rustls::ClientConfig>,
    next: AtomicU64,
    ok_count: AtomicU64,
    on_reply: OnReply,
}

/// Sends `spec.requests` POSTs of `spec.body` to `spec.path` over `spec.connections`
/// keep-alive connections and reports what came back; `on_reply` sees every reply.
///
/// All connections are opened before the clock starts; failing to open any of them is an
/// error. During the run a request without a reply counts as a transport error and its
/// connection is replaced (after a short pause, see [`FIRST_BACKOFF`]); statuses such as 503
/// are replies, not transport errors. A run in which no request got any reply is an error
/// carrying the first transport error.
pub async fn run(
    spec: &LoadSpec,
    on_reply: impl Fn(&Reply) + Send + Sync + 'static,
) -> anyhow::Result<LoadReport> {
    if spec.connections == 0 {
        bail!("a load run needs at least one connection");
    }
    let config = spec.target.identity.client_config(spec.target.http2)?;
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..spec.connections {
        let target = spec.target.clone();
        let config = Arc::clone(&config);
        opening.spawn(async move {
            Connection::connect_with(&target, config)
                .await
                .with_context(|| {
                    format!(
                        "opening connection {} of the load run{}",
                        i + 1,
                        no_certificate_hint(&target.identity)
                    )
                })
        });
    }
    let mut connections = Vec::with_capacity(spec.connections);
    while let Some(opened) = opening.join_next().await {
        connections.push(opened.context("a connection task failed")??);
    }
    let shared = Arc::new(Shared {
        spec: spec.clone(),
        body: Bytes::from(spec.body.clone()),
        config,
        next: AtomicU64::new(0),
        ok_count: AtomicU64::new(0),
        on_reply: Arc::new(on_reply),
    });
    let start = Instant::now();
    let workers: Vec<_> = connections
        .into_iter()
        .map(|conn| tokio::spawn(worker(Arc::clone(&shared), conn)))
        .collect();
    let mut report = LoadReport {
        requests: spec.requests,
        ..LoadReport::default()
    };
    let mut latencies =
        Vec::with_capacity(usize::try_from(spec.requests.min(1 << 20)).unwrap_or(0));
    for w in workers {
        let stats = w
            .await
            .context("a load worker failed (panic in on_reply?)")?;
        latencies.extend(stats.latencies);
        for (status, n) in stats.by_status {
            *report.by_status.entry(status).or_default() += n;
        }
        report.ok += stats.ok;
        report.transport_errors += stats.transport_errors;
        report.reconnects += stats.reconnects;
        report.kept.extend(stats.kept);
        if report.first_error.is_none() {
            report.first_error = stats.first_error;
        }
    }
    report.elapsed = start.elapsed();
    if latencies.is_empty() && report.transport_errors > 0 {
        bail!(
            "none of {} requests got a reply{}; first error: {}",
            report.requests,
            no_certificate_hint(&spec.target.identity),
            report.first_error.as_deref().unwrap_or("unknown")
        );
    }
    latencies.sort_unstable();
    report.p50 = percentile(&latencies, 50);
    report.p90 = percentile(&latencies, 90);
    report.p99 = percentile(&latencies, 99);
    report.max = latencies.last().copied().unwrap_or_default();
    let secs = report.elapsed.as_secs_f64();
    report.rate = if secs > 0.0 {
        report.ok as f64 / secs
    } else {
        0.0
    };
    Ok(report)
}

/// A hint for failures of a client that presents no certificate: a server requiring one
/// may close the connection before its TLS alert can be read (seen as a broken pipe or a
/// reset).
fn no_certificate_hint(identity: &ClientIdentity) -> &'static str {
    if identity.cert_pem.is_none() {
        " (no client certificate was presented: the server may require one)"
    } else {
        ""
    }
}

/// Nearest-rank percentile `p` (0–100) of sorted `values`; zero when empty.
fn percentile(sorted: &[Duration], p: u64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let n = sorted.len() as u64;
    let rank = (p * n).div_ceil(100).clamp(1, n);
    sorted
        .get(usize::try_from(rank - 1).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or_default()
}

/// Sends requests on `conn` (replacing it when it fails) until the run's budget is spent.
async fn worker(shared: Arc<Shared>, conn: Connection) -> WorkerStats {
    let spec = &shared.spec;
    let mut stats = WorkerStats::default();
    let mut conn = Some(conn);
    let mut backoff = FIRST_BACKOFF;
    while shared.next.fetch_add(1, Ordering::Relaxed) < spec.requests {
        match one_request(&shared, &mut conn, &mut stats).await {
            Ok((reply, latency)) => {
                backoff = FIRST_BACKOFF;
                stats.latencies.push(latency);
                *stats.by_status.entry(reply.status).or_default() += 1;
                if (200..300).contains(&reply.status) {
                    stats.ok += 1;
                    let index = shared.ok_count.fetch_add(1, Ordering::Relaxed);
                    if spec.keep_bodies_every > 0 && index.is_multiple_of(spec.keep_bodies_every) {
                        stats.kept.push(reply.body.clone());
                    }
                }
                (shared.on_reply)(&reply);
            }
            Err(e) => {
                stats.transport_errors += 1;
                if stats.first_error.is_none() {
                    stats.first_error = Some(format!("{e:#}"));
                }
                conn = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    stats
}

/// Sends one request, opening a connection first if there is none and once more if the
/// current one turns out to be closed before the request goes out. Returns the reply and
/// its latency (request only, not connection setup).
async fn one_request(
    shared: &Shared,
    conn: &mut Option<Connection>,
    stats: &mut WorkerStats,
) -> anyhow::Result<(Reply, Duration)> {
    let spec = &shared.spec;
    for attempt in 0..2 {
        let c = match conn {
            Some(c) if !c.is_closed() => c,
            _ => {
                stats.reconnects += 1;
                conn.insert(
                    Connection::connect_with(&spec.target, Arc::clone(&shared.config)).await?,
                )
            }
        };
        let start = Instant::now();
        match c
            .request(Method::POST, &spec.path, Some(shared.body.clone()))
            .await
        {
            Ok(reply) => return Ok((reply, start.elapsed())),
            Err(SendError::Closed(_)) if attempt == 0 => *conn = None,
            Err(e) => return Err(e.into()),
        }
    }
    Err(anyhow!(
        "the connection closed again right after it was opened"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 90), Duration::from_millis(90));
        assert_eq!(percentile(&v, 99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50), Duration::ZERO);
    }

    #[test]
    fn identity_needs_cert_and_key_together() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let ca_pem = ca.cert.pem().into_bytes();
        let only_cert = ClientIdentity {
            ca_pem: ca_pem.clone(),
            cert_pem: Some(ca_pem.clone()),
            key_pem: None,
        };
        let err = only_cert.client_config(false).err().unwrap();
        assert!(err.to_string().contains("without its key"), "{err}");
        let empty = ClientIdentity::default();
        let err = empty.client_config(false).err().unwrap();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    }
}
