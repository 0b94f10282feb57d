//! kubeadm's PKI as data: the three CAs, the seven leaf certificates and the five
//! kubeconfigs, with everything that differs between entries. `init`, `renew`,
//! `check-expiration` and `generate-csr` all walk these tables, through the queries at the
//! end of this module: the entries for a cluster (the local-etcd filter), lookups by id or
//! name, the file paths of an entry, and which kubeconfigs kpki renews.

use std::path::{Path, PathBuf};

/// Which CA an entry belongs to; also the `[keys]` name of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaId {
    /// `ca`: the cluster CA.
    Ca,
    /// `front-proxy-ca`: the aggregation-layer CA.
    FrontProxyCa,
    /// `etcd-ca`: the etcd CA.
    EtcdCa,
}

/// Extended key usages kubeadm puts in leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication.
    ServerAuth,
    /// TLS client authentication.
    ClientAuth,
}

/// How the subject CN of an entry is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cn {
    /// A fixed name.
    Fixed(&'static str),
    /// The node name (`nodeRegistration.name`).
    NodeName,
    /// `system:node:<node name>`.
    SystemNode,
}

impl Cn {
    /// The CN on the node named `node`.
    pub(crate) fn for_node(self, node: &str) -> String {
        match self {
            Cn::Fixed(s) => s.to_string(),
            Cn::NodeName => node.to_string(),
            Cn::SystemNode => format!("system:node:{node}"),
        }
    }
}

/// Which SAN rule of the reference (§1.3) applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanRule {
    /// No SANs (client certificates).
    None,
    /// The kube-apiserver serving SANs.
    ApiServer,
    /// etcd server SANs (base set + `serverCertSANs`).
    EtcdServer,
    /// etcd peer SANs (base set + `peerCertSANs`).
    EtcdPeer,
}

/// A CA of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct CaSpec {
    /// Which CA.
    pub id: CaId,
    /// kubeadm's name (`ca`, `front-proxy-ca`, `etcd-ca`), also the `[keys]` entry.
    pub name: &'static str,
    /// Path of `<base>.crt` / `<base>.key` relative to the certificate directory.
    pub base: &'static str,
    /// Subject CN (also the CA's one DNS SAN).
    pub cn: &'static str,
    /// Only with local (stacked) etcd.
    pub local_etcd_only: bool,
}

/// A leaf certificate of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct LeafSpec {
    /// kubeadm's name (`apiserver`, `etcd-server`, ...).
    pub name: &'static str,
    /// Path of `<base>.crt` / `<base>.key` relative to the certificate directory.
    pub base: &'static str,
    /// Issuing CA.
    pub ca: CaId,
    /// Subject CN.
    pub cn: Cn,
    /// Subject O values.
    pub orgs: &'static [&'static str],
    /// Extended key usages, in order.
    pub usages: &'static [Usage],
    /// SAN rule.
    pub sans: SanRule,
    /// Only with local (stacked) etcd.
    pub local_etcd_only: bool,
    /// kubeadm's long name (what `certs renew` prints).
    pub long_name: &'static str,
    /// Components to restart after renewing it.
    pub restart: &'static [&'static str],
}

/// Which API server URL a kubeconfig points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `controlPlaneEndpoint` (falls back to the local endpoint).
    ControlPlane,
    /// This node's `advertiseAddress:bindPort`.
    Local,
}

/// A kubeconfig of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct KubeconfigSpec {
    /// File name in the kubeconfig directory.
    pub file: &'static str,
    /// Client certificate CN (also the user name).
    pub cn: Cn,
    /// Client certificate O values.
    pub orgs: &'static [&'static str],
    /// Which server URL.
    pub server: Server,
    /// kubeadm's long name (what `certs renew` prints).
    pub long_name: &'static str,
    /// Components to restart after renewing it (none for users' kubeconfigs).
    pub restart: &'static [&'static str],
    /// Renewed by `certs renew` and listed by `check-expiration`; false for `kubelet.conf`,
    /// whose client certificate the kubelet rotates itself.
    pub renewable: bool,
}

/// The three CAs.
pub(crate) const CAS: [CaSpec; 3] = [
    CaSpec {
        id: CaId::Ca,
        name: "ca",
        base: "ca",
        cn: "kubernetes",
        local_etcd_only: false,
    },
    CaSpec {
        id: CaId::FrontProxyCa,
        name: "front-proxy-ca",
        base: "front-proxy-ca",
        cn: "front-proxy-ca",
        local_etcd_only: false,
    },
    CaSpec {
        id: CaId::EtcdCa,
        name: "etcd-ca",
        base: "etcd/ca",
        cn: "etcd-ca",
        local_etcd_only: true,
    },
];

const API: &[&str] = &["kube-apiserver"];
const ETCD: &[&str] = &["etcd"];

const SERVER: &[Usage] = &[Usage::ServerAuth];
const CLIENT: &[Usage] = &[Usage::ClientAuth];
const SERVER_CLIENT: &[Usage] = &[Usage::ServerAuth, Usage::ClientAuth];

/// The seven leaf certificates (three without local etcd); with `sa` the "eight pairs".
pub const LEAVES: [LeafSpec; 7] = [
    LeafSpec {
        name: "apiserver",
        base: "apiserver",
        ca: CaId::Ca,
        cn: Cn::Fixed("kube-apiserver"),
        orgs: &[],
        usages: SERVER,
        sans: SanRule::ApiServer,
        local_etcd_only: false,
        long_name: "certificate for serving the Kubernetes API",
        restart: API,
    },
    LeafSpec {
        name: "apiserver-kubelet-client",
        base: "apiserver-kubelet-client",
        ca: CaId::Ca,
        cn: Cn::Fixed("kube-apiserver-kubelet-client"),
        // No O, as kubeadm v1.37 writes it: kube-apiserver reaches kubelets as this user,
        // bound to `system:kubelet-api-admin` by kubeadm's `kubeadm:apiserver-kubelet-client`
        // ClusterRoleBinding (earlier releases wrote O=kubeadm:cluster-admins).
        orgs: &[],
        usages: CLIENT,
        sans: SanRule::None,
        local_etcd_only: false,
        long_name: "certificate for the API server to connect to kubelet",
        restart: API,
    },
    LeafSpec {
        name: "front-proxy-client",
        base: "front-proxy-client",
        ca: CaId::FrontProxyCa,
        cn: Cn::Fixed("front-proxy-client"),
        orgs: &[],
        usages: CLIENT,
        sans: SanRule::None,
        local_etcd_only: false,
        long_name: "certificate for the front proxy client",
        restart: API,
    },
    LeafSpec {
        name: "etcd-server",
        base: "etcd/server",
        ca: CaId::EtcdCa,
        cn: Cn::NodeName,
        orgs: &[],
        usages: SERVER_CLIENT,
        sans: SanRule::EtcdServer,
        local_etcd_only: true,
        long_name: "certificate for serving etcd",
        restart: ETCD,
    },
    LeafSpec {
        name: "etcd-peer",
        base: "etcd/peer",
        ca: CaId::EtcdCa,
        cn: Cn::NodeName,
        orgs: &[],
        usages: SERVER_CLIENT,
        sans: SanRule::EtcdPeer,
        local_etcd_only: true,
        long_name: "certificate for etcd nodes to communicate with each other",
        restart: ETCD,
    },
    LeafSpec {
        name: "etcd-healthcheck-client",
        base: "etcd/healthcheck-client",
        ca: CaId::EtcdCa,
        cn: Cn::Fixed("kube-etcd-healthcheck-client"),
        orgs: &[],
        usages: CLIENT,
        sans: SanRule::None,
        local_etcd_only: true,
        long_name: "certificate for liveness probes to healthcheck etcd",
        restart: ETCD,
    },
    LeafSpec {
        name: "apiserver-etcd-client",
        base: "apiserver-etcd-client",
        ca: CaId::EtcdCa,
        cn: Cn::Fixed("kube-apiserver-etcd-client"),
        orgs: &[],
        usages: CLIENT,
        sans: SanRule::None,
        local_etcd_only: true,
        long_name: "certificate the apiserver uses to access etcd",
        restart: API,
    },
];

/// The five kubeconfigs.
pub const KUBECONFIGS: [KubeconfigSpec; 5] = [
    KubeconfigSpec {
        file: "admin.conf",
        cn: Cn::Fixed("kubernetes-admin"),
        orgs: &["kubeadm:cluster-admins"],
        server: Server::ControlPlane,
        long_name: "certificate embedded in the kubeconfig file for the admin to use and for kubeadm itself",
        restart: &[],
        renewable: true,
    },
    KubeconfigSpec {
        file: "super-admin.conf",
        cn: Cn::Fixed("kubernetes-super-admin"),
        orgs: &["system:masters"],
        server: Server::ControlPlane,
        long_name: "certificate embedded in the kubeconfig file for the super-admin",
        restart: &[],
        renewable: true,
    },
    KubeconfigSpec {
        file: "controller-manager.conf",
        cn: Cn::Fixed("system:kube-controller-manager"),
        orgs: &[],
        server: Server::Local,
        long_name: "certificate embedded in the kubeconfig file for the controller manager to use",
        restart: &["kube-controller-manager"],
        renewable: true,
    },
    KubeconfigSpec {
        file: "scheduler.conf",
        cn: Cn::Fixed("system:kube-scheduler"),
        orgs: &[],
        server: Server::Local,
        long_name: "certificate embedded in the kubeconfig file for the scheduler manager to use",
        restart: &["kube-scheduler"],
        renewable: true,
    },
    // ControlPlaneKubeletLocalMode is on by default since 1.33: the kubelet talks to its own API server.
    KubeconfigSpec {
        file: "kubelet.conf",
        cn: Cn::SystemNode,
        orgs: &["system:nodes"],
        server: Server::Local,
        long_name: "certificate embedded in the kubeconfig file for the kubelet to use",
        restart: &["kubelet"],
        renewable: false,
    },
];

/// The certificate file `<base>.crt` under `dir`.
pub(crate) fn cert_path(dir: &Path, base: &str) -> PathBuf {
    dir.join(format!("{base}.crt"))
}

/// The private key file `<base>.key` under `dir`.
pub(crate) fn key_path(dir: &Path, base: &str) -> PathBuf {
    dir.join(format!("{base}.key"))
}

/// The certificate request file `<base>.csr` under `dir` (`generate-csr`).
pub fn csr_path(dir: &Path, base: &str) -> PathBuf {
    dir.join(format!("{base}.csr"))
}

/// The CAs a cluster has, in table order: the etcd CA only with local (stacked) etcd.
pub fn cas(local_etcd: bool) -> impl Iterator<Item = &'static CaSpec> {
    CAS.iter().filter(move |c| local_etcd || !c.local_etcd_only)
}

/// The leaf certificates a cluster has, in table order: etcd's only with local etcd.
pub fn leaves(local_etcd: bool) -> impl Iterator<Item = &'static LeafSpec> {
    LEAVES
        .iter()
        .filter(move |l| local_etcd || !l.local_etcd_only)
}

/// The kubeconfigs kpki renews and `check-expiration` lists: all but `kubelet.conf`.
pub(crate) fn renewable_kubeconfigs() -> impl Iterator<Item = &'static KubeconfigSpec> {
    KUBECONFIGS.iter().filter(|k| k.renewable)
}

/// The CA `id`.
pub fn ca(id: CaId) -> &'static CaSpec {
    match id {
        CaId::Ca => &CAS[0],
        CaId::FrontProxyCa => &CAS[1],
        CaId::EtcdCa => &CAS[2],
    }
}

/// The leaf named `name` (kubeadm's name, e.g. `apiserver`).
#[cfg(test)]
pub(crate) fn leaf(name: &str) -> Option<&'static LeafSpec> {
    LEAVES.iter().find(|l| l.name == name)
}

impl CaSpec {
    /// Its certificate file under the certificate directory `cert_dir`.
    pub(crate) fn cert_path(&self, cert_dir: &Path) -> PathBuf {
        cert_path(cert_dir, self.base)
    }

    /// Its key file under `cert_dir` (where kubeadm keeps it; `[keys]` may say otherwise).
    pub(crate) fn key_path(&self, cert_dir: &Path) -> PathBuf {
        key_path(cert_dir, self.base)
    }
}

impl LeafSpec {
    /// Its certificate file under the certificate directory `cert_dir`.
    pub(crate) fn cert_path(&self, cert_dir: &Path) -> PathBuf {
        cert_path(cert_dir, self.base)
    }

    /// Its key file under `cert_dir`.
    pub(crate) fn key_path(&self, cert_dir: &Path) -> PathBuf {
        key_path(cert_dir, self.base)
    }

    /// Its certificate request file under `cert_dir` (`generate-csr`).
    pub fn csr_path(&self, cert_dir: &Path) -> PathBuf {
        csr_path(cert_dir, self.base)
    }

    /// The CA that issues it.
    #[cfg(test)]
    pub(crate) fn issuer(&self) -> &'static CaSpec {
        ca(self.ca)
    }
}

impl KubeconfigSpec {
    /// The API server URL it points at for the cluster `spec`.
    pub(crate) fn server_url(&self, spec: &crate::config::ClusterSpec) -> String {
        match self.server {
            Server::ControlPlane => spec.control_plane_url(),
            Server::Local => spec.local_url(),
        }
    }

    /// Its file under the kubeconfig directory `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(self.file)
    }

    /// Its certificate request file under `dir` (`generate-csr`: `<file>.csr`).
    pub fn csr_path(&self, dir: &Path) -> PathBuf {
        csr_path(dir, self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<T>(
        items: impl Iterator<Item = T>,
        name: impl Fn(&T) -> &'static str,
    ) -> Vec<&'static str> {
        items.map(|i| name(&i)).collect()
    }

    #[test]
    fn entries_for_a_cluster() {
        let table: &[(bool, &[&str], &[&str])] = &[
            (
                true,
                &["ca", "front-proxy-ca", "etcd-ca"],
                &[
                    "apiserver",
                    "apiserver-kubelet-client",
                    "front-proxy-client",
                    "etcd-server",
                    "etcd-peer",
                    "etcd-healthcheck-client",
                    "apiserver-etcd-client",
                ],
            ),
            (
                false,
                &["ca", "front-proxy-ca"],
                &[
                    "apiserver",
                    "apiserver-kubelet-client",
                    "front-proxy-client",
                ],
            ),
        ];
        for (local, want_cas, want_leaves) in table {
            assert_eq!(
                names(cas(*local), |c| c.name),
                *want_cas,
                "local etcd {local}"
            );
            assert_eq!(
                names(leaves(*local), |l| l.name),
                *want_leaves,
                "local etcd {local}"
            );
        }
    }

    #[test]
    fn renewable_kubeconfigs_leave_out_the_kubelet() {
        assert_eq!(
            names(renewable_kubeconfigs(), |k| k.file),
            [
                "admin.conf",
                "super-admin.conf",
                "controller-manager.conf",
                "scheduler.conf"
            ]
        );
    }

    #[test]
    fn lookups() {
        for id in [CaId::Ca, CaId::FrontProxyCa, CaId::EtcdCa] {
            assert_eq!(ca(id).id, id);
        }
        let table: &[(&str, Option<(&str, CaId)>)] = &[
            ("apiserver", Some(("apiserver", CaId::Ca))),
            (
                "front-proxy-client",
                Some(("front-proxy-client", CaId::FrontProxyCa)),
            ),
            ("etcd-server", Some(("etcd/server", CaId::EtcdCa))),
            (
                "apiserver-etcd-client",
                Some(("apiserver-etcd-client", CaId::EtcdCa)),
            ),
            ("etcd/server", None),
            ("admin.conf", None),
            ("", None),
        ];
        for (name, want) in table {
            let got = leaf(name).map(|l| (l.base, l.issuer().id));
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn kubeconfig_servers() {
        use crate::config::{ClusterSettings, Settings, resolve};
        let spec = |endpoint: Option<&str>| {
            resolve(&Settings {
                cluster: ClusterSettings {
                    node_name: Some("cp1".into()),
                    advertise_address: Some("10.0.0.10".into()),
                    control_plane_endpoint: endpoint.map(String::from),
                    ..Default::default()
                },
                ..Default::default()
            })
            .unwrap()
        };
        let table: &[(Option<&str>, &str, &str)] = &[
            (None, "admin.conf", "https://10.0.0.10:6443"),
            (None, "kubelet.conf", "https://10.0.0.10:6443"),
            (
                Some("k8s.example.com:6443"),
                "admin.conf",
                "https://k8s.example.com:6443",
            ),
            (
                Some("k8s.example.com:6443"),
                "super-admin.conf",
                "https://k8s.example.com:6443",
            ),
            (
                Some("k8s.example.com:6443"),
                "controller-manager.conf",
                "https://10.0.0.10:6443",
            ),
            (
                Some("k8s.example.com:6443"),
                "scheduler.conf",
                "https://10.0.0.10:6443",
            ),
            (
                Some("k8s.example.com:6443"),
                "kubelet.conf",
                "https://10.0.0.10:6443",
            ),
        ];
        for (endpoint, file, want) in table {
            let kc = KUBECONFIGS.iter().find(|k| k.file == *file).unwrap();
            assert_eq!(
                kc.server_url(&spec(*endpoint)),
                *want,
                "{file} {endpoint:?}"
            );
        }
    }

    #[test]
    fn paths() {
        let dir = Path::new("/etc/kubernetes/pki");
        let etcd = ca(CaId::EtcdCa);
        let server =
            leaf("etcd-server").map(|l| (l.cert_path(dir), l.key_path(dir), l.csr_path(dir)));
        let table: &[(PathBuf, &str)] = &[
            (ca(CaId::Ca).cert_path(dir), "/etc/kubernetes/pki/ca.crt"),
            (ca(CaId::Ca).key_path(dir), "/etc/kubernetes/pki/ca.key"),
            (etcd.cert_path(dir), "/etc/kubernetes/pki/etcd/ca.crt"),
            (etcd.key_path(dir), "/etc/kubernetes/pki/etcd/ca.key"),
            (
                ca(CaId::FrontProxyCa).cert_path(dir),
                "/etc/kubernetes/pki/front-proxy-ca.crt",
            ),
            (
                cert_path(dir, "apiserver"),
                "/etc/kubernetes/pki/apiserver.crt",
            ),
            (
                key_path(dir, "apiserver"),
                "/etc/kubernetes/pki/apiserver.key",
            ),
            (
                csr_path(dir, "apiserver"),
                "/etc/kubernetes/pki/apiserver.csr",
            ),
            (
                KUBECONFIGS[0].path(Path::new("/etc/kubernetes")),
                "/etc/kubernetes/admin.conf",
            ),
            (
                KUBECONFIGS[0].csr_path(Path::new("/etc/kubernetes")),
                "/etc/kubernetes/admin.conf.csr",
            ),
        ];
        for (got, want) in table {
            assert_eq!(got, Path::new(want));
        }
        let want = (
            PathBuf::from("/etc/kubernetes/pki/etcd/server.crt"),
            PathBuf::from("/etc/kubernetes/pki/etcd/server.key"),
            PathBuf::from("/etc/kubernetes/pki/etcd/server.csr"),
        );
        assert_eq!(server, Some(want));
    }
}
