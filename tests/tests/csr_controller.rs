//! kpki's CertificateSigningRequest controller against the real kube-apiserver and
//! kube-controller-manager (csrsigning disabled, no CA key file): the CA key on SoftHSM
//! behind `p11-kit server`, the controller running alone (`kpki serve --controller-only`)
//! as a ServiceAccount with the RBAC of `deploy/kubernetes`.
//!
//! - the user path: a CSR approved with `kubectl certificate approve` is signed within 2 s,
//!   honours `expirationSeconds`, and authenticates; a denied one is never touched; one
//!   asking `O=system:masters` gets `Failed` with the reason;
//! - two replicas: one leads; the leader killed mid-way through 200 CSRs, the other signs
//!   the rest within the lease duration + 5 s, one certificate per CSR;
//! - the HSM taken away with 50 CSRs approved: none `Failed`, all signed within 5 s of its
//!   return;
//! - kube-apiserver restarted mid-stream: nothing lost, nothing signed twice.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kpki_e2e::cluster::{Cluster, Daemon, Options, eventually};
use kpki_e2e::csr_api;
use kpki_e2e::{openssl_csr, text};
use serde_json::Value;

const CLIENT: &str = "kubernetes.io/kube-apiserver-client";

fn cluster() -> Cluster {
    Cluster::start(Options {
        controller_manager: true,
        ..Options::default()
    })
}

/// Waits until at least `n` CSRs carry a certificate; returns how long that took.
/// `d` is the controller whose log a failure shows.
fn wait_signed(
    c: &Cluster,
    d: &Daemon,
    what: &str,
    n: usize,
    limit: Duration,
    every: Duration,
) -> Duration {
    let (_, took) = eventually(what, limit, every, || {
        let signed = csr_api::signed(c);
        if signed >= n {
            Ok(())
        } else {
            Err(format!("{signed}/{n} signed\n{}", d.log()))
        }
    });
    took
}

/// `n` client CSRs named `<prefix>-<i>` for `O=dev` users, all with one key.
fn user_objects(c: &Cluster, prefix: &str, n: usize) -> Vec<(String, Value)> {
    let pem = openssl_csr(
        c.dir.path(),
        prefix,
        "p256",
        &format!("/O=dev/CN={prefix}"),
        &[],
    );
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let o = csr_api::object(&name, &pem, CLIENT, &["client auth"], Some(3600));
            (name, o)
        })
        .collect()
}

/// Certificates issued per CSR uid, from every audit trail given (allowed controller
/// decisions).
fn signatures_per_uid(trails: &[&std::path::Path]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for t in trails {
        for l in csr_api::audit_lines(t) {
            if l["event"] == "decision" && l["decision"] == "allow" && l["endpoint"] == "controller"
            {
                *m.entry(l["csr"]["uid"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
        }
    }
    m
}

#[test]
fn approved_user_request_is_signed_denied_is_untouched_system_masters_fails() {
    let c = cluster();
    let kubeconfig = csr_api::install_rbac(&c);
    let r = csr_api::replica(&c, &kubeconfig, "replica-a");
    let mut d = csr_api::start(&c, &r);
    csr_api::wait_leading(&r, &mut d);

    // jane, as in the reference: created and approved by the cluster admin.
    let key = c.dir.path().join("jane.key");
    let jane_csr = openssl_csr(c.dir.path(), "jane", "p256", "/CN=jane/O=dev", &[]);
    let bob_csr = openssl_csr(c.dir.path(), "bob", "p256", "/CN=bob/O=dev", &[]);
    let root_csr = openssl_csr(
        c.dir.path(),
        "mallory",
        "p256",
        "/CN=system:node:mallory/O=system:masters",
        &[],
    );
    let ops_csr = openssl_csr(c.dir.path(), "olga", "p256", "/CN=olga/O=ops", &[]);
    // kube-apiserver itself refuses system:masters for kube-apiserver-client.
    let out = csr_api::try_create(
        &c,
        "admin.conf",
        &[csr_api::object(
            "root",
            &root_csr,
            CLIENT,
            &["client auth"],
            None,
        )],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("system:masters group is not allowed"),
        "{:?}",
        text(&out)
    );
    csr_api::create(
        &c,
        "admin.conf",
        &[
            csr_api::object("jane", &jane_csr, CLIENT, &["client auth"], Some(86400)),
            csr_api::object("bob", &bob_csr, CLIENT, &["client auth"], None),
            // Through the kubelet signer instead: the signer's rules refuse it.
            csr_api::object(
                "mallory",
                &root_csr,
                "kubernetes.io/kube-apiserver-client-kubelet",
                &["digital signature", "client auth"],
                None,
            ),
            // A group no policy rule allows.
            csr_api::object("olga", &ops_csr, CLIENT, &["client auth"], None),
        ],
    );
    csr_api::decide(&c, "approve", &["jane".into()]);
    let (pem, took) = eventually(
        "jane's certificate",
        Duration::from_secs(2),
        Duration::from_millis(20),
        || csr_api::certificate(&csr_api::get(&c, "jane")).ok_or_else(|| d.log()),
    );
    eprintln!("jane: approved → certificate in {took:?}");
    let crt = c.dir.path().join("jane.crt");
    std::fs::write(&crt, &pem).unwrap();
    let out = kpki_e2e::openssl(&[
        "x509",
        "-in",
        crt.to_str().unwrap(),
        "-noout",
        "-subject",
        "-startdate",
        "-enddate",
    ]);
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        shown.contains("O = dev") && shown.contains("CN = jane"),
        "{shown}"
    );
    // expirationSeconds = 86400 honoured (not the policy's 48h, nor the CA's year).
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = block.parse_x509().unwrap();
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        (86_000..=86_400).contains(&lifetime),
        "lifetime {lifetime} s"
    );
    let out = kpki_e2e::openssl(&[
        "verify",
        "-CAfile",
        c.pki().join("ca.crt").to_str().unwrap(),
        crt.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));

    // kubectl as jane authenticates as jane in dev.
    let jane_conf = c.path("jane.conf");
    std::fs::copy(c.path("admin.conf"), &jane_conf).unwrap();
    for args in [
        vec![
            "config",
            "set-credentials",
            "jane",
            &format!("--client-certificate={}", crt.display()),
            &format!("--client-key={}", key.display()),
            "--embed-certs=true",
        ],
        vec!["config", "set-context", "--current", "--user=jane"],
    ] {
        let out = c.kubectl_with(
            &jane_conf,
            &args.iter().map(|s| s.as_ref()).collect::<Vec<&str>>(),
        );
        assert!(out.status.success(), "{:?}", text(&out));
    }
    let (user, groups) = c.whoami(&jane_conf);
    assert_eq!(user, "jane");
    assert!(groups.contains(&"dev".to_string()), "{groups:?}");

    // Denied: never signed, never marked Failed.
    csr_api::decide(&c, "deny", &["bob".into()]);
    // system:masters and an unlisted group: approved by a human, refused by the signer's
    // rules and by the policy → Failed with the reason.
    csr_api::decide(&c, "approve", &["mallory".into(), "olga".into()]);
    for (name, code, words) in [
        ("mallory", "signer_rule", "system:masters"),
        ("olga", "org_not_allowed", "ops"),
    ] {
        let (failed, _) = eventually(
            &format!("{name} Failed"),
            Duration::from_secs(5),
            Duration::from_millis(50),
            || csr_api::condition(&csr_api::get(&c, name), "Failed").ok_or_else(|| d.log()),
        );
        assert_eq!(failed["reason"], "SignerValidationFailure");
        let message = failed["message"].as_str().unwrap();
        eprintln!("{name}: Failed: {message}");
        assert!(
            message.contains(code) && message.contains(words),
            "{message}"
        );
        assert!(csr_api::certificate(&csr_api::get(&c, name)).is_none());
    }
    std::thread::sleep(Duration::from_secs(1));
    let bob = csr_api::get(&c, "bob");
    assert!(
        csr_api::certificate(&bob).is_none(),
        "denied bob was signed"
    );
    assert!(
        csr_api::condition(&bob, "Failed").is_none(),
        "denied bob was touched"
    );

    // Audited: one line per decision naming the CSR, uid, requester and signer.
    let lines = csr_api::audit_lines(&r.audit);
    let jane_line = lines
        .iter()
        .find(|l| l["csr"]["name"] == "jane")
        .expect("jane audited");
    assert_eq!(jane_line["decision"], "allow");
    assert_eq!(jane_line["caller"]["cn"], "kubernetes-admin");
    assert_eq!(jane_line["signer_name"], CLIENT);
    assert_eq!(
        jane_line["csr"]["uid"],
        csr_api::get(&c, "jane")["metadata"]["uid"]
    );
    for (name, code) in [("mallory", "signer_rule"), ("olga", "org_not_allowed")] {
        let line = lines
            .iter()
            .find(|l| l["csr"]["name"] == name)
            .expect("audited");
        assert_eq!(line["decision"], "deny", "{line}");
        assert_eq!(line["code"], code, "{line}");
    }
    assert!(
        lines.iter().all(|l| l["csr"]["name"] != "bob"),
        "bob audited"
    );
    let out = kpki_e2e::kpki(&["audit", "verify", "--allow-open", r.audit.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));

    // Metrics.
    let m = csr_api::metrics(&r);
    assert_eq!(
        csr_api::metric(&m, "kpki_csr_signed_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        csr_api::metric(&m, "kpki_csr_failed_total"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        csr_api::metric(&m, "kpki_csr_approval_to_certificate_seconds_count"),
        Some(1.0),
        "{m}"
    );
    d.stop();
    assert!(d.log().contains("released its lease"), "{}", d.log());
}

#[test]
fn two_replicas_one_signs_and_the_other_takes_over_when_the_leader_is_killed() {
    let c = cluster();
    let kubeconfig = csr_api::install_rbac(&c);
    let ra = csr_api::replica(&c, &kubeconfig, "replica-a");
    let rb = csr_api::replica(&c, &kubeconfig, "replica-b");
    let mut da = csr_api::start(&c, &ra);
    csr_api::wait_leading(&ra, &mut da);
    let mut db = csr_api::start(&c, &rb);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!csr_api::leads(&rb), "two leaders");

    let objects = user_objects(&c, "u", 200);
    let names: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
    let t = Instant::now();
    csr_api::create(
        &c,
        "admin.conf",
        &objects.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
    );
    eprintln!("200 created in {:?}", t.elapsed());
    // Approve all 200 from another thread; kill the leader once it has signed some.
    let killed = std::thread::scope(|s| {
        let approving = s.spawn(|| {
            let t = Instant::now();
            csr_api::decide(&c, "approve", &names);
            eprintln!("200 approved in {:?}", t.elapsed());
        });
        wait_signed(
            &c,
            &da,
            "some signed",
            20,
            Duration::from_secs(30),
            Duration::from_millis(20),
        );
        da.kill();
        let killed = Instant::now();
        approving.join().expect("approvals");
        killed
    });
    wait_signed(
        &c,
        &db,
        "all 200 signed by the survivor",
        200,
        Duration::from_secs(4 + 5),
        Duration::from_millis(100),
    );
    eprintln!("leader killed; all 200 signed {:?} later", killed.elapsed());
    assert!(killed.elapsed() <= Duration::from_secs(4 + 5));
    assert!(csr_api::leads(&rb));
    // One certificate per CSR; every uid signed once across both trails.
    let items = csr_api::list(&c);
    assert!(
        items
            .iter()
            .all(|o| csr_api::condition(o, "Failed").is_none())
    );
    let per_uid = signatures_per_uid(&[&ra.audit, &rb.audit]);
    let twice: Vec<_> = per_uid.iter().filter(|(_, n)| **n > 1).collect();
    let a = signatures_per_uid(&[&ra.audit]).len();
    let b = signatures_per_uid(&[&rb.audit]).len();
    eprintln!(
        "signatures: {} uids, {} signed more than once; replica-a signed {a}, replica-b {b}",
        per_uid.len(),
        twice.len()
    );
    assert_eq!(per_uid.len(), 200);
    assert!(twice.is_empty(), "signed twice: {twice:?}");
    assert!(a >= 20 && b >= 1, "a {a} b {b}");
    let _ = db.exited();
}

#[test]
fn hsm_outage_leaves_requests_pending_and_they_are_signed_when_it_returns() {
    let mut c = cluster();
    let kubeconfig = csr_api::install_rbac(&c);
    let r = csr_api::replica(&c, &kubeconfig, "replica-a");
    let mut d = csr_api::start(&c, &r);
    csr_api::wait_leading(&r, &mut d);

    c.stop_token();
    let objects = user_objects(&c, "o", 50);
    let names: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
    csr_api::create(
        &c,
        "admin.conf",
        &objects.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
    );
    csr_api::decide(&c, "approve", &names);
    std::thread::sleep(Duration::from_secs(3));
    let items = csr_api::list(&c);
    assert!(
        items.iter().all(|o| csr_api::certificate(o).is_none()),
        "signed without the HSM"
    );
    assert!(
        items
            .iter()
            .all(|o| csr_api::condition(o, "Failed").is_none()),
        "Failed for an outage"
    );
    assert_eq!(
        csr_api::metric(&csr_api::metrics(&r), "kpki_csr_pending"),
        Some(50.0)
    );

    c.start_token_server();
    let back = Instant::now();
    wait_signed(
        &c,
        &d,
        "all 50 signed after the HSM returned",
        50,
        Duration::from_secs(5),
        Duration::from_millis(50),
    );
    eprintln!("HSM back: 50 signed {:?} later", back.elapsed());
    assert!(
        csr_api::list(&c)
            .iter()
            .all(|o| csr_api::condition(o, "Failed").is_none())
    );
    let per_uid = signatures_per_uid(&[&r.audit]);
    assert_eq!(per_uid.len(), 50);
    assert!(per_uid.values().all(|n| *n == 1));
}

#[test]
fn kube_apiserver_restart_mid_stream_loses_nothing_and_signs_nothing_twice() {
    let mut c = cluster();
    let kubeconfig = csr_api::install_rbac(&c);
    let r = csr_api::replica(&c, &kubeconfig, "replica-a");
    let mut d = csr_api::start(&c, &r);
    csr_api::wait_leading(&r, &mut d);

    let objects = user_objects(&c, "r", 100);
    let names: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
    csr_api::create(
        &c,
        "admin.conf",
        &objects.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
    );
    csr_api::decide(&c, "approve", &names[..60]);
    c.restart_apiserver();
    csr_api::decide(&c, "approve", &names[60..]);
    let took = wait_signed(
        &c,
        &d,
        "all 100 signed after the restart",
        100,
        Duration::from_secs(30),
        Duration::from_millis(100),
    );
    eprintln!("after the restart: all signed within {took:?}");
    assert!(!d.exited(), "controller exited: {}", d.log());
    let per_uid = signatures_per_uid(&[&r.audit]);
    assert_eq!(per_uid.len(), 100);
    let twice: Vec<_> = per_uid.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "signed twice: {twice:?}");
}

#[test]
fn kubelet_bootstrap_rotation_and_serving_signed_by_kpki_with_its_approver() {
    use kpki_e2e::kubelet;
    let c = cluster();
    let kubeconfig = csr_api::install_rbac(&c);
    let r = csr_api::replica(&c, &kubeconfig, "replica-a");
    let mut d = csr_api::start(&c, &r);
    csr_api::wait_leading(&r, &mut d);
    let limit = Duration::from_secs(30);

    // TLS bootstrap with a bootstrap token: approved by kube-controller-manager's
    // csrapproving (kubeadm's RBAC), signed by kpki.
    let node = kubelet::Node::new(&c, "worker1.test");
    kubelet::prepare_bootstrap(&c, &node);
    let boot = node.bootstrap(limit);
    assert!(boot.success(), "bootstrap: {boot:?}\n{}", d.log());
    let boot_csr = csr_api::get(&c, boot.csr().expect("csr name"));
    assert_eq!(
        csr_api::condition(&boot_csr, "Approved").unwrap()["reason"],
        "AutoApproved"
    );
    let (user, groups) = c.whoami(&node.kubeconfig);
    assert_eq!(user, "system:node:worker1.test");
    assert!(groups.contains(&"system:nodes".to_string()), "{groups:?}");

    // Client rotation, as the node itself (selfnodeclient).
    let rotated = node.rotate_client(None, limit);
    assert!(rotated.success(), "rotate-client: {rotated:?}\n{}", d.log());
    assert_ne!(rotated.field("serial"), boot.field("serial"));
    assert_eq!(c.whoami(&node.kubeconfig).0, "system:node:worker1.test");

    // Serving: the node registers its addresses; kpki's approver approves a request for
    // exactly those, and leaves one naming another host for a human.
    let reg = node.register(None, &["127.0.0.1"], &["worker1.internal.test"]);
    assert!(reg.success(), "register-node: {reg:?}");
    let serving = node.serving(None, &["127.0.0.1"], &["worker1.internal.test"], limit);
    assert!(serving.success(), "serving: {serving:?}\n{}", d.log());
    let serving_csr = csr_api::get(&c, serving.csr().expect("csr name"));
    let approved = csr_api::condition(&serving_csr, "Approved").unwrap();
    assert_eq!(approved["reason"], "AutoApproved");
    assert!(
        approved["message"].as_str().unwrap().contains("kpki"),
        "{approved}"
    );

    let foreign = node.serving(None, &["127.0.0.1"], &["evil.test"], Duration::from_secs(5));
    assert!(!foreign.success(), "foreign SAN signed: {foreign:?}");
    let foreign_csr = csr_api::get(&c, foreign.csr().expect("csr name"));
    assert!(csr_api::condition(&foreign_csr, "Approved").is_none());
    assert!(csr_api::certificate(&foreign_csr).is_none());
    let lines = csr_api::audit_lines(&r.audit);
    let left = lines
        .iter()
        .find(|l| l["event"] == "approval" && l["csr"]["name"] == foreign.csr().unwrap())
        .expect("approval audited");
    assert_eq!(left["decision"], "deny");
    assert!(
        left["reason"].as_str().unwrap().contains("DNS:evil.test"),
        "{left}"
    );
    let m = csr_api::metrics(&r);
    assert_eq!(
        csr_api::metric(&m, "kpki_csr_approved_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        csr_api::metric(&m, "kpki_csr_signed_total"),
        Some(3.0),
        "{m}"
    );
}

#[test]
fn kpki_approves_kubelet_client_requests_by_rbac_when_csrapproving_is_off() {
    use kpki_e2e::kubelet;
    let mut c = Cluster::start(Options::default());
    c.start_controller_manager_with(&["--controllers=*,-csrsigning,-csrapproving".into()]);
    let kubeconfig = csr_api::install_rbac(&c);
    let r = csr_api::replica_approving(
        &c,
        &kubeconfig,
        "replica-a",
        &["kubernetes.io/kube-apiserver-client-kubelet"],
    );
    let mut d = csr_api::start(&c, &r);
    csr_api::wait_leading(&r, &mut d);
    let limit = Duration::from_secs(30);

    let node = kubelet::Node::new(&c, "worker2.test");
    kubelet::prepare_bootstrap(&c, &node);
    let boot = node.bootstrap(limit);
    assert!(boot.success(), "bootstrap: {boot:?}\n{}", d.log());
    let approved = csr_api::condition(&csr_api::get(&c, boot.csr().unwrap()), "Approved").unwrap();
    assert_eq!(approved["reason"], "AutoApproved");
    assert!(
        approved["message"]
            .as_str()
            .unwrap()
            .contains("kpki: nodeclient"),
        "{approved}"
    );
    let rotated = node.rotate_client(None, limit);
    assert!(rotated.success(), "rotate-client: {rotated:?}\n{}", d.log());
    let approved =
        csr_api::condition(&csr_api::get(&c, rotated.csr().unwrap()), "Approved").unwrap();
    assert!(
        approved["message"]
            .as_str()
            .unwrap()
            .contains("selfnodeclient"),
        "{approved}"
    );
    assert_eq!(c.whoami(&node.kubeconfig).0, "system:node:worker2.test");

    // The cluster admin asking a kubelet certificate for a node: neither a bootstrap token
    // nor the node itself, so left for a human (and audited).
    let pem = openssl_csr(
        c.dir.path(),
        "w3",
        "p256",
        "/O=system:nodes/CN=system:node:worker3.test",
        &[],
    );
    csr_api::create(
        &c,
        "admin.conf",
        &[csr_api::object(
            "w3",
            &pem,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &["digital signature", "client auth"],
            None,
        )],
    );
    let (line, _) = eventually(
        "w3 approval audited",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            csr_api::audit_lines(&r.audit)
                .into_iter()
                .find(|l| l["event"] == "approval" && l["csr"]["name"] == "w3")
                .ok_or_else(|| d.log())
        },
    );
    assert_eq!(line["decision"], "deny");
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("neither a bootstrap token"),
        "{line}"
    );
    let w3 = csr_api::get(&c, "w3");
    assert!(csr_api::condition(&w3, "Approved").is_none());
    assert!(csr_api::certificate(&w3).is_none());
}
