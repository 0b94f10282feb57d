//! The cfssl-compatible endpoints with a real cfssl client (Debian `golang-cfssl`):
//! `cfssl sign -remote` and `cfssl info -remote` over mTLS as cfssl configures it
//! (`-tls-remote-ca`, `-mutual-tls-client-cert/-key`); the certificate it receives verifies
//! against the HSM-held CA, and a refusal reaches the cfssl client as an error.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

use kpki_e2e::openssl_csr;
use kpki_e2e::serve::ServeFixture;
use kpki_e2e::{hsm, openssl, text};
use serde_json::Value;

const POLICY: &str = r#"
[signers."example.com/mesh"]
ca = "ca"
usages = ["digital signature", "key encipherment", "server auth"]

[[policy]]
name = "cfssl"
callers = { cn = "cfssl-client" }
signers = ["kubernetes.io/kube-apiserver-client", "example.com/mesh"]
orgs = ["dev"]
dns_suffixes = [".svc.cluster.local"]
"#;

fn cfssl(f: &ServeFixture, args: &[&str]) -> (bool, Value, String) {
    let dir = f.dir.path();
    let out = Command::new(hsm::require_tool("cfssl"))
        .args(&args[..1])
        .args([
            "-remote",
            &format!("https://{}", f.addr),
            "-tls-remote-ca",
            dir.join("callers-ca.crt").to_str().unwrap(),
            "-mutual-tls-client-cert",
            dir.join("cfssl-client.crt").to_str().unwrap(),
            "-mutual-tls-client-key",
            dir.join("cfssl-client.key").to_str().unwrap(),
        ])
        .args(&args[1..])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), json, stderr)
}

#[test]
fn cfssl_sign_and_info_remote_work_against_the_daemon() {
    let f = ServeFixture::new("RSA-2048", POLICY);
    let _daemon = f.start();
    let dir = f.dir.path();
    let (cert, key) = f.callers.leaf(
        "cfssl-client",
        None,
        false,
        (
            time::OffsetDateTime::now_utc() - time::Duration::hours(1),
            time::OffsetDateTime::now_utc() + time::Duration::days(1),
        ),
    );
    std::fs::write(dir.join("cfssl-client.crt"), cert).unwrap();
    std::fs::write(dir.join("cfssl-client.key"), key).unwrap();

    // info: the CA of the default profile and of a named one.
    let ca_pem = std::fs::read_to_string(&f.ca_cert).unwrap();
    let (ok, info, stderr) = cfssl(&f, &["info"]);
    assert!(ok, "cfssl info: {stderr}");
    assert_eq!(info["certificate"].as_str().unwrap().trim(), ca_pem.trim());
    assert!(
        info["usages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "client auth"),
        "{info}"
    );
    let (ok, info, stderr) = cfssl(&f, &["info", "-profile", "example.com/mesh"]);
    assert!(ok, "cfssl info -profile: {stderr}");
    assert!(
        info["usages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "server auth"),
        "{info}"
    );

    // sign with the default profile (kube-apiserver-client) and with a named profile.
    for (name, subj, ext, profile, purpose) in [
        ("jane", "/CN=jane/O=dev", &[][..], None, "sslclient"),
        (
            "api",
            "/CN=api",
            &["subjectAltName=DNS:api.default.svc.cluster.local"][..],
            Some("example.com/mesh"),
            "sslserver",
        ),
    ] {
        let csr = openssl_csr(dir, name, "p256", subj, ext);
        let csr_path = dir.join(format!("{name}.csr"));
        std::fs::write(&csr_path, csr).unwrap();
        let mut args = vec!["sign"];
        if let Some(p) = profile {
            args.extend(["-profile", p]);
        }
        args.push(csr_path.to_str().unwrap());
        let (ok, signed, stderr) = cfssl(&f, &args);
        assert!(ok, "cfssl sign {name}: {stderr}");
        let crt = dir.join(format!("{name}.crt"));
        std::fs::write(&crt, signed["cert"].as_str().unwrap()).unwrap();
        let v = openssl(&[
            "verify",
            "-CAfile",
            f.ca_cert.to_str().unwrap(),
            "-purpose",
            purpose,
            crt.to_str().unwrap(),
        ]);
        assert!(v.status.success(), "{name}: {:?}", text(&v));
    }

    // A refusal (group not allowed) is an error for the cfssl client too, naming the reason.
    let csr = openssl_csr(dir, "eve", "p256", "/CN=eve/O=finance", &[]);
    let csr_path = dir.join("eve.csr");
    std::fs::write(&csr_path, csr).unwrap();
    let (ok, _, stderr) = cfssl(&f, &["sign", csr_path.to_str().unwrap()]);
    assert!(!ok, "a denied request must fail");
    assert!(stderr.contains("org_not_allowed"), "{stderr}");

    // The audit trail names the cfssl endpoint.
    let lines = f.audit_lines();
    let cfssl_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["endpoint"] == "/api/v1/cfssl/sign")
        .collect();
    assert_eq!(cfssl_lines.len(), 3);
    assert_eq!(cfssl_lines[2]["code"], "org_not_allowed");
}
