//! `kpki serve --check` against real keys on SoftHSM: every item gets a verdict line, exit 0
//! only when all hold, and each kind of failure (a port in use, a policy that does not
//! compile, a missing file, a key the token does not have) exits 1 naming the first one; no
//! audit record is written. And `KPKI__…` variables reach the daemon's configuration, in
//! `--check` and in a running daemon.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kpki_e2e::serve::{ServeFixture, free_port, ops_get};
use kpki_e2e::{kpki_bin, text};

const POLICY: &str = r#"
[[policy]]
name = "clients"
callers = { cn = "client" }
signers = ["kubernetes.io/kube-apiserver-client"]
"#;

fn check(f: &ServeFixture, env: &[(&str, String)]) -> Output {
    Command::new(kpki_bin())
        .args(["serve", "--check", "--config", f.config.to_str().unwrap()])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

/// Exit 1, a `FAIL` line for `item`, and stderr naming it with `problem`.
fn assert_fails(out: &Output, item: &str, problem: &str) {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("FAIL  {item}"))),
        "{item}: {stdout}"
    );
    assert!(
        stderr.contains(item) && stderr.contains(problem) && stderr.lines().count() == 1,
        "{item} / {problem}: {stderr}"
    );
}

#[test]
fn check_reports_each_item_and_fails_on_the_first_problem() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);

    let out = check(&f, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for item in [
        "ok    config: ",
        "ok    policy: 1 rule(s) compiled",
        "ok    file listen.cert: ",
        "ok    file listen.key: ",
        "ok    file listen.client_cas[0]: ",
        "ok    file cas.ca.cert: ",
        "ok    audit directory: ",
        "ok    certificates and keys: ",
        "ok    key CA \"ca\" pkcs11:",
        "ok    bind listen.address: ",
        "ok    bind listen.ops_address: ",
    ] {
        assert!(stdout.contains(item), "{item}: {stdout}");
    }
    assert!(stdout.contains("ECDSA-P256 key signs"), "{stdout}");
    assert!(stdout.trim_end().ends_with("checks passed"), "{stdout}");
    assert!(!f.audit.exists(), "--check writes no audit record");

    // A port in use.
    let busy = TcpListener::bind(f.addr).unwrap();
    assert_fails(&check(&f, &[]), "bind listen.address", "in use");
    drop(busy);

    // KPKI__ variables reach --check: an ops address that is taken fails, named.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let out = check(&f, &[("KPKI__LISTEN__OPS_ADDRESS", at.clone())]);
    assert_fails(&out, "bind listen.ops_address", &at);
    drop(taken);
    let out = check(&f, &[("KPKI__LISTEN__ADDRESS", "nowhere".into())]);
    assert_fails(&out, "config", "invalid socket address");

    // A policy that does not compile.
    f.write_config(&POLICY.replace(
        r#"callers = { cn = "client" }"#,
        r#"callers = { cn = "(" }"#,
    ));
    assert_fails(&check(&f, &[]), "policy", "regex");

    // A file that is not there.
    f.write_config(POLICY);
    let client_ca = f.dir.path().join("callers-ca.crt");
    std::fs::rename(&client_ca, f.dir.path().join("moved.crt")).unwrap();
    assert_fails(&check(&f, &[]), "file listen.client_cas[0]", "No such file");
    std::fs::rename(f.dir.path().join("moved.crt"), &client_ca).unwrap();

    // A key the token does not have.
    let missing = f.ca_key_uri.replace("object=serve-ca", "object=absent");
    let out = check(&f, &[("KPKI__CAS__CA__KEY", missing)]);
    assert_fails(&out, "certificates and keys", "absent");

    assert!(check(&f, &[]).status.success());
    assert!(!f.audit.exists(), "no check wrote an audit record");
}

/// `KPKI__LISTEN__OPS_ADDRESS` moves a running daemon's operations listener.
#[test]
fn environment_overrides_reach_the_running_daemon() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let ops: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = f.dir.path().join("env.log");
    let mut child = Command::new(kpki_bin())
        .args(["serve", "--config", f.config.to_str().unwrap()])
        .env("KPKI__LISTEN__OPS_ADDRESS", ops.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answered = loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "kpki serve exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        if let Some(reply) = ops_get(ops, "/readyz") {
            break reply;
        }
        assert!(Instant::now() < deadline, "no ops listener on {ops}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(answered.0, 200, "{answered:?}");
    assert!(
        ops_get(f.ops_addr, "/readyz").is_none(),
        "the file's ops address is not used"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
