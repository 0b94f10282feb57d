//! `/metrics` content negotiation read by real parsers (Debian's python3-prometheus-client:
//! its classic text parser and its strict OpenMetrics parser), `kpki_build_info` and the
//! `process_*` metrics; and JSON error bodies on 404/405, on the operations listener and the
//! mTLS one (cfssl's envelope under `/api/v1/cfssl/`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use kpki_e2e::load::Connection;
use kpki_e2e::serve::ServeFixture;
use serde_json::Value;

const POLICY: &str = r#"
[[policy]]
name = "clients"
callers = { cn = "client" }
signers = ["kubernetes.io/kube-apiserver-client"]
"#;

/// The system Python with Debian's python3-prometheus-client.
const PYTHON: &str = "/usr/bin/python3";

/// A raw HTTP/1.0 request on the operations listener: (status, headers, body).
fn raw(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: kpki\r\n{accept}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Runs `script` under the system Python with `input` on stdin; its stdout.
fn python(script: &str, input: &str) -> String {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} not found: run scripts/setup (python3-prometheus-client)"
    );
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python: {stderr} (install python3-prometheus-client: scripts/setup)"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Prints `name type sample=value` for each family the parser reads.
const READ: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as classic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
parse = om if sys.argv[-1] == "om" else classic
for f in parse(sys.stdin.read()):
    for s in f.samples:
        print(f.name, f.type, s.name, s.value, sorted(s.labels.items()))
"#;

fn read_with(kind: &str, text: &str) -> Vec<String> {
    let script = format!("import sys; sys.argv.append({kind:?})\n{READ}");
    python(&script, text).lines().map(String::from).collect()
}

#[test]
fn metrics_negotiate_their_format_and_errors_have_json_bodies() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let _daemon = f.start();
    // One request counted, so a counter has a sample.
    assert_eq!(
        kpki_e2e::serve::ops_get(f.ops_addr, "/healthz").unwrap().0,
        200
    );

    // No Accept (curl, older scrapers): the classic format, read by the classic parser.
    let (status, head, classic) = raw(f.ops_addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        !classic.contains("# EOF") && !classic.contains("# UNIT"),
        "{classic}"
    );
    let samples = read_with("classic", &classic);
    let has = |rows: &[String], prefix: &str| rows.iter().any(|r| r.starts_with(prefix));
    assert!(
        has(&samples, "kpki_build_info gauge kpki_build_info 1.0"),
        "{samples:?}"
    );
    let build = samples
        .iter()
        .find(|r| r.contains("kpki_build_info"))
        .unwrap();
    assert!(
        build.contains(&format!("('version', '{}')", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.contains("'git_commit'"), "{build}");
    for name in [
        "process_cpu_seconds counter process_cpu_seconds_total",
        "process_resident_memory_bytes gauge",
        "process_open_fds gauge",
        "process_max_fds gauge",
        "process_start_time_seconds gauge",
        "kpki_csr_signed counter kpki_csr_signed_total",
        "kpki_issuance_seconds histogram kpki_issuance_seconds_bucket",
    ] {
        assert!(has(&samples, name), "{name}: {samples:?}");
    }
    // The counters read as counters, with the `_total` sample (a misread would be untyped).
    assert!(
        !samples.iter().any(|r| r.contains(" unknown ")),
        "{samples:?}"
    );
    let rss: f64 = samples
        .iter()
        .find(|r| r.starts_with("process_resident_memory_bytes"))
        .and_then(|r| r.split_whitespace().nth(3))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1e6, "resident memory {rss}");

    // Prometheus' scrape Accept: OpenMetrics, read by the strict OpenMetrics parser.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, head, om) = raw(f.ops_addr, "GET", "/metrics", Some(accept));
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(om.trim_end().ends_with("# EOF"));
    let samples = read_with("om", &om);
    assert!(
        has(&samples, "kpki_build info kpki_build_info 1 "),
        "{samples:?}"
    );
    assert!(
        has(
            &samples,
            "process_cpu_seconds counter process_cpu_seconds_total"
        ),
        "{samples:?}"
    );

    // 404 and 405 on the operations listener: JSON bodies.
    for (method, path, status, code) in [
        ("GET", "/nope", 404, "not_found"),
        ("POST", "/metrics", 405, "method_not_allowed"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
    ] {
        let (got, head, body) = raw(f.ops_addr, method, path, None);
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], code, "{body}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(path),
            "{body}"
        );
    }
    let (_, head, _) = raw(f.ops_addr, "POST", "/metrics", None);
    assert!(head.contains("allow: get"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_404_and_405_have_json_bodies() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let _daemon = f.start();
    let mut conn = Connection::connect(&f.target(f.identity("client", None)))
        .await
        .unwrap();
    let reply = conn.post("/v2/sign", b"{}".to_vec()).await.unwrap();
    assert_eq!(reply.status, 404);
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    let reply = conn.post("/v1/ca", b"{}".to_vec()).await.unwrap();
    assert_eq!(reply.status, 405);
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    // Under /api/v1/cfssl/ the answer is cfssl's envelope.
    let reply = conn
        .post("/api/v1/cfssl/scan", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(reply.status, 404);
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["success"], false, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("not_found: "),
        "{v}"
    );
}
