//! Credentials beyond what kubeadm writes: user kubeconfigs (`kubeadm kubeconfig user`) with
//! optional RBAC bindings, component kubeconfigs (kube-proxy), and worker nodes (kubelet
//! serving certificate and client kubeconfig). All signed by the cluster CA on its backend.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kpki_signer::{KeyUri, Signer};
use kpki_soft::SoftKey;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::authority::{self, LoadedCa};
use crate::catalogue::{self, CaId, Usage};
use crate::config::{ClusterSpec, is_dns_subdomain};
use crate::keystore::KeyStore;
use crate::sans::AltNames;
use crate::store::{self, CERT_MODE, PRIVATE_MODE};
use crate::x509::{self, Profile};
use crate::{PkiError, kubeconfig};

/// Components whose kubeconfig `kubeconfig component` writes: name → (CN, O).
pub(crate) const COMPONENTS: &[(&str, &str, &[&str])] =
    &[("kube-proxy", "system:kube-proxy", &["system:node-proxier"])];

fn cluster_ca(spec: &ClusterSpec, keys: &KeyStore) -> Result<LoadedCa, PkiError> {
    authority::open(spec, keys, CaId::Ca)?.ok_or_else(|| {
        PkiError::Missing(format!(
            "the cluster CA key {} is absent; it cannot sign",
            spec.ca_key(CaId::Ca)
        ))
    })
}

fn client_kubeconfig(
    spec: &ClusterSpec,
    ca: &LoadedCa,
    profile: &Profile,
    validity: Duration,
) -> Result<Zeroizing<String>, PkiError> {
    let (key, key_pem) = SoftKey::generate(KeyUri::file("/dev/null"), spec.algorithm)?;
    let start = x509::whole_seconds(OffsetDateTime::now_utc());
    let cert = ca.signer.issue(
        x509::leaf_params(profile, start, validity)?,
        Arc::new(key) as Arc<dyn Signer>,
    )?;
    let ca_pem = ca.trust_pem();
    kubeconfig::render(
        &spec.cluster_name,
        &spec.control_plane_url(),
        &ca_pem,
        &profile.cn,
        &cert.pem,
        &key_pem,
    )
}

/// A user's kubeconfig: new key, client certificate from `ca` (CN = user, O = groups).
pub fn user_kubeconfig(
    spec: &ClusterSpec,
    keys: &KeyStore,
    user: &str,
    groups: &[String],
    validity: Duration,
    allow_system_masters: bool,
) -> Result<Zeroizing<String>, PkiError> {
    if user.is_empty() {
        return Err(PkiError::Malformed(
            "--client-name must not be empty".into(),
        ));
    }
    if groups.iter().any(|g| g == "system:masters") && !allow_system_masters {
        return Err(PkiError::Refused(
            "O=system:masters is refused (it bypasses RBAC); pass --allow-system-masters to issue it anyway"
                .into(),
        ));
    }
    let ca = cluster_ca(spec, keys)?;
    let profile = Profile {
        cn: user.to_string(),
        orgs: groups.to_vec(),
        usages: vec![Usage::ClientAuth],
        sans: AltNames::default(),
    };
    client_kubeconfig(spec, &ca, &profile, validity)
}

/// A kubeconfig for the client certificate `cert_der` issued by the cluster CA `ca_der` (e.g.
/// by `kpki sign` from a user's own CSR): the user is the certificate's CN, the key stays in
/// the user's file `key_file` (referenced, never read). Returns the user name and the YAML.
pub fn kubeconfig_for_certificate(
    spec: &ClusterSpec,
    ca_der: &[u8],
    cert_der: &[u8],
    key_file: &str,
) -> Result<(String, String), PkiError> {
    let user = certificate_user(cert_der)?;
    let yaml = kubeconfig::render_with_key_file(
        &spec.cluster_name,
        &spec.control_plane_url(),
        &x509::to_pem("CERTIFICATE", ca_der),
        &user,
        &x509::to_pem("CERTIFICATE", cert_der),
        key_file,
    )?;
    Ok((user, yaml))
}

/// The Kubernetes user of client certificate `cert_der`: its CN; refused without one.
pub fn certificate_user(cert_der: &[u8]) -> Result<String, PkiError> {
    let cert = crate::certfile::parse_at(Path::new("the issued certificate"), cert_der)?;
    let user = crate::subject::Subject::known_of(cert.subject())
        .values(crate::subject::Attr::CommonName)
        .next()
        .unwrap_or_default()
        .to_string();
    if user.is_empty() {
        return Err(PkiError::Malformed(
            "the certificate has no CN: no Kubernetes user to name".into(),
        ));
    }
    Ok(user)
}

/// The kubeconfig of a component kpki knows (`kube-proxy`).
pub fn component_kubeconfig(
    spec: &ClusterSpec,
    keys: &KeyStore,
    component: &str,
) -> Result<Zeroizing<String>, PkiError> {
    let (_, cn, orgs) = COMPONENTS
        .iter()
        .find(|(n, _, _)| *n == component)
        .ok_or_else(|| {
            PkiError::Malformed(format!(
                "unknown component {component:?}: expected {}",
                COMPONENTS
                    .iter()
                    .map(|c| c.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let ca = cluster_ca(spec, keys)?;
    let profile = Profile {
        cn: cn.to_string(),
        orgs: orgs.iter().map(|s| s.to_string()).collect(),
        usages: vec![Usage::ClientAuth],
        sans: AltNames::default(),
    };
    client_kubeconfig(spec, &ca, &profile, spec.cert_validity)
}

/// The RBAC binding for a user: a ClusterRoleBinding, or a RoleBinding in `namespace`.
pub fn rbac_manifest(
    user: &str,
    cluster_role: &str,
    namespace: Option<&str>,
) -> Result<String, PkiError> {
    let name = format!("kpki:{user}:{cluster_role}").replace(['/', '@'], "-");
    let role_ref = RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: cluster_role.into(),
    };
    let subjects = Some(vec![Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: user.into(),
        namespace: None,
    }]);
    let yaml = match namespace {
        Some(ns) => serde_norway::to_string(&RoleBinding {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            role_ref,
            subjects,
        }),
        None => serde_norway::to_string(&ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(name),
                ..Default::default()
            },
            role_ref,
            subjects,
        }),
    };
    yaml.map_err(|e| PkiError::internal(format!("RBAC manifest: {e}")))
}

/// Files written for a worker node.
#[derive(Debug, serde::Serialize)]
pub struct NodeFiles {
    /// Kubelet serving certificate.
    pub serving_cert: PathBuf,
    /// Its key.
    pub serving_key: PathBuf,
    /// Kubelet kubeconfig with its client certificate.
    pub kubeconfig: PathBuf,
}

/// A worker node's kubelet serving certificate (CN `system:node:<name>`, O `system:nodes`, SANs
/// name + addresses, serverAuth) and its client kubeconfig, under `dir`; refuses to overwrite.
pub fn add_node(
    spec: &ClusterSpec,
    keys: &KeyStore,
    name: &str,
    addresses: &[IpAddr],
    dir: &Path,
) -> Result<NodeFiles, PkiError> {
    if !is_dns_subdomain(name) {
        return Err(PkiError::Malformed(format!(
            "invalid node name {name:?}: must be a DNS-1123 subdomain"
        )));
    }
    let files = NodeFiles {
        serving_cert: catalogue::cert_path(dir, "kubelet"),
        serving_key: catalogue::key_path(dir, "kubelet"),
        kubeconfig: dir.join("kubelet.conf"),
    };
    for f in [&files.serving_cert, &files.serving_key, &files.kubeconfig] {
        if f.exists() {
            return Err(PkiError::Refused(format!(
                "{}: already exists; refusing to overwrite",
                f.display()
            )));
        }
    }
    let ca = cluster_ca(spec, keys)?;
    let cn = format!("system:node:{name}");
    let orgs = vec!["system:nodes".to_string()];
    let serving = Profile {
        cn: cn.clone(),
        orgs: orgs.clone(),
        usages: vec![Usage::ServerAuth],
        sans: AltNames {
            dns: vec![name.to_string()],
            ips: addresses.to_vec(),
        },
    };
    let (key, key_pem) = SoftKey::generate(KeyUri::file(&files.serving_key), spec.algorithm)?;
    let start = x509::whole_seconds(OffsetDateTime::now_utc());
    let cert = ca.signer.issue(
        x509::leaf_params(&serving, start, spec.cert_validity)?,
        Arc::new(key) as Arc<dyn Signer>,
    )?;
    let client = Profile {
        cn,
        orgs,
        usages: vec![Usage::ClientAuth],
        sans: AltNames::default(),
    };
    let kubeconfig = client_kubeconfig(spec, &ca, &client, spec.cert_validity)?;
    store::create(&files.serving_key, key_pem.as_bytes(), PRIVATE_MODE)?;
    store::create(
        &files.serving_cert,
        ca.leaf_file(&cert.pem).as_bytes(),
        CERT_MODE,
    )?;
    store::create(&files.kubeconfig, kubeconfig.as_bytes(), PRIVATE_MODE)?;
    Ok(files)
}
