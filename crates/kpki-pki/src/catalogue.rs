//! kubeadm's PKI as data: the three CAs, the seven leaf certificates and the five
//! kubeconfigs, with everything that differs between entries. `init`, `renew`,
//! `check-expiration` and `generate-csr` all walk these tables.

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
    pub fn for_node(self, node: &str) -> String {
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
}

/// The three CAs.
pub const CAS: [CaSpec; 3] = [
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
    },
    KubeconfigSpec {
        file: "super-admin.conf",
        cn: Cn::Fixed("kubernetes-super-admin"),
        orgs: &["system:masters"],
        server: Server::ControlPlane,
        long_name: "certificate embedded in the kubeconfig file for the super-admin",
        restart: &[],
    },
    KubeconfigSpec {
        file: "controller-manager.conf",
        cn: Cn::Fixed("system:kube-controller-manager"),
        orgs: &[],
        server: Server::Local,
        long_name: "certificate embedded in the kubeconfig file for the controller manager to use",
        restart: &["kube-controller-manager"],
    },
    KubeconfigSpec {
        file: "scheduler.conf",
        cn: Cn::Fixed("system:kube-scheduler"),
        orgs: &[],
        server: Server::Local,
        long_name: "certificate embedded in the kubeconfig file for the scheduler manager to use",
        restart: &["kube-scheduler"],
    },
    // ControlPlaneKubeletLocalMode is on by default since 1.33: the kubelet talks to its own API server.
    KubeconfigSpec {
        file: "kubelet.conf",
        cn: Cn::SystemNode,
        orgs: &["system:nodes"],
        server: Server::Local,
        long_name: "certificate embedded in the kubeconfig file for the kubelet to use",
        restart: &["kubelet"],
    },
];
