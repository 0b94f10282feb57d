//! The cluster CA as an intermediate of an enterprise root made with the `openssl` CLI:
//! `kpki ca csr` makes the key (on SoftHSM, or in a file) and the request, the root signs it,
//! `kpki ca install` checks and installs it with its chain, and `kpki init` / `kpki certs
//! renew` build a PKI on it that real peers accept: kube-apiserver authenticates every
//! kubeconfig and the front proxy, kubectl and curl verify the apiserver against the root
//! alone, a three-member etcd verifies its peers and clients. The refusals of `ca install`
//! (a certificate for another key, no CA, no root, a path length exceeded) and of `init`
//! under name constraints are one line each with nothing written.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use kpki_e2e::cluster::{Cluster, Options, eventually};
use kpki_e2e::{hsm, kpki, openssl, openssl_ca, openssl_key, text};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Signs the request `csr` with the CA `(crt, key)` into `out`: with `ext` (lines of an
/// OpenSSL extensions file) as the only extensions, or, when `ext` is empty, with the
/// extensions the request asks for (`-copy_extensions copyall`).
fn sign(ca: &(PathBuf, PathBuf), csr: &Path, out: &Path, ext: &[&str]) {
    let mut args = vec![
        "x509".to_string(),
        "-req".into(),
        "-in".into(),
        csr.display().to_string(),
        "-CA".into(),
        ca.0.display().to_string(),
        "-CAkey".into(),
        ca.1.display().to_string(),
        "-set_serial".into(),
        format!("{}", 1000 + out.display().to_string().len()),
        "-days".into(),
        "730".into(),
        "-out".into(),
        out.display().to_string(),
    ];
    if ext.is_empty() {
        args.extend(["-copy_extensions".into(), "copyall".into()]);
    } else {
        let file = out.with_extension("ext");
        std::fs::write(&file, ext.join("\n") + "\n").unwrap();
        args.extend(["-extfile".into(), file.display().to_string()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = openssl(&argv);
    assert!(o.status.success(), "openssl x509 -req: {:?}", text(&o));
}

/// A CA made by openssl and signed by `parent` with `ext`: `<dir>/<name>.crt|.key`.
fn openssl_sub_ca(
    dir: &Path,
    name: &str,
    subj: &str,
    parent: &(PathBuf, PathBuf),
    ext: &[&str],
) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    openssl_key(&key, "p256");
    let csr = dir.join(format!("{name}.csr"));
    let o = openssl(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        subj,
        "-out",
        csr.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let crt = dir.join(format!("{name}.crt"));
    sign(parent, &csr, &crt, ext);
    (crt, key)
}

fn concat(out: &Path, files: &[&Path]) {
    let mut all = Vec::new();
    for f in files {
        all.extend(std::fs::read(f).unwrap());
    }
    std::fs::write(out, all).unwrap();
}

fn ok(what: &str, out: &Output) -> String {
    assert!(out.status.success(), "{what}: {:?}", text(out));
    text(out).0
}

/// Runs `kpki ca csr NAME --key KEY --out-dir PKI …extra`.
fn ca_csr(name: &str, key: Option<&str>, pki: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["ca", "csr", name, "--out-dir", pki.to_str().unwrap()];
    if let Some(k) = key {
        args.extend(["--key", k]);
    }
    args.extend(extra);
    kpki(&args)
}

/// Runs `kpki ca install NAME --cert CERT [--chain CHAIN] [--key KEY] --out-dir PKI`.
fn ca_install(
    name: &str,
    cert: &Path,
    chain: Option<&Path>,
    key: Option<&str>,
    pki: &Path,
) -> Output {
    let mut args = vec![
        "ca",
        "install",
        name,
        "--cert",
        cert.to_str().unwrap(),
        "--out-dir",
        pki.to_str().unwrap(),
    ];
    if let Some(c) = chain {
        args.extend(["--chain", c.to_str().unwrap()]);
    }
    if let Some(k) = key {
        args.extend(["--key", k]);
    }
    kpki(&args)
}

fn ders(path: &Path) -> Vec<Vec<u8>> {
    pem::parse_many(std::fs::read(path).unwrap())
        .unwrap()
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

/// The raw (issuer, subject) names of a DER certificate.
fn names(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    (
        c.tbs_certificate.issuer.as_raw().to_vec(),
        c.tbs_certificate.subject.as_raw().to_vec(),
    )
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

/// Every file under `dir` with its contents, by path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// `openssl verify` of the leaf file `leaf` (leaf first, then its chain) against `root` alone.
fn verify_against_root(root: &Path, leaf: &Path) {
    let o = openssl(&[
        "verify",
        "-CAfile",
        root.to_str().unwrap(),
        "-untrusted",
        leaf.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "openssl verify {}: {:?}",
        leaf.display(),
        text(&o)
    );
}

/// The three kubeadm CAs as intermediates of an openssl root, keys on the cluster's token:
/// `ca` and `front-proxy-ca` directly under the root, `etcd-ca` under an issuing CA
/// (path length 1) under the root. Everything the bank made is in `<dir>/bank`.
fn bank_intermediates(pki: &Path, token: &hsm::TestToken) {
    let bank = pki.parent().unwrap().join("bank");
    std::fs::create_dir_all(&bank).unwrap();
    let root = openssl_ca(
        &bank,
        "root",
        "p256",
        "/O=Example Bank/CN=Example Bank Root CA",
    );
    let issuing = openssl_sub_ca(
        &bank,
        "issuing",
        "/O=Example Bank/CN=Example Bank Issuing CA",
        &root,
        &[
            "basicConstraints=critical,CA:TRUE,pathlen:1",
            "keyUsage=critical,keyCertSign,cRLSign",
            "subjectKeyIdentifier=hash",
            "authorityKeyIdentifier=keyid",
        ],
    );
    // The etcd chain file lists the root first: `ca install` orders it.
    let etcd_chain = bank.join("etcd-chain.pem");
    concat(&etcd_chain, &[&root.0, &issuing.0]);
    for (name, file, parent, chain) in [
        ("ca", "ca", &root, root.0.clone()),
        ("front-proxy-ca", "front-proxy-ca", &root, root.0.clone()),
        ("etcd-ca", "etcd/ca", &issuing, etcd_chain.clone()),
    ] {
        let key = token.key_uri(name);
        let subject = format!("/O=Example Bank/OU=Kubernetes/CN={name}");
        ok(
            &format!("kpki ca csr {name}"),
            &ca_csr(
                name,
                Some(&key),
                pki,
                &["-a", "ECDSA-P256", "--subject", &subject],
            ),
        );
        let signed = bank.join(format!("{name}.crt"));
        sign(parent, &pki.join(format!("{file}.csr")), &signed, &[]);
        let out = ok(
            &format!("kpki ca install {name}"),
            &ca_install(name, &signed, Some(&chain), Some(&key), pki),
        );
        assert!(out.contains(&format!("[ca] {name} installed")), "{out}");
    }
}

/// A copy of kubeconfig `from` whose `certificate-authority-data` is the PEM file `ca`.
fn with_ca_data(from: &Path, ca: &Path, to: &Path) {
    let mut doc: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(from).unwrap()).unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(std::fs::read(ca).unwrap());
    doc["clusters"][0]["cluster"]["certificate-authority-data"] = serde_norway::Value::from(data);
    std::fs::write(to, serde_norway::to_string(&doc).unwrap()).unwrap();
}

fn ca_data_certs(kubeconfig: &Path) -> usize {
    let doc: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    let data = doc["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    pem::parse_many(pem).unwrap().len()
}

/// Every kubeconfig authenticates as its user, also with only the root as CA data; the front
/// proxy's client certificate is accepted with its headers; a kubeconfig trusting another
/// root is refused by kubectl.
fn check_clients(c: &Cluster, root: &Path) {
    for (conf, user) in [
        ("admin.conf", "kubernetes-admin"),
        ("super-admin.conf", "kubernetes-super-admin"),
        ("controller-manager.conf", "system:kube-controller-manager"),
        ("scheduler.conf", "system:kube-scheduler"),
        ("kubelet.conf", "system:node:cp1"),
    ] {
        let path = c.path(conf);
        assert_eq!(ca_data_certs(&path), 2, "{conf}: the CA and the root");
        assert_eq!(c.whoami(&path).0, user, "{conf}");
        let root_only = c.path(&format!("root-only-{conf}"));
        with_ca_data(&path, root, &root_only);
        assert_eq!(c.whoami(&root_only).0, user, "{conf} with the root alone");
    }
    let (_, groups) = c.whoami(&c.path("admin.conf"));
    assert!(
        groups.contains(&"kubeadm:cluster-admins".to_string()),
        "{groups:?}"
    );
    let out = c.kubectl("admin.conf", &["get", "namespaces", "-o", "name"]);
    assert!(
        text(&out).0.contains("namespace/default"),
        "{:?}",
        text(&out)
    );

    // Another root: kubectl refuses the apiserver.
    let stranger = openssl_ca(c.dir.path(), "stranger", "p256", "/CN=Stranger Root");
    let wrong = c.path("stranger-admin.conf");
    with_ca_data(&c.path("admin.conf"), &stranger.0, &wrong);
    let out = c.kubectl_with(&wrong, &["auth", "whoami"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("x509") || text(&out).1.contains("certificate"),
        "{:?}",
        text(&out)
    );

    // The front proxy: curl (OpenSSL) trusts only the root, presents front-proxy-client.crt
    // (leaf and front-proxy-ca) and asserts a user; the apiserver verifies it against
    // front-proxy-ca.crt.
    hsm::require_tool("curl");
    let pki = c.pki();
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(root)
        .arg("--cert")
        .arg(pki.join("front-proxy-client.crt"))
        .arg("--key")
        .arg(pki.join("front-proxy-client.key"))
        .args([
            "-H",
            "X-Remote-User: alice",
            "-H",
            "X-Remote-Group: devs",
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "-d",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        ])
        .arg(format!(
            "https://127.0.0.1:{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            c.port
        ))
        .output()
        .unwrap();
    let body = ok("curl as the front proxy", &out);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"]["userInfo"]["username"], "alice", "{body}");
}

/// Checks the files of the PKI: chains, issuer bytes, `openssl verify` against the root.
fn check_files(pki: &Path, root: &Path) {
    for (leaf, ca, certs) in [
        ("apiserver.crt", "ca.crt", 2),
        ("apiserver-kubelet-client.crt", "ca.crt", 2),
        ("front-proxy-client.crt", "front-proxy-ca.crt", 2),
        ("apiserver-etcd-client.crt", "etcd/ca.crt", 3),
        ("etcd/server.crt", "etcd/ca.crt", 3),
        ("etcd/peer.crt", "etcd/ca.crt", 3),
        ("etcd/healthcheck-client.crt", "etcd/ca.crt", 3),
    ] {
        let chain = ders(&pki.join(leaf));
        assert_eq!(
            chain.len(),
            certs,
            "{leaf}: leaf, CA, intermediates below the root"
        );
        let ca_der = ders(&pki.join(ca));
        assert_eq!(ca_der.len(), 1, "{ca} holds the CA alone");
        assert_eq!(chain[1], ca_der[0], "{leaf}: the CA follows the leaf");
        assert_eq!(
            names(&chain[0]).0,
            names(&ca_der[0]).1,
            "{leaf}: issuer = CA subject"
        );
        verify_against_root(root, &pki.join(leaf));
    }
}

#[test]
fn intermediates_on_softhsm_serve_a_real_apiserver_through_init_and_renew() {
    let mut c = Cluster::start(Options {
        before_init: Some(bank_intermediates),
        ..Options::default()
    });
    let root = c.dir.path().join("bank/root.crt");
    let pki = c.pki();
    for chain in ["ca-chain.crt", "front-proxy-ca-chain.crt"] {
        assert_eq!(ders(&pki.join(chain)), ders(&root), "{chain}");
    }
    let etcd_chain = ders(&pki.join("etcd/ca-chain.crt"));
    assert_eq!(etcd_chain.len(), 2);
    assert_eq!(
        etcd_chain[0],
        ders(&c.dir.path().join("bank/issuing.crt"))[0]
    );
    assert_eq!(etcd_chain[1], ders(&root)[0]);
    // The CA keys stayed on the token.
    for key in ["ca.key", "front-proxy-ca.key", "etcd/ca.key"] {
        assert!(!pki.join(key).exists(), "{key}");
    }
    check_files(&pki, &root);
    // kube-apiserver is ready: it reached etcd (its etcd client certificate verified by etcd
    // against etcd/ca.crt, etcd's serving chain by kube-apiserver).
    check_clients(&c, &root);

    // Renew everything, restart kube-apiserver on the new certificates: the same again.
    let before = std::fs::read(pki.join("apiserver.crt")).unwrap();
    ok("kpki certs renew all", &c.kpki(&["certs", "renew", "all"]));
    assert_ne!(std::fs::read(pki.join("apiserver.crt")).unwrap(), before);
    check_files(&pki, &root);
    c.restart_apiserver();
    check_clients(&c, &root);
    // A second init keeps everything.
    let out = ok("kpki init again", &c.kpki(&["init"]));
    assert!(out.contains("0 generated"), "{out}");
}

struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcdctl trusting `cacert` with the client pair `<pki>/<client>.crt|.key`.
fn etcdctl(endpoints: &str, cacert: &Path, pki: &Path, client: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", cacert.display()))
        .arg(format!(
            "--cert={}",
            pki.join(format!("{client}.crt")).display()
        ))
        .arg(format!(
            "--key={}",
            pki.join(format!("{client}.key")).display()
        ))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .unwrap()
}

fn start_member(dir: &Path, i: usize, root: &Path, ports: &[(u16, u16)], state: &str) -> Child {
    let pki = root.join("pki");
    let (client, peer) = ports[i];
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(j, (_, p))| format!("etcd{}=https://127.0.0.1:{p}", j + 1))
        .collect();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("etcd{}.log", i + 1)))
        .unwrap();
    let f = |n: &str| pki.join(n).display().to_string();
    Command::new("etcd")
        .arg(format!("--name=etcd{}", i + 1))
        .arg(format!("--data-dir={}", root.join("data").display()))
        .arg(format!("--listen-client-urls=https://127.0.0.1:{client}"))
        .arg(format!(
            "--advertise-client-urls=https://127.0.0.1:{client}"
        ))
        .arg(format!("--listen-peer-urls=https://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=https://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster={}", initial.join(",")))
        .arg(format!("--initial-cluster-state={state}"))
        .arg("--initial-cluster-token=kpki-intermediate")
        .arg("--listen-metrics-urls=")
        .arg("--client-cert-auth")
        .arg(format!("--trusted-ca-file={}", f("etcd/ca.crt")))
        .arg(format!("--cert-file={}", f("etcd/server.crt")))
        .arg(format!("--key-file={}", f("etcd/server.key")))
        .arg("--peer-client-cert-auth")
        .arg(format!("--peer-trusted-ca-file={}", f("etcd/ca.crt")))
        .arg(format!("--peer-cert-file={}", f("etcd/peer.crt")))
        .arg(format!("--peer-key-file={}", f("etcd/peer.key")))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_healthy(endpoints: &str, root_ca: &Path, pki: &Path, dir: &Path) {
    eventually(
        "all etcd members healthy",
        Duration::from_secs(90),
        Duration::from_millis(300),
        || {
            let out = etcdctl(
                endpoints,
                root_ca,
                pki,
                "etcd/healthcheck-client",
                &["endpoint", "health"],
            );
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{:?}\n{}",
                    text(&out),
                    std::fs::read_to_string(dir.join("etcd1.log")).unwrap_or_default()
                ))
            }
        },
    );
}

#[test]
fn a_file_key_intermediate_with_path_length_0_serves_a_three_member_etcd() {
    hsm::require_tool("etcd");
    hsm::require_tool("etcdctl");
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank");
    std::fs::create_dir_all(&bank).unwrap();
    let root = openssl_ca(
        &bank,
        "root",
        "p256",
        "/O=Example Bank/CN=Example Bank Root CA",
    );
    let nodes: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("node{i}")))
        .collect();
    let pki1 = nodes[0].join("pki");
    // The key goes where kubeadm keeps it (no --key: file:<pki>/etcd/ca.key).
    ok(
        "kpki ca csr",
        &ca_csr("etcd-ca", None, &pki1, &["-a", "ECDSA-P256"]),
    );
    assert!(pki1.join("etcd/ca.key").exists());
    let signed = bank.join("etcd-ca.crt");
    sign(
        &root,
        &pki1.join("etcd/ca.csr"),
        &signed,
        &[
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
            "subjectKeyIdentifier=hash",
            "authorityKeyIdentifier=keyid",
        ],
    );
    let out = ok(
        "kpki ca install",
        &ca_install("etcd-ca", &signed, Some(&root.0), None, &pki1),
    );
    assert!(out.contains("path length 0"), "{out}");
    for (i, node) in nodes.iter().enumerate() {
        if i > 0 {
            for f in [
                "ca.crt",
                "ca.key",
                "front-proxy-ca.crt",
                "front-proxy-ca.key",
                "etcd/ca.crt",
                "etcd/ca-chain.crt",
                "etcd/ca.key",
                "sa.key",
                "sa.pub",
            ] {
                let to = node.join("pki").join(f);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(pki1.join(f), &to).unwrap();
            }
        }
        let name = format!("etcd{}", i + 1);
        let out = kpki(&[
            "init",
            "--dir",
            node.to_str().unwrap(),
            "--node-name",
            &name,
            "--advertise-address",
            "127.0.0.1",
            "--encryption-algorithm",
            "ECDSA-P256",
        ]);
        ok(&format!("kpki init {name}"), &out);
        for leaf in [
            "etcd/server.crt",
            "etcd/peer.crt",
            "etcd/healthcheck-client.crt",
        ] {
            assert_eq!(ders(&node.join("pki").join(leaf)).len(), 2, "{name} {leaf}");
            verify_against_root(&root.0, &node.join("pki").join(leaf));
        }
    }
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut members = Members(
        (0..3)
            .map(|i| start_member(dir.path(), i, &nodes[i], &ports, "new"))
            .collect(),
    );
    let endpoints: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("https://127.0.0.1:{c}"))
        .collect();
    let all = endpoints.join(",");
    // etcdctl trusts the root alone: every member serves its chain.
    wait_healthy(&all, &root.0, &pki1, dir.path());
    let members_out = etcdctl(
        &all,
        &root.0,
        &pki1,
        "etcd/healthcheck-client",
        &["member", "list"],
    );
    assert_eq!(
        text(&members_out).0.lines().count(),
        3,
        "{:?}",
        text(&members_out)
    );
    ok(
        "put",
        &etcdctl(
            &endpoints[0],
            &root.0,
            &pki1,
            "etcd/healthcheck-client",
            &["put", "bank", "root"],
        ),
    );
    let pki3 = nodes[2].join("pki");
    let get = etcdctl(
        &endpoints[2],
        &root.0,
        &pki3,
        "apiserver-etcd-client",
        &["get", "bank", "--print-value-only"],
    );
    assert_eq!(ok("get", &get).trim(), "root");
    // A client certificate of the cluster CA is no etcd client.
    let refused = etcdctl(
        &endpoints[0],
        &root.0,
        &pki1,
        "apiserver-kubelet-client",
        &["get", "bank"],
    );
    assert!(!refused.status.success(), "{:?}", text(&refused));

    // Renew node 2 and restart its member on the new certificates: it rejoins, and its new
    // client certificate reads what node 1 wrote.
    let pki2 = nodes[1].join("pki");
    let before = std::fs::read(pki2.join("etcd/peer.crt")).unwrap();
    let out = kpki(&["certs", "renew", "all", "--dir", nodes[1].to_str().unwrap()]);
    ok("kpki certs renew all (node 2)", &out);
    assert_ne!(std::fs::read(pki2.join("etcd/peer.crt")).unwrap(), before);
    assert_eq!(ders(&pki2.join("etcd/peer.crt")).len(), 2);
    let _ = members.0[1].kill();
    let _ = members.0[1].wait();
    members.0[1] = start_member(dir.path(), 1, &nodes[1], &ports, "existing");
    wait_healthy(&all, &root.0, &pki2, dir.path());
    ok(
        "put through node 2",
        &etcdctl(
            &endpoints[1],
            &root.0,
            &pki2,
            "apiserver-etcd-client",
            &["put", "after", "renew"],
        ),
    );
    let get = etcdctl(
        &endpoints[0],
        &root.0,
        &pki2,
        "etcd/healthcheck-client",
        &["get", "after", "--print-value-only"],
    );
    assert_eq!(ok("get after renew", &get).trim(), "renew");
    let started = Instant::now();
    drop(members);
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// `kpki ca install` and its refusals: one line on stderr, exit 1, nothing written.
#[test]
fn install_refusals_and_name_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let bank = dir.path().join("bank");
    std::fs::create_dir_all(&bank).unwrap();
    let root = openssl_ca(
        &bank,
        "root",
        "p256",
        "/O=Example Bank/CN=Example Bank Root CA",
    );
    let pki = dir.path().join("node/pki");
    ok(
        "kpki ca csr",
        &ca_csr("ca", None, &pki, &["-a", "ECDSA-P256"]),
    );
    let csr = pki.join("ca.csr");
    let ca_ext = [
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
    ];

    // A request for another key, signed properly.
    let other = dir.path().join("other");
    ok("kpki ca csr (other key)", &ca_csr("ca", None, &other, &[]));
    let other_crt = bank.join("other.crt");
    sign(&root, &other.join("ca.csr"), &other_crt, &ca_ext);
    // Not a CA.
    let leafish = bank.join("leafish.crt");
    sign(
        &root,
        &csr,
        &leafish,
        &[
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature",
        ],
    );
    // Signed properly, but installed without the chain or with another root.
    let good = bank.join("good.crt");
    sign(&root, &csr, &good, &[]);
    let stranger = openssl_ca(&bank, "stranger", "p256", "/CN=Stranger Root");
    // Under an issuing CA whose path length is 0: it may not have a CA below it.
    let mid = openssl_sub_ca(
        &bank,
        "mid",
        "/O=Example Bank/CN=Issuing CA pathlen 0",
        &root,
        &[
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let under_mid = bank.join("under-mid.crt");
    sign(&mid, &csr, &under_mid, &ca_ext);
    let mid_chain = bank.join("mid-chain.pem");
    concat(&mid_chain, &[&mid.0, &root.0]);
    // A chain holding a certificate off the path.
    let padded = bank.join("padded.pem");
    concat(&padded, &[&root.0, &stranger.0]);

    let before = listing(&pki);
    assert_eq!(before, ["ca.csr", "ca.key"]);
    let cases: &[(&Path, Option<&Path>, &str)] = &[
        (
            &other_crt,
            Some(&root.0),
            "the certificate does not match the key file:",
        ),
        (&leafish, Some(&root.0), "not a CA certificate"),
        (&good, None, "the chain does not reach a self-signed root"),
        (
            &good,
            Some(&stranger.0),
            "the chain does not reach a self-signed root",
        ),
        (
            &good,
            Some(&padded),
            "not on the path from the certificate to its root",
        ),
        (
            &under_mid,
            Some(&mid_chain),
            "its path length constraint 0 allows 0 intermediate CA(s) below it, the chain puts 1 there",
        ),
    ];
    for (cert, chain, want) in cases {
        let out = ca_install("ca", cert, *chain, None, &pki);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {stdout}{stderr}",
            cert.display()
        );
        assert!(stderr.contains(want), "{}: {stderr}", cert.display());
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(
            listing(&pki),
            before,
            "nothing written for {}",
            cert.display()
        );
    }

    // Name constraints that leave out the cluster's names: installed, then init refuses the
    // apiserver's certificate before writing anything.
    let narrow_root = openssl_ca_with(
        &bank,
        "narrow",
        "/CN=Narrow Root",
        "nameConstraints=critical,permitted;DNS:example.com,permitted;IP:10.0.0.0/255.0.0.0",
    );
    let narrow = bank.join("narrow-int.crt");
    sign(&narrow_root, &csr, &narrow, &[]);
    let out = ok(
        "install under name constraints",
        &ca_install("ca", &narrow, Some(&narrow_root.0), None, &pki),
    );
    assert!(
        out.contains("name constraints enforced at issuance"),
        "{out}"
    );
    let node = dir.path().join("node");
    let installed = listing(&node);
    let init = kpki(&[
        "init",
        "--dir",
        node.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "127.0.0.1",
        "--encryption-algorithm",
        "ECDSA-P256",
    ]);
    let (_, stderr) = text(&init);
    assert_eq!(init.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot issue apiserver: DNS name ")
            && stderr.contains(
                "is outside the name constraints of CA CN=Narrow Root: permitted DNS subtrees are example.com"
            ),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(listing(&node), installed, "init wrote nothing");

    // Constraints that hold every name of the cluster: init issues, and OpenSSL (which
    // enforces name constraints too) verifies the apiserver's chain against that root.
    let fit_root = openssl_ca_with(
        &bank,
        "fit",
        "/CN=Fitting Root",
        "nameConstraints=critical,permitted;DNS:cp1,permitted;DNS:kubernetes,permitted;DNS:default,permitted;DNS:svc,permitted;DNS:cluster.local,permitted;IP:127.0.0.0/255.0.0.0,permitted;IP:10.96.0.0/255.240.0.0,permitted;IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF",
    );
    let fit = bank.join("fit-int.crt");
    sign(&fit_root, &csr, &fit, &[]);
    std::fs::remove_file(pki.join("ca.crt")).unwrap();
    std::fs::remove_file(pki.join("ca-chain.crt")).unwrap();
    ok(
        "install under fitting constraints",
        &ca_install("ca", &fit, Some(&fit_root.0), None, &pki),
    );
    ok(
        "kpki init",
        &kpki(&[
            "init",
            "--dir",
            node.to_str().unwrap(),
            "--node-name",
            "cp1",
            "--advertise-address",
            "127.0.0.1",
            "--encryption-algorithm",
            "ECDSA-P256",
        ]),
    );
    verify_against_root(&fit_root.0, &pki.join("apiserver.crt"));
    // `kpki sign` issues through the same signer: a kubelet serving certificate for a name
    // the root does not permit is refused, one for the node's name is issued and verifies.
    for (name, san, refused) in [
        ("evil", "DNS:evil.example.org", true),
        ("node", "DNS:cp1", false),
    ] {
        let req = dir.path().join(format!("{name}.csr"));
        std::fs::write(
            &req,
            kpki_e2e::openssl_csr(
                dir.path(),
                name,
                "p256",
                "/O=system:nodes/CN=system:node:cp1",
                &[&format!("subjectAltName={san}")],
            ),
        )
        .unwrap();
        let out = kpki(&[
            "sign",
            req.to_str().unwrap(),
            "--signer-name",
            "kubernetes.io/kubelet-serving",
            "--dir",
            node.to_str().unwrap(),
        ]);
        let (stdout, stderr) = text(&out);
        if refused {
            assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
            assert!(
                stderr.contains("DNS name evil.example.org is outside the name constraints of CA CN=Fitting Root"),
                "{stderr}"
            );
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        } else {
            let crt = dir.path().join("node-serving.crt");
            std::fs::write(&crt, ok("kpki sign", &out)).unwrap();
            let o = openssl(&[
                "verify",
                "-CAfile",
                fit_root.0.to_str().unwrap(),
                "-untrusted",
                pki.join("ca.crt").to_str().unwrap(),
                crt.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{:?}", text(&o));
        }
    }
    // The narrow intermediate (same key) put in place by hand: renew refuses before making
    // any key or replacing any file.
    let installed = listing(&node);
    let contents = snapshot(&node);
    std::fs::rename(pki.join("ca.crt"), dir.path().join("fit-ca.crt")).unwrap();
    std::fs::rename(
        pki.join("ca-chain.crt"),
        dir.path().join("fit-ca-chain.crt"),
    )
    .unwrap();
    ok(
        "install the narrow one",
        &ca_install("ca", &narrow, Some(&narrow_root.0), None, &pki),
    );
    let narrow_files = snapshot(&node);
    let out = kpki(&["certs", "renew", "all", "--dir", node.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot renew apiserver: DNS name ")
            && stderr.contains("outside the name constraints of CA CN=Narrow Root"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let after = snapshot(&node);
    assert_eq!(after, narrow_files, "renew wrote nothing");
    std::fs::rename(dir.path().join("fit-ca.crt"), pki.join("ca.crt")).unwrap();
    std::fs::rename(
        dir.path().join("fit-ca-chain.crt"),
        pki.join("ca-chain.crt"),
    )
    .unwrap();
    assert_eq!(listing(&node), installed);
    let restored = snapshot(&node);
    assert_eq!(restored, contents);

    // Installing the same again changes nothing; another certificate is refused.
    let out = ok(
        "install again",
        &ca_install("ca", &fit, Some(&fit_root.0), None, &pki),
    );
    assert!(out.contains("[ca] ca exists"), "{out}");
    let out = ca_install("ca", &good, Some(&root.0), None, &pki);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("kpki never replaces one"),
        "{:?}",
        text(&out)
    );

    // An install stopped between the chain file and the certificate: init refuses with the
    // way out, and installing again completes it.
    std::fs::remove_file(pki.join("ca.crt")).unwrap();
    let init_args = [
        "init",
        "--dir",
        node.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "127.0.0.1",
        "--encryption-algorithm",
        "ECDSA-P256",
    ];
    let out = kpki(&init_args);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ca-chain.crt: exists but")
            && stderr.contains("run `kpki ca install` again"),
        "{stderr}"
    );
    ok(
        "install again",
        &ca_install("ca", &fit, Some(&fit_root.0), None, &pki),
    );
    let out = ok("init after the install", &kpki(&init_args));
    assert!(out.contains("0 generated"), "{out}");
}

/// A self-signed root made by openssl carrying the extension line `ext` besides the CA ones.
fn openssl_ca_with(dir: &Path, name: &str, subj: &str, ext: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    openssl_key(&key, "p256");
    let o = openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-days",
        "3650",
        "-subj",
        subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-addext",
        ext,
        "-out",
        crt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    (crt, key)
}
