//! kube-apiserver and kube-controller-manager (built from the pinned release's Go modules)
//! judge kpki's PKI: the API server starts on the certificates of `kpki init` with the CA keys
//! on SoftHSM, every kubeconfig authenticates as the identity kubeadm gives it, the
//! controller manager takes its leader lease, and a user onboarded with
//! `kpki kubeconfig user --rbac` gets exactly the access the printed binding grants.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use kpki_e2e::cluster::{Cluster, Options, eventually};
use kpki_e2e::text;

#[test]
fn kube_apiserver_accepts_every_kubeconfig_and_the_controller_manager_leads() {
    let c = Cluster::start(Options {
        controller_manager: true,
        ..Options::default()
    });

    let expected: [(&str, &str, &[&str]); 5] = [
        (
            "admin.conf",
            "kubernetes-admin",
            &["kubeadm:cluster-admins", "system:authenticated"],
        ),
        (
            "super-admin.conf",
            "kubernetes-super-admin",
            &["system:masters", "system:authenticated"],
        ),
        (
            "controller-manager.conf",
            "system:kube-controller-manager",
            &["system:authenticated"],
        ),
        (
            "scheduler.conf",
            "system:kube-scheduler",
            &["system:authenticated"],
        ),
        (
            "kubelet.conf",
            "system:node:cp1",
            &["system:nodes", "system:authenticated"],
        ),
    ];
    for (file, user, groups) in expected {
        let (u, g) = c.whoami(&c.path(file));
        assert_eq!(u, user, "{file}");
        assert_eq!(g, groups, "{file}");
    }

    // admin.conf's group is bound to cluster-admin (the binding kubeadm creates).
    let out = c.kubectl("admin.conf", &["get", "namespaces", "-o", "name"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"));

    // kube-controller-manager runs on controller-manager.conf and takes its lease.
    let half_second = Duration::from_millis(500);
    eventually(
        "kube-controller-manager's lease",
        Duration::from_secs(90),
        half_second,
        || {
            let out = c.kubectl(
                "admin.conf",
                &[
                    "get",
                    "lease",
                    "-n",
                    "kube-system",
                    "kube-controller-manager",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ],
            );
            let holder = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !holder.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{:?}\n--- its log:\n{}",
                    text(&out),
                    c.controller_manager_log()
                ))
            }
        },
    );
    // …and acts as a controller: the root CA ConfigMap it publishes carries kpki's ca.crt.
    let ca = std::fs::read_to_string(c.pki().join("ca.crt")).unwrap();
    eventually(
        "kube-root-ca.crt with kpki's ca.crt",
        Duration::from_secs(60),
        half_second,
        || {
            let out = c.kubectl(
                "admin.conf",
                &[
                    "get",
                    "configmap",
                    "-n",
                    "default",
                    "kube-root-ca.crt",
                    "-o",
                    "jsonpath={.data.ca\\.crt}",
                ],
            );
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == ca.trim() {
                Ok(())
            } else {
                Err(format!(
                    "{:?}\n--- controller manager:\n{}",
                    text(&out),
                    c.controller_manager_log()
                ))
            }
        },
    );
}

#[test]
fn a_user_from_kpki_kubeconfig_user_gets_exactly_the_printed_binding() {
    // `view` is an aggregated ClusterRole: kube-controller-manager fills in its rules.
    let c = Cluster::start(Options {
        controller_manager: true,
        ..Options::default()
    });
    let jane = c.path("jane.conf");
    let out = c.kpki(&[
        "kubeconfig",
        "user",
        "--client-name",
        "jane",
        "--org",
        "dev",
        "--out",
        jane.to_str().unwrap(),
        "--rbac",
        "clusterrole=view,namespace=dev",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        c.whoami(&jane),
        (
            "jane".into(),
            vec!["dev".into(), "system:authenticated".into()]
        )
    );

    // Before the binding: nothing.
    let out = c.kubectl_with(&jane, &["get", "pods", "-n", "dev"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "{:?}",
        text(&out)
    );

    let out = c.kubectl("admin.conf", &["create", "namespace", "dev"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let rbac = c.path("jane-rbac.yaml");
    let out = c.kubectl("admin.conf", &["apply", "-f", rbac.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));

    // The authorizer sees the binding once its informer has it.
    eventually(
        "jane lists pods in dev",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let out = c.kubectl_with(&jane, &["get", "pods", "-n", "dev"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("{:?}", text(&out)))
            }
        },
    );
    let out = c.kubectl_with(&jane, &["get", "pods", "-n", "default"]);
    assert!(
        !out.status.success(),
        "jane must not list default: {:?}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "{:?}",
        text(&out)
    );
    // view grants no writes.
    let out = c.kubectl_with(&jane, &["create", "configmap", "x", "-n", "dev"]);
    assert!(!out.status.success(), "{:?}", text(&out));
}

/// An enterprise-style cluster CA whose subject repeats an attribute
/// (`DC=com, DC=example, CN=k8s-ca`), made with openssl: kube-apiserver (Go's verifier, via
/// `--client-ca-file`) must accept what `kpki init`, `kpki certs renew` and `kpki sign`
/// issue under it — the issuer of each must be the CA's exact subject.
#[test]
fn a_ca_with_repeated_attributes_issues_certificates_go_accepts() {
    let ca_dir = tempfile::tempdir().unwrap();
    let (ca_crt, ca_key) =
        kpki_e2e::openssl_ca(ca_dir.path(), "ca", "p256", "/DC=com/DC=example/CN=k8s-ca");
    let c = Cluster::start(Options {
        ca_files: Some((ca_crt.clone(), ca_key.clone())),
        ..Options::default()
    });
    let ca_subject = {
        let pem = pem::parse(std::fs::read(c.pki().join("ca.crt")).unwrap()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(pem.contents()).unwrap();
        cert.subject().as_raw().to_vec()
    };
    let issuer_of = |path: &std::path::Path| {
        let pem = pem::parse(std::fs::read(path).unwrap()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(pem.contents()).unwrap();
        cert.issuer().as_raw().to_vec()
    };

    // init: the API server's serving certificate and admin.conf's client certificate.
    assert_eq!(issuer_of(&c.pki().join("apiserver.crt")), ca_subject);
    assert_eq!(c.whoami(&c.path("admin.conf")).0, "kubernetes-admin");

    // renew: a kubeconfig's client certificate, re-issued.
    let out = c.kpki(&["certs", "renew", "admin.conf"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(c.whoami(&c.path("admin.conf")).0, "kubernetes-admin");

    // sign: a user's request, assembled into a kubeconfig by kubectl.
    let key = c.path("sam.key");
    kpki_e2e::openssl_key(&key, "p256");
    let csr = c.path("sam.csr");
    std::fs::write(&csr, kpki_e2e::openssl_req(&key, "/CN=sam/O=dev", &[])).unwrap();
    let out = c.kpki(&["sign", csr.to_str().unwrap()]);
    assert!(out.status.success(), "kpki sign: {:?}", text(&out));
    let crt = c.path("sam.crt");
    std::fs::write(&crt, &out.stdout).unwrap();
    assert_eq!(issuer_of(&crt), ca_subject);
    let sam = c.path("sam.conf");
    std::fs::copy(c.path("admin.conf"), &sam).unwrap();
    let out = c.kubectl_with(
        &sam,
        &[
            "config",
            "set-credentials",
            "kubernetes-admin",
            "--embed-certs=true",
            &format!("--client-certificate={}", crt.display()),
            &format!("--client-key={}", key.display()),
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(
        c.whoami(&sam),
        (
            "sam".into(),
            vec!["dev".into(), "system:authenticated".into()]
        )
    );
}
