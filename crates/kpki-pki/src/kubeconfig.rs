//! Kubeconfig files as `clientcmd.WriteToFile` writes them: one cluster, one user with an
//! embedded client certificate and key, one context `<user>@<cluster>`.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::PkiError;

/// A kubeconfig (the fields kubeadm writes).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    /// `v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Clusters.
    pub clusters: Vec<NamedCluster>,
    /// Contexts.
    pub contexts: Vec<NamedContext>,
    /// The current context.
    pub current_context: String,
    /// `Config`.
    pub kind: String,
    /// Always empty.
    #[serde(default)]
    pub preferences: serde_norway::Mapping,
    /// Users.
    pub users: Vec<NamedUser>,
}

/// A named cluster entry.
#[derive(Debug, Serialize, Deserialize)]
pub struct NamedCluster {
    /// The cluster.
    pub cluster: Cluster,
    /// Its name.
    pub name: String,
}

/// Cluster connection data.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// Base64 of the CA bundle PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// Path of the CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// API server URL.
    pub server: String,
}

/// A named context entry.
#[derive(Debug, Serialize, Deserialize)]
pub struct NamedContext {
    /// The context.
    pub context: Context,
    /// Its name.
    pub name: String,
}

/// A context: cluster and user names.
#[derive(Debug, Serialize, Deserialize)]
pub struct Context {
    /// Cluster name.
    pub cluster: String,
    /// User name.
    pub user: String,
}

/// A named user entry.
#[derive(Debug, Serialize, Deserialize)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// Credentials.
    pub user: User,
}

/// Client credentials.
#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    /// Base64 of the client certificate PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// Base64 of the client key PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    /// Path of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Path of the client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

/// Builds the YAML of a kubeconfig with embedded credentials (a zeroizing buffer: it holds a key).
pub fn render(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Zeroizing<String>, PkiError> {
    build(cluster, server, Some(ca_pem), user, Some(cert_pem), key_pem)
}

/// A partial kubeconfig as `kubeadm certs generate-csr` writes it: empty CA data and client
/// certificate, only the client key.
pub(crate) fn render_partial(
    cluster: &str,
    server: &str,
    user: &str,
    key_pem: &str,
) -> Result<Zeroizing<String>, PkiError> {
    build(cluster, server, None, user, None, key_pem)
}

fn build(
    cluster: &str,
    server: &str,
    ca_pem: Option<&str>,
    user: &str,
    cert_pem: Option<&str>,
    key_pem: &str,
) -> Result<Zeroizing<String>, PkiError> {
    let context = format!("{user}@{cluster}");
    let key_data = Zeroizing::new(STANDARD.encode(key_pem.as_bytes()));
    let cfg = Kubeconfig {
        api_version: "v1".into(),
        clusters: vec![NamedCluster {
            cluster: Cluster {
                certificate_authority_data: Some(
                    ca_pem
                        .map(|p| STANDARD.encode(p.as_bytes()))
                        .unwrap_or_default(),
                ),
                certificate_authority: None,
                server: server.into(),
            },
            name: cluster.into(),
        }],
        contexts: vec![NamedContext {
            context: Context {
                cluster: cluster.into(),
                user: user.into(),
            },
            name: context.clone(),
        }],
        current_context: context,
        kind: "Config".into(),
        preferences: serde_norway::Mapping::new(),
        users: vec![NamedUser {
            name: user.into(),
            user: User {
                client_certificate_data: Some(
                    cert_pem
                        .map(|p| STANDARD.encode(p.as_bytes()))
                        .unwrap_or_default(),
                ),
                client_key_data: Some(key_data.to_string()),
                ..Default::default()
            },
        }],
    };
    let text = serde_norway::to_string(&cfg)
        .map_err(|e| PkiError::internal(format!("kubeconfig: {e}")))?;
    drop(cfg);
    Ok(Zeroizing::new(text))
}

/// Parses a kubeconfig.
pub fn parse(text: &str) -> Result<Kubeconfig, PkiError> {
    serde_norway::from_str(text).map_err(|e| PkiError::Malformed(format!("not a kubeconfig: {e}")))
}

/// The error of a kubeconfig `path` whose current context names no user.
pub(crate) fn no_current_user(path: &Path) -> PkiError {
    PkiError::Missing(format!(
        "{}: no user in the current context",
        path.display()
    ))
}

/// The bytes of the kubeconfig `path`'s `client-certificate-data` value `data` (base64).
pub(crate) fn decode_client_data(path: &Path, data: &str) -> Result<Vec<u8>, PkiError> {
    STANDARD.decode(data.trim()).map_err(|e| {
        PkiError::Malformed(format!(
            "{}: client-certificate-data is not base64 ({e})",
            path.display()
        ))
    })
}

/// The DER of the client certificate `pem` of the kubeconfig `path` (its first PEM block).
pub(crate) fn client_cert_der(path: &Path, pem: &[u8]) -> Result<Vec<u8>, PkiError> {
    let block = pem::parse(pem).map_err(|e| {
        PkiError::Malformed(format!(
            "{}: client certificate is not PEM ({e})",
            path.display()
        ))
    })?;
    Ok(block.into_contents())
}

impl Kubeconfig {
    /// The cluster of the current context.
    pub fn current_cluster(&self) -> Option<&Cluster> {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)?;
        self.clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .map(|c| &c.cluster)
    }

    /// The user of the current context.
    pub fn current_user(&self) -> Option<&User> {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)?;
        self.users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .map(|u| &u.user)
    }

    /// The CA PEM of the current context's cluster (decoded `certificate-authority-data`).
    pub fn current_ca_pem(&self) -> Option<String> {
        let data = self
            .current_cluster()?
            .certificate_authority_data
            .as_ref()?;
        String::from_utf8(STANDARD.decode(data.trim()).ok()?).ok()
    }
}
