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
    // Twenty kills spread over the twelve steps, each at a random point of the step's run
    // time (within the uninterrupted run's time), then the step run to its end.
    let mut kills_inside = 0;
    for (i, (ca, phase, took)) in steps.iter().enumerate() {
        let kills = if i < 8 { 2 } else { 1 };
        for _ in 0..kills {
            let max = (took.as_millis() as u64).max(5);
            let delay = Duration::from_millis(random_below(max));
            if kill_after(&crashed, ca, phase, delay) {
                kills_inside += 1;
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
    eprintln!("{kills_inside} of 20 kills landed before the run ended");
    assert!(
        kills_inside >= 12,
        "only {kills_inside} of 20 kills landed inside a run"
    );

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
