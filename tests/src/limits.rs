//! Helpers of the resource-bound tests: this process's descriptor limit, a daemon's RSS and
//! open descriptors, a `kpki serve` started under a descriptor limit (`prlimit`), raw mTLS
//! connections, and a request body that stalls.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::load::Target;
use crate::serve::{ServeFixture, ops_get};

/// Raises this process's soft descriptor limit to its hard limit (with `prlimit`) and
/// returns it.
pub fn raise_nofile() -> u64 {
    crate::hsm::require_tool("prlimit");
    let hard = nofile_of("self").1;
    let st = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={hard}:{hard}"),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "prlimit failed");
    assert_eq!(nofile_of("self").0, hard);
    hard
}

/// (soft, hard) descriptor limits of process `pid` (`self` for this one).
pub fn nofile_of(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut words = line.split_whitespace().skip(3);
    let mut value = || {
        let w = words.next().unwrap();
        if w == "unlimited" {
            u64::MAX
        } else {
            w.parse().unwrap()
        }
    };
    (value(), value())
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Open descriptors of `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A `kpki serve` started with both descriptor limits at `nofile`; killed on drop.
pub struct LimitedDaemon {
    child: Child,
    /// The operations address.
    pub ops_addr: SocketAddr,
    /// The daemon's log file.
    pub log: PathBuf,
}

impl LimitedDaemon {
    /// Starts the daemon of `f` under `prlimit --nofile=<nofile>` and waits for `/readyz`.
    pub fn start(f: &ServeFixture, nofile: u64) -> LimitedDaemon {
        crate::hsm::require_tool("prlimit");
        let log = f.dir.path().join("serve.log");
        let child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg(crate::kpki_bin())
            .args(["serve", "--config", f.config.to_str().unwrap()])
            .env("KPKI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = LimitedDaemon {
            child,
            ops_addr: f.ops_addr,
            log,
        };
        d.wait_ready(true, Duration::from_secs(30));
        d
    }

    /// The process id (`prlimit` runs the daemon in its own process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200 (`ready`) or anything else; panics after `limit`.
    pub fn wait_ready(&mut self, ready: bool, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("kpki serve exited ({st}): {}", self.log_text());
            }
            if matches!(ops_get(self.ops_addr, "/readyz"), Some((200, _))) == ready {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "readyz not {} within {limit:?}: {}",
                if ready { "200" } else { "failing" },
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The value of the metric line starting with `name` (e.g.
    /// `kpki_connections_open{listener="mtls"}`), when `/metrics` answers and has it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = ops_get(self.ops_addr, "/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Drop for LimitedDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to `target` with a completed TLS handshake, offering `alpn`.
pub async fn tls_connect(target: &Target, alpn: &[u8]) -> anyhow::Result<TlsStream<TcpStream>> {
    let mut config = (*target.identity.client_config(false)?).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(target.addr).await?;
    let name = ServerName::try_from(target.server_name.clone())?;
    Ok(connector.connect(name, tcp).await?)
}

/// A request body that sends `first` and then never anything more (nor its end).
pub struct StalledBody {
    first: Option<Bytes>,
}

impl StalledBody {
    /// A body whose only data is `first`.
    pub fn new(first: &'static [u8]) -> StalledBody {
        StalledBody {
            first: Some(Bytes::from_static(first)),
        }
    }
}

impl hyper::body::Body for StalledBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.first.take() {
            Some(b) => Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}
