//! `kpki certs renew` with CA keys on a SoftHSM token: every renewed certificate verifies and
//! keeps subject, SANs and EKUs; keys and serials change; kubeconfigs keep everything but the
//! client credentials; kubelet.conf is untouched; kubectl works with the renewed admin.conf;
//! and SIGKILLs at random points never leave a mismatched pair after the next run.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use kpki_e2e::tls_server;
use kpki_e2e::{hsm, init_cluster, kpki, openssl, p11kit, text};
use x509_parser::prelude::*;

const LEAVES: &[(&str, &str, &str)] = &[
    ("apiserver", "ca", "sslserver"),
    ("apiserver-kubelet-client", "ca", "sslclient"),
    ("front-proxy-client", "front-proxy-ca", "sslclient"),
    ("etcd/server", "etcd/ca", "sslserver"),
    ("etcd/peer", "etcd/ca", "sslserver"),
    ("etcd/healthcheck-client", "etcd/ca", "sslclient"),
    ("apiserver-etcd-client", "etcd/ca", "sslclient"),
];
const KUBECONFIGS: &[&str] = &[
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

/// Subject, SANs, EKU, SPKI and serial of a DER certificate.
fn facts(der: &[u8]) -> (String, String, String, Vec<u8>, Vec<u8>) {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    let san = c
        .subject_alternative_name()
        .unwrap()
        .map(|s| format!("{:?}", s.value.general_names))
        .unwrap_or_default();
    let eku = c
        .extended_key_usage()
        .unwrap()
        .map(|e| format!("{:?}", e.value))
        .unwrap_or_default();
    (
        c.subject().to_string(),
        san,
        eku,
        c.public_key().raw.to_vec(),
        c.raw_serial().to_vec(),
    )
}

fn pem_der(bytes: &[u8]) -> Vec<u8> {
    ::pem::parse(bytes).unwrap().into_contents()
}

fn kubeconfig_cert(path: &Path) -> (Vec<u8>, serde_json::Value) {
    let doc: serde_json::Value = serde_norway_to_json(&std::fs::read_to_string(path).unwrap());
    use base64::Engine;
    let data = doc["users"][0]["user"]["client-certificate-data"]
        .as_str()
        .unwrap();
    let cert = pem_der(
        &base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    );
    let mut rest = doc.clone();
    let user = rest["users"][0]["user"].as_object_mut().unwrap();
    user.remove("client-certificate-data");
    user.remove("client-key-data");
    (cert, rest)
}

fn serde_norway_to_json(yaml: &str) -> serde_json::Value {
    serde_norway::from_str(yaml).unwrap()
}

fn init(root: &Path, token: &hsm::TestToken, alg: &str, prefix: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "init",
        "--dir",
        root.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "127.0.0.1",
        "--encryption-algorithm",
        alg,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut keys = Vec::new();
    for ca in ["ca", "front-proxy-ca", "etcd-ca"] {
        keys.push("--key".to_string());
        keys.push(format!("{ca}={}", token.key_uri(&format!("{prefix}-{ca}"))));
    }
    args.extend(keys.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kpki(&refs);
    assert!(out.status.success(), "{:?}", text(&out));
    keys
}

fn renew_all(root: &Path, keys: &[String]) -> std::process::Output {
    let mut args: Vec<&str> = vec![
        "certs",
        "renew",
        "all",
        "--dir",
        root.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "127.0.0.1",
    ];
    args.extend(keys.iter().map(String::as_str));
    kpki(&args)
}

#[test]
fn renew_all_with_token_held_cas() {
    hsm::require_tool("kubectl");
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let keys = init(&root, &token, "ECDSA-P256", "r");
    let pki = root.join("pki");
    let before_leaves: Vec<_> = LEAVES
        .iter()
        .map(|(b, _, _)| {
            facts(&pem_der(
                &std::fs::read(pki.join(format!("{b}.crt"))).unwrap(),
            ))
        })
        .collect();
    let before_kc: Vec<_> = KUBECONFIGS
        .iter()
        .map(|f| kubeconfig_cert(&root.join(f)))
        .collect();
    let kubelet = std::fs::read(root.join("kubelet.conf")).unwrap();
    let ca_before = std::fs::read(pki.join("ca.crt")).unwrap();

    let out = renew_all(&root, &keys);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("certificate for serving the Kubernetes API renewed"),
        "{stdout}"
    );
    assert!(stdout.contains("Done renewing certificates. You must restart the kube-apiserver, kube-controller-manager, kube-scheduler and etcd"), "{stdout}");

    for ((base, ca, purpose), old) in LEAVES.iter().zip(&before_leaves) {
        let crt = pki.join(format!("{base}.crt"));
        let out = openssl(&[
            "verify",
            "-CAfile",
            pki.join(format!("{ca}.crt")).to_str().unwrap(),
            "-purpose",
            purpose,
            crt.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{base}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let new = facts(&pem_der(&std::fs::read(&crt).unwrap()));
        assert_eq!(
            (&new.0, &new.1, &new.2),
            (&old.0, &old.1, &old.2),
            "{base}: subject/SANs/EKU changed"
        );
        assert_ne!(new.3, old.3, "{base}: key not changed");
        assert_ne!(new.4, old.4, "{base}: serial not changed");
        let key = openssl(&[
            "pkey",
            "-in",
            pki.join(format!("{base}.key")).to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ]);
        assert_eq!(
            key.stdout, new.3,
            "{base}: key and certificate do not match"
        );
    }
    for (file, (old_cert, old_rest)) in KUBECONFIGS.iter().zip(&before_kc) {
        let (new_cert, new_rest) = kubeconfig_cert(&root.join(file));
        assert_eq!(
            &new_rest, old_rest,
            "{file}: fields other than the client credentials changed"
        );
        let (o, n) = (facts(old_cert), facts(&new_cert));
        assert_eq!((&n.0, &n.2), (&o.0, &o.2), "{file}");
        assert_ne!(n.3, o.3);
        assert_ne!(n.4, o.4);
        let tmp = dir.path().join("kc.crt");
        std::fs::write(
            &tmp,
            ::pem::encode(&::pem::Pem::new("CERTIFICATE", new_cert.clone())),
        )
        .unwrap();
        assert!(
            openssl(&[
                "verify",
                "-CAfile",
                pki.join("ca.crt").to_str().unwrap(),
                "-purpose",
                "sslclient",
                tmp.to_str().unwrap()
            ])
            .status
            .success(),
            "{file}"
        );
    }
    assert_eq!(
        std::fs::read(root.join("kubelet.conf")).unwrap(),
        kubelet,
        "kubelet.conf must be untouched"
    );
    assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), ca_before);
    assert!(
        !pki.join("ca.key").exists(),
        "token-held CA has no key file"
    );

    // kubectl with the renewed admin.conf against a server presenting the renewed apiserver.crt.
    let server = tls_server::start(
        &pki.join("apiserver.crt"),
        &pki.join("apiserver.key"),
        &pki.join("ca.crt"),
    );
    let out = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            root.join("admin.conf").to_str().unwrap(),
            "--server",
            &format!("https://127.0.0.1:{}", server.port),
            "get",
            "--raw",
            "/api",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let seen = server.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|i| i.user == "kubernetes-admin"
            && i.groups == vec!["kubeadm:cluster-admins".to_string()]),
        "{seen:?}"
    );

    // One certificate by name.
    let mut args: Vec<&str> = vec![
        "certs",
        "renew",
        "etcd-peer",
        "--dir",
        root.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "127.0.0.1",
    ];
    args.extend(keys.iter().map(String::as_str));
    let out = kpki(&args);
    assert!(
        text(&out).0.contains("You must restart etcd"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn renew_refusals_missing_and_external() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_cluster(
        &root,
        "10.0.0.10",
        &["--encryption-algorithm", "ECDSA-P256"],
    );
    let before = std::fs::read(root.join("pki/apiserver.crt")).unwrap();
    let out = kpki(&[
        "certs",
        "renew",
        "apiserver-typo",
        "--dir",
        root.to_str().unwrap(),
    ]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown certificate name \"apiserver-typo\""),
        "{err}"
    );
    assert_eq!(
        std::fs::read(root.join("pki/apiserver.crt")).unwrap(),
        before,
        "nothing written"
    );

    std::fs::remove_file(root.join("pki/etcd/peer.crt")).unwrap();
    std::fs::remove_file(root.join("pki/front-proxy-ca.key")).unwrap();
    let out = kpki(&[
        "certs",
        "renew",
        "all",
        "--dir",
        root.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "10.0.0.10",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("MISSING! certificate for etcd nodes to communicate with each other"),
        "{stdout}"
    );
    assert!(stdout.contains("Detected external front-proxy-ca, certificate for the front proxy client can't be renewed"), "{stdout}");
    assert!(!root.join("pki/etcd/peer.crt").exists());
}

/// kpki is killed (SIGKILL) at random points of `certs renew all`; the CA keys are reached
/// through `p11-kit server`, as a network HSM would be: SoftHSMv2 rewrites its
/// `token.object` in place on every C_Login, so a process killed inside that write (which
/// this test would do to a kpki process using the module directly) empties the token — the
/// store's weakness, documented in docs/hsm.md, not what this test is about.
#[test]
fn renew_killed_at_random_points_never_leaves_a_mismatched_pair() {
    p11kit::require();
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init(&root, &token, "RSA-2048", "k");
    let socket = dir.path().join("p11kit.sock");
    let server = p11kit::start_server(&socket, &token.label);
    p11kit::use_server(&socket);
    let keys: Vec<String> = ["ca", "front-proxy-ca", "etcd-ca"]
        .iter()
        .flat_map(|ca| {
            [
                "--key".to_string(),
                format!("{ca}={}", p11kit::key_uri(&token, &format!("k-{ca}"))),
            ]
        })
        .collect();
    let pki = root.join("pki");
    for trial in 0..20 {
        let mut args: Vec<String> = [
            "certs",
            "renew",
            "all",
            "--dir",
            root.to_str().unwrap(),
            "--node-name",
            "cp1",
            "--advertise-address",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(keys.iter().cloned());
        let delay = kpki_e2e::kill_kpki_at_random(&args, 1500);
        let out = renew_all(&root, &keys);
        assert!(
            out.status.success(),
            "trial {trial} ({delay} ms): {:?}",
            text(&out)
        );
        for (base, ca, purpose) in LEAVES {
            let crt = pki.join(format!("{base}.crt"));
            let cert = facts(&pem_der(&std::fs::read(&crt).unwrap()));
            let key = openssl(&[
                "pkey",
                "-in",
                pki.join(format!("{base}.key")).to_str().unwrap(),
                "-pubout",
                "-outform",
                "DER",
            ]);
            assert_eq!(
                key.stdout, cert.3,
                "trial {trial} ({delay} ms): {base} key/cert mismatch"
            );
            let v = openssl(&[
                "verify",
                "-CAfile",
                pki.join(format!("{ca}.crt")).to_str().unwrap(),
                "-purpose",
                purpose,
                crt.to_str().unwrap(),
            ]);
            assert!(v.status.success(), "trial {trial}: {base}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(&pki)
            .unwrap()
            .chain(std::fs::read_dir(pki.join("etcd")).unwrap())
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".kpki-new"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "trial {trial}: staged files left: {leftovers:?}"
        );
    }
    p11kit::stop_server(server);
}
