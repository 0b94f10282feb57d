//! kubeadm (built from the pinned release's Go modules) against `kpki init` on the same
//! kubeadm configuration: `kubeadm init phase certs all` + `kubeadm init phase kubeconfig all`
//! and `kpki init` must write the same files with the same facts — subject, issuer, SANs in
//! order, key usages, extended key usages, basic constraints, validity length, key type and
//! size, PEM types, file modes, and the kubeconfigs' clusters, users, contexts and
//! identities. Then each tool reads and renews the other's directory:
//! `certs check-expiration` prints the same table and `certs renew all` works both ways.
//!
//! Deliberate differences are listed in [`DELIBERATE`], each with its reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kpki_e2e::{kpki, openssl, peers, text};
use serde_json::Value;
use x509_parser::prelude::*;

/// Facts kpki deliberately writes differently from kubeadm: (file, fact, reason). Empty
/// means kpki writes exactly what kubeadm writes.
const DELIBERATE: &[(&str, &str, &str)] = &[];

fn kubeadm(args: &[&str]) -> Output {
    Command::new(peers::kubernetes("kubeadm"))
        .args(args)
        .output()
        .expect("run kubeadm")
}

fn config(algorithm: &str, cert_dir: &Path) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  name: cp1
localAPIEndpoint:
  advertiseAddress: 10.0.0.10
  bindPort: 6443
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
clusterName: prod
certificatesDir: {dir}
controlPlaneEndpoint: k8s.example.com:7443
networking:
  serviceSubnet: 10.96.0.0/16,fd00:10:96::/112
  podSubnet: 10.244.0.0/16,fd00:10:244::/56
  dnsDomain: corp.local
apiServer:
  certSANs:
  - api.example.com
  - 192.168.1.1
  - zz.example.org
  - 2001:db8::1
etcd:
  local:
    serverCertSANs: [etcd.example.com, 10.0.0.20]
    peerCertSANs: [peer.example.com]
encryptionAlgorithm: {algorithm}
certificateValidityPeriod: 4380h0m0s
caCertificateValidityPeriod: 43800h0m0s
",
        version = peers::kubernetes_version(),
        dir = cert_dir.display()
    )
}

/// Every file under `root`, relative, sorted.
fn files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn pem_types(path: &Path) -> Vec<String> {
    ::pem::parse_many(std::fs::read(path).unwrap())
        .unwrap()
        .iter()
        .map(|p| p.tag().to_string())
        .collect()
}

fn general_name(n: &GeneralName) -> String {
    match n {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => format!(
                "IP:{}",
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap())
            ),
            16 => format!(
                "IP:{}",
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap())
            ),
            _ => format!("IP:{b:?}"),
        },
        other => format!("{other:?}"),
    }
}

/// The facts of one certificate that must agree, by name.
fn cert_facts(der: &[u8]) -> BTreeMap<&'static str, String> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    let mut f = BTreeMap::new();
    f.insert("subject", format!("{:?}", c.subject().as_raw()));
    f.insert("subject (text)", c.subject().to_string());
    f.insert("issuer", format!("{:?}", c.issuer().as_raw()));
    f.insert("version", format!("{:?}", c.version()));
    f.insert(
        "signature algorithm",
        c.signature_algorithm.algorithm.to_id_string(),
    );
    let sans = c.subject_alternative_name().unwrap().map(|s| {
        s.value
            .general_names
            .iter()
            .map(general_name)
            .collect::<Vec<_>>()
    });
    f.insert("SANs", format!("{sans:?}"));
    let ku = c.key_usage().unwrap().map(|k| k.value.to_string());
    f.insert("key usage", format!("{ku:?}"));
    let ku_critical = c.key_usage().unwrap().map(|k| k.critical);
    f.insert("key usage critical", format!("{ku_critical:?}"));
    let eku = c.extended_key_usage().unwrap().map(|e| {
        (
            e.value.server_auth,
            e.value.client_auth,
            e.value.other.len(),
        )
    });
    f.insert(
        "extended key usage (server, client, other)",
        format!("{eku:?}"),
    );
    let bc = c
        .basic_constraints()
        .unwrap()
        .map(|b| (b.critical, b.value.ca, b.value.path_len_constraint));
    f.insert(
        "basic constraints (critical, ca, pathlen)",
        format!("{bc:?}"),
    );
    let validity = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
    // Both tools take "now" when they run; the length is what must agree (to the minute).
    f.insert(
        "validity length (minutes)",
        format!("{}", (validity + 30) / 60),
    );
    let spki = c.public_key();
    let key = match spki.parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(r) => format!("RSA-{}", r.key_size()),
        x509_parser::public_key::PublicKey::EC(e) => format!(
            "EC {} ({} bytes)",
            spki.algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default(),
            e.data().len()
        ),
        other => format!("{other:?}"),
    };
    f.insert("key", key);
    let mut exts: Vec<String> = c
        .extensions()
        .iter()
        .map(|e| {
            format!(
                "{}{}",
                e.oid.to_id_string(),
                if e.critical { "!" } else { "" }
            )
        })
        .collect();
    exts.sort();
    f.insert("extensions", exts.join(","));
    f
}

/// The facts of one kubeconfig that must agree.
fn kubeconfig_facts(path: &Path) -> BTreeMap<&'static str, String> {
    let v: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut f = BTreeMap::new();
    let list = |key: &str, fields: &[&str]| -> String {
        let items: Vec<Vec<String>> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let mut row = vec![item["name"].as_str().unwrap_or_default().to_string()];
                for field in fields {
                    let (section, name) = field.split_once('.').unwrap();
                    let val = &item[section][name];
                    row.push(match val {
                        Value::String(s) if name.ends_with("-data") => {
                            format!("<{} bytes>", !s.is_empty())
                        }
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        other => other.to_string(),
                    });
                }
                row
            })
            .collect();
        format!("{items:?}")
    };
    f.insert(
        "clusters",
        list(
            "clusters",
            &["cluster.server", "cluster.certificate-authority-data"],
        ),
    );
    f.insert(
        "contexts",
        list(
            "contexts",
            &["context.cluster", "context.user", "context.namespace"],
        ),
    );
    f.insert("users", list("users", &["user.client-key-data"]));
    f.insert("current-context", v["current-context"].to_string());
    f.insert(
        "kind/apiVersion",
        format!("{} {}", v["kind"], v["apiVersion"]),
    );
    // The identity: the client certificate's subject and key.
    let users = v["users"].as_array().unwrap();
    let cert_b64 = users[0]["user"]["client-certificate-data"]
        .as_str()
        .unwrap();
    use base64::Engine;
    let pem_bytes = base64::engine::general_purpose::STANDARD
        .decode(cert_b64)
        .unwrap();
    let der = ::pem::parse(pem_bytes).unwrap().into_contents();
    for (k, val) in cert_facts(&der) {
        if matches!(
            k,
            "subject"
                | "subject (text)"
                | "key"
                | "extended key usage (server, client, other)"
                | "validity length (minutes)"
        ) {
            f.insert(k, val);
        }
    }
    let key_b64 = users[0]["user"]["client-key-data"].as_str().unwrap();
    let key_pem = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap();
    f.insert(
        "client key PEM type",
        ::pem::parse(key_pem).unwrap().tag().to_string(),
    );
    f
}

fn facts(root: &Path, rel: &Path) -> BTreeMap<&'static str, String> {
    let path = root.join(rel);
    let mut f = BTreeMap::new();
    f.insert("mode", format!("{:o}", mode(&path)));
    let name = rel.to_string_lossy();
    if name.ends_with(".conf") {
        f.extend(kubeconfig_facts(&path));
        return f;
    }
    f.insert("PEM types", format!("{:?}", pem_types(&path)));
    if name.ends_with(".crt") {
        let der = ::pem::parse(std::fs::read(&path).unwrap())
            .unwrap()
            .into_contents();
        f.extend(cert_facts(&der));
    }
    f
}

fn deliberate(file: &str, fact: &str) -> bool {
    DELIBERATE
        .iter()
        .any(|(f, k, _)| (*f == file || *f == "*") && *k == fact)
}

/// One tool's node: a root file system `root` (kubeadm runs chrooted there with `--rootfs`,
/// since its `certs` commands read kubeconfigs from /etc/kubernetes only) holding
/// `etc/kubernetes/{pki,*.conf}` and the configuration `/kubeadm.yaml`.
struct Node {
    root: PathBuf,
}

impl Node {
    fn new(dir: &Path, name: &str, algorithm: &str) -> Node {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("etc/kubernetes")).unwrap();
        std::fs::write(
            root.join("kubeadm.yaml"),
            config(algorithm, Path::new("/etc/kubernetes/pki")),
        )
        .unwrap();
        Node { root }
    }

    /// /etc/kubernetes of this node, seen from outside.
    fn kubernetes_dir(&self) -> PathBuf {
        self.root.join("etc/kubernetes")
    }

    /// kubeadm chrooted into this node, `--config /kubeadm.yaml` appended.
    fn kubeadm(&self, args: &[&str]) -> Output {
        let mut argv = args.to_vec();
        let rootfs = self.root.to_str().unwrap();
        argv.extend(["--rootfs", rootfs, "--config", "/kubeadm.yaml"]);
        kubeadm(&argv)
    }

    /// kpki on this node's files, with its paths given as flags.
    fn kpki(&self, args: &[&str]) -> Output {
        let mut argv = args.to_vec();
        let config = self.root.join("kubeadm.yaml");
        let cert_dir = self.kubernetes_dir().join("pki");
        let kubeconfig_dir = self.kubernetes_dir();
        argv.extend([
            "--kubeadm-config",
            config.to_str().unwrap(),
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            "--kubeconfig-dir",
            kubeconfig_dir.to_str().unwrap(),
        ]);
        kpki(&argv)
    }
}

/// Runs kubeadm and kpki on the same configuration, each on its own node.
fn both(dir: &Path, algorithm: &str) -> (Node, Node) {
    let theirs = Node::new(dir, "kubeadm", algorithm);
    let ours = Node::new(dir, "kpki", algorithm);
    let out = theirs.kubeadm(&["init", "phase", "certs", "all"]);
    assert!(out.status.success(), "kubeadm certs: {:?}", text(&out));
    let out = theirs.kubeadm(&["init", "phase", "kubeconfig", "all"]);
    assert!(out.status.success(), "kubeadm kubeconfig: {:?}", text(&out));
    let out = ours.kpki(&["init"]);
    assert!(out.status.success(), "kpki init: {:?}", text(&out));
    (theirs, ours)
}

fn compare(algorithm: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (theirs_node, ours_node) = both(dir.path(), algorithm);
    let kubeadm_root = theirs_node.kubernetes_dir();
    let kpki_root = ours_node.kubernetes_dir();
    let theirs = files(&kubeadm_root);
    let ours = files(&kpki_root);
    assert_eq!(ours, theirs, "{algorithm}: the set of files differs");
    let mut differences = Vec::new();
    for rel in &theirs {
        let a = facts(&kubeadm_root, rel);
        let b = facts(&kpki_root, rel);
        for (k, va) in &a {
            let vb = b.get(k).cloned().unwrap_or_else(|| "<missing>".into());
            let file = rel.to_string_lossy();
            if *va != vb && !deliberate(&file, k) {
                differences.push(format!("{file}: {k}\n  kubeadm: {va}\n  kpki:    {vb}"));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{algorithm}: {} differences from kubeadm:\n{}",
        differences.len(),
        differences.join("\n")
    );
    // Every certificate verifies against its CA with the purpose kubeadm gives it.
    for (leaf, ca, purpose) in [
        ("apiserver", "ca", "sslserver"),
        ("apiserver-kubelet-client", "ca", "sslclient"),
        ("front-proxy-client", "front-proxy-ca", "sslclient"),
        ("etcd/server", "etcd/ca", "sslserver"),
        ("etcd/peer", "etcd/ca", "sslclient"),
        ("etcd/healthcheck-client", "etcd/ca", "sslclient"),
        ("apiserver-etcd-client", "etcd/ca", "sslclient"),
    ] {
        let pki = kpki_root.join("pki");
        let out = openssl(&[
            "verify",
            "-purpose",
            purpose,
            "-CAfile",
            pki.join(format!("{ca}.crt")).to_str().unwrap(),
            pki.join(format!("{leaf}.crt")).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{leaf}: {:?}", text(&out));
    }
}

#[test]
fn kpki_init_writes_what_kubeadm_writes_rsa_2048() {
    compare("RSA-2048");
}

#[test]
fn kpki_init_writes_what_kubeadm_writes_ecdsa_p256() {
    compare("ECDSA-P256");
}

#[test]
fn kpki_init_writes_what_kubeadm_writes_rsa_3072() {
    compare("RSA-3072");
}

/// The table rows of `certs check-expiration` (headers and blank lines dropped, columns
/// split on runs of two or more spaces).
fn table(out: &Output) -> Vec<Vec<String>> {
    let (stdout, _) = text(out);
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with('['))
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// Both tools' tables for `node`; taken again once if a minute boundary fell between them.
fn same_tables(node: &Node) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut last = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let a = node.kubeadm(&["certs", "check-expiration"]);
        assert!(
            a.status.success(),
            "kubeadm check-expiration: {:?}",
            text(&a)
        );
        let b = node.kpki(&["certs", "check-expiration"]);
        assert!(b.status.success(), "kpki check-expiration: {:?}", text(&b));
        last = (table(&a), table(&b));
        if last.0 == last.1 {
            break;
        }
    }
    last
}

#[test]
fn check_expiration_and_renew_agree_across_the_two_tools() {
    let dir = tempfile::tempdir().unwrap();
    let (kubeadm_node, kpki_node) = both(dir.path(), "ECDSA-P256");

    // kubeadm reading kpki's files, kpki reading kubeadm's: the same table each time.
    let (theirs, ours) = same_tables(&kpki_node);
    assert!(
        theirs.len() > 15,
        "kubeadm's table is too short: {theirs:?}"
    );
    assert_eq!(ours, theirs, "check-expiration of kpki's directory");
    let (theirs, ours) = same_tables(&kubeadm_node);
    assert_eq!(ours, theirs, "check-expiration of kubeadm's directory");

    // kubeadm renews kpki's files; kpki renews kubeadm's.
    let out = kpki_node.kubeadm(&["certs", "renew", "all"]);
    assert!(
        out.status.success(),
        "kubeadm renew all on kpki's files: {:?}",
        text(&out)
    );
    let out = kubeadm_node.kpki(&["certs", "renew", "all"]);
    assert!(
        out.status.success(),
        "kpki renew all on kubeadm's files: {:?}",
        text(&out)
    );
    // After the swap each tool still reads the other's renewed files the same way.
    let (theirs, ours) = same_tables(&kpki_node);
    assert_eq!(ours, theirs, "after kubeadm renewed kpki's files");
    let (theirs, ours) = same_tables(&kubeadm_node);
    assert_eq!(ours, theirs, "after kpki renewed kubeadm's files");
    for node in [&kubeadm_node, &kpki_node] {
        let pki = node.kubernetes_dir().join("pki");
        for (leaf, ca, purpose) in [
            ("apiserver", "ca", "sslserver"),
            ("etcd/server", "etcd/ca", "sslserver"),
            ("front-proxy-client", "front-proxy-ca", "sslclient"),
        ] {
            let out = openssl(&[
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                pki.join(format!("{ca}.crt")).to_str().unwrap(),
                pki.join(format!("{leaf}.crt")).to_str().unwrap(),
            ]);
            assert!(out.status.success(), "{}: {:?}", pki.display(), text(&out));
        }
    }
}
