//! A 3-member etcd cluster on 127.0.0.1 built from three `kpki init` runs (one init, two
//! joins) with client and peer certificate authentication: quorum forms, etcdctl with the
//! healthcheck and apiserver client certificates can put and get, and a client certificate
//! from the cluster CA (`ca`) is rejected.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kpki_e2e::{hsm, kpki, text};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster(Vec<Child>);

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn etcdctl(endpoints: &str, pki: &Path, client: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
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
        .args(args);
    cmd.output().unwrap()
}

#[test]
fn three_member_etcd_cluster_from_three_kpki_runs() {
    hsm::require_tool("etcd");
    hsm::require_tool("etcdctl");
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<PathBuf> = (1..=3)
        .map(|i| dir.path().join(format!("node{i}")))
        .collect();
    for (i, root) in nodes.iter().enumerate() {
        if i > 0 {
            for f in [
                "ca.crt",
                "ca.key",
                "front-proxy-ca.crt",
                "front-proxy-ca.key",
                "etcd/ca.crt",
                "etcd/ca.key",
                "sa.key",
                "sa.pub",
            ] {
                let to = root.join("pki").join(f);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(nodes[0].join("pki").join(f), &to).unwrap();
            }
        }
        let name = format!("etcd{}", i + 1);
        let out = kpki(&[
            "init",
            "--dir",
            root.to_str().unwrap(),
            "--node-name",
            &name,
            "--advertise-address",
            "127.0.0.1",
            "--encryption-algorithm",
            "ECDSA-P256",
        ]);
        assert!(out.status.success(), "{name}: {:?}", text(&out));
    }
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("etcd{}=https://127.0.0.1:{p}", i + 1))
        .collect();
    let mut cluster = Cluster(Vec::new());
    for (i, root) in nodes.iter().enumerate() {
        let pki = root.join("pki");
        let (client, peer) = ports[i];
        let log = std::fs::File::create(dir.path().join(format!("etcd{}.log", i + 1))).unwrap();
        let child = Command::new("etcd")
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
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=kpki-test")
            .arg("--client-cert-auth")
            .arg(format!(
                "--trusted-ca-file={}",
                pki.join("etcd/ca.crt").display()
            ))
            .arg(format!(
                "--cert-file={}",
                pki.join("etcd/server.crt").display()
            ))
            .arg(format!(
                "--key-file={}",
                pki.join("etcd/server.key").display()
            ))
            .arg("--peer-client-cert-auth")
            .arg(format!(
                "--peer-trusted-ca-file={}",
                pki.join("etcd/ca.crt").display()
            ))
            .arg(format!(
                "--peer-cert-file={}",
                pki.join("etcd/peer.crt").display()
            ))
            .arg(format!(
                "--peer-key-file={}",
                pki.join("etcd/peer.key").display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        cluster.0.push(child);
    }
    let endpoints: Vec<String> = ports
        .iter()
        .map(|(c, _)| format!("https://127.0.0.1:{c}"))
        .collect();
    let all = endpoints.join(",");
    let pki1 = nodes[0].join("pki");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcdctl(
            &all,
            &pki1,
            "etcd/healthcheck-client",
            &["endpoint", "health"],
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not become healthy: {:?}\n{}",
            text(&out),
            std::fs::read_to_string(dir.path().join("etcd1.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let members = etcdctl(&all, &pki1, "etcd/healthcheck-client", &["member", "list"]);
    assert_eq!(text(&members).0.lines().count(), 3, "{:?}", text(&members));

    let put = etcdctl(
        &endpoints[0],
        &pki1,
        "etcd/healthcheck-client",
        &["put", "kpki", "works"],
    );
    assert!(put.status.success(), "{:?}", text(&put));
    // Read through another member with the apiserver's client certificate of another node.
    let pki3 = nodes[2].join("pki");
    let get = etcdctl(
        &endpoints[2],
        &pki3,
        "apiserver-etcd-client",
        &["get", "kpki", "--print-value-only"],
    );
    assert!(get.status.success(), "{:?}", text(&get));
    assert_eq!(text(&get).0.trim(), "works");
    let put2 = etcdctl(
        &endpoints[1],
        &pki3,
        "apiserver-etcd-client",
        &["put", "kpki2", "too"],
    );
    assert!(put2.status.success(), "{:?}", text(&put2));

    // A client certificate from the cluster CA is not an etcd client.
    let rejected = etcdctl(
        &endpoints[0],
        &pki1,
        "apiserver-kubelet-client",
        &["get", "kpki"],
    );
    assert!(
        !rejected.status.success(),
        "a ca-signed client was accepted: {:?}",
        text(&rejected)
    );
}
