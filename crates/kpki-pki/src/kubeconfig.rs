//! Kubeconfig files as `clientcmd.WriteToFile` writes them: one cluster, one user with an
//! embedded client certificate and key, one context `<user>@<cluster>`. Read as a
//! [`Kubeconfig`], or edited in place as a `Document` (renewal keeps every field kpki does
//! not model).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};
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

/// A kubeconfig whose client key stays where its owner keeps it: the certificate embedded,
/// the key named by path (`client-key`), as `kubectl config set-credentials --client-key`
/// writes it. Holds no secret.
pub fn render_with_key_file(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_file: &str,
) -> Result<String, PkiError> {
    let text = build(cluster, server, Some(ca_pem), user, Some(cert_pem), "")?;
    let mut cfg: Kubeconfig = serde_norway::from_str(&text)
        .map_err(|e| PkiError::internal(format!("kubeconfig: {e}")))?;
    for u in &mut cfg.users {
        u.user.client_key_data = None;
        u.user.client_key = Some(key_file.to_string());
    }
    serde_norway::to_string(&cfg).map_err(|e| PkiError::internal(format!("kubeconfig: {e}")))
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
    crate::yaml_guard::check(text)
        .map_err(|e| PkiError::Malformed(format!("not a kubeconfig: {e}")))?;
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
    /// The current context.
    fn context(&self) -> Option<&Context> {
        self.contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .map(|c| &c.context)
    }

    /// The cluster of the current context.
    pub fn current_cluster(&self) -> Option<&Cluster> {
        let name = &self.context()?.cluster;
        self.clusters
            .iter()
            .find(|c| c.name == *name)
            .map(|c| &c.cluster)
    }

    /// The user of the current context.
    pub fn current_user(&self) -> Option<&User> {
        let name = &self.context()?.user;
        self.users.iter().find(|u| u.name == *name).map(|u| &u.user)
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

/// A kubeconfig as a YAML document, edited in place: every field kpki does not model is kept.
pub(crate) struct Document(Value);

impl Document {
    /// Parses the kubeconfig `path` (its text `text`).
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Document, PkiError> {
        crate::yaml_guard::check(text).map_err(|e| {
            PkiError::Malformed(format!("{}: not a kubeconfig ({e})", path.display()))
        })?;
        serde_norway::from_str(text)
            .map(Document)
            .map_err(|e| PkiError::Malformed(format!("{}: not a kubeconfig ({e})", path.display())))
    }

    /// The current context's `kind` entry (`user` of `users`, `cluster` of `clusters`).
    fn current(&mut self, kind: &str, list: &str) -> Option<&mut Mapping> {
        let doc = &mut self.0;
        let context = doc.get("current-context")?.as_str()?.to_string();
        let name = doc
            .get("contexts")?
            .as_sequence()?
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(context.as_str()))?
            .get("context")?
            .get(kind)?
            .as_str()?
            .to_string();
        doc.get_mut(list)?
            .as_sequence_mut()?
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name.as_str()))?
            .get_mut(kind)?
            .as_mapping_mut()
    }

    /// The DER of the current user's embedded client certificate; refuses a document whose
    /// current cluster embeds no CA or whose current user embeds no client certificate.
    pub(crate) fn embedded_client_cert(&mut self, path: &Path) -> Result<Vec<u8>, PkiError> {
        let has_ca = self
            .current("cluster", "clusters")
            .and_then(|c| c.get("certificate-authority-data"))
            .and_then(Value::as_str)
            .is_some_and(|d| !d.trim().is_empty());
        if !has_ca {
            return Err(PkiError::Missing(format!(
                "{}: the current cluster has no embedded certificate-authority-data",
                path.display()
            )));
        }
        let user = self
            .current("user", "users")
            .ok_or_else(|| no_current_user(path))?;
        let data = user
            .get("client-certificate-data")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                PkiError::Missing(format!(
                    "{}: the current user has no embedded client-certificate-data",
                    path.display()
                ))
            })?;
        client_cert_der(path, &decode_client_data(path, data)?)
    }

    /// Embeds `ca_pem` as the current cluster's CA and `cert_pem`/`key_pem` as the current
    /// user's client credentials.
    pub(crate) fn set_credentials(
        &mut self,
        path: &Path,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(), PkiError> {
        let missing =
            |what: &str| PkiError::Missing(format!("{}: no current {what}", path.display()));
        self.current("cluster", "clusters")
            .ok_or_else(|| missing("cluster"))?
            .insert(
                "certificate-authority-data".into(),
                STANDARD.encode(ca_pem.as_bytes()).into(),
            );
        let user = self
            .current("user", "users")
            .ok_or_else(|| missing("user"))?;
        user.insert(
            "client-certificate-data".into(),
            STANDARD.encode(cert_pem.as_bytes()).into(),
        );
        user.insert(
            "client-key-data".into(),
            Zeroizing::new(STANDARD.encode(key_pem.as_bytes()))
                .as_str()
                .into(),
        );
        Ok(())
    }

    /// Embeds `ca_pem` (one certificate or a bundle) as the current cluster's CA; the rest of
    /// the document is kept.
    pub(crate) fn set_ca(&mut self, path: &Path, ca_pem: &str) -> Result<(), PkiError> {
        self.current("cluster", "clusters")
            .ok_or_else(|| PkiError::Missing(format!("{}: no current cluster", path.display())))?
            .insert(
                "certificate-authority-data".into(),
                STANDARD.encode(ca_pem.as_bytes()).into(),
            );
        Ok(())
    }

    /// The document's YAML (a zeroizing buffer: it holds a key).
    pub(crate) fn render(&self, path: &Path) -> Result<Zeroizing<String>, PkiError> {
        serde_norway::to_string(&self.0)
            .map(Zeroizing::new)
            .map_err(|e| PkiError::internal(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    /// A kubeconfig whose current context is `ctx`, its cluster embedding `ca` and its user
    /// `user` (YAML of the user's fields).
    fn doc(ctx: &str, ca: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: {ctx}\nclusters:\n- name: k\n  cluster:\n    server: https://x:6443\n    certificate-authority-data: \"{ca}\"\n    x-extra: kept\ncontexts:\n- name: a@k\n  context:\n    cluster: k\n    user: a\nusers:\n- name: a\n  user: {user}\npreferences: {{}}\n"
        )
    }

    #[test]
    fn embedded_client_certificates_table() {
        let ca = b64(CERT);
        let user = format!("{{client-certificate-data: \"{}\"}}", b64(CERT));
        let rows: Vec<(String, Result<&[u8], &str>)> = vec![
            (doc("a@k", &ca, &user), Ok(&[1, 2, 3])),
            (
                doc("b@k", &ca, &user),
                Err("the current cluster has no embedded"),
            ),
            (
                doc("a@k", "", &user),
                Err("the current cluster has no embedded"),
            ),
            (
                doc("a@k", &ca, "{}"),
                Err("the current user has no embedded client-certificate-data"),
            ),
            (
                doc("a@k", &ca, "{client-certificate-data: \"%%\"}"),
                Err("client-certificate-data is not base64"),
            ),
            (
                doc(
                    "a@k",
                    &ca,
                    &format!("{{client-certificate-data: \"{}\"}}", b64("no pem")),
                ),
                Err("client certificate is not PEM"),
            ),
            ("- [".to_string(), Err("k.conf: not a kubeconfig")),
        ];
        let path = Path::new("k.conf");
        for (text, want) in rows {
            let got = Document::parse(path, &text).and_then(|mut d| d.embedded_client_cert(path));
            match (want, got) {
                (Ok(der), Ok(got)) => assert_eq!(got, der),
                (Err(fragment), Err(e)) => assert!(e.to_string().contains(fragment), "{e}"),
                (want, got) => panic!("{text}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn credentials_are_replaced_and_the_rest_kept() {
        let path = Path::new("k.conf");
        let text = doc(
            "a@k",
            &b64("old"),
            "{client-certificate-data: x, client-key-data: y, token: t}",
        );
        let mut d = Document::parse(path, &text).expect("parses");
        d.set_credentials(path, "CA", "CERT", "KEY")
            .expect("has a current context");
        let out = d.render(path).expect("renders");
        let cfg = parse(&out).expect("still a kubeconfig");
        let user = cfg.current_user().expect("user");
        assert_eq!(
            user.client_certificate_data.as_deref(),
            Some(b64("CERT").as_str())
        );
        assert_eq!(user.client_key_data.as_deref(), Some(b64("KEY").as_str()));
        assert_eq!(cfg.current_ca_pem().as_deref(), Some("CA"));
        assert!(
            out.contains("x-extra: kept") && out.contains("token: t"),
            "{}",
            *out
        );
        let mut lost = Document::parse(path, &doc("b@k", "", "{}")).expect("parses");
        let e = lost
            .set_credentials(path, "CA", "CERT", "KEY")
            .expect_err("no current context");
        assert_eq!(e.to_string(), "k.conf: no current cluster");
    }
}
