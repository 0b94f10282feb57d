//! The unix socket of the token signer: created with mode 0600 (owner configurable),
//! replacing a stale socket but never another kind of file, removed at shutdown. Served
//! under its own connection cap, with HTTP/2 stream, window and message-size limits sized
//! to `jwt.max_claims_bytes`, a per-call timeout (a stalled request ends with it) and an
//! idle timeout (a connection that moves no byte for it is closed). The `:authority` gRPC
//! C-core clients send on unix sockets is made acceptable ([`crate::jwt::authority`]).

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, UdsConnectInfo};

use crate::app::App;
use crate::config::JwtConfig;
use crate::jwt::authority::FixAuthority;
use crate::jwt::proto;
use crate::jwt::service::JwtService;
use crate::limits::{Bounds, Gate, Slot};

/// Room for a request's fields besides the claims (salt, framing).
const MESSAGE_OVERHEAD: usize = 4096;

/// Binds the socket of `cfg` (mode 0600, owner `socket_uid`).
pub fn bind(cfg: &JwtConfig) -> Result<UnixListener, String> {
    let path = &cfg.socket;
    let what = format!("jwt.socket {}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(_) => return Err(format!("{what}: exists and is not a socket")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{what}: {e}")),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{what}: {e}"))?;
    }
    // Nobody else may connect between bind and chmod.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.map_err(|e| format!("{what}: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{what}: {e}"))?;
    if let Some(uid) = cfg.socket_uid {
        rustix::fs::chown(path, Some(rustix::fs::Uid::from_raw(uid)), None)
            .map_err(|e| format!("{what}: chown to uid {uid}: {e}"))?;
    }
    Ok(listener)
}

/// Serves both packages on `listener` until `shutdown` completes, then removes the socket.
/// Connections over `gate`'s cap are closed at once.
pub async fn serve(
    app: Arc<App>,
    listener: UnixListener,
    path: &Path,
    gate: Arc<Gate>,
    bounds: &Bounds,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let state = app.state();
    let max_claims = state
        .config
        .jwt
        .as_ref()
        .map_or(64 * 1024, |j| j.max_claims_bytes);
    let call_timeout = state.request_timeout + bounds.body;
    drop(state);
    let message = max_claims.saturating_add(MESSAGE_OVERHEAD);
    let window = u32::try_from(message.max(65_535)).unwrap_or(u32::MAX >> 1);
    // A call in service moves no byte while it waits for a session: never idle before the
    // call timeout.
    let idle = bounds.idle.max(call_timeout + Duration::from_secs(1));
    let service = JwtService::new(app);
    let incoming = futures::stream::unfold(listener, move |listener| {
        let gate = Arc::clone(&gate);
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if let Some(slot) = gate.admit() {
                            let io = IdleIo::new(stream, idle, slot);
                            return Some((Ok::<_, io::Error>(io), listener));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "token signer accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    });
    let result = tonic::transport::Server::builder()
        .max_concurrent_streams(bounds.streams)
        .initial_stream_window_size(window)
        .initial_connection_window_size(window.saturating_mul(2))
        .http2_max_header_list_size(32 * 1024)
        .timeout(call_timeout)
        .add_service(
            proto::v1::external_jwt_signer_server::ExternalJwtSignerServer::new(service.clone())
                .max_decoding_message_size(message),
        )
        .add_service(
            proto::v1alpha1::external_jwt_signer_server::ExternalJwtSignerServer::new(service)
                .max_decoding_message_size(message),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("jwt.socket {}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    result
}

/// A socket connection that fails its reads once no byte has moved either way for `idle`,
/// holding its place under the connection cap until dropped.
struct IdleIo {
    inner: FixAuthority<UnixStream>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl IdleIo {
    fn new(inner: UnixStream, idle: Duration, slot: Slot) -> IdleIo {
        IdleIo {
            inner: FixAuthority::new(inner),
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _slot: slot,
        }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }
}

impl Connected for IdleIo {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.inner.get_ref().connect_info()
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "token signer connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
