//! Prometheus metrics of the daemon and a signer wrapper that measures every CA signature
//! (latency, errors, signatures in flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use kpki_signer::{KeyAlgorithm, KeyUri, Signer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::audit::Decision;
use crate::error_code::ErrorCode;

/// Labels of a request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// API path.
    pub endpoint: String,
    /// Signer name or profile (empty when none).
    pub signer: String,
    /// `allow`, `deny` or `error`.
    pub outcome: String,
    /// Error code (empty when allowed).
    pub code: String,
}

/// Labels of the token signer's `Sign` counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwtSignLabels {
    /// `ok`, or the gRPC status code of the refusal in snake case (e.g. `invalid_argument`).
    pub result: String,
}

/// Labels of per-listener metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `mtls`, `ops` or `socket`.
    pub listener: String,
}

/// Labels of per-CA metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaLabels {
    /// CA name.
    pub ca: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// `process_*` (unprefixed, read at each scrape).
    process: Registry,
    /// Requests by endpoint, signer, outcome and code.
    pub requests: Family<RequestLabels, Counter>,
    /// The token signer's `Sign` calls by result.
    pub jwt_sign: Family<JwtSignLabels, Counter>,
    /// Whole issuance latency (parse, policy, sign, audit), seconds.
    pub issuance_seconds: Histogram,
    /// CA signature latency per CA, seconds.
    pub hsm_sign_seconds: Family<CaLabels, Histogram, fn() -> Histogram>,
    /// CA signature failures per CA.
    pub hsm_sign_errors: Family<CaLabels, Counter>,
    /// CA signatures in flight per CA (sessions in use on a token).
    pub hsm_in_use: Family<CaLabels, Gauge>,
    /// 1 when every CA key is usable.
    pub ready: Gauge,
    /// The CSR controller's counters.
    pub csr: CsrMetrics,
    /// Connections open per listener.
    pub connections_open: Family<ListenerLabels, Gauge>,
    /// Connections closed at once because their listener was at its cap.
    pub connections_refused: Family<ListenerLabels, Counter>,
    /// Connections closed for having no request in service for the idle timeout.
    pub connections_idle_closed: Family<ListenerLabels, Counter>,
    /// Free bytes on the audit log's volume (for an unprivileged process).
    pub audit_disk_free_bytes: Gauge,
}

/// The CSR controller's metrics.
pub struct CsrMetrics {
    /// Approved requests of the handled signers waiting for a certificate.
    pub pending: Gauge,
    /// Certificates written to `status.certificate`.
    pub signed: Counter,
    /// Requests marked `Failed` (refused by the signer rules or the policy).
    pub failed: Counter,
    /// Requests approved by kpki's approver.
    pub approved: Counter,
    /// Seconds from the `Approved` condition to the certificate being written.
    pub approval_to_certificate_seconds: Histogram,
    /// 1 while this replica holds the lease and signs.
    pub leader: Gauge,
}

impl CsrMetrics {
    fn register(registry: &mut Registry) -> CsrMetrics {
        let m = CsrMetrics {
            pending: Gauge::default(),
            signed: Counter::default(),
            failed: Counter::default(),
            approved: Counter::default(),
            // 10 ms … ~160 s.
            approval_to_certificate_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            leader: Gauge::default(),
        };
        registry.register(
            "csr_pending",
            "Approved CertificateSigningRequests of the handled signers without a certificate",
            m.pending.clone(),
        );
        registry.register(
            "csr_signed",
            "Certificates the CSR controller wrote to status.certificate",
            m.signed.clone(),
        );
        registry.register(
            "csr_failed",
            "CertificateSigningRequests the CSR controller marked Failed",
            m.failed.clone(),
        );
        registry.register(
            "csr_approved",
            "CertificateSigningRequests kpki's approver approved",
            m.approved.clone(),
        );
        registry.register(
            "csr_approval_to_certificate_seconds",
            "Time from a CertificateSigningRequest's Approved condition to its certificate",
            m.approval_to_certificate_seconds.clone(),
        );
        registry.register(
            "csr_controller_leader",
            "1 while this replica holds the CSR controller's lease",
            m.leader.clone(),
        );
        m
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("kpki");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests by endpoint, signer, outcome and code",
            requests.clone(),
        );
        let jwt_sign = Family::<JwtSignLabels, Counter>::default();
        registry.register(
            "jwt_sign",
            "The token signer's Sign calls by result (ok or the gRPC status code)",
            jwt_sign.clone(),
        );
        let issuance_seconds = latency_histogram();
        registry.register(
            "issuance_seconds",
            "Latency of a certificate issuance (parse, policy, sign, audit)",
            issuance_seconds.clone(),
        );
        let hsm_sign_seconds =
            Family::<CaLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register(
            "hsm_sign_seconds",
            "Latency of one CA signature on its key backend",
            hsm_sign_seconds.clone(),
        );
        let hsm_sign_errors = Family::<CaLabels, Counter>::default();
        registry.register(
            "hsm_sign_errors",
            "CA signatures that failed",
            hsm_sign_errors.clone(),
        );
        let hsm_in_use = Family::<CaLabels, Gauge>::default();
        registry.register(
            "hsm_sessions_in_use",
            "CA signatures in flight (token sessions in use)",
            hsm_in_use.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 when every CA key is usable", ready.clone());
        let csr = CsrMetrics::register(&mut registry);
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections open per listener",
            connections_open.clone(),
        );
        let connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because their listener was at its cap",
            connections_refused.clone(),
        );
        let connections_idle_closed = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connections_idle_closed",
            "Connections closed after the idle timeout with no request in service",
            connections_idle_closed.clone(),
        );
        registry.register(
            "build",
            "The kpki build: version and git commit (\"unknown\" when built outside git)",
            prometheus_client::metrics::info::Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("git_commit", env!("KPKI_GIT_COMMIT")),
            ]),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let audit_disk_free_bytes = Gauge::default();
        registry.register(
            "audit_disk_free_bytes",
            "Free bytes on the audit log's volume",
            audit_disk_free_bytes.clone(),
        );
        Arc::new(Metrics {
            registry,
            process,
            requests,
            jwt_sign,
            issuance_seconds,
            hsm_sign_seconds,
            hsm_sign_errors,
            hsm_in_use,
            ready,
            csr,
            connections_open,
            connections_refused,
            connections_idle_closed,
            audit_disk_free_bytes,
        })
    }

    fn listener(listener: &str) -> ListenerLabels {
        ListenerLabels {
            listener: listener.into(),
        }
    }

    /// Counts a connection of `listener` opened.
    pub fn connection_opened(&self, listener: &str) {
        self.connections_open
            .get_or_create(&Self::listener(listener))
            .inc();
    }

    /// Counts a connection of `listener` closed.
    pub fn connection_closed(&self, listener: &str) {
        self.connections_open
            .get_or_create(&Self::listener(listener))
            .dec();
    }

    /// Counts a connection of `listener` refused at its cap.
    pub fn connection_refused(&self, listener: &str) {
        self.connections_refused
            .get_or_create(&Self::listener(listener))
            .inc();
    }

    /// Counts a connection of `listener` closed for idleness.
    pub fn connection_idle(&self, listener: &str) {
        self.connections_idle_closed
            .get_or_create(&Self::listener(listener))
            .inc();
    }

    /// Counts one request: allowed, or failed with `failed`.
    pub fn count(&self, endpoint: &str, signer: &str, failed: Option<ErrorCode>) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.into(),
                signer: signer.into(),
                outcome: failed
                    .map_or(Decision::Allow, ErrorCode::decision)
                    .to_string(),
                code: failed.map(ErrorCode::as_str).unwrap_or_default().into(),
            })
            .inc();
    }

    /// The metrics in OpenMetrics text (`openmetrics`) or the classic Prometheus text
    /// format 0.0.4.
    pub fn render(&self, openmetrics: bool) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out));
        if encoded.is_err() {
            out.clear();
        }
        if openmetrics {
            out
        } else {
            crate::exposition::classic(&out)
        }
    }
}

/// A CA key whose signatures are measured.
pub struct MeteredSigner {
    inner: Arc<dyn Signer>,
    labels: CaLabels,
    metrics: Arc<Metrics>,
    in_flight: AtomicI64,
}

impl std::fmt::Debug for MeteredSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredSigner")
            .field("inner", &self.inner)
            .field("ca", &self.labels.ca)
            .finish()
    }
}

impl MeteredSigner {
    /// Wraps CA `ca`'s key.
    pub fn wrap(inner: Arc<dyn Signer>, ca: &str, metrics: &Arc<Metrics>) -> Arc<dyn Signer> {
        Arc::new(MeteredSigner {
            inner,
            labels: CaLabels { ca: ca.into() },
            metrics: Arc::clone(metrics),
            in_flight: AtomicI64::new(0),
        })
    }
}

impl Signer for MeteredSigner {
    fn algorithm(&self) -> KeyAlgorithm {
        self.inner.algorithm()
    }

    fn public_key_spki(&self) -> &[u8] {
        self.inner.public_key_spki()
    }

    fn uri(&self) -> &KeyUri {
        self.inner.uri()
    }

    fn sign(&self, message: &[u8]) -> kpki_signer::Result<Vec<u8>> {
        let m = &self.metrics;
        let gauge = m.hsm_in_use.get_or_create(&self.labels);
        gauge.set(self.in_flight.fetch_add(1, Ordering::Relaxed) + 1);
        let start = Instant::now();
        let result = self.inner.sign(message);
        m.hsm_sign_seconds
            .get_or_create(&self.labels)
            .observe(start.elapsed().as_secs_f64());
        if result.is_err() {
            m.hsm_sign_errors.get_or_create(&self.labels).inc();
        }
        gauge.set(self.in_flight.fetch_sub(1, Ordering::Relaxed) - 1);
        result
    }

    fn concurrency_gate(&self) -> Option<&tokio::sync::Semaphore> {
        self.inner.concurrency_gate()
    }

    fn is_available(&self) -> bool {
        self.inner.is_available()
    }

    fn supports_rsa_pss(&self) -> bool {
        self.inner.supports_rsa_pss()
    }

    fn sign_rsa_pss_sha256(&self, message: &[u8]) -> kpki_signer::Result<Vec<u8>> {
        self.inner.sign_rsa_pss_sha256(message)
    }
}
