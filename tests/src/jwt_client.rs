//! A client of kube-apiserver's ExternalJWTSigner service over a unix socket, generated
//! from this crate's own copy of the published definition (`tests/proto`).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Generated client code.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// Package `v1` (kube-apiserver 1.34+).
    pub mod v1 {
        tonic::include_proto!("v1");
    }
    /// Package `v1alpha1` (kube-apiserver 1.32–1.33).
    pub mod v1alpha1 {
        tonic::include_proto!("v1alpha1");
    }
}

/// A `v1` client.
pub type V1Client = proto::v1::external_jwt_signer_client::ExternalJwtSignerClient<Channel>;
/// A `v1alpha1` client.
pub type V1Alpha1Client =
    proto::v1alpha1::external_jwt_signer_client::ExternalJwtSignerClient<Channel>;

/// A gRPC channel to the unix socket `socket` (authority `localhost`, as kube-apiserver).
pub async fn channel(socket: &Path) -> anyhow::Result<Channel> {
    let socket: PathBuf = socket.to_path_buf();
    let channel = Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await?;
    Ok(channel)
}
