//! The `kpki` command's Unix manners: a closed stdout pipe ends it quietly by SIGPIPE, `-`
//! reads stdin, `KPKI_LOG` logs every command to stderr (never key material), `-o` only where
//! it does something, usage errors are one line and exit 2, `--warn-within` fails on a
//! missing certificate, the help lists every command, kubeadm's `--validity-period`, and
//! `node add` says what to do next.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kpki_e2e::{hsm, init_cluster, kpki, kpki_bin, text};

const SIGPIPE: i32 = 13;

/// A node PKI (file keys, ECDSA-P256: quick) under `dir/n`; returns its root.
fn pki(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("kpki.toml");
    std::fs::write(
        &config,
        "[cluster]\nencryption_algorithm = \"ECDSA-P256\"\n",
    )
    .unwrap();
    let root = dir.join("n");
    init_cluster(&root, "10.0.0.10", &["--config", config.to_str().unwrap()]);
    root
}

/// Runs kpki with `args` writing into a pipe nobody reads (the reader already exited).
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(kpki_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Runs kpki with `args`, `input` on stdin.
fn with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(kpki_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A usage error: exit 2, exactly one `kpki: error:` line naming `expect`, nothing on stdout.
fn usage_error(args: &[&str], expect: &str) {
    let out = kpki(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("kpki: error: "), "{args:?}: {stderr}");
    assert!(
        stderr.contains(expect),
        "{args:?}: expected {expect:?} in {stderr}"
    );
    assert!(stdout.is_empty(), "{args:?}: {stdout}");
}

#[test]
fn a_closed_pipe_ends_kpki_by_sigpipe_without_a_word() {
    let dir = tempfile::tempdir().unwrap();
    let root = pki(dir.path());
    let d = root.to_str().unwrap();
    let ca = root.join("pki/ca.crt");
    let admin = root.join("admin.conf");
    let cases: Vec<Vec<&str>> = vec![
        vec!["certs", "check-expiration", "--dir", d, "-o", "json"],
        vec!["certs", "check-expiration", "--dir", d],
        vec!["inspect", ca.to_str().unwrap()],
        vec!["inspect", admin.to_str().unwrap(), "-o", "yaml"],
        vec!["kubeconfig", "user", "--client-name", "jane", "--dir", d],
        vec!["completion", "bash"],
        vec!["man"],
        vec!["--help"],
    ];
    for args in cases {
        let out = into_closed_pipe(&args);
        let (_, stderr) = text(&out);
        assert_eq!(
            out.status.signal(),
            Some(SIGPIPE),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }

    // The same through a shell, as a user types it: head gets its line, nothing else is said.
    let script = format!(
        "set -o pipefail; '{}' certs check-expiration --dir '{d}' -o json | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
        kpki_bin().display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(stderr.is_empty(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "{", "{stdout}");
    // 0 when kpki finished writing before head left, 141 (SIGPIPE) when it had not.
    assert!(
        lines[1] == "status=0" || lines[1] == "status=141",
        "{stdout}"
    );
}

#[test]
fn dash_reads_stdin_for_inspect_and_the_kubeadm_config() {
    let dir = tempfile::tempdir().unwrap();
    let root = pki(dir.path());
    let d = root.to_str().unwrap();

    // kpki kubeconfig user … | kpki inspect -
    let mut user = Command::new(kpki_bin())
        .args([
            "kubeconfig",
            "user",
            "--client-name",
            "jane",
            "--org",
            "dev",
            "--dir",
            d,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let inspect = Command::new(kpki_bin())
        .args(["inspect", "-"])
        .stdin(user.stdout.take().unwrap())
        .output()
        .unwrap();
    let user = user.wait_with_output().unwrap();
    assert!(user.status.success(), "{:?}", text(&user));
    let (stdout, stderr) = text(&inspect);
    assert!(inspect.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("Subject: O = dev, CN = jane"), "{stdout}");
    assert!(stdout.contains("Subject: CN = kubernetes"), "{stdout}");

    // A certificate and a key file on stdin, as JSON.
    let ca = std::fs::read(root.join("pki/ca.crt")).unwrap();
    let out = with_stdin(&["inspect", "-", "-o", "json"], &ca);
    assert!(out.status.success(), "{:?}", text(&out));
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
    let key = std::fs::read(root.join("pki/apiserver.key")).unwrap();
    let out = with_stdin(&["inspect", "-"], &key);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !stdout.contains("PRIVATE KEY") && !stdout.contains("BEGIN"),
        "{stdout}"
    );
    // Garbage on stdin: one error line, exit 1.
    let out = with_stdin(&["inspect", "-"], b"not a certificate\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out).1.lines().count(), 1, "{:?}", text(&out));

    // An audit trail on stdin.
    let audit = dir.path().join("audit.jsonl");
    let log =
        kpki_serve::audit::AuditLog::open(&audit, kpki_serve::audit::SyncMode::Flush).unwrap();
    log.close().unwrap();
    drop(log);
    let out = with_stdin(&["audit", "verify", "-"], &std::fs::read(&audit).unwrap());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("audit log -: 2 lines, 0 decisions")
            && stdout.contains("closed cleanly"),
        "{stdout}"
    );

    // kubeadm YAML on stdin.
    let yaml = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\napiServer:\n  certSANs:\n  - from-stdin.example.com\n";
    let other = dir.path().join("other");
    let out = with_stdin(
        &[
            "init",
            "--dir",
            other.to_str().unwrap(),
            "--node-name",
            "cp1",
            "--advertise-address",
            "10.0.0.11",
            "--encryption-algorithm",
            "ECDSA-P256",
            "--kubeadm-config",
            "-",
        ],
        yaml.as_bytes(),
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let out = kpki(&["inspect", other.join("pki/apiserver.crt").to_str().unwrap()]);
    assert!(
        text(&out).0.contains("DNS:from-stdin.example.com"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn kpki_log_logs_every_command_on_stderr_and_never_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kpki.toml");
    std::fs::write(
        &config,
        "[cluster]\nencryption_algorithm = \"ECDSA-P256\"\n",
    )
    .unwrap();
    let root = dir.path().join("n");
    let d = root.to_str().unwrap();
    let c = config.to_str().unwrap();
    let key = dir.path().join("k.key");
    let csr = dir.path().join("jane.csr");
    let ca = root.join("pki/ca.crt");
    let key_uri = format!("file:{}", key.display());
    let out = kpki(&["keys", "create", &key_uri, "-a", "ECDSA-P256"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "init",
                "--config",
                c,
                "--dir",
                d,
                "--node-name",
                "cp1",
                "--advertise-address",
                "10.0.0.10",
            ],
            "configuration resolved",
        ),
        (
            vec!["certs", "check-expiration", "--config", c, "--dir", d],
            "configuration resolved",
        ),
        (
            vec!["certs", "renew", "apiserver", "--config", c, "--dir", d],
            "configuration resolved",
        ),
        (
            vec![
                "kubeconfig",
                "user",
                "--client-name",
                "jane",
                "--config",
                c,
                "--dir",
                d,
            ],
            "issuing a user kubeconfig",
        ),
        (
            vec![
                "node",
                "add",
                "w1",
                "--address",
                "10.0.0.21",
                "--config",
                c,
                "--dir",
                d,
            ],
            "issuing node credentials",
        ),
        (vec!["inspect", ca.to_str().unwrap()], "inspecting"),
        (vec!["keys", "show", &key_uri], "describing key"),
        (
            vec!["sign", csr.to_str().unwrap(), "--config", c, "--dir", d],
            "signing",
        ),
        (vec!["completion", "bash"], "command=\"completion\""),
    ];
    // A request for `sign`, made with the key above.
    kpki_e2e::openssl_key(&dir.path().join("jane.key"), "p256");
    let req = kpki_e2e::openssl_req(&dir.path().join("jane.key"), "/CN=jane/O=dev", &[]);
    std::fs::write(&csr, req).unwrap();
    for (args, expect) in cases {
        let out = Command::new(kpki_bin())
            .args(&args)
            .env("KPKI_LOG", "debug")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: expected {expect:?} in {stderr}"
        );
        assert!(
            stderr.contains("DEBUG") || stderr.contains("INFO"),
            "{stderr}"
        );
        for secret in ["PRIVATE KEY", "pin-value"] {
            assert!(
                !stderr.contains(secret),
                "{args:?}: {secret} logged: {stderr}"
            );
        }
        // Logs never reach stdout: the commands that print the same thing every time print
        // it byte for byte without KPKI_LOG, and then say nothing on stderr.
        if args[0] == "inspect" || args[0] == "completion" || args[1] == "show" {
            let quiet = kpki(&args);
            assert_eq!(stdout, text(&quiet).0, "{args:?}");
            assert!(text(&quiet).1.is_empty(), "{args:?}: {:?}", text(&quiet));
        }
    }
    // A token key named with its PIN inline: logged by URI, the PIN never.
    let token = hsm::token();
    let uri = token.key_uri_with_pin("logged", hsm::USER_PIN);
    for args in [
        vec!["keys", "create", uri.as_str(), "-a", "ECDSA-P256"],
        vec!["keys", "show", uri.as_str()],
    ] {
        let out = Command::new(kpki_bin())
            .args(&args)
            .env("KPKI_LOG", "trace,cryptoki=trace")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("object=logged"), "{args:?}: {stderr}");
        assert!(!stderr.contains("pin-value"), "{args:?}: {stderr}");
    }
    // Without KPKI_LOG nothing is logged.
    let out = kpki(&["inspect", ca.to_str().unwrap()]);
    assert!(text(&out).1.is_empty(), "{:?}", text(&out));
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    usage_error(&["init", "--bogus"], "unexpected argument '--bogus'");
    usage_error(&["frobnicate"], "unrecognized subcommand 'frobnicate'");
    usage_error(&["node", "add", "w1"], "--address");
    usage_error(
        &["certs", "check-expiration", "--warn-within", "soon"],
        "--warn-within",
    );
    usage_error(
        &["init", "--key", "root=file:/k"],
        "expected ca, front-proxy-ca, etcd-ca or sa",
    );
    usage_error(&["init", "--key", "ca"], "expected NAME=URI");
    usage_error(
        &[
            "kubeconfig",
            "user",
            "--client-name",
            "x",
            "--rbac",
            "role=view",
            "--out",
            "/nonexistent/x.conf",
        ],
        "expected clusterrole=<name>",
    );
    usage_error(
        &[
            "kubeconfig",
            "user",
            "--client-name",
            "x",
            "--rbac",
            "clusterrole=view",
        ],
        "--out",
    );
    usage_error(
        &[
            "kubeconfig",
            "user",
            "--client-name",
            "x",
            "--validity",
            "1 day",
        ],
        "--validity",
    );
    usage_error(&["completion", "tcsh"], "invalid value 'tcsh'");
    usage_error(
        &["serve", "--jwt-only", "--controller-only", "-c", "x"],
        "cannot be used with",
    );
    // -o where it would do nothing.
    usage_error(
        &["kubeconfig", "user", "--client-name", "x", "-o", "json"],
        "'-o'",
    );
    usage_error(
        &["kubeconfig", "component", "kube-proxy", "-o", "json"],
        "'-o'",
    );
    usage_error(&["serve", "-c", "x.toml", "-o", "json"], "'-o'");
    usage_error(&["-o", "json", "inspect", "x"], "'-o'");

    // No command at all: the help, on stderr, still exit 2.
    let out = kpki(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("Usage: kpki"), "{:?}", text(&out));
    // Help and version are answers: stdout, exit 0.
    for args in [
        &["--help"][..],
        &["--version"],
        &["certs", "renew", "--help"],
    ] {
        let out = kpki(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty() && out.stderr.is_empty(), "{args:?}");
    }
    // A refusal after the command line was understood stays exit 1.
    let out = kpki(&["inspect", "/nonexistent/x.crt"]);
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
}

#[test]
fn warn_within_fails_when_certificates_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let root = pki(dir.path());
    let d = root.to_str().unwrap();
    let run = || {
        kpki(&[
            "certs",
            "check-expiration",
            "--dir",
            d,
            "--warn-within",
            "30d",
        ])
    };
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    std::fs::remove_file(root.join("pki/etcd/peer.crt")).unwrap();
    let out = run();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("!MISSING! etcd-peer"), "{stdout}");
    assert_eq!(
        stderr.trim(),
        "kpki: warning: missing: etcd-peer",
        "{stderr}"
    );
    // Without --warn-within the table is all that is asked for.
    let out = kpki(&["certs", "check-expiration", "--dir", d]);
    assert_eq!(out.status.code(), Some(0));

    // A directory with nothing in it: every row is missing.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = kpki(&[
        "certs",
        "check-expiration",
        "--dir",
        empty.to_str().unwrap(),
        "--warn-within",
        "30d",
        "-o",
        "json",
    ]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    let info: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        info["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["missing"] == true),
        "{stdout}"
    );
    assert!(
        stderr.contains("missing: admin.conf, apiserver"),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_command_with_what_it_does() {
    let out = kpki(&["--help"]);
    let (stdout, _) = text(&out);
    let commands = [
        ("init", "kubeadm PKI"),
        ("certs", "check-expiration, renew, generate-csr"),
        ("sign", "Sign a CSR"),
        ("kubeconfig", "user"),
        ("node", "add"),
        ("inspect", "Describe"),
        ("keys", "create, list, show, import"),
        ("audit", "verify"),
        ("serve", "signing daemon"),
        ("completion", "bash, zsh or fish"),
        ("man", "manual page"),
    ];
    for (name, what) in commands {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed: {stdout}"));
        assert!(line.contains(what), "{name}: {line}");
    }
    for section in [
        "Exit status:",
        "3    certs check-expiration --warn-within: certificates expiring or missing",
        "KPKI_LOG",
    ] {
        assert!(stdout.contains(section), "{section}: {stdout}");
    }
}

#[test]
fn validity_period_is_accepted_as_kubeadm_names_it() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let root = pki(dir.path());
    let d = root.to_str().unwrap();
    // NotAfter − NotBefore of the user certificate issued with `flag 2h`, in seconds.
    let span = |flag: &str| {
        let out = dir.path().join(format!("jane{flag}.conf"));
        let o = kpki(&[
            "kubeconfig",
            "user",
            "--client-name",
            "jane",
            flag,
            "2h",
            "--out",
            out.to_str().unwrap(),
            "--dir",
            d,
        ]);
        assert!(o.status.success(), "{flag}: {:?}", text(&o));
        let yaml: serde_norway::Value =
            serde_norway::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let data = yaml["users"][0]["user"]["client-certificate-data"]
            .as_str()
            .unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
    };
    let long = span("--validity");
    let alias = span("--validity-period");
    assert_eq!(long, alias);
    // Two hours from now, NotBefore back-dated by up to five minutes as kubeadm does.
    assert!((7200..=7200 + 300).contains(&long), "{long}");
    // The help shows kubeadm's name.
    let help = text(&kpki(&["kubeconfig", "user", "--help"])).0;
    assert!(help.contains("validity-period"), "{help}");
}

#[test]
fn node_add_prints_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let root = pki(dir.path());
    let d = root.to_str().unwrap();
    let out = kpki(&[
        "node",
        "add",
        "worker-1",
        "--address",
        "10.0.0.21",
        "--dir",
        d,
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let node = root.join("nodes/worker-1");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("[node] Wrote"), "{stdout}");
    assert_eq!(
        lines[1],
        "[node] Next: copy these to worker-1 and start its kubelet with"
    );
    for (flag, from) in [
        (
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            node.join("kubelet.conf"),
        ),
        (
            "--tls-cert-file=/var/lib/kubelet/pki/kubelet.crt",
            node.join("kubelet.crt"),
        ),
        (
            "--tls-private-key-file=/var/lib/kubelet/pki/kubelet.key",
            node.join("kubelet.key"),
        ),
        (
            "--client-ca-file=/etc/kubernetes/pki/ca.crt",
            root.join("pki/ca.crt"),
        ),
    ] {
        assert!(from.is_file(), "{}", from.display());
        let line = lines
            .iter()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag}: {stdout}"));
        assert!(
            line.contains(&format!("{:?}", from.display().to_string())),
            "{line}"
        );
    }
    // -o json stays data only.
    let out = kpki(&[
        "node",
        "add",
        "worker-2",
        "--address",
        "10.0.0.22",
        "--dir",
        d,
        "-o",
        "json",
    ]);
    let files: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        files["kubeconfig"]
            .as_str()
            .unwrap()
            .ends_with("worker-2/kubelet.conf")
    );
}
