//! `kpki certs check-expiration` compared line by line with the text kubeadm prints, for a
//! fixture PKI with known validity: a 100h leaf period, one expired certificate, one missing
//! file, a CA whose key is absent (externally managed) and a CA held on a SoftHSM token.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use kpki_e2e::{hsm, init_cluster, kpki, openssl, text};

/// "Nov 26, 2026 02:36 UTC" from `openssl x509 -enddate` of a certificate file.
fn expires(cert: &Path) -> String {
    let out = openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-enddate"]);
    let line = String::from_utf8(out.stdout).unwrap();
    // notAfter=Nov 26 02:36:23 2026 GMT
    let v: Vec<&str> = line
        .trim()
        .trim_start_matches("notAfter=")
        .split_whitespace()
        .collect();
    let hm: String = v[2].chars().take(5).collect();
    format!("{} {:0>2}, {} {} UTC", v[0], v[1], v[3], hm)
}

fn init(dir: &Path, config: &Path, extra: &[&str]) {
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    init_cluster(dir, "10.0.0.10", &args);
}

#[test]
fn check_expiration_prints_kubeadms_tables() {
    let token = hsm::token();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kpki.toml");
    std::fs::write(
        &config,
        "[cluster]\ncertificate_validity = \"100h\"\nencryption_algorithm = \"ECDSA-P256\"\n",
    )
    .unwrap();
    let root = dir.path().join("pki-root");
    let fp_key = format!("front-proxy-ca={}", token.key_uri("fp-ca"));
    init(&root, &config, &["--key", &fp_key]);

    // An expired certificate: issued with a one-second validity, then waited out.
    let short = dir.path().join("short.toml");
    std::fs::write(
        &short,
        "[cluster]\ncertificate_validity = \"1s\"\nencryption_algorithm = \"ECDSA-P256\"\n",
    )
    .unwrap();
    let expired = dir.path().join("expired");
    init(&expired, &short, &[]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    std::fs::copy(
        expired.join("pki/apiserver-etcd-client.crt"),
        root.join("pki/apiserver-etcd-client.crt"),
    )
    .unwrap();
    // A missing certificate and an etcd CA whose key is gone (externally managed).
    std::fs::remove_file(root.join("pki/etcd/peer.crt")).unwrap();
    std::fs::remove_file(root.join("pki/etcd/ca.key")).unwrap();

    let out = kpki(&[
        "certs",
        "check-expiration",
        "--config",
        config.to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
        "--key",
        &fp_key,
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");

    let pki = root.join("pki");
    let leaf_exp = expires(&pki.join("apiserver.crt"));
    let old_exp = expires(&pki.join("apiserver-etcd-client.crt"));
    let ca_exp = expires(&pki.join("ca.crt"));
    let row = |name: &str, exp: &str, residual: &str, ca: &str, ext: &str| {
        format!("{name:<27}{exp:<25}{residual:<16}{ca:<24}{ext:<8}")
    };
    let mut want = vec![format!(
        "{:<27}{:<25}{:<16}{:<24}EXTERNALLY MANAGED",
        "CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY"
    )];
    want.push(row("admin.conf", &leaf_exp, "4d3h", "ca", "no"));
    want.push(row("apiserver", &leaf_exp, "4d3h", "ca", "no"));
    want.push(row(
        "apiserver-etcd-client",
        &old_exp,
        "<invalid>",
        "etcd-ca",
        "yes",
    ));
    want.push(row(
        "apiserver-kubelet-client",
        &leaf_exp,
        "4d3h",
        "ca",
        "no",
    ));
    want.push(row(
        "controller-manager.conf",
        &leaf_exp,
        "4d3h",
        "ca",
        "no",
    ));
    want.push(row(
        "etcd-healthcheck-client",
        &leaf_exp,
        "4d3h",
        "etcd-ca",
        "yes",
    ));
    want.push(format!(
        "{:<27}{:<25}{:<16}{:<24}",
        "!MISSING! etcd-peer", "", "", ""
    ));
    want.push(row("etcd-server", &leaf_exp, "4d3h", "etcd-ca", "yes"));
    want.push(row(
        "front-proxy-client",
        &leaf_exp,
        "4d3h",
        "front-proxy-ca",
        "no",
    ));
    want.push(row("scheduler.conf", &leaf_exp, "4d3h", "ca", "no"));
    want.push(row("super-admin.conf", &leaf_exp, "4d3h", "ca", "no"));
    want.push(String::new());
    want.push(format!(
        "{:<24}{:<25}{:<16}EXTERNALLY MANAGED",
        "CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME"
    ));
    want.push(format!("{:<24}{:<25}{:<16}{:<8}", "ca", ca_exp, "9y", "no"));
    want.push(format!(
        "{:<24}{:<25}{:<16}{:<8}",
        "etcd-ca", ca_exp, "9y", "yes"
    ));
    want.push(format!(
        "{:<24}{:<25}{:<16}{:<8}",
        "front-proxy-ca", ca_exp, "9y", "no"
    ));
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got.len(), want.len(), "{stdout}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "line {i}");
    }

    // The structured form.
    let out = kpki(&[
        "certs",
        "check-expiration",
        "--config",
        config.to_str().unwrap(),
        "--dir",
        root.to_str().unwrap(),
        "--key",
        &fp_key,
        "-o",
        "json",
    ]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["apiVersion"], "output.kubeadm.k8s.io/v1alpha3");
    assert_eq!(info["kind"], "CertificateExpirationInfo");
    let certs = info["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 11);
    let peer = certs.iter().find(|c| c["name"] == "etcd-peer").unwrap();
    assert_eq!(peer["missing"], true);
    let old = certs
        .iter()
        .find(|c| c["name"] == "apiserver-etcd-client")
        .unwrap();
    assert!(old["residualTime"].as_i64().unwrap() < 0);
    assert_eq!(old["caName"], "etcd-ca");
    let apiserver = certs.iter().find(|c| c["name"] == "apiserver").unwrap();
    let residual = apiserver["residualTime"].as_i64().unwrap();
    assert!(
        (100 * 3600 - 600..=100 * 3600).contains(&residual),
        "{residual}"
    );
    let cas = info["certificateAuthorities"].as_array().unwrap();
    assert!(cas.iter().all(|c| c.get("caName").is_none()));
    assert_eq!(
        cas.iter().find(|c| c["name"] == "etcd-ca").unwrap()["externallyManaged"],
        true
    );
}

#[test]
fn warn_within_exits_3_when_something_expires_inside_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kpki.toml");
    std::fs::write(
        &config,
        "[cluster]\nencryption_algorithm = \"ECDSA-P256\"\n",
    )
    .unwrap();
    let root = dir.path().join("n");
    init(&root, &config, &[]);
    let run = |window: &str| {
        kpki(&[
            "certs",
            "check-expiration",
            "--config",
            config.to_str().unwrap(),
            "--dir",
            root.to_str().unwrap(),
            "--warn-within",
            window,
        ])
    };
    assert_eq!(run("30d").status.code(), Some(0));
    assert_eq!(run("720h").status.code(), Some(0));
    let out = run("400d");
    assert_eq!(out.status.code(), Some(3), "{:?}", text(&out));
    assert!(text(&out).1.contains("expire within 400d"));
    let bad = run("soon");
    // A malformed flag value is a usage error.
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(text(&bad).1.lines().count(), 1);
}
