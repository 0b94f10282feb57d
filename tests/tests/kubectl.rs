//! kubectl with each kubeconfig `kpki init` wrote reaches a TLS server that presents
//! `apiserver.crt` and requires client certificates from `ca.crt`, and the server sees the
//! expected user and groups; kubectl rejects the server when the name it dials is not in the
//! apiserver SANs.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use kpki_e2e::tls_server::{self, Identity};
use kpki_e2e::{hsm, init_cluster, text};

fn kubectl(kubeconfig: &Path, server: &str) -> std::process::Output {
    Command::new("kubectl")
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--server",
            server,
            "--request-timeout=10s",
            "get",
            "--raw",
            "/api",
        ])
        .output()
        .unwrap()
}

#[test]
fn kubectl_authenticates_with_every_kubeconfig() {
    hsm::require_tool("kubectl");
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    init_cluster(
        root,
        "127.0.0.1",
        &["--key", &format!("ca={}", token.key_uri("kubectl-ca"))],
    );
    let pki = root.join("pki");
    let server = tls_server::start(
        &pki.join("apiserver.crt"),
        &pki.join("apiserver.key"),
        &pki.join("ca.crt"),
    );
    let url = format!("https://127.0.0.1:{}", server.port);
    let expect = [
        (
            "admin.conf",
            "kubernetes-admin",
            vec!["kubeadm:cluster-admins"],
        ),
        (
            "super-admin.conf",
            "kubernetes-super-admin",
            vec!["system:masters"],
        ),
        (
            "controller-manager.conf",
            "system:kube-controller-manager",
            vec![],
        ),
        ("scheduler.conf", "system:kube-scheduler", vec![]),
        ("kubelet.conf", "system:node:cp1", vec!["system:nodes"]),
    ];
    for (file, user, groups) in expect {
        server.seen.lock().unwrap().clear();
        let out = kubectl(&root.join(file), &url);
        assert!(out.status.success(), "{file}: {:?}", text(&out));
        assert!(
            text(&out).0.contains("APIVersions"),
            "{file}: {:?}",
            text(&out)
        );
        let seen = server.seen.lock().unwrap().clone();
        let want = Identity {
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert!(
            seen.contains(&want),
            "{file}: server saw {seen:?}, expected {want:?}"
        );
    }
    // "localhost" is not an apiserver SAN (cp1, kubernetes..., 10.96.0.1, 127.0.0.1 are).
    let out = kubectl(
        &root.join("admin.conf"),
        &format!("https://localhost:{}", server.port),
    );
    assert!(
        !out.status.success(),
        "kubectl accepted a name outside the SANs"
    );
    assert!(
        text(&out).1.contains("certificate is valid for"),
        "{:?}",
        text(&out)
    );
}
