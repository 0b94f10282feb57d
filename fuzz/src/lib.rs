//! Helpers shared by the fuzz targets.

use std::path::PathBuf;

/// Writes `data` to this process's scratch file (one per target process, rewritten for every
/// input) and returns its path, for parsers that read a file the way the commands do.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("kpki-fuzz-{}-{name}", std::process::id()));
    if let Err(e) = std::fs::write(&path, data) {
        panic!("cannot write the scratch file {}: {e}", path.display());
    }
    path
}

/// The signer names a fuzzed request may name: the Kubernetes signers, a custom one and an
/// unknown one.
pub const SIGNERS: [&str; 5] = [
    "kubernetes.io/kube-apiserver-client",
    "kubernetes.io/kube-apiserver-client-kubelet",
    "kubernetes.io/kubelet-serving",
    "example.com/mesh",
    "kubernetes.io/legacy-unknown",
];
