//! The unix socket of the token signer: created with mode 0600 (owner configurable),
//! replacing a stale socket but never another kind of file, removed at shutdown.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::app::App;
use crate::config::JwtConfig;
use crate::jwt::proto;
use crate::jwt::service::JwtService;

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
pub async fn serve(
    app: Arc<App>,
    listener: UnixListener,
    path: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let service = JwtService::new(app);
    let result = tonic::transport::Server::builder()
        .add_service(
            proto::v1::external_jwt_signer_server::ExternalJwtSignerServer::new(service.clone()),
        )
        .add_service(
            proto::v1alpha1::external_jwt_signer_server::ExternalJwtSignerServer::new(service),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| format!("jwt.socket {}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    result
}
