//! `kpki serve` with its CA key on SoftHSM: mTLS admission (no certificate, another CA,
//! expired → refused; callers identified exactly), a policy table of allowed requests and
//! every kind of denial, each checked for HTTP status, error code and its audit line, the
//! read-only endpoints, SIGHUP reload (a bad file keeps the old policy) and SIGTERM.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;

use kpki_e2e::load::{ClientIdentity, Connection};
use kpki_e2e::openssl_csr;
use kpki_e2e::serve::{ServeFixture, ops_get};
use kpki_e2e::{openssl, text};
use serde_json::{Value, json};

const KAC: &str = "kubernetes.io/kube-apiserver-client";
const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
const MESH: &str = "example.com/mesh";

const POLICY: &str = r#"
[signers."example.com/mesh"]
ca = "ca"
usages = ["digital signature", "key encipherment", "server auth", "client auth"]

[[policy]]
name = "kubelets"
callers = { orgs = ["system:nodes"] }
signers = ["kubernetes.io/kube-apiserver-client-kubelet", "kubernetes.io/kubelet-serving"]
orgs = ["system:nodes"]
dns_suffixes = [".nodes.example.com"]
ip_ranges = ["10.0.0.0/8"]
max_validity = "24h"

[[policy]]
name = "onboarding"
callers = { cn = "onboarder" }
signers = ["kubernetes.io/kube-apiserver-client"]
cn = "[a-z][a-z0-9-]*"
orgs = ["dev", "ops"]
max_validity = "720h"
key_types = ["ECDSA-P256", "ECDSA-P384", "RSA"]

[[policy]]
name = "break-glass"
callers = { cn = "break-glass", orgs = ["sre"] }
signers = ["kubernetes.io/kube-apiserver-client"]
orgs = ["system:masters"]
max_validity = "1h"

[[policy]]
name = "mesh"
callers = { orgs = ["mesh-issuers"] }
signers = ["example.com/mesh"]
cn = "[a-z0-9.-]+"
dns_suffixes = [".svc.cluster.local"]
ip_ranges = ["10.96.0.0/12", "fd00::/8"]
uri_prefixes = ["spiffe://cluster.local/"]
max_validity = "24h"
key_types = ["ECDSA-P256"]
"#;

/// How a case's request body is made.
enum Body {
    /// A CSR from `openssl req` (key kind, subject, -addext values).
    Csr(&'static str, &'static str, &'static [&'static str]),
    /// A valid CSR with one byte of its signature flipped.
    Tampered,
    /// This exact body.
    Raw(&'static str),
    /// A body larger than the limit.
    Huge,
}

struct Case {
    name: &'static str,
    caller: &'static str,
    signer: Option<&'static str>,
    body: Body,
    expiration: Option<i64>,
    usages: &'static [&'static str],
    status: u16,
    code: &'static str,
}

const fn case(
    name: &'static str,
    caller: &'static str,
    signer: &'static str,
    body: Body,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        caller,
        signer: Some(signer),
        body,
        expiration: None,
        usages: &[],
        status,
        code,
    }
}

fn cases() -> Vec<Case> {
    use Body::*;
    let mut v = vec![
        // Allowed.
        case(
            "user in dev",
            "onboarder",
            KAC,
            Csr("p256", "/CN=jane/O=dev", &[]),
            200,
            "",
        ),
        case(
            "user in two groups, RSA",
            "onboarder",
            KAC,
            Csr("rsa2048", "/CN=sam/O=dev/O=ops", &[]),
            200,
            "",
        ),
        case(
            "user without groups, P-384",
            "onboarder",
            KAC,
            Csr("p384", "/CN=bob", &[]),
            200,
            "",
        ),
        case(
            "break-glass admin",
            "break-glass",
            KAC,
            Csr("p256", "/CN=root/O=system:masters", &[]),
            200,
            "",
        ),
        case(
            "kubelet client",
            "node-n1",
            KUBELET_CLIENT,
            Csr("p256", "/O=system:nodes/CN=system:node:n1", &[]),
            200,
            "",
        ),
        case(
            "kubelet serving",
            "node-n1",
            KUBELET_SERVING,
            Csr(
                "p256",
                "/O=system:nodes/CN=system:node:n1",
                &["subjectAltName=DNS:n1.nodes.example.com,IP:10.0.0.5"],
            ),
            200,
            "",
        ),
        case(
            "mesh workload",
            "mesh-1",
            MESH,
            Csr(
                "p256",
                "/CN=api.default",
                &[
                    "subjectAltName=DNS:api.default.svc.cluster.local,IP:10.96.0.10,URI:spiffe://cluster.local/ns/default/sa/api",
                ],
            ),
            200,
            "",
        ),
        case(
            "mesh IPv6",
            "mesh-1",
            MESH,
            Csr("p256", "/CN=db.default", &["subjectAltName=IP:fd00::1"]),
            200,
            "",
        ),
        // Policy denials.
        case(
            "Ed25519 not in key_types",
            "onboarder",
            KAC,
            Csr("ed25519", "/CN=ed", &[]),
            403,
            "key_not_allowed",
        ),
        case(
            "system:masters not listed",
            "onboarder",
            KAC,
            Csr("p256", "/CN=jane/O=system:masters", &[]),
            403,
            "system_masters",
        ),
        case(
            "group not allowed",
            "onboarder",
            KAC,
            Csr("p256", "/CN=jane/O=finance", &[]),
            403,
            "org_not_allowed",
        ),
        case(
            "CN outside pattern",
            "onboarder",
            KAC,
            Csr("p256", "/CN=Jane_Doe", &[]),
            403,
            "cn_not_allowed",
        ),
        case(
            "no rule for signer",
            "onboarder",
            KUBELET_SERVING,
            Csr(
                "p256",
                "/O=system:nodes/CN=system:node:x",
                &["subjectAltName=DNS:x.nodes.example.com"],
            ),
            403,
            "policy_denied",
        ),
        case(
            "unknown caller",
            "stranger",
            KAC,
            Csr("p256", "/CN=jane", &[]),
            403,
            "policy_denied",
        ),
        case(
            "break-glass needs both CN and O",
            "break-glass-no-sre",
            KAC,
            Csr("p256", "/CN=root/O=system:masters", &[]),
            403,
            "policy_denied",
        ),
        case(
            "node asks for another node",
            "node-n1",
            KUBELET_CLIENT,
            Csr("p256", "/O=system:nodes/CN=system:node:n2", &[]),
            403,
            "node_mismatch",
        ),
        case(
            "node on the user signer",
            "node-n1",
            KAC,
            Csr("p256", "/CN=system:node:n1", &[]),
            403,
            "policy_denied",
        ),
        case(
            "serving DNS outside suffix",
            "node-n1",
            KUBELET_SERVING,
            Csr(
                "p256",
                "/O=system:nodes/CN=system:node:n1",
                &["subjectAltName=DNS:n1.evil.example"],
            ),
            403,
            "san_not_allowed",
        ),
        case(
            "serving IP outside CIDR",
            "node-n1",
            KUBELET_SERVING,
            Csr(
                "p256",
                "/O=system:nodes/CN=system:node:n1",
                &["subjectAltName=IP:192.168.1.5"],
            ),
            403,
            "san_not_allowed",
        ),
        case(
            "mesh DNS outside suffix",
            "mesh-1",
            MESH,
            Csr("p256", "/CN=api", &["subjectAltName=DNS:api.example.org"]),
            403,
            "san_not_allowed",
        ),
        case(
            "mesh URI outside prefix",
            "mesh-1",
            MESH,
            Csr(
                "p256",
                "/CN=api",
                &["subjectAltName=URI:spiffe://other.domain/ns/x"],
            ),
            403,
            "san_not_allowed",
        ),
        case(
            "mesh email SAN",
            "mesh-1",
            MESH,
            Csr("p256", "/CN=api", &["subjectAltName=email:a@example.com"]),
            403,
            "san_not_allowed",
        ),
        case(
            "mesh RSA key",
            "mesh-1",
            MESH,
            Csr("rsa2048", "/CN=api", &[]),
            403,
            "key_not_allowed",
        ),
        // Kubernetes signer rules.
        case(
            "serving without SANs",
            "node-n1",
            KUBELET_SERVING,
            Csr("p256", "/O=system:nodes/CN=system:node:n1", &[]),
            403,
            "signer_rule",
        ),
        case(
            "kubelet client with a SAN",
            "node-n1",
            KUBELET_CLIENT,
            Csr(
                "p256",
                "/O=system:nodes/CN=system:node:n1",
                &["subjectAltName=DNS:n1.nodes.example.com"],
            ),
            403,
            "signer_rule",
        ),
        case(
            "kubelet client with a wrong O",
            "node-n1",
            KUBELET_CLIENT,
            Csr("p256", "/O=dev/CN=system:node:n1", &[]),
            403,
            "signer_rule",
        ),
        // Malformed or weak requests.
        case(
            "RSA-1024",
            "onboarder",
            KAC,
            Csr("rsa1024", "/CN=weak", &[]),
            400,
            "unsupported_key",
        ),
        case(
            "tampered CSR",
            "onboarder",
            KAC,
            Tampered,
            400,
            "proof_of_possession",
        ),
        case(
            "two CNs (Go honours the last)",
            "node-n1",
            KUBELET_CLIENT,
            Csr(
                "p256",
                "/O=system:nodes/CN=system:node:n1/CN=system:node:victim",
                &[],
            ),
            400,
            "malformed_csr",
        ),
        case(
            "two CNs behind a CN pattern",
            "onboarder",
            KAC,
            Csr("p256", "/CN=jane/CN=admin", &[]),
            400,
            "malformed_csr",
        ),
        case(
            "not PEM",
            "onboarder",
            KAC,
            Raw(r#"{"csr":"garbage","signer_name":"kubernetes.io/kube-apiserver-client"}"#),
            400,
            "malformed_csr",
        ),
        case(
            "not JSON",
            "onboarder",
            KAC,
            Raw("{not json"),
            400,
            "bad_request",
        ),
        case(
            "unknown field",
            "onboarder",
            KAC,
            Raw(r#"{"csr":"x","signer_name":"a","color":"red"}"#),
            400,
            "bad_request",
        ),
        case(
            "unknown signer",
            "onboarder",
            "example.com/nope",
            Csr("p256", "/CN=jane", &[]),
            400,
            "unknown_signer",
        ),
        case(
            "body over the limit",
            "onboarder",
            KAC,
            Huge,
            413,
            "request_too_large",
        ),
    ];
    v.push(Case {
        name: "no signer",
        signer: None,
        ..case(
            "",
            "onboarder",
            KAC,
            Body::Csr("p256", "/CN=jane", &[]),
            400,
            "bad_request",
        )
    });
    v.push(Case {
        name: "validity within the rule",
        expiration: Some(3600),
        ..case(
            "",
            "onboarder",
            KAC,
            Body::Csr("p256", "/CN=short", &[]),
            200,
            "",
        )
    });
    v.push(Case {
        name: "validity over the rule",
        expiration: Some(721 * 3600),
        ..case(
            "",
            "onboarder",
            KAC,
            Body::Csr("p256", "/CN=long", &[]),
            403,
            "validity_too_long",
        )
    });
    v.push(Case {
        name: "validity over the break-glass hour",
        expiration: Some(7200),
        ..case(
            "",
            "break-glass",
            KAC,
            Body::Csr("p256", "/CN=root/O=system:masters", &[]),
            403,
            "validity_too_long",
        )
    });
    v.push(Case {
        name: "validity below 600 s",
        expiration: Some(300),
        ..case(
            "",
            "onboarder",
            KAC,
            Body::Csr("p256", "/CN=tiny", &[]),
            400,
            "validity",
        )
    });
    v.push(Case {
        name: "usage outside the mesh signer's list",
        usages: &["digital signature", "code signing"],
        ..case(
            "",
            "mesh-1",
            MESH,
            Body::Csr("p256", "/CN=api", &[]),
            403,
            "usage",
        )
    });
    v.push(Case {
        name: "server usage on the client signer",
        usages: &["digital signature", "server auth"],
        ..case(
            "",
            "onboarder",
            KAC,
            Body::Csr("p256", "/CN=jane", &[]),
            403,
            "usage",
        )
    });
    v
}

fn caller_identity(
    f: &ServeFixture,
    caller: &str,
) -> (ClientIdentity, &'static str, Vec<&'static str>) {
    let (cn, orgs): (&'static str, Vec<&'static str>) = match caller {
        "onboarder" => ("onboarder", vec![]),
        "break-glass" => ("break-glass", vec!["sre"]),
        "break-glass-no-sre" => ("break-glass", vec![]),
        "node-n1" => ("system:node:n1", vec!["system:nodes"]),
        "mesh-1" => ("mesh-1", vec!["mesh-issuers"]),
        "stranger" => ("nobody", vec![]),
        other => panic!("unknown caller {other}"),
    };
    (f.identity(cn, orgs.first().copied()), cn, orgs)
}

fn tampered(dir: &std::path::Path) -> String {
    let good = openssl_csr(dir, "tamper", "p256", "/CN=jane", &[]);
    let mut der = pem::parse(good.as_bytes()).unwrap().into_contents();
    let last = der.len() - 5;
    der[last] ^= 0x01; // inside the signature
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))
}

async fn post(conn: &mut Connection, body: String) -> (u16, Value) {
    let reply = conn.post("/v1/sign", body.into_bytes()).await.unwrap();
    let v = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_table_statuses_codes_and_audit_lines() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let mut daemon = f.start();
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut conns: HashMap<&str, (Connection, &str, Vec<&str>)> = HashMap::new();
    let dir = f.dir.path().join("csrs");
    std::fs::create_dir_all(&dir).unwrap();
    let mut expected_audit = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        if !conns.contains_key(c.caller) {
            let (id, cn, orgs) = caller_identity(&f, c.caller);
            let conn = Connection::connect(&f.target(id)).await.unwrap();
            conns.insert(c.caller, (conn, cn, orgs));
        }
        let (conn, cn, orgs) = conns.get_mut(c.caller).unwrap();
        let body = match &c.body {
            Body::Raw(s) => s.to_string(),
            Body::Huge => json!({ "csr": "A".repeat(100_000), "signer_name": KAC }).to_string(),
            other => {
                let csr = match other {
                    Body::Csr(kind, subj, ext) => {
                        openssl_csr(&dir, &format!("c{i}"), kind, subj, ext)
                    }
                    _ => tampered(&dir),
                };
                let mut b = json!({ "csr": csr });
                if let Some(s) = c.signer {
                    b["signer_name"] = json!(s);
                }
                if let Some(e) = c.expiration {
                    b["expiration_seconds"] = json!(e);
                }
                if !c.usages.is_empty() {
                    b["usages"] = json!(c.usages);
                }
                b.to_string()
            }
        };
        let (status, reply) = post(conn, body).await;
        assert_eq!(status, c.status, "{}: {reply}", c.name);
        if c.status == 200 {
            let cert = f.dir.path().join(format!("c{i}.crt"));
            std::fs::write(&cert, reply["certificate"].as_str().unwrap()).unwrap();
            let v = openssl(&[
                "verify",
                "-CAfile",
                f.ca_cert.to_str().unwrap(),
                cert.to_str().unwrap(),
            ]);
            assert!(v.status.success(), "{}: {:?}", c.name, text(&v));
            // The reported serial and NotAfter are the certificate's.
            let der = pem::parse(reply["certificate"].as_str().unwrap())
                .unwrap()
                .into_contents();
            let (_, parsed) =
                <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(&der)
                    .unwrap();
            let serial: String = parsed
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(reply["serial"].as_str().unwrap(), serial, "{}", c.name);
            let not_after = parsed
                .validity()
                .not_after
                .to_datetime()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            assert_eq!(
                reply["not_after"].as_str().unwrap(),
                not_after,
                "{}",
                c.name
            );
            assert_eq!(
                reply["chain"][0].as_str().unwrap(),
                std::fs::read_to_string(&f.ca_cert).unwrap()
            );
            expected_audit.push((
                c.name,
                cn.to_string(),
                orgs.clone(),
                "allow",
                String::new(),
                reply["serial"].as_str().map(String::from),
            ));
        } else {
            assert_eq!(reply["error"]["code"], c.code, "{}: {reply}", c.name);
            assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
            expected_audit.push((
                c.name,
                cn.to_string(),
                orgs.clone(),
                "deny",
                c.code.to_string(),
                None,
            ));
        }
    }

    // The two-group certificate carries both O values, in order.
    let sam = std::fs::read_to_string(f.dir.path().join("c1.crt")).unwrap();
    std::fs::write(f.dir.path().join("sam.crt"), &sam).unwrap();
    let t = openssl(&[
        "x509",
        "-in",
        f.dir.path().join("sam.crt").to_str().unwrap(),
        "-noout",
        "-subject",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&t.stdout).trim(),
        "subject=CN = sam, O = dev, O = ops"
    );

    // One audit line per decision, in order, after the `open` line.
    let lines = f.audit_lines();
    assert_eq!(lines[0]["event"], "open");
    let decisions: Vec<&Value> = lines.iter().filter(|l| l["event"] == "decision").collect();
    assert_eq!(decisions.len(), cases.len());
    for (line, (name, cn, orgs, decision, code, serial)) in decisions.iter().zip(&expected_audit) {
        assert_eq!(line["decision"], *decision, "{name}: {line}");
        assert_eq!(line["caller"]["cn"], cn.as_str(), "{name}: {line}");
        let got_orgs: Vec<&str> = line["caller"]["orgs"]
            .as_array()
            .map(|a| a.iter().map(|o| o.as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(&got_orgs, orgs, "{name}: {line}");
        assert_eq!(
            line["remote"].as_str().unwrap().split(':').next(),
            Some("127.0.0.1")
        );
        assert_eq!(line["request_sha256"].as_str().unwrap().len(), 64, "{name}");
        if *decision == "allow" {
            // The rule that allowed it is named.
            assert!(line["rule"].is_string(), "{name}: {line}");
            assert_eq!(line["serial"].as_str(), serial.as_deref(), "{name}: {line}");
            assert!(line["not_after"].is_string(), "{name}: {line}");
            assert!(
                line["key_uri"].as_str().unwrap().starts_with("pkcs11:"),
                "{name}: {line}"
            );
            assert!(!line["key_uri"].as_str().unwrap().contains("pin-value"));
        } else {
            assert_eq!(line["code"], code.as_str(), "{name}: {line}");
            assert!(line["reason"].is_string(), "{name}: {line}");
            assert!(line.get("serial").is_none(), "{name}: {line}");
        }
    }
    // The requested subject and SANs are recorded.
    let serving = decisions[5];
    assert_eq!(serving["subject"], "O=system:nodes, CN=system:node:n1");
    assert_eq!(
        serving["sans"],
        json!(["DNS:n1.nodes.example.com", "IP:10.0.0.5"])
    );

    // Metrics count the decisions.
    let (status, metrics) = ops_get(f.ops_addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("kpki_requests_total{endpoint=\"/v1/sign\",signer=\"kubernetes.io/kube-apiserver-client\",outcome=\"allow\",code=\"\"}"), "{metrics}");
    assert!(metrics.contains("code=\"node_mismatch\"} 1"), "{metrics}");
    assert!(
        metrics.contains("kpki_hsm_sign_seconds_count{ca=\"ca\"}"),
        "{metrics}"
    );
    assert_eq!(ops_get(f.ops_addr, "/healthz").unwrap().0, 200);

    // SIGTERM: clean exit and a closed, intact audit log.
    let status = daemon.terminate();
    assert!(status.success(), "{status}: {}", daemon.log_text());
    let out = kpki_e2e::kpki(&["audit", "verify", f.audit.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_only_valid_callers_and_identifies_them() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let _daemon = f.start();
    let now = time::OffsetDateTime::now_utc();

    // No client certificate, another CA's certificate, an expired certificate: refused.
    let other = kpki_e2e::serve::TestCa::new("someone else");
    let (oc, ok) = other.leaf(
        "onboarder",
        None,
        false,
        (
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
        ),
    );
    let (ec, ek) = f.callers.leaf(
        "onboarder",
        None,
        false,
        (now - time::Duration::days(2), now - time::Duration::days(1)),
    );
    for (name, id) in [
        ("no certificate", f.identity_from(None)),
        ("another CA", f.identity_from(Some((oc, ok)))),
        ("expired", f.identity_from(Some((ec, ek)))),
    ] {
        let refused = match Connection::connect(&f.target(id)).await {
            Err(_) => true,
            Ok(mut c) => c.get("/v1/ca").await.is_err(),
        };
        assert!(refused, "{name}: a request went through");
    }

    // An accepted caller over HTTP/1.1 and HTTP/2; /v1/ca answers per signer.
    for http2 in [false, true] {
        let mut target = f.target(f.identity("onboarder", None));
        target.http2 = http2;
        let mut c = Connection::connect(&target).await.unwrap();
        let r = c.get(&format!("/v1/ca?signer={KAC}")).await.unwrap();
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["certificate"].as_str().unwrap(),
            std::fs::read_to_string(&f.ca_cert).unwrap()
        );
        let r = c.get("/v1/ca").await.unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            v["signers"][MESH].is_string() && v["signers"][KUBELET_SERVING].is_string(),
            "{v}"
        );
    }
    let lines = f.audit_lines();
    assert_eq!(
        lines.len(),
        1,
        "only the open line: read-only calls are not decisions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_policy_and_keeps_the_old_one_when_the_new_file_is_bad() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let mut daemon = f.start();
    let dir = f.dir.path();
    let mut conn = Connection::connect(&f.target(f.identity("onboarder", None)))
        .await
        .unwrap();
    let ask = |subj: &str, name: &str| {
        json!({ "csr": openssl_csr(dir, name, "p256", subj, &[]), "signer_name": KAC }).to_string()
    };

    assert_eq!(
        post(&mut conn, ask("/CN=jane/O=finance", "r1")).await.0,
        403
    );
    // Allow O=finance, reload on the same connection.
    f.write_config(&POLICY.replace(
        r#"orgs = ["dev", "ops"]"#,
        r#"orgs = ["dev", "ops", "finance"]"#,
    ));
    daemon.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _) = post(&mut conn, ask("/CN=jane/O=finance", "r2")).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A bad file (unknown key) is refused; the running policy stays and the daemon serves.
    std::fs::write(
        &f.config,
        std::fs::read_to_string(&f.config).unwrap() + "\n[bogus]\nx = 1\n",
    )
    .unwrap();
    daemon.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(daemon.is_running());
    assert_eq!(
        post(&mut conn, ask("/CN=jane/O=finance", "r3")).await.0,
        200
    );
    assert!(
        daemon.log_text().contains("reload refused"),
        "{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_closes_the_audit_trail() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let mut daemon = f.start();
    let csr = openssl_csr(f.dir.path(), "drain", "p256", "/CN=jane/O=dev", &[]);
    let body = json!({ "csr": csr, "signer_name": KAC }).to_string();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let target = f.target(f.identity("onboarder", None));
        let body = body.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Connection::connect(&target).await.unwrap();
            let mut ok = 0u64;
            // Until the daemon closes the connection: every answer is a certificate.
            while let Ok(reply) = conn.post("/v1/sign", body.clone().into_bytes()).await {
                assert_eq!(
                    reply.status,
                    200,
                    "{}",
                    String::from_utf8_lossy(&reply.body)
                );
                ok += 1;
            }
            ok
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let status = tokio::task::block_in_place(|| daemon.terminate());
    assert!(status.success(), "{status}: {}", daemon.log_text());
    let mut answered = 0;
    for w in workers {
        answered += w.await.unwrap();
    }
    // Nothing was cut off mid-answer: the daemon answered exactly what it audited as issued.
    let lines = f.audit_lines();
    let allowed = lines.iter().filter(|l| l["decision"] == "allow").count() as u64;
    assert!(answered > 0);
    assert_eq!(allowed, answered, "audited issuances vs answers received");
    assert_eq!(lines.last().unwrap()["event"], "close");
    let out = kpki_e2e::kpki(&["audit", "verify", f.audit.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
}

#[test]
fn unknown_config_keys_and_bad_values_stop_start_up_with_one_line() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let good = std::fs::read_to_string(&f.config).unwrap();
    for (bad, expect) in [
        (
            good.replace("[audit]", "[audit]\nfsink = true"),
            "unknown field `fsink`",
        ),
        (
            good.replace(r#"cn = "[a-z][a-z0-9-]*""#, r#"cn = "[a-z""#),
            "invalid pattern",
        ),
        (
            good.replace(
                r#"ip_ranges = ["10.0.0.0/8"]"#,
                r#"ip_ranges = ["10.0.0.0/33"]"#,
            ),
            "ip range",
        ),
        (
            good.replace(r#"max_validity = "24h""#, r#"max_validity = "a day""#),
            "max_validity",
        ),
        (
            good.replace(&f.ca_key_uri, "pkcs11:token=absent;object=x"),
            "CA \"ca\"",
        ),
    ] {
        std::fs::write(&f.config, bad).unwrap();
        let out = kpki_e2e::kpki(&["serve", "--config", f.config.to_str().unwrap()]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("kpki: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(expect), "expected {expect:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_token_serve_the_same_clients() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let _first = f.start();
    // A second instance: same CA key on the same token, same policy, its own port and audit.
    let addr2: std::net::SocketAddr = format!("127.0.0.1:{}", kpki_e2e::serve::free_port())
        .parse()
        .unwrap();
    let ops2: std::net::SocketAddr = format!("127.0.0.1:{}", kpki_e2e::serve::free_port())
        .parse()
        .unwrap();
    let audit2 = f.dir.path().join("audit-2.jsonl");
    let config2 = f.dir.path().join("serve-2.toml");
    let config_text = std::fs::read_to_string(&f.config)
        .unwrap()
        .replace(&f.addr.to_string(), &addr2.to_string())
        .replace(&f.ops_addr.to_string(), &ops2.to_string())
        .replace(f.audit.to_str().unwrap(), audit2.to_str().unwrap());
    std::fs::write(&config2, config_text).unwrap();
    let mut second = std::process::Command::new(kpki_e2e::kpki_bin())
        .args(["serve", "--config", config2.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !matches!(ops_get(ops2, "/readyz"), Some((200, _))) {
        assert!(
            std::time::Instant::now() < deadline,
            "second instance not ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let identity = f.identity("onboarder", None);
    let mut one = Connection::connect(&f.target(identity.clone()))
        .await
        .unwrap();
    let mut target2 = f.target(identity);
    target2.addr = addr2;
    let mut two = Connection::connect(&target2).await.unwrap();
    let mut serials = std::collections::HashSet::new();
    for i in 0..20 {
        let csr = openssl_csr(
            f.dir.path(),
            &format!("r{i}"),
            "p256",
            "/CN=jane/O=dev",
            &[],
        );
        let body = json!({ "csr": csr, "signer_name": KAC }).to_string();
        let conn = if i % 2 == 0 { &mut one } else { &mut two };
        let (status, reply) = post(conn, body).await;
        assert_eq!(status, 200, "{reply}");
        assert!(serials.insert(reply["serial"].as_str().unwrap().to_string()));
        let cert = f.dir.path().join(format!("r{i}.crt"));
        std::fs::write(&cert, reply["certificate"].as_str().unwrap()).unwrap();
        let v = openssl(&[
            "verify",
            "-CAfile",
            f.ca_cert.to_str().unwrap(),
            cert.to_str().unwrap(),
        ]);
        assert!(v.status.success(), "{:?}", text(&v));
    }
    // Each instance audited its own half.
    let count = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"decision\":\"allow\""))
            .count()
    };
    assert_eq!((count(&f.audit), count(&audit2)), (10, 10));
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_certificate_with_two_cns_is_refused() {
    let f = ServeFixture::new("ECDSA-P256", POLICY);
    let daemon = f.start();
    let d = f.dir.path();
    std::fs::write(d.join("callers-ca.key"), f.callers.key_pem()).unwrap();
    std::fs::write(d.join("ext.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    // openssl makes what rcgen cannot: a client certificate with two CNs (Go honours the last).
    let csr = openssl_csr(d, "two-cn", "p256", "/CN=nobody/CN=onboarder", &[]);
    std::fs::write(d.join("two-cn.csr"), csr).unwrap();
    let out = openssl(&[
        "x509",
        "-req",
        "-in",
        &p("two-cn.csr"),
        "-CA",
        &p("callers-ca.crt"),
        "-CAkey",
        &p("callers-ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("two-cn.crt"),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let id = f.identity_from(Some((
        std::fs::read_to_string(d.join("two-cn.crt")).unwrap(),
        std::fs::read_to_string(d.join("two-cn.key")).unwrap(),
    )));
    let refused = match Connection::connect(&f.target(id)).await {
        Err(_) => true,
        Ok(mut c) => c.get("/v1/ca").await.is_err(),
    };
    assert!(refused, "a caller with two CNs was served");
    assert!(
        daemon.log_text().contains("more than one CN"),
        "{}",
        daemon.log_text()
    );
    // A one-CN caller from the same CA is served.
    let mut ok = Connection::connect(&f.target(f.identity("onboarder", None)))
        .await
        .unwrap();
    assert_eq!(ok.get("/v1/ca").await.unwrap().status, 200);
}
