//! `kpki ca rotate`: the refusals (one line, nothing written), crash safety (SIGKILL at 20
//! random points across the twelve phases of the three CA rotations; each next run
//! continues and the end state is that of an uninterrupted run), and a rotation without
//! downtime judged by real peers (a 3-member etcd cluster and two kube-apiservers under
//! continuous etcdctl and kubectl traffic, CA keys on SoftHSM).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use kpki_e2e::{kpki, kpki_bin, text};
use x509_parser::prelude::{FromDer, X509Certificate};

const CAS: [&str; 3] = ["ca", "etcd-ca", "front-proxy-ca"];
const PHASES: [&str; 4] = ["prepare", "trust-both", "reissue", "retire"];

fn node_args(root: &Path, node: &str) -> Vec<String> {
    vec![
        "--dir".into(),
        root.display().to_string(),
        "--node-name".into(),
        node.into(),
        "--advertise-address".into(),
        "127.0.0.1".into(),
    ]
}

fn init(root: &Path, node: &str) {
    let mut args: Vec<String> = vec!["init".into()];
    args.extend(node_args(root, node));
    args.extend(["--encryption-algorithm".into(), "ECDSA-P256".into()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = kpki(&argv);
    assert!(out.status.success(), "kpki init: {:?}", text(&out));
}

fn rotate_args(root: &Path, node: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["ca".into(), "rotate".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v.extend(node_args(root, node));
    v
}

fn rotate(root: &Path, args: &[&str]) -> Output {
    let v = rotate_args(root, "cp1", args);
    let argv: Vec<&str> = v.iter().map(String::as_str).collect();
    kpki(&argv)
}

fn ok(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {:?}", text(out));
    text(out).0
}

/// Every file under `root` with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Asserts `out` is a refusal: exit 1, one stderr line containing `want`, nothing written.
fn refused(out: &Output, want: &str, before: &BTreeMap<PathBuf, Vec<u8>>, root: &Path) {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(want), "want {want:?}: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(snapshot(root) == *before, "a refusal wrote: {want}");
}

fn certs_of_pem(pem_text: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect()
}

fn signed_by(der: &[u8], ca: &[u8]) -> bool {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    let (_, ca) = X509Certificate::from_der(ca).unwrap();
    c.tbs_certificate.issuer.as_raw() == ca.tbs_certificate.subject.as_raw()
        && c.verify_signature(Some(ca.public_key())).is_ok()
}

/// The CA certificates a PKI trusts now (`ca.crt`, `etcd/ca.crt`, `front-proxy-ca.crt`), by
/// file, labelled `<name>-<label>`.
fn ca_labels(root: &Path, label: &str) -> Vec<(String, Vec<u8>)> {
    let pki = root.join("pki");
    CAS.iter()
        .zip(["ca.crt", "etcd/ca.crt", "front-proxy-ca.crt"])
        .flat_map(|(name, f)| {
            certs_of_pem(&std::fs::read(pki.join(f)).unwrap())
                .into_iter()
                .map(move |d| (format!("{name}-{label}"), d))
        })
        .collect()
}

fn label_of(der: &[u8], labels: &[(String, Vec<u8>)]) -> String {
    labels
        .iter()
        .find(|(_, d)| d == der)
        .map(|(l, _)| l.clone())
        .unwrap_or_else(|| "?".into())
}

fn signer_of(der: &[u8], labels: &[(String, Vec<u8>)]) -> String {
    labels
        .iter()
        .find(|(_, ca)| signed_by(der, ca))
        .map(|(l, _)| l.clone())
        .unwrap_or_else(|| "unknown CA".into())
}

/// SPKI (DER) of a PEM private key, by `openssl pkey`.
fn key_spki(key_pem: &[u8], scratch: &Path) -> Vec<u8> {
    let f = scratch.join("k.pem");
    std::fs::write(&f, key_pem).unwrap();
    let out = kpki_e2e::openssl(&[
        "pkey",
        "-in",
        f.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    out.stdout
}

fn cert_spki(der: &[u8]) -> Vec<u8> {
    X509Certificate::from_der(der)
        .unwrap()
        .1
        .public_key()
        .raw
        .to_vec()
}

/// What the PKI under `root` is, independent of random keys and serials: which CA (by
/// label) each bundle trusts and signed each certificate, whether every key matches its
/// certificate, which key files exist, the key record and the rotation state.
fn shape(root: &Path, labels: &[(String, Vec<u8>)]) -> BTreeMap<String, String> {
    let scratch = tempfile::tempdir().unwrap();
    let mut out = BTreeMap::new();
    for (rel, bytes) in snapshot(root) {
        let name = rel.display().to_string();
        let ext = rel
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        match ext.as_str() {
            "crt" => {
                let certs = certs_of_pem(&bytes);
                let (_, first) = X509Certificate::from_der(&certs[0]).unwrap();
                let v = if first.is_ca() {
                    certs
                        .iter()
                        .map(|c| label_of(c, labels))
                        .collect::<Vec<_>>()
                        .join("+")
                } else {
                    let key = std::fs::read(root.join(&rel).with_extension("key")).unwrap();
                    let matches = key_spki(&key, scratch.path()) == cert_spki(&certs[0]);
                    format!(
                        "signed by {}; key matches: {matches}",
                        signer_of(&certs[0], labels)
                    )
                };
                out.insert(name, v);
            }
            "conf" => {
                let doc: serde_norway::Value = serde_norway::from_slice(&bytes).unwrap();
                let b64 = |v: &serde_norway::Value| {
                    base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap())
                        .unwrap()
                };
                let ca = certs_of_pem(&b64(
                    &doc["clusters"][0]["cluster"]["certificate-authority-data"],
                ));
                let user = &doc["users"][0]["user"];
                let cert = certs_of_pem(&b64(&user["client-certificate-data"]));
                let key = b64(&user["client-key-data"]);
                out.insert(
                    name,
                    format!(
                        "trusts {}; client signed by {}; key matches: {}",
                        ca.iter()
                            .map(|c| label_of(c, labels))
                            .collect::<Vec<_>>()
                            .join("+"),
                        signer_of(&cert[0], labels),
                        key_spki(&key, scratch.path()) == cert_spki(&cert[0])
                    ),
                );
            }
            "key" | "pub" => {
                out.insert(name, "present".into());
            }
            "toml" => {
                let text = String::from_utf8(bytes).unwrap();
                let v = if name.ends_with("kpki-rotation.toml") {
                    let target = text.lines().find(|l| l.starts_with("target = "));
                    let nodes: Vec<&str> = text.lines().skip_while(|l| *l != "[nodes]").collect();
                    format!("{target:?} {nodes:?}")
                } else {
                    text.replace(&root.display().to_string(), "<root>")
                };
                out.insert(name, v);
            }
            _ => {
                out.insert(name, "unexpected file".into());
            }
        }
    }
    out
}

/// The certificates of field `field` (`certificate-authority-data`,
/// `client-certificate-data`) of kubeconfig `path`, as DER.
fn kubeconfig_certs(path: &Path, field: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))
        .unwrap();
    let pem_text = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .unwrap();
    certs_of_pem(&pem_text)
}

fn kubeconfig_cas(path: &Path) -> Vec<Vec<u8>> {
    kubeconfig_certs(path, "certificate-authority-data")
}

fn client_cert_of(path: &Path) -> Vec<u8> {
    kubeconfig_certs(path, "client-certificate-data").remove(0)
}

#[test]
fn renew_and_init_during_a_rotation_keep_both_cas_in_kubeconfigs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n1");
    init(&root, "cp1");
    ok(&rotate(&root, &["ca"]), "prepare ca");
    ok(&rotate(&root, &["ca"]), "trust-both ca");
    let bundle = certs_of_pem(&std::fs::read(root.join("pki/ca.crt")).unwrap());
    assert_eq!(bundle.len(), 2, "ca.crt after trust-both");
    let admin = root.join("admin.conf");
    assert_eq!(kubeconfig_cas(&admin), bundle, "trust-both's admin.conf");

    // A routine renewal meanwhile (signed by the old CA) keeps what clients trust: both.
    let mut args = vec!["certs".to_string(), "renew".into(), "admin.conf".into()];
    args.extend(node_args(&root, "cp1"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&kpki(&argv), "renew admin.conf during trust-both");
    assert_eq!(kubeconfig_cas(&admin), bundle, "renewed admin.conf");
    assert!(signed_by(&client_cert_of(&admin), &bundle[0]));

    // init finds the PKI complete: the kubeconfigs with the bundle are kept, not refused.
    let before = snapshot(&root);
    init(&root, "cp1");
    assert!(
        snapshot(&root) == before,
        "init during trust-both rewrote files"
    );

    // After reissue the bundle is new first; a renewal signs with the new CA and keeps both.
    ok(&rotate(&root, &["ca"]), "reissue ca");
    let bundle = certs_of_pem(&std::fs::read(root.join("pki/ca.crt")).unwrap());
    ok(&kpki(&argv), "renew admin.conf during reissue");
    assert_eq!(
        kubeconfig_cas(&admin),
        bundle,
        "renewed admin.conf after reissue"
    );
    assert!(signed_by(&client_cert_of(&admin), &bundle[0]));
}

#[test]
fn refusals_are_one_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n1");
    init(&root, "cp1");
    let pki = root.join("pki");

    // A new key that is the old key, by URI or by copy.
    let before = snapshot(&root);
    let same = format!("file:{}", pki.join("ca.key").display());
    let out = rotate(&root, &["ca", "--new-key", &same]);
    refused(&out, "it is the key being replaced", &before, &root);
    let copy = dir.path().join("copy.key");
    std::fs::copy(pki.join("ca.key"), &copy).unwrap();
    let out = rotate(
        &root,
        &["ca", "--new-key", &format!("file:{}", copy.display())],
    );
    refused(&out, "its public key matches the old one", &before, &root);

    // A phase out of order, with no rotation started.
    let out = rotate(&root, &["ca", "--phase", "trust-both"]);
    refused(&out, "trust-both needs prepare first", &before, &root);

    // Another rotation while one is unfinished.
    ok(&rotate(&root, &["etcd-ca"]), "prepare etcd-ca");
    let before = snapshot(&root);
    for (args, want) in [
        (
            &["ca"][..],
            "a rotation of etcd-ca is unfinished (cp1 is at prepare)",
        ),
        (
            &["front-proxy-ca", "--phase", "prepare"],
            "a rotation of etcd-ca is unfinished",
        ),
        (&["sa"], "a rotation of etcd-ca is unfinished"),
        (
            &["etcd-ca", "--phase", "retire"],
            "retire needs trust-both first",
        ),
    ] {
        refused(&rotate(&root, args), want, &before, &root);
    }
    let other = format!("file:{}", dir.path().join("other.key").display());
    refused(
        &rotate(
            &root,
            &["etcd-ca", "--phase", "prepare", "--new-key", &other],
        ),
        "the rotation of etcd-ca under way uses",
        &before,
        &root,
    );
    // Idempotent: a phase already done changes nothing.
    let out = rotate(&root, &["etcd-ca", "--phase", "prepare"]);
    assert!(ok(&out, "prepare again").contains("already done"));
    assert!(snapshot(&root) == before);

    // Retire while a certificate is still signed by the old CA: the bundle would drop it.
    ok(&rotate(&root, &["etcd-ca"]), "trust-both");
    let old_server = (
        std::fs::read(pki.join("etcd/server.crt")).unwrap(),
        std::fs::read(pki.join("etcd/server.key")).unwrap(),
    );
    ok(&rotate(&root, &["etcd-ca"]), "reissue");
    std::fs::write(pki.join("etcd/server.crt"), &old_server.0).unwrap();
    std::fs::write(pki.join("etcd/server.key"), &old_server.1).unwrap();
    let before = snapshot(&root);
    let out = rotate(&root, &["etcd-ca"]);
    refused(
        &out,
        "etcd/server.crt (etcd-server) is still signed by the old CA; the bundle would drop the CA signing it",
        &before,
        &root,
    );
    ok(
        &rotate(&root, &["etcd-ca", "--phase", "reissue"]),
        "reissue again",
    );
    // Retire while another node (as the copied state file says) has not reissued.
    let state = pki.join("kpki-rotation.toml");
    let saved = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, format!("{saved}cp2 = \"trust-both\"\n")).unwrap();
    let before = snapshot(&root);
    refused(
        &rotate(&root, &["etcd-ca"]),
        "node cp2 is at trust-both",
        &before,
        &root,
    );
    let status = ok(&rotate(&root, &["--status"]), "status");
    assert!(
        status.contains("other nodes are behind (cp2 at trust-both)"),
        "{status}"
    );
    std::fs::write(&state, &saved).unwrap();
    ok(&rotate(&root, &["etcd-ca"]), "retire");
    let status = ok(&rotate(&root, &["--status"]), "status");
    assert!(
        status.contains("this node (cp1): retire") && status.contains("finished"),
        "{status}"
    );
    let before = snapshot(&root);
    refused(
        &rotate(&root, &["etcd-ca"]),
        "finished on this node (retired); start a new one with --phase prepare",
        &before,
        &root,
    );
    // The new CA's certificates verify with openssl against the new bundle alone.
    let out = kpki_e2e::openssl(&[
        "verify",
        "-CAfile",
        pki.join("etcd/ca.crt").to_str().unwrap(),
        pki.join("etcd/server.crt").to_str().unwrap(),
        pki.join("etcd/peer.crt").to_str().unwrap(),
        pki.join("apiserver-etcd-client.crt").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
}

/// The PUBLIC KEY blocks of `sa.pub`, DER.
fn sa_pub(root: &Path) -> Vec<Vec<u8>> {
    pem::parse_many(std::fs::read(root.join("pki/sa.pub")).unwrap())
        .unwrap()
        .into_iter()
        .map(|b| {
            assert_eq!(b.tag(), "PUBLIC KEY");
            b.into_contents()
        })
        .collect()
}

#[test]
fn service_account_key_rotation_keeps_the_old_key_verifying_until_tokens_expire() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n1");
    init(&root, "cp1");
    let pki = root.join("pki");
    let old = sa_pub(&root);
    assert_eq!(old.len(), 1);
    ok(&rotate(&root, &["sa"]), "prepare");
    let new_key = pki.join("sa-2.key");
    let new_spki = key_spki(&std::fs::read(&new_key).unwrap(), dir.path());
    assert_ne!(new_spki, old[0]);
    assert_eq!(sa_pub(&root), old, "prepare leaves sa.pub alone");
    let out = ok(&rotate(&root, &["sa"]), "trust-both");
    assert!(out.contains("[[jwt.verify_keys]]"), "{out}");
    assert_eq!(sa_pub(&root), vec![old[0].clone(), new_spki.clone()]);
    ok(&rotate(&root, &["sa"]), "reissue");
    assert_eq!(sa_pub(&root), vec![new_spki.clone(), old[0].clone()]);
    let record = std::fs::read_to_string(pki.join("kpki-keys.toml")).unwrap();
    assert!(
        record.contains(&format!("sa = \"file:{}\"", new_key.display())),
        "{record}"
    );
    // Tokens of the old key may live a year: retire waits for them.
    let before = snapshot(&root);
    refused(
        &rotate(&root, &["sa"]),
        "retire sa: tokens the old key signed may be valid until",
        &before,
        &root,
    );
    refused(
        &rotate(&root, &["sa", "--token-lifetime", "1h"]),
        "token lifetime 3600s",
        &before,
        &root,
    );
    let out = ok(&rotate(&root, &["sa", "--token-lifetime", "0s"]), "retire");
    assert!(out.contains("no longer used"), "{out}");
    assert_eq!(sa_pub(&root), vec![new_spki]);
    assert!(pki.join("sa.key").exists(), "the old key is kept");
    let status = ok(&rotate(&root, &["--status"]), "status");
    assert!(
        status.contains("rotation of sa") && status.contains("finished"),
        "{status}"
    );
}

/// True when `--status` says this node finished `phase` of the rotation of `target`.
fn step_done(root: &Path, target: &str, phase: &str) -> bool {
    let out = rotate(root, &["--status", "-o", "json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let at = |p: &str| PHASES.iter().position(|x| *x == p);
    v["target"].as_str() == Some(target) && v["phase"].as_str().and_then(at) >= at(phase)
}

/// Runs `kpki ca rotate <target> --phase <phase>` and SIGKILLs it after `delay`.
fn kill_after(root: &Path, target: &str, phase: &str, delay: Duration) -> bool {
    let args = rotate_args(root, "cp1", &[target, "--phase", phase]);
    let mut child = Command::new(kpki_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill();
    let _ = child.wait();
    !finished
}

fn random_below(n: u64) -> u64 {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    SystemRandom::new().fill(&mut b).unwrap();
    u64::from_be_bytes(b) % n.max(1)
}

#[test]
fn killed_at_twenty_random_points_the_next_run_continues_to_the_same_end() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    init(&first, "cp1");
    let copy = |to: &Path| {
        let st = Command::new("cp")
            .arg("-a")
            .arg(&first)
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
    };
    let (reference, crashed) = (dir.path().join("reference"), dir.path().join("crashed"));
    copy(&reference);
    copy(&crashed);
    let old = ca_labels(&first, "old");

    // The uninterrupted run, timing each step.
    let mut steps = Vec::new();
    for ca in CAS {
        for phase in PHASES {
            let start = Instant::now();
            ok(
                &rotate(&reference, &[ca, "--phase", phase]),
                &format!("{ca} {phase}"),
            );
            steps.push((ca, phase, start.elapsed()));
        }
    }
    // Twenty kills spread over the twelve steps (two in each of the first eight, one in each
    // of the last four), each at a random point inside the step's run time (below 80% of
    // the uninterrupted run's), then the step run to its end. A run that ends before its
    // kill does not count: the step is tried again while it is not done, and a shortfall
    // moves on to the next step.
    let mut kills_inside = 0;
    let mut owed = 0;
    let mut attempts = 0;
    for (i, (ca, phase, took)) in steps.iter().enumerate() {
        owed += if i < 8 { 2 } else { 1 };
        while owed > 0 && !step_done(&crashed, ca, phase) {
            attempts += 1;
            assert!(attempts < 200, "kills keep missing the runs");
            let max = (took.as_millis() as u64 * 4 / 5).max(5);
            let delay = Duration::from_millis(random_below(max));
            if kill_after(&crashed, ca, phase, delay) {
                kills_inside += 1;
                owed -= 1;
            }
            let status = rotate(&crashed, &["--status"]);
            assert!(
                status.status.success(),
                "status after a kill in {ca} {phase}: {:?}",
                text(&status)
            );
        }
        ok(
            &rotate(&crashed, &[ca, "--phase", phase]),
            &format!("{ca} {phase} after kills"),
        );
    }
    eprintln!("{kills_inside} kills inside a run, {attempts} attempts");
    assert_eq!(kills_inside, 20, "kills inside a run ({attempts} attempts)");

    let mut labels = old.clone();
    let new_ref = ca_labels(&reference, "new");
    let new_crashed = ca_labels(&crashed, "new");
    labels.extend(new_ref.iter().cloned());
    labels.extend(new_crashed.iter().cloned());
    let (want, got) = (shape(&reference, &labels), shape(&crashed, &labels));
    assert_eq!(got, want);
    // And the end state is the rotated PKI: every certificate under a new CA, bundles new only.
    for (file, v) in &want {
        assert!(
            !v.contains("old") && !v.contains('?') && !v.contains("unknown"),
            "{file}: {v}"
        );
        assert!(!v.contains("key matches: false"), "{file}: {v}");
    }
    assert_eq!(want.get("pki/ca.crt").map(String::as_str), Some("ca-new"));
    assert_eq!(
        want.get("admin.conf").map(String::as_str),
        Some("trusts ca-new; client signed by ca-new; key matches: true")
    );
}

mod without_downtime {
    //! The rotation of the three CAs, judged by real peers under continuous traffic.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use kpki_e2e::cluster::{eventually, kubeadm_config};
    use kpki_e2e::serve::free_port;
    use kpki_e2e::{hsm, kpki, peers, text};

    use super::{CAS, PHASES, certs_of_pem, signed_by};

    const NODES: usize = 3;
    /// Nodes 1 and 2 run a kube-apiserver each; every node runs an etcd member.
    const APISERVERS: usize = 2;
    const KUBECONFIGS: [(&str, &str); 5] = [
        ("admin.conf", "kubernetes-admin"),
        ("super-admin.conf", "kubernetes-super-admin"),
        ("controller-manager.conf", "system:kube-controller-manager"),
        ("scheduler.conf", "system:kube-scheduler"),
        ("kubelet.conf", "system:node:cp{n}"),
    ];

    struct Proc {
        child: Child,
        args: Vec<String>,
        bin: PathBuf,
        log: PathBuf,
    }

    impl Proc {
        fn start(bin: &Path, args: Vec<String>, log: PathBuf) -> Proc {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            let child = Command::new(bin)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap();
            Proc {
                child,
                args,
                bin: bin.to_path_buf(),
                log,
            }
        }

        /// SIGTERM, wait for the exit, start again with the same arguments.
        fn restart(&mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !matches!(self.child.try_wait(), Ok(Some(_))) {
                assert!(
                    Instant::now() < deadline,
                    "{} did not stop",
                    self.bin.display()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            *self = Proc::start(&self.bin, self.args.clone(), self.log.clone());
        }

        fn tail(&self) -> String {
            let all = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = all.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        }
    }

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A pool member clients may use; taken out before its process restarts, as a load
    /// balancer drains a backend.
    struct Member {
        up: AtomicBool,
        in_flight: AtomicUsize,
    }

    impl Member {
        fn new() -> Member {
            Member {
                up: AtomicBool::new(true),
                in_flight: AtomicUsize::new(0),
            }
        }

        fn drain(&self) {
            self.up.store(false, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(60);
            while self.in_flight.load(Ordering::SeqCst) > 0 {
                assert!(
                    Instant::now() < deadline,
                    "requests still in flight after 60 s"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Picks an up member (round robin from `start`) and marks a request in flight on it.
    fn pick(pool: &[Member], start: usize) -> usize {
        loop {
            for i in 0..pool.len() {
                let m = (start + i) % pool.len();
                pool[m].in_flight.fetch_add(1, Ordering::SeqCst);
                if pool[m].up.load(Ordering::SeqCst) {
                    return m;
                }
                pool[m].in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[derive(Default)]
    struct Tally {
        ok: AtomicU64,
        failures: Mutex<Vec<String>>,
    }

    /// What the test is doing now (named in failure messages), and since when it runs.
    struct Clock {
        start: Instant,
        step: Mutex<String>,
    }

    impl Clock {
        fn stamp(&self) -> String {
            format!(
                "at {:.1}s during {}",
                self.start.elapsed().as_secs_f64(),
                self.step.lock().unwrap()
            )
        }

        fn set(&self, step: String) {
            *self.step.lock().unwrap() = step;
        }
    }

    struct Rig {
        _dir: tempfile::TempDir,
        nodes: Vec<PathBuf>,
        etcd: Vec<Proc>,
        apiservers: Vec<Proc>,
        etcd_ports: Vec<u16>,
        api_ports: Vec<u16>,
        _token: hsm::TestToken,
    }

    fn etcdctl(endpoint: &str, pki: &Path, client: &str, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
            .arg(format!(
                "--cert={}",
                pki.join(format!("{client}.crt")).display()
            ))
            .arg(format!(
                "--key={}",
                pki.join(format!("{client}.key")).display()
            ))
            .arg("--dial-timeout=5s")
            .arg("--command-timeout=10s")
            .args(args)
            .output()
            .unwrap()
    }

    fn kubectl(kubeconfig: &Path, port: u16, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg(format!("--server=https://127.0.0.1:{port}"))
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .unwrap()
    }

    impl Rig {
        fn node_args(&self, n: usize) -> Vec<String> {
            vec![
                "--dir".into(),
                self.nodes[n].display().to_string(),
                "--kubeadm-config".into(),
                self.nodes[n].join("kubeadm.yaml").display().to_string(),
                "--node-name".into(),
                format!("cp{}", n + 1),
            ]
        }

        fn kpki_on(&self, n: usize, args: &[&str]) -> Output {
            let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            v.extend(self.node_args(n));
            let argv: Vec<&str> = v.iter().map(String::as_str).collect();
            kpki(&argv)
        }

        fn etcd_endpoint(&self, m: usize) -> String {
            format!("https://127.0.0.1:{}", self.etcd_ports[m])
        }

        fn start() -> Rig {
            hsm::require_tool("etcdctl");
            hsm::require_tool("kubectl");
            let etcd_bin = peers::etcd();
            let apiserver_bin = peers::kubernetes("kube-apiserver");
            let token = hsm::token();
            let dir = tempfile::tempdir().unwrap();
            let nodes: Vec<PathBuf> = (1..=NODES)
                .map(|i| dir.path().join(format!("node{i}")))
                .collect();
            let api_ports: Vec<u16> = (0..APISERVERS).map(|_| free_port()).collect();
            let etcd_ports: Vec<(u16, u16)> =
                (0..NODES).map(|_| (free_port(), free_port())).collect();
            let keys: Vec<String> = CAS
                .iter()
                .map(|ca| format!("{ca}={}", token.key_uri(&format!("{ca}-key"))))
                .collect();
            for (i, root) in nodes.iter().enumerate() {
                std::fs::create_dir_all(root.join("pki/etcd")).unwrap();
                // Every kubeconfig of the node names its own API server (node 3 the first's).
                let port = api_ports[i.min(APISERVERS - 1)];
                std::fs::write(
                    root.join("kubeadm.yaml"),
                    kubeadm_config(port, "ECDSA-P256"),
                )
                .unwrap();
                if i > 0 {
                    for f in [
                        "ca.crt",
                        "front-proxy-ca.crt",
                        "etcd/ca.crt",
                        "sa.key",
                        "sa.pub",
                    ] {
                        std::fs::copy(nodes[0].join("pki").join(f), root.join("pki").join(f))
                            .unwrap();
                    }
                }
                let mut args = vec![
                    "init".to_string(),
                    "--dir".into(),
                    root.display().to_string(),
                    "--kubeadm-config".into(),
                    root.join("kubeadm.yaml").display().to_string(),
                    "--node-name".into(),
                    format!("cp{}", i + 1),
                ];
                for k in &keys {
                    args.extend(["--key".into(), k.clone()]);
                }
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = kpki(&argv);
                assert!(
                    out.status.success(),
                    "init node {}: {:?}",
                    i + 1,
                    text(&out)
                );
            }
            let initial: Vec<String> = etcd_ports
                .iter()
                .enumerate()
                .map(|(i, (_, p))| format!("cp{}=https://127.0.0.1:{p}", i + 1))
                .collect();
            let mut etcd = Vec::new();
            for (i, root) in nodes.iter().enumerate() {
                let pki = root.join("pki");
                let f = |n: &str| pki.join("etcd").join(n).display().to_string();
                let (client, peer) = etcd_ports[i];
                let args = vec![
                    format!("--name=cp{}", i + 1),
                    format!("--data-dir={}", root.join("etcd-data").display()),
                    format!("--listen-client-urls=https://127.0.0.1:{client}"),
                    format!("--advertise-client-urls=https://127.0.0.1:{client}"),
                    format!("--listen-peer-urls=https://127.0.0.1:{peer}"),
                    format!("--initial-advertise-peer-urls=https://127.0.0.1:{peer}"),
                    format!("--initial-cluster={}", initial.join(",")),
                    "--initial-cluster-state=new".into(),
                    "--initial-cluster-token=kpki-rotate".into(),
                    "--listen-metrics-urls=".into(),
                    // Elections tuned for a shared, loaded test machine (etcd's guide for
                    // slow networks and disks); the defaults are 100 ms and 1 s.
                    "--heartbeat-interval=300".into(),
                    "--election-timeout=3000".into(),
                    "--client-cert-auth=true".into(),
                    format!("--trusted-ca-file={}", f("ca.crt")),
                    format!("--cert-file={}", f("server.crt")),
                    format!("--key-file={}", f("server.key")),
                    "--peer-client-cert-auth=true".into(),
                    format!("--peer-trusted-ca-file={}", f("ca.crt")),
                    format!("--peer-cert-file={}", f("peer.crt")),
                    format!("--peer-key-file={}", f("peer.key")),
                ];
                etcd.push(Proc::start(&etcd_bin, args, root.join("etcd.log")));
            }
            let mut rig = Rig {
                _dir: dir,
                nodes,
                etcd,
                apiservers: Vec::new(),
                etcd_ports: etcd_ports.iter().map(|(c, _)| *c).collect(),
                api_ports,
                _token: token,
            };
            for m in 0..NODES {
                rig.wait_etcd_member(m);
            }
            let servers: Vec<String> = (0..NODES).map(|m| rig.etcd_endpoint(m)).collect();
            for a in 0..APISERVERS {
                let pki = rig.nodes[a].join("pki");
                let p = |n: &str| pki.join(n).display().to_string();
                let args = vec![
                    "--bind-address=127.0.0.1".to_string(),
                    "--advertise-address=127.0.0.1".into(),
                    format!("--secure-port={}", rig.api_ports[a]),
                    format!(
                        "--cert-dir={}",
                        rig.nodes[a].join("apiserver-certs").display()
                    ),
                    format!("--etcd-servers={}", servers.join(",")),
                    format!("--etcd-cafile={}", p("etcd/ca.crt")),
                    format!("--etcd-certfile={}", p("apiserver-etcd-client.crt")),
                    format!("--etcd-keyfile={}", p("apiserver-etcd-client.key")),
                    format!("--client-ca-file={}", p("ca.crt")),
                    format!("--tls-cert-file={}", p("apiserver.crt")),
                    format!("--tls-private-key-file={}", p("apiserver.key")),
                    format!(
                        "--kubelet-client-certificate={}",
                        p("apiserver-kubelet-client.crt")
                    ),
                    format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
                    format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
                    format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
                    format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
                    "--requestheader-allowed-names=front-proxy-client".into(),
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                    "--requestheader-group-headers=X-Remote-Group".into(),
                    "--requestheader-username-headers=X-Remote-User".into(),
                    format!("--service-account-issuer={}", kpki_e2e::cluster::SA_ISSUER),
                    format!("--service-account-key-file={}", p("sa.pub")),
                    format!("--service-account-signing-key-file={}", p("sa.key")),
                    "--service-cluster-ip-range=10.96.0.0/12".into(),
                    "--authorization-mode=Node,RBAC".into(),
                    "--endpoint-reconciler-type=none".into(),
                    "--enable-priority-and-fairness=false".into(),
                    "--profiling=false".into(),
                ];
                let log = rig.nodes[a].join("kube-apiserver.log");
                rig.apiservers.push(Proc::start(&apiserver_bin, args, log));
            }
            for a in 0..APISERVERS {
                rig.wait_apiserver(a);
            }
            let out = kubectl(
                &rig.nodes[0].join("super-admin.conf"),
                rig.api_ports[0],
                &[
                    "create",
                    "clusterrolebinding",
                    "kubeadm:cluster-admins",
                    "--clusterrole=cluster-admin",
                    "--group=kubeadm:cluster-admins",
                ],
            );
            assert!(out.status.success(), "{:?}", text(&out));
            rig
        }

        fn wait_etcd_member(&mut self, m: usize) {
            let pki = self.nodes[m].join("pki");
            let endpoint = self.etcd_endpoint(m);
            let tail = self.etcd[m].tail();
            eventually(
                &format!("etcd member cp{} healthy", m + 1),
                Duration::from_secs(120),
                Duration::from_millis(300),
                || {
                    let out = etcdctl(
                        &endpoint,
                        &pki,
                        "etcd/healthcheck-client",
                        &["endpoint", "health"],
                    );
                    if out.status.success() {
                        Ok(())
                    } else {
                        Err(format!("{:?}\n{tail}", text(&out)))
                    }
                },
            );
        }

        /// The member index of the etcd leader and every member's id, from `endpoint status`.
        fn etcd_leader(&self, via: usize) -> (usize, Vec<u64>) {
            let all: Vec<String> = (0..NODES).map(|m| self.etcd_endpoint(m)).collect();
            let out = etcdctl(
                &all.join(","),
                &self.nodes[via].join("pki"),
                "etcd/healthcheck-client",
                &["endpoint", "status", "-w", "json"],
            );
            assert!(out.status.success(), "endpoint status: {:?}", text(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let list = v.as_array().unwrap();
            let ids: Vec<u64> = list
                .iter()
                .map(|e| e["Status"]["header"]["member_id"].as_u64().unwrap())
                .collect();
            let leader = list[0]["Status"]["leader"].as_u64().unwrap();
            (ids.iter().position(|i| *i == leader).unwrap(), ids)
        }

        /// Moves etcd's leadership off member `m` (if it leads), as an operator does before
        /// restarting it; returns how long client traffic was held for the move.
        fn move_leader_off(&self, m: usize, pool: &[Member]) -> Duration {
            let (leader, ids) = self.etcd_leader((m + 1) % NODES);
            if leader != m {
                return Duration::ZERO;
            }
            let to = (m + 1) % NODES;
            let held = Instant::now();
            for member in pool {
                member.drain();
            }
            let out = etcdctl(
                &self.etcd_endpoint(m),
                &self.nodes[m].join("pki"),
                "etcd/healthcheck-client",
                &["move-leader", &format!("{:x}", ids[to])],
            );
            assert!(out.status.success(), "move-leader: {:?}", text(&out));
            eventually(
                "leadership moved",
                Duration::from_secs(30),
                Duration::from_millis(100),
                || match self.etcd_leader(to).0 {
                    l if l != m => Ok(()),
                    l => Err(format!("member {} still leads", l + 1)),
                },
            );
            for member in pool {
                member.up.store(true, Ordering::SeqCst);
            }
            held.elapsed()
        }

        fn wait_apiserver(&mut self, a: usize) {
            let conf = self.nodes[a].join("super-admin.conf");
            let port = self.api_ports[a];
            let start = Instant::now();
            loop {
                let out = kubectl(&conf, port, &["get", "--raw=/readyz"]);
                if out.status.success() {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(180),
                    "kube-apiserver {} not ready: {:?}\n{}",
                    a + 1,
                    text(&out),
                    self.apiservers[a].tail()
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }

    /// Every certificate of every node verifies under every node's trust anchors of its CA
    /// (the CA files and, for `ca`, the kubeconfigs' CA data).
    fn every_credential_valid(nodes: &[PathBuf]) -> Result<(), String> {
        let leaves: [(&str, &str); 7] = [
            ("apiserver.crt", "ca.crt"),
            ("apiserver-kubelet-client.crt", "ca.crt"),
            ("front-proxy-client.crt", "front-proxy-ca.crt"),
            ("etcd/server.crt", "etcd/ca.crt"),
            ("etcd/peer.crt", "etcd/ca.crt"),
            ("etcd/healthcheck-client.crt", "etcd/ca.crt"),
            ("apiserver-etcd-client.crt", "etcd/ca.crt"),
        ];
        let b64 = |v: &serde_norway::Value| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default()
        };
        for from in nodes {
            for to in nodes {
                for (leaf, ca) in leaves {
                    let cert = certs_of_pem(&std::fs::read(from.join("pki").join(leaf)).unwrap());
                    let trust = certs_of_pem(&std::fs::read(to.join("pki").join(ca)).unwrap());
                    if !trust.iter().any(|t| signed_by(&cert[0], t)) {
                        return Err(format!(
                            "{}/{leaf} not trusted by {}/{ca}",
                            from.display(),
                            to.display()
                        ));
                    }
                }
                for (conf, _) in KUBECONFIGS {
                    let doc: serde_norway::Value =
                        serde_norway::from_slice(&std::fs::read(from.join(conf)).unwrap()).unwrap();
                    let client =
                        certs_of_pem(&b64(&doc["users"][0]["user"]["client-certificate-data"]));
                    let trust = certs_of_pem(&std::fs::read(to.join("pki/ca.crt")).unwrap());
                    if !trust.iter().any(|t| signed_by(&client[0], t)) {
                        return Err(format!(
                            "{}/{conf} client not trusted by {}/pki/ca.crt",
                            from.display(),
                            to.display()
                        ));
                    }
                    let server =
                        certs_of_pem(&std::fs::read(to.join("pki/apiserver.crt")).unwrap());
                    let ca_data = certs_of_pem(&b64(
                        &doc["clusters"][0]["cluster"]["certificate-authority-data"],
                    ));
                    if !ca_data.iter().any(|t| signed_by(&server[0], t)) {
                        return Err(format!(
                            "{}/{conf} does not trust {}/pki/apiserver.crt",
                            from.display(),
                            to.display()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn three_cas_rotated_under_traffic_with_zero_failed_requests() {
        let mut rig = Rig::start();
        let old_etcd_client = (
            std::fs::read(rig.nodes[0].join("pki/apiserver-etcd-client.crt")).unwrap(),
            std::fs::read(rig.nodes[0].join("pki/apiserver-etcd-client.key")).unwrap(),
        );
        let etcd_pool: Arc<Vec<Member>> = Arc::new((0..NODES).map(|_| Member::new()).collect());
        let api_pool: Arc<Vec<Member>> = Arc::new((0..APISERVERS).map(|_| Member::new()).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let etcd_tally = Arc::new(Tally::default());
        let kube_tally = Arc::new(Tally::default());
        let nodes = Arc::new(rig.nodes.clone());
        let etcd_endpoints: Arc<Vec<String>> =
            Arc::new((0..NODES).map(|m| rig.etcd_endpoint(m)).collect());
        let api_ports = Arc::new(rig.api_ports.clone());
        let started = Instant::now();
        let clock = Arc::new(Clock {
            start: started,
            step: Mutex::new("start".into()),
        });
        let mut workers = Vec::new();
        // etcd: put then get of the same key, through an up member, with the client
        // certificates of every node in turn.
        for w in 0..3usize {
            let clock = Arc::clone(&clock);
            let (pool, stop, tally, nodes, endpoints) = (
                Arc::clone(&etcd_pool),
                Arc::clone(&stop),
                Arc::clone(&etcd_tally),
                Arc::clone(&nodes),
                Arc::clone(&etcd_endpoints),
            );
            workers.push(std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let node = &nodes[(w + i) % NODES];
                    let client = if i.is_multiple_of(2) {
                        "apiserver-etcd-client"
                    } else {
                        "etcd/healthcheck-client"
                    };
                    let m = pick(&pool, w + i);
                    let key = format!("rotate-{w}");
                    let value = format!("v{i}");
                    let put = etcdctl(
                        &endpoints[m],
                        &node.join("pki"),
                        client,
                        &["put", &key, &value],
                    );
                    let get = put.status.success().then(|| {
                        etcdctl(
                            &endpoints[m],
                            &node.join("pki"),
                            client,
                            &["get", &key, "--print-value-only"],
                        )
                    });
                    pool[m].in_flight.fetch_sub(1, Ordering::SeqCst);
                    match get {
                        Some(g) if g.status.success() && text(&g).0.trim() == value => {
                            tally.ok.fetch_add(2, Ordering::SeqCst);
                        }
                        Some(g) => tally.failures.lock().unwrap().push(format!(
                            "{}: etcd get via member {} with {}/{client}: {:?}",
                            clock.stamp(),
                            m + 1,
                            node.display(),
                            text(&g)
                        )),
                        None => tally.failures.lock().unwrap().push(format!(
                            "{}: etcd put via member {} with {}/{client}: {:?}",
                            clock.stamp(),
                            m + 1,
                            node.display(),
                            text(&put)
                        )),
                    }
                }
            }));
        }
        // kubectl: `auth whoami` with every kubeconfig of every node in turn, through an up
        // API server; the user must be the kubeconfig's.
        for w in 0..4usize {
            let clock = Arc::clone(&clock);
            let (pool, stop, tally, nodes, ports) = (
                Arc::clone(&api_pool),
                Arc::clone(&stop),
                Arc::clone(&kube_tally),
                Arc::clone(&nodes),
                Arc::clone(&api_ports),
            );
            workers.push(std::thread::spawn(move || {
                let mut i = w * 7;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let n = i % NODES;
                    let (conf, user) = KUBECONFIGS[(i / NODES) % KUBECONFIGS.len()];
                    let user = user.replace("{n}", &(n + 1).to_string());
                    let a = pick(&pool, i);
                    let out = kubectl(
                        &nodes[n].join(conf),
                        ports[a],
                        &[
                            "auth",
                            "whoami",
                            "-o",
                            "jsonpath={.status.userInfo.username}",
                        ],
                    );
                    pool[a].in_flight.fetch_sub(1, Ordering::SeqCst);
                    if out.status.success() && text(&out).0.trim() == user {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        tally.failures.lock().unwrap().push(format!(
                            "{}: kubectl whoami via apiserver {} with node{}/{conf}: {:?}",
                            clock.stamp(),
                            a + 1,
                            n + 1,
                            text(&out)
                        ));
                    }
                }
            }));
        }
        let mut log: Vec<String> = Vec::new();
        let mut held = Duration::ZERO;
        let check = |what: &str, nodes: &[PathBuf]| {
            if let Err(e) = every_credential_valid(nodes) {
                panic!("after {what}: {e}");
            }
        };
        check("start", &rig.nodes);
        let state = |n: usize| rig_state_path(&nodes[n]);
        for ca in CAS {
            for phase in PHASES {
                let nodes_here: Vec<usize> = if phase == "prepare" {
                    vec![0]
                } else {
                    (0..NODES).collect()
                };
                for n in nodes_here {
                    let t = Instant::now();
                    clock.set(format!("{ca} {phase} on node {}", n + 1));
                    let out = rig.kpki_on(n, &["ca", "rotate", ca, "--phase", phase]);
                    assert!(
                        out.status.success(),
                        "node {} {ca} {phase}: {:?}",
                        n + 1,
                        text(&out)
                    );
                    let status = rig.kpki_on(n, &["ca", "rotate", "--status"]);
                    assert!(status.status.success(), "{:?}", text(&status));
                    // The operator copies the state file on to the next node (and back to the first).
                    let next = (n + 1) % NODES;
                    std::fs::copy(state(n), state(next)).unwrap();
                    if phase == "prepare" {
                        for m in 1..NODES {
                            std::fs::copy(state(0), state(m)).unwrap();
                        }
                        continue;
                    }
                    check(&format!("{ca} {phase} on node {}", n + 1), &rig.nodes);
                    // Restarts as docs/rotating-a-ca.md says: this node's etcd member (etcd-ca),
                    // healthy before anything else; then this node's API server, drained first.
                    if ca == "etcd-ca" {
                        clock.set(format!("{ca} {phase}: restarting etcd member {}", n + 1));
                        held += rig.move_leader_off(n, &etcd_pool);
                        etcd_pool[n].drain();
                        rig.etcd[n].restart();
                        rig.wait_etcd_member(n);
                        etcd_pool[n].up.store(true, Ordering::SeqCst);
                        let health = etcdctl(
                            &etcd_endpoints.join(","),
                            &rig.nodes[n].join("pki"),
                            "etcd/healthcheck-client",
                            &["endpoint", "health", "--cluster"],
                        );
                        assert!(
                            health.status.success(),
                            "quorum after restarting member {}: {:?}",
                            n + 1,
                            text(&health)
                        );
                    }
                    if n < APISERVERS {
                        clock.set(format!("{ca} {phase}: restarting kube-apiserver {}", n + 1));
                        api_pool[n].drain();
                        rig.apiservers[n].restart();
                        rig.wait_apiserver(n);
                        api_pool[n].up.store(true, Ordering::SeqCst);
                    }
                    log.push(format!(
                        "{ca} {phase} node {}: {:.1}s",
                        n + 1,
                        t.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        // The service-account key, rotated the same way under the same traffic: a token
        // of the old key stays valid until retire; one of the new key is valid from reissue.
        clock.set("sa rotation".into());
        let admin = rig.nodes[0].join("admin.conf");
        let out = kubectl(
            &admin,
            rig.api_ports[0],
            &["create", "serviceaccount", "rotate", "-n", "default"],
        );
        assert!(out.status.success(), "{:?}", text(&out));
        let empty = rig.nodes[0].join("empty.conf");
        std::fs::write(&empty, "apiVersion: v1\nkind: Config\n").unwrap();
        let mint = |port: u16| {
            let out = kubectl(
                &admin,
                port,
                &[
                    "create",
                    "token",
                    "rotate",
                    "-n",
                    "default",
                    "--duration=1h",
                ],
            );
            assert!(out.status.success(), "create token: {:?}", text(&out));
            text(&out).0.trim().to_string()
        };
        let valid = |token: &str, port: u16| {
            let out = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&empty)
                .arg(format!("--server=https://127.0.0.1:{port}"))
                .arg(format!(
                    "--certificate-authority={}",
                    nodes[0].join("pki/ca.crt").display()
                ))
                .arg(format!("--token={token}"))
                .args([
                    "auth",
                    "whoami",
                    "-o",
                    "jsonpath={.status.userInfo.username}",
                ])
                .output()
                .unwrap();
            out.status.success() && text(&out).0.trim() == "system:serviceaccount:default:rotate"
        };
        let old_token = mint(rig.api_ports[0]);
        let mut new_tokens = Vec::new();
        for phase in PHASES {
            let nodes_here: Vec<usize> = if phase == "prepare" {
                vec![0]
            } else {
                (0..NODES).collect()
            };
            for n in nodes_here {
                let mut args = vec!["ca", "rotate", "sa", "--phase", phase];
                if phase == "retire" {
                    // Refused while tokens of the old key may be valid (a year by default);
                    // the test says when they are gone.
                    let before = rig.kpki_on(n, &args);
                    assert_eq!(before.status.code(), Some(1), "{:?}", text(&before));
                    args.extend(["--token-lifetime", "0s"]);
                }
                let out = rig.kpki_on(n, &args);
                assert!(
                    out.status.success(),
                    "node {} sa {phase}: {:?}",
                    n + 1,
                    text(&out)
                );
                std::fs::copy(state(n), state((n + 1) % NODES)).unwrap();
                if phase == "prepare" {
                    for m in 1..NODES {
                        std::fs::copy(state(0), state(m)).unwrap();
                        // File keys: the operator copies the new key with the state.
                        std::fs::copy(nodes[0].join("pki/sa-2.key"), nodes[m].join("pki/sa-2.key"))
                            .unwrap();
                    }
                    continue;
                }
                if n < APISERVERS {
                    clock.set(format!("sa {phase}: restarting kube-apiserver {}", n + 1));
                    if phase == "reissue" {
                        let key = nodes[n].join("pki/sa-2.key").display().to_string();
                        for a in rig.apiservers[n].args.iter_mut() {
                            if a.starts_with("--service-account-signing-key-file=") {
                                *a = format!("--service-account-signing-key-file={key}");
                            }
                        }
                    }
                    api_pool[n].drain();
                    rig.apiservers[n].restart();
                    rig.wait_apiserver(n);
                    api_pool[n].up.store(true, Ordering::SeqCst);
                }
            }
            if phase == "reissue" {
                new_tokens = rig.api_ports.iter().map(|p| mint(*p)).collect();
            }
            for port in &rig.api_ports {
                let old_ok = valid(&old_token, *port);
                assert_eq!(
                    old_ok,
                    phase != "retire",
                    "old token after sa {phase} on :{port}"
                );
                for t in &new_tokens {
                    assert!(valid(t, *port), "new token after sa {phase} on :{port}");
                }
            }
            log.push(format!("sa {phase}: done on every node"));
        }
        // A few more seconds of traffic on the rotated cluster.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (e_ok, k_ok) = (
            etcd_tally.ok.load(Ordering::SeqCst),
            kube_tally.ok.load(Ordering::SeqCst),
        );
        let failures: Vec<String> = etcd_tally
            .failures
            .lock()
            .unwrap()
            .iter()
            .chain(kube_tally.failures.lock().unwrap().iter())
            .cloned()
            .collect();
        eprintln!(
            "{:.0} s: {e_ok} etcd requests, {k_ok} kubectl requests ({:.1} requests/s), {} failed; etcd clients held {:.1} s in all for leadership moves\n{}",
            elapsed,
            (e_ok + k_ok) as f64 / elapsed,
            failures.len(),
            held.as_secs_f64(),
            log.join("\n")
        );
        if !failures.is_empty() {
            let logs: Vec<String> = rig
                .etcd
                .iter()
                .enumerate()
                .map(|(m, p)| format!("--- etcd member {}:\n{}", m + 1, p.tail()))
                .collect();
            panic!(
                "{} failed requests:\n{}\n{}",
                failures.len(),
                failures
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n"),
                logs.join("\n")
            );
        }
        let rate = (e_ok + k_ok) as f64 / elapsed;
        assert!(rate >= 20.0, "only {rate:.1} requests/s");

        // No certificate anywhere chains to an old CA: every bundle holds the new CA alone
        // and every certificate and kubeconfig client certificate is signed by it.
        let mut final_cas = BTreeMap::new();
        for (n, root) in rig.nodes.iter().enumerate() {
            for f in ["ca.crt", "etcd/ca.crt", "front-proxy-ca.crt"] {
                let certs = certs_of_pem(&std::fs::read(root.join("pki").join(f)).unwrap());
                assert_eq!(certs.len(), 1, "node {} {f}", n + 1);
                let first = final_cas.entry(f).or_insert_with(|| certs[0].clone());
                assert_eq!(*first, certs[0], "node {} {f}", n + 1);
            }
            for (conf, _) in KUBECONFIGS {
                let doc: serde_norway::Value =
                    serde_norway::from_slice(&std::fs::read(root.join(conf)).unwrap()).unwrap();
                use base64::Engine;
                let ca_data = base64::engine::general_purpose::STANDARD
                    .decode(
                        doc["clusters"][0]["cluster"]["certificate-authority-data"]
                            .as_str()
                            .unwrap(),
                    )
                    .unwrap();
                assert_eq!(
                    certs_of_pem(&ca_data),
                    vec![final_cas["ca.crt"].clone()],
                    "node {} {conf}",
                    n + 1
                );
            }
        }
        every_credential_valid(&rig.nodes).unwrap();
        // The old etcd client credential is refused by every member now.
        let scratch = rig.nodes[0].join("old-client");
        std::fs::create_dir_all(scratch.join("etcd")).unwrap();
        std::fs::copy(
            rig.nodes[0].join("pki/etcd/ca.crt"),
            scratch.join("etcd/ca.crt"),
        )
        .unwrap();
        std::fs::write(scratch.join("old.crt"), &old_etcd_client.0).unwrap();
        std::fs::write(scratch.join("old.key"), &old_etcd_client.1).unwrap();
        for m in 0..NODES {
            let out = etcdctl(&etcd_endpoints[m], &scratch, "old", &["get", "rotate-0"]);
            assert!(
                !out.status.success(),
                "member {} accepted a client of the old etcd CA",
                m + 1
            );
        }
    }

    fn rig_state_path(node: &Path) -> PathBuf {
        node.join("pki").join(kpki_pki::rotate::STATE_FILE)
    }
}
