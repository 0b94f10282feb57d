//! `--dry-run` of `init`, `certs renew` and the `ca` commands (`create`, `csr`, `install`,
//! `rotate`): the plan is printed (what would be
//! generated, kept, renewed or created, with paths and key URIs, never a PIN value), exit 0,
//! and nothing is written — the PKI tree and the token's files are unchanged byte for byte.
//! A key that cannot be reached fails the dry run as it would fail the command.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use kpki_e2e::{hsm, init_cluster, kpki, openssl, openssl_ca, snapshot, text};

/// The SoftHSM token files of this process.
fn token_files() -> std::path::PathBuf {
    hsm::softhsm().dir().join("tokens")
}

/// The token's objects, byte for byte: every file of the token directories but SoftHSM's
/// `token.object`, where SoftHSM itself counts every login (a generation counter and login
/// flags, rewritten by any C_Login, `pkcs11-tool --login --list-objects` included).
fn token_objects() -> snapshot::Tree {
    let mut t = snapshot::tree(&token_files());
    t.retain(|p, _| p.file_name() != Some(std::ffi::OsStr::new("token.object")));
    t
}

/// Runs `args`, which must succeed, print nothing on stderr and change neither `root` nor
/// the token files; returns stdout.
fn unchanged(root: &Path, args: &[&str]) -> String {
    let (tree, tokens) = (snapshot::tree(root), token_objects());
    let out = kpki(args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{args:?}: {stdout} {stderr}");
    assert!(stderr.is_empty(), "{args:?}: {stderr}");
    assert!(
        !stdout.contains("pin-value") && !stdout.contains(hsm::USER_PIN),
        "{args:?}: {stdout}"
    );
    snapshot::assert_same(&format!("{args:?}"), &tree, &snapshot::tree(root));
    snapshot::assert_same(&format!("{args:?} (token)"), &tokens, &token_objects());
    stdout
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn init_dry_run_plans_and_writes_nothing() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let r = root.to_str().unwrap();
    let ca = token.key_uri_with_pin("dry-ca", hsm::USER_PIN);
    let key = format!("ca={ca}");
    let base = [
        "init",
        "--dir",
        r,
        "--node-name",
        "cp1",
        "--advertise-address",
        "10.0.0.10",
        "--key",
        &key,
        "--dry-run",
    ];

    // Nothing there yet: everything to generate, the CA key on the token.
    let shown = unchanged(dir.path(), &base);
    assert!(!root.exists());
    assert!(shown.contains("nothing is written"), "{shown}");
    let line = shown
        .lines()
        .find(|l| l.contains("object=dry-ca"))
        .unwrap_or_else(|| panic!("the CA key is not shown: {shown}"));
    assert!(
        line.contains("generate") && line.contains(" key "),
        "{line}"
    );
    assert!(shown.contains(&format!("{r}/pki/apiserver.crt")), "{shown}");
    let mut args = base.to_vec();
    args.extend(["-o", "json"]);
    let plan = json(&unchanged(dir.path(), &args));
    assert_eq!(plan["dry_run"], true);
    let files = plan["files"].as_array().unwrap();
    assert_eq!(files.len(), 28, "{plan:#}");
    assert!(files.iter().all(|f| f["action"] == "generate"), "{plan:#}");

    // After init: everything kept; a removed leaf is to generate.
    let real: Vec<&str> = base[..base.len() - 1].to_vec();
    let out = kpki(&real);
    assert!(out.status.success(), "{:?}", text(&out));
    let plan = json(&unchanged(&root, &args));
    let actions = |plan: &serde_json::Value, want: &str| -> Vec<String> {
        plan["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["action"] == want)
            .map(|f| {
                format!(
                    "{} {}",
                    f["name"].as_str().unwrap(),
                    f["kind"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert!(actions(&plan, "generate").is_empty(), "{plan:#}");
    assert_eq!(actions(&plan, "keep").len(), 28, "{plan:#}");
    std::fs::remove_file(root.join("pki/apiserver.crt")).unwrap();
    std::fs::remove_file(root.join("pki/apiserver.key")).unwrap();
    let plan = json(&unchanged(&root, &args));
    assert_eq!(
        actions(&plan, "generate"),
        ["apiserver key", "apiserver certificate"],
        "{plan:#}"
    );

    // kubeadm's external CA: no ca.key, nothing configured.
    let plain = dir.path().join("plain");
    init_cluster(&plain, "10.0.0.11", &[]);
    std::fs::remove_file(plain.join("pki/ca.key")).unwrap();
    let p = plain.to_str().unwrap();
    let shown = unchanged(
        &plain,
        &[
            "init",
            "--dir",
            p,
            "--node-name",
            "cp1",
            "--advertise-address",
            "10.0.0.11",
            "--dry-run",
        ],
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("external") && l.contains("pki/ca.key")),
        "{shown}"
    );

    // An unreachable key fails the dry run as it fails init.
    let wrong = format!("ca={}", token.key_uri_with_pin("dry-ca", "999999"));
    let mut args = base.to_vec();
    args[8] = &wrong;
    let before = snapshot::tree(&root);
    let out = kpki(&args);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(text(&out).1.contains("wrong PIN"), "{:?}", text(&out));
    snapshot::assert_same("wrong PIN", &before, &snapshot::tree(&root));
}

#[test]
fn renew_dry_run_plans_and_writes_nothing() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let r = root.to_str().unwrap();
    init_cluster(
        &root,
        "10.0.0.10",
        &["--key", &format!("ca={}", token.key_uri("renew-ca"))],
    );
    let shown = unchanged(&root, &["certs", "renew", "all", "--dir", r, "--dry-run"]);
    assert!(shown.contains("11 to renew; nothing is written"), "{shown}");
    let line = shown
        .lines()
        .find(|l| l.contains("apiserver.crt"))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(line.contains("object=renew-ca"), "{line}");
    let plan = json(&unchanged(
        &root,
        &[
            "certs",
            "renew",
            "all",
            "--dir",
            r,
            "--dry-run",
            "-o",
            "json",
        ],
    ));
    let planned = plan["would_renew"].as_array().unwrap();
    assert_eq!(planned.len(), 11, "{plan:#}");
    assert!(plan["renewed"].as_array().unwrap().is_empty(), "{plan:#}");
    let admin = planned.iter().find(|p| p["name"] == "admin.conf").unwrap();
    assert_eq!(admin["ca"], "ca");
    assert!(
        admin["ca_key"]
            .as_str()
            .unwrap()
            .contains("object=renew-ca"),
        "{admin}"
    );
    let etcd = planned.iter().find(|p| p["name"] == "etcd-peer").unwrap();
    assert_eq!(etcd["ca"], "etcd-ca");
    assert_eq!(etcd["path"], format!("{r}/pki/etcd/peer.crt"));

    // The real renewal then renews what the plan listed.
    let out = kpki(&["certs", "renew", "all", "--dir", r, "-o", "json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(json(&text(&out).0)["renewed"].as_array().unwrap().len(), 11);
}

#[test]
fn ca_create_dry_run_plans_and_writes_nothing() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("cas");
    let o = out_dir.to_str().unwrap();
    let key = token.key_uri_with_pin("mesh-ca", hsm::USER_PIN);
    let shown = unchanged(
        dir.path(),
        &[
            "ca",
            "create",
            "mesh",
            "--key",
            &key,
            "--out-dir",
            o,
            "--dry-run",
        ],
    );
    assert!(shown.contains("would be created with a new key"), "{shown}");
    assert!(shown.contains(&format!("{o}/mesh.crt")), "{shown}");
    assert!(!out_dir.exists());
    let listed = kpki(&["keys", "list", &token.token_uri(), "-o", "json"]);
    assert!(listed.status.success(), "{:?}", text(&listed));
    assert_eq!(json(&text(&listed).0), serde_json::json!([]));

    let out = kpki(&["ca", "create", "mesh", "--key", &key, "--out-dir", o]);
    assert!(out.status.success(), "{:?}", text(&out));
    let plan = json(&unchanged(
        dir.path(),
        &[
            "ca",
            "create",
            "mesh",
            "--key",
            &key,
            "--out-dir",
            o,
            "--dry-run",
            "-o",
            "json",
        ],
    ));
    assert_eq!(plan["action"], "exists", "{plan:#}");
    assert_eq!(plan["dry_run"], true, "{plan:#}");
    assert_eq!(plan["spki_sha256"].as_str().unwrap().len(), 64, "{plan:#}");
}

#[test]
fn ca_csr_and_install_dry_runs_check_and_write_nothing() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("pki");
    std::fs::create_dir(&out_dir).unwrap();
    let o = out_dir.to_str().unwrap();
    let key = token.key_uri_with_pin("cluster-ca", hsm::USER_PIN);
    let csr_args = [
        "ca",
        "csr",
        "ca",
        "--key",
        &key,
        "--subject",
        "/O=Bank/CN=kubernetes",
        "--out-dir",
        o,
    ];
    let with = |args: &[&str], extra: &[&str]| -> Vec<String> {
        args.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    // csr: the key would be made; nothing is written, no key on the token.
    let v = with(&csr_args, &["--dry-run"]);
    let shown = unchanged(dir.path(), &argv(&v));
    assert!(shown.contains("would be created"), "{shown}");
    assert!(!out_dir.join("ca.csr").exists());
    let listed = kpki(&["keys", "list", &token.token_uri(), "-o", "json"]);
    assert_eq!(json(&text(&listed).0), serde_json::json!([]));
    let made = kpki(&argv(&with(&csr_args, &[])));
    assert!(made.status.success(), "{:?}", text(&made));
    let v = with(&csr_args, &["--dry-run", "-o", "json"]);
    let plan = json(&unchanged(dir.path(), &argv(&v)));
    assert_eq!(plan["key_action"], "existing", "{plan:#}");

    // install: every check runs; nothing is written.
    let root = openssl_ca(dir.path(), "root", "p256", "/CN=Bank Root");
    let ext = dir.path().join("ca.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
    )
    .unwrap();
    let signed = dir.path().join("signed.crt");
    let csr = out_dir.join("ca.csr");
    let s = openssl(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        root.0.to_str().unwrap(),
        "-CAkey",
        root.1.to_str().unwrap(),
        "-set_serial",
        "7",
        "-days",
        "30",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        signed.to_str().unwrap(),
    ]);
    assert!(s.status.success(), "{:?}", text(&s));
    let (c, r) = (signed.to_str().unwrap(), root.0.to_str().unwrap());
    let install = [
        "ca",
        "install",
        "ca",
        "--cert",
        c,
        "--chain",
        r,
        "--key",
        &key,
        "--out-dir",
        o,
    ];
    let v = with(&install, &["--dry-run", "-o", "json"]);
    let plan = json(&unchanged(dir.path(), &argv(&v)));
    assert!(
        plan["action"]
            .as_str()
            .unwrap()
            .starts_with("would be installed"),
        "{plan:#}"
    );
    assert!(!out_dir.join("ca.crt").exists() && !out_dir.join("ca-chain.crt").exists());
    // A refusal is the real run's: the wrong root.
    let stranger = openssl_ca(dir.path(), "stranger", "p256", "/CN=Stranger");
    let before = snapshot::tree(dir.path());
    let bad = [
        "ca",
        "install",
        "ca",
        "--cert",
        c,
        "--chain",
        stranger.0.to_str().unwrap(),
        "--key",
        &key,
        "--out-dir",
        o,
        "--dry-run",
    ];
    let out = kpki(&bad);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert_eq!(text(&out).1.lines().count(), 1, "{:?}", text(&out));
    snapshot::assert_same("refused dry run", &before, &snapshot::tree(dir.path()));
    let done = kpki(&argv(&with(&install, &[])));
    assert!(done.status.success(), "{:?}", text(&done));
    assert!(out_dir.join("ca.crt").exists() && out_dir.join("ca-chain.crt").exists());
}

#[test]
fn ca_rotate_dry_run_lists_what_each_phase_would_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("k8s");
    init_cluster(&root, "127.0.0.1", &[]);
    let d = root.to_str().unwrap().to_string();
    let rotate = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["ca", "rotate"].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["--dir".to_string(), d.clone()]);
        v
    };
    let run = |v: Vec<String>| -> String {
        let argv: Vec<&str> = v.iter().map(String::as_str).collect();
        unchanged(&root, &argv)
    };
    let real = |v: Vec<String>| {
        let argv: Vec<&str> = v.iter().map(String::as_str).collect();
        let out = kpki(&argv);
        assert!(out.status.success(), "{argv:?}: {:?}", text(&out));
    };

    // prepare: the state file and the new key beside the old one.
    let plan = json(&run(rotate(&["ca", "--dry-run", "-o", "json"])));
    assert_eq!(plan["phase"], "prepare", "{plan:#}");
    assert_eq!(plan["dry_run"], true, "{plan:#}");
    let written = plan["written"].to_string();
    assert!(
        written.contains("kpki-rotation.toml") && written.contains("ca-2.key"),
        "{plan:#}"
    );
    assert!(!root.join("pki/ca-2.key").exists());
    // A refusal is the real run's.
    let before = snapshot::tree(&root);
    let argv = rotate(&["ca", "--phase", "retire", "--dry-run"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = kpki(&argv);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    snapshot::assert_same("refused dry run", &before, &snapshot::tree(&root));

    real(rotate(&["ca"]));
    // trust-both: ca.crt and every kubeconfig's CA data.
    let plan = json(&run(rotate(&["ca", "--dry-run", "-o", "json"])));
    assert_eq!(plan["phase"], "trust-both", "{plan:#}");
    let written = plan["written"].to_string();
    for f in ["pki/ca.crt", "admin.conf", "scheduler.conf"] {
        assert!(written.contains(f), "{f}: {plan:#}");
    }
    real(rotate(&["ca"]));
    // reissue: the leaves the cluster CA signed.
    let text_plan = run(rotate(&["ca", "--dry-run"]));
    for f in [
        "pki/apiserver.crt",
        "pki/apiserver-kubelet-client.crt",
        "admin.conf",
    ] {
        assert!(text_plan.contains(f), "{f}: {text_plan}");
    }
    assert!(text_plan.contains("nothing was written"), "{text_plan}");

    // sa: prepare would make the new key and the state file (after ca is finished).
    real(rotate(&["ca"]));
    real(rotate(&["ca"]));
    let plan = json(&run(rotate(&["sa", "--dry-run", "-o", "json"])));
    assert_eq!(plan["phase"], "prepare", "{plan:#}");
    assert!(
        plan["written"].to_string().contains("made on its backend"),
        "{plan:#}"
    );
}
