//! The real Kubernetes peers the tests judge kpki against: kube-apiserver,
//! kube-controller-manager, kubeadm and etcd, built from Go modules by
//! `scripts/build-kubernetes` (versions in `scripts/peers.env`) and cached under
//! `$KPKI_PEERS_DIR` (default `$HOME/.cache/kpki/peers`). A missing binary fails the test with
//! the command that builds it.

use std::path::PathBuf;

const PEERS_ENV: &str = include_str!("../../scripts/peers.env");

fn pinned(name: &str) -> &'static str {
    PEERS_ENV
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("scripts/peers.env has no {name}"))
}

/// The pinned Kubernetes release (`v1.x.y`).
pub fn kubernetes_version() -> &'static str {
    pinned("KPKI_K8S_VERSION")
}

/// The pinned etcd release.
pub fn etcd_version() -> &'static str {
    pinned("KPKI_ETCD_VERSION")
}

fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KPKI_PEERS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache/kpki/peers")
}

fn binary(dir: String, name: &str) -> PathBuf {
    let path = root().join(dir).join("bin").join(name);
    assert!(
        path.is_file(),
        "{} not found: run scripts/build-kubernetes (scripts/setup does; the first build of the \
         Kubernetes {} peers from Go modules takes a while)",
        path.display(),
        kubernetes_version()
    );
    path
}

/// A Kubernetes binary of the pinned release (`kube-apiserver`, `kube-controller-manager`,
/// `kubeadm`).
pub fn kubernetes(name: &str) -> PathBuf {
    binary(format!("kubernetes-{}", kubernetes_version()), name)
}

/// The etcd binary of the pinned release.
pub fn etcd() -> PathBuf {
    binary(format!("etcd-{}", etcd_version()), "etcd")
}
