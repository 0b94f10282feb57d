//! `kpki inspect` reports the fields `openssl x509 -text` reports, for certificates, bundles,
//! CSRs, kubeconfigs, key files and `sa.pub`; and no command ever prints key material.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use kpki_e2e::{init_cluster, kpki, openssl, text};

fn openssl_text(cert: &Path) -> String {
    String::from_utf8(openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-text"]).stdout)
        .unwrap()
}

/// The line after `header` in openssl's text (extension values sit on the next line).
fn after(text: &str, header: &str) -> String {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with(header) {
            return lines.next().unwrap_or("").trim().to_string();
        }
    }
    panic!("{header} not in openssl output:\n{text}");
}

fn field(text: &str, prefix: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{prefix} not in:\n{text}"))
        .trim()
        .to_string()
}

fn init_fixture(root: &Path) {
    init_cluster(root, "10.0.0.10", &["--encryption-algorithm", "ECDSA-P256"]);
}

#[test]
fn inspect_matches_openssl_for_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_fixture(&root);
    for name in [
        "apiserver.crt",
        "ca.crt",
        "apiserver-kubelet-client.crt",
        "etcd/peer.crt",
    ] {
        let path = root.join("pki").join(name);
        let ossl = openssl_text(&path);
        let out = kpki(&["inspect", path.to_str().unwrap(), "-o", "json"]);
        assert!(out.status.success(), "{name}: {:?}", text(&out));
        let items: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let c = &items[0];
        assert_eq!(c["type"], "certificate");
        assert_eq!(
            c["subject"].as_str().unwrap(),
            field(&ossl, "Subject:"),
            "{name}"
        );
        assert_eq!(
            c["issuer"].as_str().unwrap(),
            field(&ossl, "Issuer:"),
            "{name}"
        );
        assert_eq!(
            c["not_before"].as_str().unwrap(),
            field(&ossl, "Not Before:"),
            "{name}"
        );
        assert_eq!(
            c["not_after"].as_str().unwrap(),
            field(&ossl, "Not After :"),
            "{name}"
        );
        assert_eq!(
            c["signature_algorithm"].as_str().unwrap(),
            field(&ossl, "Signature Algorithm:"),
            "{name}"
        );
        // openssl prints short serials as "decimal (0xhex)": compare the hex digits.
        let serial_line = field(&ossl, "Serial Number:");
        let serial_hex = match serial_line.split_once("(0x") {
            Some((_, h)) => h.trim_end_matches(')').to_string(),
            None => after(&ossl, "Serial Number:").replace(':', ""),
        };
        assert_eq!(
            c["serial"]
                .as_str()
                .unwrap()
                .replace(':', "")
                .trim_start_matches('0'),
            serial_hex.trim_start_matches('0'),
            "{name}"
        );
        let ku = after(&ossl, "X509v3 Key Usage:");
        assert_eq!(
            c["key_usage"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(", "),
            ku,
            "{name}"
        );
        assert!(
            ossl.contains("X509v3 Key Usage: critical")
                == c["key_usage_critical"].as_bool().unwrap()
        );
        let bc = after(&ossl, "X509v3 Basic Constraints:");
        assert_eq!(
            if c["is_ca"] == true {
                "CA:TRUE"
            } else {
                "CA:FALSE"
            },
            bc,
            "{name}"
        );
        if ossl.contains("X509v3 Subject Alternative Name:") {
            let mut names: Vec<String> = c["dns_names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| format!("DNS:{}", d.as_str().unwrap()))
                .collect();
            names.extend(
                c["ip_addresses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| format!("IP Address:{}", i.as_str().unwrap())),
            );
            let want = after(&ossl, "X509v3 Subject Alternative Name:")
                .replace("IP Address:0:0:0:0:0:0:0:1", "IP Address:::1");
            assert_eq!(names.join(", "), want, "{name}");
        }
        if ossl.contains("X509v3 Extended Key Usage:") {
            assert_eq!(
                c["extended_key_usage"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(", "),
                after(&ossl, "X509v3 Extended Key Usage:"),
                "{name}"
            );
        }
        if ossl.contains("X509v3 Subject Key Identifier:") {
            assert_eq!(
                c["subject_key_id"].as_str().unwrap(),
                after(&ossl, "X509v3 Subject Key Identifier:"),
                "{name}"
            );
        }
        if ossl.contains("X509v3 Authority Key Identifier:") {
            assert_eq!(
                c["authority_key_id"].as_str().unwrap(),
                after(&ossl, "X509v3 Authority Key Identifier:").trim_start_matches("keyid:"),
                "{name}"
            );
        }
        let fp = String::from_utf8(
            openssl(&[
                "x509",
                "-in",
                path.to_str().unwrap(),
                "-noout",
                "-fingerprint",
                "-sha256",
            ])
            .stdout,
        )
        .unwrap();
        assert_eq!(
            c["sha256_fingerprint"].as_str().unwrap(),
            fp.trim().split_once('=').unwrap().1,
            "{name}"
        );
    }
}

#[test]
fn inspect_reads_bundles_csrs_kubeconfigs_keys_and_public_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_fixture(&root);
    let pki = root.join("pki");
    // A bundle of two PEM certificates, and one DER certificate.
    let bundle = dir.path().join("bundle.pem");
    let mut b = std::fs::read_to_string(pki.join("apiserver.crt")).unwrap();
    b.push_str(&std::fs::read_to_string(pki.join("ca.crt")).unwrap());
    std::fs::write(&bundle, b).unwrap();
    let der = dir.path().join("ca.der");
    assert!(
        openssl(&[
            "x509",
            "-in",
            pki.join("ca.crt").to_str().unwrap(),
            "-outform",
            "DER",
            "-out",
            der.to_str().unwrap()
        ])
        .status
        .success()
    );
    let csr = dir.path().join("jane.csr");
    let jane_key = dir.path().join("jane.key");
    assert!(
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            jane_key.to_str().unwrap(),
            "-subj",
            "/CN=jane/O=dev",
            "-addext",
            "subjectAltName=DNS:jane.example,email:jane@example.com",
            "-out",
            csr.to_str().unwrap()
        ])
        .status
        .success()
    );
    let json = |p: &Path| -> serde_json::Value {
        let out = kpki(&["inspect", p.to_str().unwrap(), "-o", "json"]);
        assert!(out.status.success(), "{}: {:?}", p.display(), text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = json(&bundle);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["subject"], "CN = kubernetes");
    assert_eq!(json(&der)[0]["is_ca"], true);
    let r = json(&csr);
    assert_eq!(r[0]["type"], "certificate-request");
    assert_eq!(r[0]["subject"], "CN = jane, O = dev");
    assert_eq!(r[0]["public_key"], "ECDSA-P384");
    assert_eq!(r[0]["signature_valid"], true);
    assert_eq!(r[0]["dns_names"][0], "jane.example");
    assert_eq!(r[0]["emails"][0], "jane@example.com");
    let k = json(&root.join("admin.conf"));
    assert_eq!(k.as_array().unwrap().len(), 2);
    assert_eq!(
        k[0]["owner"],
        "cluster kubernetes (certificate-authority-data)"
    );
    assert_eq!(
        k[1]["owner"],
        "user kubernetes-admin (client-certificate-data)"
    );
    assert_eq!(
        k[1]["certificate"]["subject"],
        "O = kubeadm:cluster-admins, CN = kubernetes-admin"
    );
    let key = json(&pki.join("apiserver.key"));
    assert_eq!(key[0]["type"], "private-key");
    assert_eq!(key[0]["algorithm"], "ECDSA-P256");
    assert_eq!(
        key[0]["spki_sha256"],
        json(&pki.join("apiserver.crt"))[0]["spki_sha256"]
    );
    let sa = json(&pki.join("sa.pub"));
    assert_eq!(sa[0]["type"], "public-key");
    assert_eq!(sa[0]["algorithm"], "ECDSA-P256");

    // Bad input: one clear line, exit 1.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"\x00\x01 not anything").unwrap();
    let truncated = dir.path().join("truncated.pem");
    let ca_text = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    std::fs::write(&truncated, &ca_text[..ca_text.len() / 2]).unwrap();
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(
        &wrong,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    for (p, expect) in [
        (&garbage, "not a certificate"),
        (&truncated, "malformed PEM"),
        (&wrong, "X509 CRL"),
        (&dir.path().join("missing"), "No such file"),
    ] {
        let out = kpki(&["inspect", p.to_str().unwrap()]);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{}", p.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(expect), "{}: {err}", p.display());
    }
}

/// Lines of base64 key material in every private key and embedded client key under `root`.
fn secrets(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let t = std::fs::read_to_string(&p).unwrap_or_default();
            if t.contains("PRIVATE KEY-----") {
                out.extend(
                    t.lines()
                        .filter(|l| !l.starts_with("-----"))
                        .map(|l| l.chars().take(40).collect()),
                );
            }
            for l in t
                .lines()
                .filter_map(|l| l.trim().strip_prefix("client-key-data: "))
            {
                out.push(l.chars().take(40).collect());
            }
        }
    }
    out
}

#[test]
fn no_command_prints_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let mut outputs = Vec::new();
    for o in ["text", "json", "yaml"] {
        let r = dir.path().join(format!("n-{o}"));
        let out = kpki(&[
            "init",
            "--dir",
            r.to_str().unwrap(),
            "--node-name",
            "cp1",
            "--advertise-address",
            "10.0.0.10",
            "-o",
            o,
        ]);
        assert!(out.status.success());
        outputs.push((format!("init -o {o}"), out));
    }
    init_fixture(&root);
    let key_uri = format!("file:{}", root.join("pki/ca.key").display());
    for o in ["text", "json", "yaml"] {
        outputs.push((
            format!("keys show {o}"),
            kpki(&["keys", "show", &key_uri, "-o", o]),
        ));
        outputs.push((
            format!("keys list {o}"),
            kpki(&[
                "keys",
                "list",
                &format!("file:{}", root.join("pki").display()),
                "-o",
                o,
            ]),
        ));
        outputs.push((
            format!("check-expiration {o}"),
            kpki(&[
                "certs",
                "check-expiration",
                "--dir",
                root.to_str().unwrap(),
                "-o",
                o,
            ]),
        ));
        for f in [
            "pki/ca.key",
            "pki/apiserver.key",
            "admin.conf",
            "kubelet.conf",
            "pki/sa.key",
            "pki/sa.pub",
        ] {
            outputs.push((
                format!("inspect {f} {o}"),
                kpki(&["inspect", root.join(f).to_str().unwrap(), "-o", o]),
            ));
        }
    }
    // The lifecycle commands: renew, generate-csr, sign, node add, kubeconfig user --out / component.
    for o in ["text", "json", "yaml"] {
        outputs.push((
            format!("renew {o}"),
            kpki(&[
                "certs",
                "renew",
                "all",
                "--dir",
                root.to_str().unwrap(),
                "-o",
                o,
            ]),
        ));
    }
    let g = dir.path().join("g");
    outputs.push((
        "generate-csr".into(),
        kpki(&["certs", "generate-csr", "--dir", g.to_str().unwrap()]),
    ));
    let csr = g.join("pki/apiserver-kubelet-client.csr");
    for o in ["text", "json"] {
        outputs.push((
            format!("sign {o}"),
            kpki(&[
                "sign",
                csr.to_str().unwrap(),
                "--dir",
                root.to_str().unwrap(),
                "-o",
                o,
            ]),
        ));
    }
    outputs.push((
        "node add".into(),
        kpki(&[
            "node",
            "add",
            "w1",
            "--address",
            "10.0.0.31",
            "--dir",
            root.to_str().unwrap(),
        ]),
    ));
    outputs.push((
        "kubeconfig component".into(),
        kpki(&[
            "kubeconfig",
            "component",
            "kube-proxy",
            "--dir",
            root.to_str().unwrap(),
        ]),
    ));
    let jane = dir.path().join("jane.conf");
    outputs.push((
        "kubeconfig user --out".into(),
        kpki(&[
            "kubeconfig",
            "user",
            "--client-name",
            "jane",
            "--out",
            jane.to_str().unwrap(),
            "--dir",
            root.to_str().unwrap(),
        ]),
    ));
    for (what, out) in &outputs {
        assert!(out.status.success(), "{what}: {:?}", text(out));
    }
    let mut secret_lines = secrets(&root);
    secret_lines.extend(secrets(&g));
    secret_lines.extend(secrets(dir.path()));
    for o in ["text", "json", "yaml"] {
        secret_lines.extend(secrets(&dir.path().join(format!("n-{o}"))));
    }
    assert!(
        secret_lines.len() > 50,
        "fixture has key material to look for"
    );
    for (what, out) in &outputs {
        let (stdout, stderr) = text(out);
        let all = format!("{stdout}{stderr}");
        assert!(
            !all.contains("PRIVATE KEY"),
            "{what} printed a PEM private key"
        );
        for s in &secret_lines {
            assert!(!all.contains(s.as_str()), "{what} printed key material");
        }
    }
}
