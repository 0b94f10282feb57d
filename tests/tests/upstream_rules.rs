//! Where kpki follows upstream Kubernetes rules read from kubeadm v1.37 and the API server:
//! issuers carry the CA's exact subject bytes (a CA named `DC=com, DC=example, CN=k8s-ca`
//! made by OpenSSL, its key in a file and imported onto a SoftHSM token); expired leaves are
//! refused by `init`; renewed kubeconfigs take the CA from `ca.crt`; chain files are accepted;
//! kubeadm YAML is decoded strictly and validated like kubeadm does; CertificateSigningRequest
//! objects are refused as the API server and kube-controller-manager would.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kpki_e2e::{hsm, init_cluster, kpki, openssl, openssl_key, openssl_req, text};
use x509_parser::prelude::*;

const NODE_ARGS: &[&str] = &["--node-name", "cp1", "--advertise-address", "10.0.0.10"];

fn der_of(path: &Path) -> Vec<u8> {
    ::pem::parse(std::fs::read(path).unwrap())
        .unwrap()
        .into_contents()
}

fn subject_der(der: &[u8]) -> Vec<u8> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.tbs_certificate.subject.as_raw().to_vec()
}

fn issuer_der(der: &[u8]) -> Vec<u8> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.tbs_certificate.issuer.as_raw().to_vec()
}

/// `openssl verify -x509_strict` of `cert` against `ca`.
fn verify(ca: &Path, cert: &Path) {
    let out = openssl(&[
        "verify",
        "-x509_strict",
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}: {:?}", cert.display(), text(&out));
}

/// Asserts that `cert` (a PEM file) names `ca`'s exact subject as its issuer and verifies.
fn issued_by(ca: &Path, cert: &Path) {
    let ca_subject = subject_der(&der_of(ca));
    assert_eq!(
        issuer_der(&der_of(cert)),
        ca_subject,
        "{}: issuer bytes differ from the CA subject",
        cert.display()
    );
    verify(ca, cert);
}

/// The client certificate of a kubeconfig, written beside it as `<file>.crt`.
fn kubeconfig_cert(path: &Path) -> PathBuf {
    let doc: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let data = doc["users"][0]["user"]["client-certificate-data"]
        .as_str()
        .unwrap();
    let out = path.with_extension("conf.crt");
    std::fs::write(&out, STANDARD.decode(data).unwrap()).unwrap();
    out
}

fn kubeconfig_ca(path: &Path) -> Vec<u8> {
    let doc: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let data = doc["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    STANDARD.decode(data).unwrap()
}

/// An OpenSSL CA named `subj` (key `kind`) in `dir/<name>.crt|.key`, valid `days`.
fn openssl_ca(dir: &Path, name: &str, kind: &str, subj: &str, days: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    openssl_key(&key, kind);
    let out = openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
        "-days",
        days,
        "-subj",
        subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,digitalSignature,keyEncipherment",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    (crt, key)
}

fn run(args: &[&str]) -> (String, String) {
    let out = kpki(args);
    let t = text(&out);
    assert!(out.status.success(), "kpki {args:?}: {t:?}");
    t
}

/// Runs `kpki` and asserts one line on stderr containing `expect`, exit 1.
fn refused(args: &[&str], expect: &str) -> String {
    let out = kpki(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kpki {args:?} should be refused: {stdout}{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(expect),
        "kpki {args:?}: expected {expect:?} in {stderr}"
    );
    stderr
}

fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    v.extend_from_slice(extra);
    v
}

const ROOT_LEAVES: &[&str] = &["apiserver", "apiserver-kubelet-client"];
const KUBECONFIGS: &[&str] = &[
    "admin.conf",
    "super-admin.conf",
    "controller-manager.conf",
    "scheduler.conf",
    "kubelet.conf",
];

/// Every certificate the cluster CA issued under `root` names its exact subject and verifies.
fn check_root_ca_issuance(root: &Path) {
    let ca = root.join("pki/ca.crt");
    for leaf in ROOT_LEAVES {
        issued_by(&ca, &root.join(format!("pki/{leaf}.crt")));
    }
    for kc in KUBECONFIGS {
        issued_by(&ca, &kubeconfig_cert(&root.join(kc)));
    }
}

#[test]
fn a_ca_with_repeated_dc_attributes_issues_certificates_naming_its_exact_subject() {
    let token = hsm::token();
    for (kind, on_token) in [("rsa2048", false), ("p256", false), ("rsa2048", true)] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("n");
        let pki = root.join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        let (ca_crt, ca_key) = openssl_ca(
            dir.path(),
            "dc-ca",
            kind,
            "/DC=com/DC=example/CN=k8s-ca",
            "3650",
        );
        std::fs::copy(&ca_crt, pki.join("ca.crt")).unwrap();
        let mut keys: Vec<String> = Vec::new();
        if on_token {
            let uri = token.key_uri(&format!("dc-ca-{kind}"));
            run(&[
                "keys",
                "import",
                &uri,
                "--from",
                ca_key.to_str().unwrap(),
                "--i-understand-the-key-existed-outside-the-token",
            ]);
            keys.push("--key".into());
            keys.push(format!("ca={uri}"));
        } else {
            std::fs::copy(&ca_key, pki.join("ca.key")).unwrap();
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let dir_args = ["--dir", root.to_str().unwrap()];
        let base = with(&dir_args, NODE_ARGS);

        // init
        run(&with(&with(&["init"], &base), &keys));
        check_root_ca_issuance(&root);

        // renew
        run(&with(&with(&["certs", "renew", "all"], &base), &keys));
        check_root_ca_issuance(&root);

        // sign (PEM and object)
        let csr = dir.path().join("jane.csr");
        std::fs::write(
            &csr,
            openssl_req(
                &{
                    let k = dir.path().join("jane.key");
                    openssl_key(&k, "p256");
                    k
                },
                "/CN=jane/O=dev",
                &[],
            ),
        )
        .unwrap();
        let (pem, _) = run(&with(
            &with(&["sign", csr.to_str().unwrap()], &dir_args),
            &keys,
        ));
        let jane = dir.path().join("jane.crt");
        std::fs::write(&jane, pem).unwrap();
        issued_by(&pki.join("ca.crt"), &jane);

        // kubeconfig user
        let user = dir.path().join("jane.conf");
        run(&with(
            &with(
                &[
                    "kubeconfig",
                    "user",
                    "--client-name",
                    "jane",
                    "--out",
                    user.to_str().unwrap(),
                ],
                &dir_args,
            ),
            &keys,
        ));
        issued_by(&pki.join("ca.crt"), &kubeconfig_cert(&user));
        assert_eq!(
            kubeconfig_ca(&user),
            std::fs::read(pki.join("ca.crt")).unwrap(),
            "{kind} token={on_token}"
        );
    }
}

/// Signs `csr` with the CA `ca_crt`/`ca_key` through `openssl x509 -req` for `days` (-1 gives
/// a certificate that expired a day ago, 0 one that expires in the second it is made).
fn openssl_sign(
    csr: &Path,
    ca_crt: &Path,
    ca_key: &Path,
    days: &str,
    ext: Option<&Path>,
    out: &Path,
) {
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca_crt.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-days",
        days,
        "-out",
        out.to_str().unwrap(),
    ];
    if let Some(ext) = ext {
        args.extend(["-extfile", ext.to_str().unwrap(), "-extensions", "ext"]);
    }
    let o = openssl(&args);
    assert!(o.status.success(), "{:?}", text(&o));
}

/// Replaces `<pki>/apiserver-kubelet-client.{crt,key}` with a pair signed by `ca` for `days`.
fn replace_kubelet_client(dir: &Path, pki: &Path, days: &str) {
    let key = pki.join("apiserver-kubelet-client.key");
    openssl_key(&key, "p256");
    let csr = dir.join("kc.csr");
    std::fs::write(
        &csr,
        openssl_req(
            &key,
            "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client",
            &[],
        ),
    )
    .unwrap();
    openssl_sign(
        &csr,
        &pki.join("ca.crt"),
        &pki.join("ca.key"),
        days,
        None,
        &pki.join("apiserver-kubelet-client.crt"),
    );
}

#[test]
fn init_refuses_an_expired_leaf_naming_the_file_and_renew_repairs_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let pki = root.join("pki");
    init_cluster(&root, "10.0.0.10", &[]);
    let base = with(&["--dir", root.to_str().unwrap()], NODE_ARGS);
    // Expired yesterday, and expiring in the second it was made (NotAfter <= now at init).
    for days in ["-1", "0"] {
        replace_kubelet_client(dir.path(), &pki, days);
        let before = std::fs::read(pki.join("apiserver-kubelet-client.crt")).unwrap();
        let e = refused(
            &with(&["init"], &base),
            "apiserver-kubelet-client.crt: expired at ",
        );
        assert!(
            e.contains("kpki certs renew apiserver-kubelet-client"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(pki.join("apiserver-kubelet-client.crt")).unwrap(),
            before,
            "a refused init must not touch the file"
        );
        run(&with(
            &["certs", "renew", "apiserver-kubelet-client"],
            &base,
        ));
        run(&with(&["init"], &base));
        issued_by(
            &pki.join("ca.crt"),
            &pki.join("apiserver-kubelet-client.crt"),
        );
    }
}

#[test]
fn init_keeps_a_leaf_whose_file_carries_its_intermediate_and_renew_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let pki = root.join("pki");
    init_cluster(&root, "10.0.0.10", &[]);
    let base = with(&["--dir", root.to_str().unwrap()], NODE_ARGS);

    // An intermediate CA under ca.crt, and the leaf signed by it; the file holds leaf then
    // intermediate (kubeadm's reading order).
    let int_key = dir.path().join("int.key");
    openssl_key(&int_key, "p256");
    let int_csr = dir.path().join("int.csr");
    std::fs::write(
        &int_csr,
        openssl_req(&int_key, "/CN=kubernetes-intermediate", &[]),
    )
    .unwrap();
    let ext = dir.path().join("int.ext");
    std::fs::write(
        &ext,
        "[ext]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,digitalSignature\nsubjectKeyIdentifier=hash\n",
    )
    .unwrap();
    let int_crt = dir.path().join("int.crt");
    openssl_sign(
        &int_csr,
        &pki.join("ca.crt"),
        &pki.join("ca.key"),
        "30",
        Some(&ext),
        &int_crt,
    );
    let key = pki.join("apiserver-kubelet-client.key");
    openssl_key(&key, "p256");
    let csr = dir.path().join("leaf.csr");
    std::fs::write(
        &csr,
        openssl_req(
            &key,
            "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client",
            &[],
        ),
    )
    .unwrap();
    let leaf = dir.path().join("leaf.crt");
    openssl_sign(&csr, &int_crt, &int_key, "30", None, &leaf);
    let chain = [
        std::fs::read(&leaf).unwrap(),
        std::fs::read(&int_crt).unwrap(),
    ]
    .concat();
    let file = pki.join("apiserver-kubelet-client.crt");
    std::fs::write(&file, &chain).unwrap();

    let (stdout, _) = run(&with(&["init"], &base));
    assert!(
        stdout.contains("Using existing apiserver-kubelet-client certificate and key on disk"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        chain,
        "the chain file is kept as it is"
    );
    let out = openssl(&[
        "verify",
        "-CAfile",
        pki.join("ca.crt").to_str().unwrap(),
        "-untrusted",
        int_crt.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));

    // The leaf listed after its intermediate is not what kubeadm reads: refused.
    std::fs::write(
        &file,
        [
            std::fs::read(&int_crt).unwrap(),
            std::fs::read(&leaf).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    refused(
        &with(&["init"], &base),
        "apiserver-kubelet-client.crt: certificate does not match key",
    );
    std::fs::write(&file, &chain).unwrap();

    // An intermediate that is not a CA does not make a chain.
    let bad_int = dir.path().join("bad-int.crt");
    openssl_sign(
        &int_csr,
        &pki.join("ca.crt"),
        &pki.join("ca.key"),
        "30",
        None,
        &bad_int,
    );
    let bad_leaf = dir.path().join("bad-leaf.crt");
    openssl_sign(&csr, &bad_int, &int_key, "30", None, &bad_leaf);
    std::fs::write(
        &file,
        [
            std::fs::read(&bad_leaf).unwrap(),
            std::fs::read(&bad_int).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    refused(
        &with(&["init"], &base),
        "apiserver-kubelet-client.crt: not signed by ca.crt",
    );
    std::fs::write(&file, &chain).unwrap();

    // renew reads the first certificate and writes the renewed one alone, signed by ca.crt.
    run(&with(
        &["certs", "renew", "apiserver-kubelet-client"],
        &base,
    ));
    let renewed = std::fs::read_to_string(&file).unwrap();
    assert_eq!(renewed.matches("BEGIN CERTIFICATE").count(), 1, "{renewed}");
    issued_by(&pki.join("ca.crt"), &file);
    let der = der_of(&file);
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        c.subject().to_string(),
        "O=kubeadm:cluster-admins, CN=kube-apiserver-kubelet-client"
    );
}

#[test]
fn renewing_a_kubeconfig_takes_the_ca_from_ca_crt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let pki = root.join("pki");
    init_cluster(&root, "10.0.0.10", &[]);
    let base = with(&["--dir", root.to_str().unwrap()], NODE_ARGS);
    let old_ca = std::fs::read(pki.join("ca.crt")).unwrap();
    assert_eq!(kubeconfig_ca(&root.join("admin.conf")), old_ca);

    // The cluster CA is replaced on disk (a CA rotation).
    let (crt, key) = openssl_ca(dir.path(), "new-ca", "rsa2048", "/CN=kubernetes", "3650");
    std::fs::copy(&crt, pki.join("ca.crt")).unwrap();
    std::fs::copy(&key, pki.join("ca.key")).unwrap();
    let new_ca = std::fs::read(pki.join("ca.crt")).unwrap();
    assert_ne!(old_ca, new_ca);

    // One file by name, then all.
    run(&with(&["certs", "renew", "admin.conf"], &base));
    assert_eq!(kubeconfig_ca(&root.join("admin.conf")), new_ca);
    issued_by(
        &pki.join("ca.crt"),
        &kubeconfig_cert(&root.join("admin.conf")),
    );
    assert_eq!(
        kubeconfig_ca(&root.join("scheduler.conf")),
        old_ca,
        "only admin.conf was renewed"
    );
    run(&with(&["certs", "renew", "all"], &base));
    for kc in [
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ] {
        assert_eq!(kubeconfig_ca(&root.join(kc)), new_ca, "{kc}");
        issued_by(&pki.join("ca.crt"), &kubeconfig_cert(&root.join(kc)));
    }
    // kubelet.conf is the kubelet's: untouched.
    assert_eq!(kubeconfig_ca(&root.join("kubelet.conf")), old_ca);

    // A kubeconfig whose current cluster has no embedded CA is refused, as kubeadm does.
    let admin = root.join("admin.conf");
    let text = std::fs::read_to_string(&admin).unwrap();
    let mut doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    doc["clusters"][0]["cluster"]
        .as_object_mut()
        .unwrap()
        .remove("certificate-authority-data");
    std::fs::write(&admin, serde_norway::to_string(&doc).unwrap()).unwrap();
    refused(
        &with(&["certs", "renew", "admin.conf"], &base),
        "admin.conf: the current cluster has no embedded certificate-authority-data",
    );
}

/// A kubeadm config file `name` in `dir` holding an InitConfiguration for cp1 and `cluster`
/// as the ClusterConfiguration body.
fn kubeadm_config(dir: &Path, name: &str, api: &str, cluster: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "apiVersion: {api}\nkind: InitConfiguration\nnodeRegistration:\n  name: cp1\nlocalAPIEndpoint:\n  advertiseAddress: 10.0.0.10\n---\napiVersion: {api}\nkind: ClusterConfiguration\n{cluster}"
        ),
    )
    .unwrap();
    path
}

fn lifetime(path: &Path) -> i64 {
    let der = der_of(path);
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    c.validity().not_after.timestamp() - c.validity().not_before.timestamp()
}

#[test]
fn kubeadm_yaml_is_read_strictly_and_validated_as_kubeadm_does() {
    let dir = tempfile::tempdir().unwrap();
    let v4 = "kubeadm.k8s.io/v1beta4";
    let refusals: &[(&str, &str, &str)] = &[
        (
            v4,
            "apiServer:\n  certSAN: [api.example.com]\n",
            "unknown field \"apiServer.certSAN\"",
        ),
        (
            v4,
            "networking:\n  servicesubnet: 10.96.0.0/12\n",
            "did you mean \"networking.serviceSubnet\"",
        ),
        (
            v4,
            "certificateValidityPeriod: 1y\n",
            "invalid duration \"1y\"",
        ),
        (
            "kubeadm.k8s.io/v1beta3",
            "",
            "unsupported apiVersion \"kubeadm.k8s.io/v1beta3\"",
        ),
        (
            v4,
            "featureGates:\n  ControlPlaneKubeletLocalMode: false\n",
            "ControlPlaneKubeletLocalMode is not a valid feature name",
        ),
        (
            v4,
            "featureGates:\n  ControlPlaneKubeletLocalMode: true\n",
            "ControlPlaneKubeletLocalMode is not a valid feature name",
        ),
        (
            v4,
            "apiServer:\n  certSANs: [Bad_Name.example.com]\n",
            "apiServer.certSANs: invalid value \"Bad_Name.example.com\"",
        ),
        (
            v4,
            "etcd:\n  local:\n    serverCertSANs: [\"*\"]\n",
            "etcd.local.serverCertSANs: invalid value \"*\"",
        ),
        (
            v4,
            "networking:\n  serviceSubnet: 10.0.0.0/8\n",
            "specified service subnet is too large; for 32-bit addresses, the mask must be >= 12",
        ),
        (
            v4,
            "networking:\n  serviceSubnet: 10.96.0.0/29\n",
            "subnet with 8 address(es) is too small, the minimum is 10",
        ),
        (
            v4,
            "networking:\n  serviceSubnet: 10.96.0.0/16,10.97.0.0/16\n",
            "two CIDRs from each family",
        ),
        (
            v4,
            "networking:\n  dnsDomain: Cluster_Local\n",
            "networking.dnsDomain",
        ),
    ];
    for (i, (api, body, want)) in refusals.iter().enumerate() {
        let cfg = kubeadm_config(dir.path(), &format!("bad-{i}.yaml"), api, body);
        let root = dir.path().join(format!("bad-{i}"));
        let e = refused(
            &[
                "init",
                "--dir",
                root.to_str().unwrap(),
                "--kubeadm-config",
                cfg.to_str().unwrap(),
            ],
            want,
        );
        assert!(
            e.contains(&format!("bad-{i}.yaml")),
            "the file is named: {e}"
        );
        assert!(!root.exists(), "{body}: files were written");
    }

    // What kubeadm accepts: fractional durations, wildcard and IP SANs (sloppy IPv4 too),
    // a dual-stack service subnet, RootlessControlPlane.
    let cfg = kubeadm_config(
        dir.path(),
        "good.yaml",
        v4,
        "controlPlaneEndpoint: k8s.example.com:6443\napiServer:\n  certSANs: [\"*.apps.example.com\", 192.168.1.1, 010.0.0.7]\nnetworking:\n  serviceSubnet: 10.96.0.0/16,fd00::/108\n  podSubnet: 10.244.0.0/16\nfeatureGates:\n  RootlessControlPlane: false\ncertificateValidityPeriod: 2160.5h\ncaCertificateValidityPeriod: 1h30m\n",
    );
    let root = dir.path().join("good");
    run(&[
        "init",
        "--dir",
        root.to_str().unwrap(),
        "--kubeadm-config",
        cfg.to_str().unwrap(),
    ]);
    let pki = root.join("pki");
    assert_eq!(
        lifetime(&pki.join("apiserver.crt")),
        2160 * 3600 + 1800 + 300
    );
    assert_eq!(lifetime(&pki.join("ca.crt")), 5400 + 300);
    let out = openssl(&[
        "x509",
        "-in",
        pki.join("apiserver.crt").to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    let sans = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "DNS:*.apps.example.com",
        "IP Address:192.168.1.1",
        "IP Address:10.0.0.7",
        "IP Address:10.96.0.1",
    ] {
        assert!(sans.contains(want), "{want} in {sans}");
    }
    assert!(!sans.contains("010.0.0.7"), "{sans}");
    // kubelet.conf points at the local endpoint (the gate is locked on since v1.35).
    let kubelet: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("kubelet.conf")).unwrap())
            .unwrap();
    assert_eq!(
        kubelet["clusters"][0]["cluster"]["server"],
        "https://10.0.0.10:6443"
    );
    let admin: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("admin.conf")).unwrap()).unwrap();
    assert_eq!(
        admin["clusters"][0]["cluster"]["server"],
        "https://k8s.example.com:6443"
    );
}

fn csr_object(request_pem: &str, usages: &str, status: &str) -> String {
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: jane\nspec:\n  request: {}\n  signerName: kubernetes.io/kube-apiserver-client\n{usages}{status}",
        STANDARD.encode(request_pem)
    )
}

#[test]
fn csr_objects_are_refused_as_the_api_server_and_the_signer_would() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_cluster(&root, "10.0.0.10", &[]);
    let key = dir.path().join("jane.key");
    openssl_key(&key, "p256");
    let request = openssl_req(&key, "/CN=jane/O=dev", &[]);
    let usages = "  usages:\n  - digital signature\n  - client auth\n";
    let cond = |t: &str, s: &str| {
        format!(
            "status:\n  conditions:\n  - type: {t}\n    status: \"{s}\"\n    reason: Test\n    lastUpdateTime: \"2026-01-01T00:00:00Z\"\n"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            csr_object(&request, usages, &cond("Denied", "True")),
            "\"jane\" was denied (reason Test); it is not signed",
        ),
        (
            csr_object(&request, usages, &cond("Failed", "True")),
            "\"jane\" was failed",
        ),
        (csr_object(&request, "", ""), "spec.usages: Required value"),
        (
            csr_object(&request, "  usages: []\n", ""),
            "spec.usages: Required value",
        ),
        (
            csr_object(
                &request,
                "  usages:\n  - client auth\n  - digital signature\n  - client auth\n",
                "",
            ),
            "spec.usages[2]: Duplicate value: \"client auth\"",
        ),
        (
            csr_object(&request, "  usages:\n  - client-auth\n", ""),
            "spec.usages[0]: Unsupported value: \"client-auth\"",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("csr-{i}.yaml"));
        std::fs::write(&path, body).unwrap();
        refused(
            &[
                "sign",
                path.to_str().unwrap(),
                "--dir",
                root.to_str().unwrap(),
            ],
            want,
        );
    }
    // Approved, and a Failed condition that is not True: signed.
    for (i, status) in [cond("Approved", "True"), cond("Failed", "False")]
        .iter()
        .enumerate()
    {
        let path = dir.path().join(format!("ok-{i}.yaml"));
        std::fs::write(&path, csr_object(&request, usages, status)).unwrap();
        run(&[
            "sign",
            path.to_str().unwrap(),
            "--dir",
            root.to_str().unwrap(),
        ]);
    }
}

#[test]
fn subject_attributes_the_kubernetes_signer_drops_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_cluster(&root, "10.0.0.10", &[]);
    let key = dir.path().join("jane.key");
    openssl_key(&key, "p256");
    let csr = dir.path().join("jane.csr");
    std::fs::write(
        &csr,
        openssl_req(
            &key,
            "/DC=example/O=dev/CN=jane/emailAddress=jane@example.com/UID=1000",
            &[],
        ),
    )
    .unwrap();
    let (pem, _) = run(&[
        "sign",
        csr.to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
    ]);
    let crt = dir.path().join("jane.crt");
    std::fs::write(&crt, pem).unwrap();
    issued_by(&root.join("pki/ca.crt"), &crt);
    let der = der_of(&crt);
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(c.subject().to_string(), "O=dev, CN=jane");
}
