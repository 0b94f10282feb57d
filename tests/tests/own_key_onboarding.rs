//! A user who keeps her own key: `kpki sign her.csr --kubeconfig-out … --client-key …
//! --rbac … --rbac-out …` gives her certificate, a kubeconfig that names her key file (never
//! reads it) and that kubectl uses to reach a TLS server as exactly her user and groups, and
//! the RBAC binding for her CN. Refused, writing nothing, for other signers and when a file
//! exists.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use k8s_openapi::api::rbac::v1::RoleBinding;
use kpki_e2e::tls_server::{self, Identity};
use kpki_e2e::{hsm, init_cluster, kpki, openssl_csr, snapshot, text};

#[test]
fn sign_gives_a_kubeconfig_and_rbac_for_a_key_the_user_keeps() {
    hsm::require_tool("kubectl");
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_cluster(
        &root,
        "127.0.0.1",
        &["--key", &format!("ca={}", token.key_uri("own-key-ca"))],
    );
    let pki = root.join("pki");
    let r = root.to_str().unwrap();
    let home = dir.path().join("jane");
    std::fs::create_dir(&home).unwrap();
    let csr = home.join("jane.csr");
    std::fs::write(
        &csr,
        openssl_csr(&home, "jane", "p256", "/CN=jane/O=dev", &[]),
    )
    .unwrap();
    let key = home.join("jane.key");
    let key_before = std::fs::read(&key).unwrap();
    let (conf, rbac) = (home.join("jane.conf"), home.join("jane-rbac.yaml"));
    let c = csr.to_str().unwrap();
    let args = [
        "sign",
        c,
        "--dir",
        r,
        "--kubeconfig-out",
        conf.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
        "--rbac",
        "clusterrole=view,namespace=dev",
        "--rbac-out",
        rbac.to_str().unwrap(),
    ];
    let out = kpki(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.contains("BEGIN CERTIFICATE"),
        "{:?}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        key_before,
        "her key is untouched"
    );
    let yaml = std::fs::read_to_string(&conf).unwrap();
    assert!(!yaml.contains("client-key-data"), "{yaml}");
    assert!(
        yaml.contains(&format!("client-key: {}", key.display())),
        "{yaml}"
    );
    let binding: RoleBinding = serde_norway::from_str(&std::fs::read_to_string(&rbac).unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(binding.role_ref.name, "view");
    assert_eq!(binding.metadata.namespace.as_deref(), Some("dev"));
    assert_eq!(binding.subjects.unwrap()[0].name, "jane");

    // kubectl with her kubeconfig (her key from her file) is jane in group dev.
    let server = tls_server::start(
        &pki.join("apiserver.crt"),
        &pki.join("apiserver.key"),
        &pki.join("ca.crt"),
    );
    let run = std::process::Command::new("kubectl")
        .args(["--kubeconfig", conf.to_str().unwrap(), "--server"])
        .arg(format!("https://127.0.0.1:{}", server.port))
        .args(["get", "--raw", "/api"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{:?}", text(&run));
    let seen = server.seen.lock().unwrap().clone();
    let want = Identity {
        user: "jane".into(),
        groups: vec!["dev".into()],
    };
    assert!(
        !seen.is_empty() && seen.iter().all(|i| *i == want),
        "{seen:?}"
    );

    // Existing files are never replaced, and nothing is written.
    let before = snapshot::tree(&home);
    let out = kpki(&args);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("already exists"), "{:?}", text(&out));
    snapshot::assert_same("existing kubeconfig", &before, &snapshot::tree(&home));

    // Only API client certificates get a kubeconfig.
    let other = home.join("other.conf");
    let out = kpki(&[
        "sign",
        c,
        "--dir",
        r,
        "--signer-name",
        "kubernetes.io/kubelet-serving",
        "--kubeconfig-out",
        other.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("--kubeconfig-out and --rbac are for"),
        "{:?}",
        text(&out)
    );
    assert!(!other.exists());

    // --client-key without --kubeconfig-out (and the reverse) is a usage error.
    let out = kpki(&["sign", c, "--dir", r, "--client-key", "k"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

/// Every duration kpki reads accepts days (`30d`) as well as Go durations — flags, kpki.toml,
/// `KPKI__…` — except kubeadm's own YAML, which keeps kubeadm's Go-only grammar.
#[test]
fn durations_accept_days_wherever_kpki_reads_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_cluster(&root, "10.0.0.10", &[]);
    let r = root.to_str().unwrap();
    let conf = dir.path().join("u.conf");
    let ok = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(kpki_e2e::kpki_bin())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?} {env:?}: {:?}", text(&out));
        text(&out).0
    };
    ok(
        &[
            "certs",
            "check-expiration",
            "--dir",
            r,
            "--warn-within",
            "30d",
        ],
        &[],
    );
    ok(
        &[
            "kubeconfig",
            "user",
            "--dir",
            r,
            "--client-name",
            "jane",
            "--validity",
            "30d",
            "--out",
            conf.to_str().unwrap(),
        ],
        &[],
    );
    let out_dir = dir.path().join("cas");
    ok(
        &[
            "ca",
            "create",
            "x",
            "--key",
            &format!("file:{}", dir.path().join("x.key").display()),
            "--validity",
            "30d",
            "--out-dir",
            out_dir.to_str().unwrap(),
        ],
        &[],
    );
    let toml = dir.path().join("kpki.toml");
    std::fs::write(
        &toml,
        "[cluster]\ncertificate_validity = \"30d\"\nsigning_duration = \"7d\"\n",
    )
    .unwrap();
    ok(
        &[
            "init",
            "--dir",
            dir.path().join("m").to_str().unwrap(),
            "--config",
            toml.to_str().unwrap(),
            "--node-name",
            "cp1",
            "--advertise-address",
            "10.0.0.10",
        ],
        &[],
    );
    let apiserver = dir.path().join("m/pki/apiserver.crt");
    ok(
        &[
            "init",
            "--dir",
            dir.path().join("e").to_str().unwrap(),
            "--node-name",
            "cp1",
            "--advertise-address",
            "10.0.0.10",
        ],
        &[("KPKI__CLUSTER__CERTIFICATE_VALIDITY", "30d")],
    );
    // Both PKIs' leaves and the CA live 30 days from now.
    for f in [
        apiserver.clone(),
        dir.path().join("e/pki/apiserver.crt"),
        out_dir.join("x.crt"),
    ] {
        let f = f.to_str().unwrap();
        let ends_within = |secs: &str| {
            !kpki_e2e::openssl(&["x509", "-noout", "-checkend", secs, "-in", f])
                .status
                .success()
        };
        assert!(ends_within("2592001"), "{f} lives longer than 30 days");
        assert!(!ends_within("2591000"), "{f} lives less than 30 days");
    }
    // kubeadm's YAML keeps kubeadm's grammar: Go durations only.
    let yaml = dir.path().join("kubeadm.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificateValidityPeriod: 30d\n",
    )
    .unwrap();
    let out = kpki(&[
        "init",
        "--dir",
        dir.path().join("y").to_str().unwrap(),
        "--kubeadm-config",
        yaml.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out).1.contains("certificateValidityPeriod"),
        "{:?}",
        text(&out)
    );
}
