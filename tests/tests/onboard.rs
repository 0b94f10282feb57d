//! `kpki kubeconfig user`, `kpki kubeconfig component` and `kpki node add`: kubectl with each
//! new kubeconfig reaches the TLS test server as exactly the expected user and groups; the
//! node's serving certificate verifies for its name and address; the RBAC manifest
//! deserialises into k8s-openapi's binding types.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kpki_e2e::tls_server::{self, Identity};
use kpki_e2e::{hsm, init_cluster, kpki, openssl, text};

fn kubectl_identity(server: &tls_server::TlsServer, kubeconfig: &Path) -> Vec<Identity> {
    server.seen.lock().unwrap().clear();
    let out = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--server",
            &format!("https://127.0.0.1:{}", server.port),
            "get",
            "--raw",
            "/api",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {:?}",
        kubeconfig.display(),
        text(&out)
    );
    server.seen.lock().unwrap().clone()
}

/// Every request kubectl made was authenticated as exactly `want`.
fn expect_identity(server: &tls_server::TlsServer, kubeconfig: &Path, want: Identity) {
    let seen = kubectl_identity(server, kubeconfig);
    assert!(
        !seen.is_empty() && seen.iter().all(|i| *i == want),
        "{}: server saw {seen:?}, expected {want:?}",
        kubeconfig.display()
    );
}

fn one_line_error(out: &std::process::Output, expect: &str) {
    let (_, err) = text(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(expect), "expected {expect:?} in {err}");
}

#[test]
fn users_components_and_nodes_authenticate_as_expected() {
    hsm::require_tool("kubectl");
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let ca_key = format!("ca={}", token.key_uri("onboard-ca"));
    init_cluster(&root, "127.0.0.1", &["--key", &ca_key]);
    let pki = root.join("pki");
    let server = tls_server::start(
        &pki.join("apiserver.crt"),
        &pki.join("apiserver.key"),
        &pki.join("ca.crt"),
    );
    let base = [
        "--dir",
        root.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "127.0.0.1",
        "--key",
        ca_key.as_str(),
    ];

    // A user with a namespaced binding.
    let jane = dir.path().join("jane.conf");
    let mut args = vec![
        "kubeconfig",
        "user",
        "--client-name",
        "jane",
        "--org",
        "dev",
        "--validity",
        "24h",
        "--out",
        jane.to_str().unwrap(),
        "--rbac",
        "clusterrole=view,namespace=dev",
    ];
    args.extend(base);
    let out = kpki(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::metadata(&jane).unwrap().mode() & 0o777, 0o600);
    expect_identity(
        &server,
        &jane,
        Identity {
            user: "jane".into(),
            groups: vec!["dev".into()],
        },
    );
    let cfg = kpki_pki::kubeconfig::parse(&std::fs::read_to_string(&jane).unwrap()).unwrap();
    assert_eq!(cfg.current_context, "jane@kubernetes");
    let binding: RoleBinding = serde_norway::from_str(
        &std::fs::read_to_string(dir.path().join("jane-rbac.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(binding.metadata.namespace.as_deref(), Some("dev"));
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("ClusterRole", "view")
    );
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("User", "jane")
    );

    // A user in two groups: both O values reach the server, in order.
    let sam = dir.path().join("sam.conf");
    let mut args = vec![
        "kubeconfig",
        "user",
        "--client-name",
        "sam",
        "--org",
        "dev",
        "--org",
        "ops",
        "--out",
        sam.to_str().unwrap(),
    ];
    args.extend(base);
    let out = kpki(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    expect_identity(
        &server,
        &sam,
        Identity {
            user: "sam".into(),
            groups: vec!["dev".into(), "ops".into()],
        },
    );

    // A user on stdout with a cluster-wide binding.
    let rbac = dir.path().join("ops-rbac.yaml");
    let mut args = vec![
        "kubeconfig",
        "user",
        "--client-name",
        "ops",
        "--rbac",
        "clusterrole=cluster-admin",
        "--rbac-out",
        rbac.to_str().unwrap(),
    ];
    args.extend(base);
    let out = kpki(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    let ops = dir.path().join("ops.conf");
    std::fs::write(&ops, &out.stdout).unwrap();
    expect_identity(
        &server,
        &ops,
        Identity {
            user: "ops".into(),
            groups: vec![],
        },
    );
    let crb: ClusterRoleBinding =
        serde_norway::from_str(&std::fs::read_to_string(&rbac).unwrap()).unwrap();
    assert_eq!(crb.role_ref.name, "cluster-admin");
    assert_eq!(crb.subjects.unwrap()[0].name, "ops");

    // kube-proxy.
    let mut args = vec!["kubeconfig", "component", "kube-proxy"];
    args.extend(base);
    let out = kpki(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    expect_identity(
        &server,
        &root.join("kube-proxy.conf"),
        Identity {
            user: "system:kube-proxy".into(),
            groups: vec!["system:node-proxier".into()],
        },
    );

    // A worker node.
    let mut args = vec![
        "node",
        "add",
        "worker-1",
        "--address",
        "10.0.0.21",
        "--address",
        "fd00::21",
    ];
    args.extend(base);
    let out = kpki(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    let node = root.join("nodes/worker-1");
    expect_identity(
        &server,
        &node.join("kubelet.conf"),
        Identity {
            user: "system:node:worker-1".into(),
            groups: vec!["system:nodes".into()],
        },
    );
    assert_eq!(
        std::fs::metadata(node.join("kubelet.key")).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(node.join("kubelet.crt")).unwrap().mode() & 0o777,
        0o644
    );
    let ca = pki.join("ca.crt");
    for check in [
        ["-verify_hostname", "worker-1"],
        ["-verify_ip", "10.0.0.21"],
        ["-verify_ip", "fd00::21"],
    ] {
        let v = openssl(&[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            "-purpose",
            "sslserver",
            check[0],
            check[1],
            node.join("kubelet.crt").to_str().unwrap(),
        ]);
        assert!(
            v.status.success(),
            "{check:?}: {}",
            String::from_utf8_lossy(&v.stdout)
        );
    }
    let v = openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-verify_hostname",
        "worker-2",
        node.join("kubelet.crt").to_str().unwrap(),
    ]);
    assert!(
        !v.status.success(),
        "serving certificate must not verify for another name"
    );

    // Refusals: one line, nothing written.
    let mut args = vec![
        "kubeconfig",
        "user",
        "--client-name",
        "root",
        "--org",
        "system:masters",
    ];
    args.extend(base);
    one_line_error(&kpki(&args), "O=system:masters is refused");
    let mut args = vec![
        "kubeconfig",
        "user",
        "--client-name",
        "jane",
        "--out",
        jane.to_str().unwrap(),
    ];
    args.extend(base);
    one_line_error(&kpki(&args), "already exists");
    let x_conf = dir.path().join("x.conf");
    let mut args = vec![
        "kubeconfig",
        "user",
        "--client-name",
        "x",
        "--rbac",
        "role=view",
        "--out",
        x_conf.to_str().unwrap(),
    ];
    args.extend(base);
    // A malformed --rbac is a usage error (exit 2), still one line.
    let out = kpki(&args);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert_eq!(text(&out).1.lines().count(), 1, "{:?}", text(&out));
    assert!(text(&out).1.contains("expected clusterrole=<name>"));
    assert!(!x_conf.exists());
    let mut args = vec!["kubeconfig", "component", "kube-dns"];
    args.extend(base);
    one_line_error(&kpki(&args), "unknown component \"kube-dns\"");
    let mut args = vec!["node", "add", "worker-1", "--address", "10.0.0.21"];
    args.extend(base);
    one_line_error(&kpki(&args), "already exists; refusing to overwrite");
    let mut args = vec!["node", "add", "Bad_Name", "--address", "10.0.0.22"];
    args.extend(base);
    one_line_error(&kpki(&args), "invalid node name");
}
