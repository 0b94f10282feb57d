//! The kubelet's side of the Certificates API on a real control plane whose
//! kube-controller-manager runs without its csrsigning controller (the CA key is on the
//! token): the kubelet's own certificate code, driven by `tests/kubelet-csr`, creates the
//! requests a kubelet creates, kubeadm's TLS bootstrap RBAC has kube-controller-manager's
//! csrapproving controller approve the client ones, and nothing in the cluster signs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use kpki_e2e::cluster::{Cluster, Options};
use kpki_e2e::kubelet::{
    self, BOOTSTRAP_GROUP, CLIENT_SIGNER, Node, SERVING_SIGNER, csr_condition, csr_object,
    parse_request, wait_csr_condition,
};
use kpki_e2e::text;

fn cluster() -> Cluster {
    // A missing build fails before a cluster is started for nothing.
    kubelet::kubelet_csr_bin();
    Cluster::start(Options {
        controller_manager: true,
        ..Options::default()
    })
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// The CSRs whose requester is `username`.
fn csrs_of(c: &Cluster, username: &str) -> Vec<String> {
    let out = c.kubectl("super-admin.conf", &["get", "csr", "-o", "json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["spec"]["username"] == username)
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tls_bootstrap_request_is_the_kubelets_and_kube_controller_manager_approves_it() {
    let c = cluster();
    let node = Node::new(&c, "worker1");
    let token = kubelet::create_bootstrap_token(&c);
    kubelet::write_bootstrap_kubeconfig(&c, &token, &node.bootstrap_kubeconfig);

    // Without kubeadm's RBAC the token authenticates but may not post a CSR.
    let out = node.bootstrap(Duration::from_secs(20));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    assert!(
        out.stderr.contains("forbidden") && out.stderr.contains(&token.username()),
        "{out:?}"
    );
    assert!(out.csr().is_none(), "{out:?}");
    assert!(!node.kubeconfig.exists(), "no kubeconfig after a failure");

    kubelet::apply_bootstrap_rbac(&c);
    let mut run = node.spawn_bootstrap(Duration::from_secs(15));
    let name = run.csr_name(Duration::from_secs(30));
    assert!(
        name.starts_with("node-csr-"),
        "the kubelet names its bootstrap CSR by digest: {name}"
    );
    let csr = wait_csr_condition(&c, &name, "Approved", Duration::from_secs(30));
    let spec = &csr["spec"];
    assert_eq!(spec["signerName"], CLIENT_SIGNER, "{csr}");
    assert_eq!(
        strings(&spec["usages"]),
        ["digital signature", "client auth"],
        "an ECDSA key: no key encipherment"
    );
    assert_eq!(spec["username"], token.username().as_str(), "{csr}");
    let groups = strings(&spec["groups"]);
    for g in [
        "system:bootstrappers",
        BOOTSTRAP_GROUP,
        "system:authenticated",
    ] {
        assert!(groups.iter().any(|x| x == g), "{g} missing: {groups:?}");
    }
    let approved = csr_condition(&csr, "Approved").unwrap();
    assert_eq!(approved["reason"], "AutoApproved", "{approved}");
    assert_eq!(
        approved["message"],
        "Auto approving kubelet client certificate after SubjectAccessReview."
    );
    let req = parse_request(&csr);
    assert_eq!(req.common_names, ["system:node:worker1"]);
    assert_eq!(req.organizations, ["system:nodes"]);
    assert!(
        req.dns.is_empty() && req.ips.is_empty() && req.other_sans.is_empty(),
        "{req:?}"
    );

    // Nothing signs: the kubelet gives up at its timeout, says where the request stands, and
    // writes no kubeconfig and no certificate.
    let out = run.finish();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "kubelet-csr bootstrap: no certificate within 15s: CSR {name} is approved but no \
             certificate was issued"
        )
    );
    assert!(!node.kubeconfig.exists());
    assert!(!node.cert_dir.join("kubelet-client-current.pem").exists());
    let csr = csr_object(&c, &name);
    assert!(csr["status"]["certificate"].is_null(), "{csr}");

    // Started again, the kubelet keeps its key and so finds its own request instead of
    // posting another.
    let out = node.bootstrap(Duration::from_secs(5));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.csr(), Some(name.as_str()), "{out:?}");
    assert_eq!(csrs_of(&c, &token.username()), [name]);
}

#[test]
fn node_rotation_serving_and_registration_requests() {
    let c = cluster();
    kubelet::apply_bootstrap_rbac(&c);
    // The control-plane node's kubelet.conf from `kpki init` (system:node:cp1, embedded
    // certificate): the kubelet rotates it out with its client certificate manager.
    let node = Node::new(&c, "cp1");
    let initial = c.path("kubelet.conf");

    // Client rotation: requested as the node, approved as a self rotation (selfnodeclient),
    // never signed.
    let mut run = node.spawn_rotate_client(Some(&initial), Duration::from_secs(10));
    let name = run.csr_name(Duration::from_secs(30));
    let csr = wait_csr_condition(&c, &name, "Approved", Duration::from_secs(30));
    assert_eq!(csr["spec"]["signerName"], CLIENT_SIGNER);
    assert_eq!(csr["spec"]["username"], "system:node:cp1");
    assert_eq!(
        strings(&csr["spec"]["groups"]),
        ["system:nodes", "system:authenticated"]
    );
    assert_eq!(
        strings(&csr["spec"]["usages"]),
        ["digital signature", "client auth"]
    );
    let approved = csr_condition(&csr, "Approved").unwrap();
    assert_eq!(approved["reason"], "AutoApproved");
    assert_eq!(
        approved["message"],
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    );
    let req = parse_request(&csr);
    assert_eq!(req.common_names, ["system:node:cp1"]);
    assert_eq!(req.organizations, ["system:nodes"]);
    let out = run.finish();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "CSR {name} is approved but no certificate was issued"
        )),
        "{out:?}"
    );

    // Serving: requested for the node's addresses; kube-controller-manager never approves
    // kubelet-serving, so it stays pending until a human (or an approver) acts.
    let mut run = node.spawn_serving(
        Some(&initial),
        &["127.0.0.1"],
        &["cp1.example"],
        Duration::from_secs(30),
    );
    let name = run.csr_name(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let csr = csr_object(&c, &name);
    assert_eq!(csr["spec"]["signerName"], SERVING_SIGNER);
    assert_eq!(csr["spec"]["username"], "system:node:cp1");
    assert_eq!(
        strings(&csr["spec"]["usages"]),
        ["digital signature", "server auth"]
    );
    assert!(
        csr["status"]["conditions"].is_null(),
        "still pending after 3 s: {csr}"
    );
    let req = parse_request(&csr);
    assert_eq!(req.common_names, ["system:node:cp1"]);
    assert_eq!(req.organizations, ["system:nodes"]);
    assert_eq!(req.dns, ["cp1.example"]);
    assert_eq!(req.ips, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    assert!(req.other_sans.is_empty(), "{req:?}");
    // Denied: the kubelet's wait ends at once with the condition's reason and message.
    let out = c.kubectl("super-admin.conf", &["certificate", "deny", &name]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run.finish();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "kubelet-csr serving: CSR {name} was denied (reason \"KubectlDeny\", message \"This \
             CSR was denied by kubectl certificate deny.\")"
        )
    );
    assert!(!node.cert_dir.join("kubelet-server-current.pem").exists());

    // Approved by hand: the wait goes on for the signer.
    let mut run = node.spawn_serving(Some(&initial), &["127.0.0.1"], &[], Duration::from_secs(8));
    let name = run.csr_name(Duration::from_secs(30));
    let out = c.kubectl("super-admin.conf", &["certificate", "approve", &name]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run.finish();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "kubelet-csr serving: no certificate within 8s: CSR {name} is approved but no \
             certificate was issued"
        )
    );

    // Registration: the node writes its own Node object and only its own.
    let out = node.register(Some(&initial), &["127.0.0.1"], &[]);
    assert!(out.success(), "{out:?}");
    assert_eq!(out.field("node"), Some("cp1 created"));
    let out = node.register(
        Some(&initial),
        &["127.0.0.1", "10.0.0.10"],
        &["cp1.example"],
    );
    assert!(out.success(), "{out:?}");
    assert_eq!(out.field("node"), Some("cp1 updated"));
    let got = c.kubectl("super-admin.conf", &["get", "node", "cp1", "-o", "json"]);
    assert!(got.status.success(), "{:?}", text(&got));
    let obj: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    let addresses: Vec<(String, String)> = obj["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["type"].as_str().unwrap().to_string(),
                a["address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        addresses,
        [
            ("InternalIP".to_string(), "127.0.0.1".to_string()),
            ("InternalIP".into(), "10.0.0.10".into()),
            ("InternalDNS".into(), "cp1.example".into()),
            ("Hostname".into(), "cp1".into()),
        ]
    );
    assert_eq!(obj["metadata"]["labels"]["kubernetes.io/hostname"], "cp1");
    let other = Node::new(&c, "worker2");
    let out = other.register(Some(&initial), &["127.0.0.9"], &[]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "kubelet-csr register-node: create Node worker2: nodes \"worker2\" is forbidden: node \
         \"cp1\" is not allowed to modify node \"worker2\""
    );
}
