//! `kpki sign`: CSRs made by `openssl req` (RSA-2048, P-256, P-384, Ed25519) for the built-in
//! signers are issued or refused as the rules say; proof of possession is checked; issued
//! certificates verify and carry exactly the expected usages; the object form round-trips
//! through k8s-openapi's CertificateSigningRequest.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kpki_e2e::{init_cluster, kpki, openssl, openssl_key, openssl_req, text};

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    init_cluster(
        &root,
        "10.0.0.10",
        &["--encryption-algorithm", "ECDSA-P256"],
    );
    Fixture {
        dir: dir.path().to_path_buf(),
        root,
        _dir: dir,
    }
}

/// One key per kind, shared by the requests of a fixture.
fn key(dir: &Path, kind: &str) -> PathBuf {
    let path = dir.join(format!("{kind}.key"));
    if !path.exists() {
        openssl_key(&path, kind);
    }
    path
}

fn csr(dir: &Path, kind: &str, subj: &str, addext: &[&str], name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.csr"));
    std::fs::write(&path, openssl_req(&key(dir, kind), subj, addext)).unwrap();
    path
}

fn sign(f: &Fixture, csr: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "sign",
        csr.to_str().unwrap(),
        "--dir",
        f.root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    kpki(&args)
}

fn refused(out: &std::process::Output, expect: &str) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "should be refused: {stdout}{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(expect), "expected {expect:?} in {stderr}");
    assert!(
        stdout.is_empty(),
        "nothing may be printed on refusal: {stdout}"
    );
}

/// Writes the issued PEM and checks it with `openssl verify -purpose`; returns openssl's text.
fn issued(f: &Fixture, out: &std::process::Output, purpose: &str, name: &str) -> String {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{name}: {stderr}");
    let path = f.dir.join(format!("{name}.crt"));
    std::fs::write(&path, stdout.as_bytes()).unwrap();
    let v = openssl(&[
        "verify",
        "-CAfile",
        f.root.join("pki/ca.crt").to_str().unwrap(),
        "-purpose",
        purpose,
        path.to_str().unwrap(),
    ]);
    assert!(
        v.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&v.stdout)
    );
    String::from_utf8(openssl(&["x509", "-in", path.to_str().unwrap(), "-noout", "-text"]).stdout)
        .unwrap()
}

fn ext_line(text: &str, header: &str) -> String {
    let mut it = text.lines();
    while let Some(l) = it.next() {
        if l.trim_start().starts_with(header) {
            return it.next().unwrap_or("").trim().to_string();
        }
    }
    String::new()
}

#[test]
fn built_in_signers_issue_and_refuse_by_the_rules() {
    let f = fixture();
    let d = &f.dir;
    for kind in ["rsa2048", "p256", "p384", "ed25519"] {
        // kube-apiserver-client: jane.
        let c = csr(d, kind, "/CN=jane/O=dev", &[], &format!("jane-{kind}"));
        let t = issued(&f, &sign(&f, &c, &[]), "sslclient", &format!("jane-{kind}"));
        assert!(t.contains("Subject: CN = jane, O = dev"), "{t}");
        assert_eq!(
            ext_line(&t, "X509v3 Key Usage:"),
            "Digital Signature, Key Encipherment"
        );
        assert_eq!(
            ext_line(&t, "X509v3 Extended Key Usage:"),
            "TLS Web Client Authentication"
        );
        assert_eq!(ext_line(&t, "X509v3 Basic Constraints:"), "CA:FALSE");
        // The certificate's key is the request's key (curve included).
        let want = openssl(&["req", "-in", c.to_str().unwrap(), "-noout", "-pubkey"]).stdout;
        let got = openssl(&[
            "x509",
            "-in",
            d.join(format!("jane-{kind}.crt")).to_str().unwrap(),
            "-noout",
            "-pubkey",
        ])
        .stdout;
        assert_eq!(got, want, "{kind}: public key differs from the request's");

        // kube-apiserver-client-kubelet.
        let node = csr(
            d,
            kind,
            "/O=system:nodes/CN=system:node:n1",
            &[],
            &format!("node-{kind}"),
        );
        let t = issued(
            &f,
            &sign(
                &f,
                &node,
                &[
                    "--signer-name",
                    "kubernetes.io/kube-apiserver-client-kubelet",
                ],
            ),
            "sslclient",
            &format!("node-{kind}"),
        );
        assert_eq!(
            ext_line(&t, "X509v3 Extended Key Usage:"),
            "TLS Web Client Authentication"
        );
        assert!(!t.contains("Subject Alternative Name"));
        let with_san = csr(
            d,
            kind,
            "/O=system:nodes/CN=system:node:n1",
            &["subjectAltName=DNS:n1"],
            &format!("node-san-{kind}"),
        );
        refused(
            &sign(
                &f,
                &with_san,
                &[
                    "--signer-name",
                    "kubernetes.io/kube-apiserver-client-kubelet",
                ],
            ),
            "allows no subject alternative names",
        );
        let wrong_o = csr(
            d,
            kind,
            "/O=dev/CN=system:node:n1",
            &[],
            &format!("node-o-{kind}"),
        );
        refused(
            &sign(
                &f,
                &wrong_o,
                &[
                    "--signer-name",
                    "kubernetes.io/kube-apiserver-client-kubelet",
                ],
            ),
            "requires O exactly",
        );
        let wrong_cn = csr(
            d,
            kind,
            "/O=system:nodes/CN=n1",
            &[],
            &format!("node-cn-{kind}"),
        );
        refused(
            &sign(
                &f,
                &wrong_cn,
                &[
                    "--signer-name",
                    "kubernetes.io/kube-apiserver-client-kubelet",
                ],
            ),
            "requires CN system:node:<name>",
        );
        refused(
            &sign(
                &f,
                &node,
                &[
                    "--signer-name",
                    "kubernetes.io/kube-apiserver-client-kubelet",
                    "--usages",
                    "digital signature,client auth,server auth",
                ],
            ),
            "requires exactly",
        );

        // kubelet-serving.
        let serving = csr(
            d,
            kind,
            "/O=system:nodes/CN=system:node:n1",
            &["subjectAltName=DNS:n1,IP:10.0.0.21"],
            &format!("serving-{kind}"),
        );
        let t = issued(
            &f,
            &sign(
                &f,
                &serving,
                &["--signer-name", "kubernetes.io/kubelet-serving"],
            ),
            "sslserver",
            &format!("serving-{kind}"),
        );
        assert_eq!(
            ext_line(&t, "X509v3 Extended Key Usage:"),
            "TLS Web Server Authentication"
        );
        assert_eq!(
            ext_line(&t, "X509v3 Subject Alternative Name:"),
            "DNS:n1, IP Address:10.0.0.21"
        );
        refused(
            &sign(
                &f,
                &node,
                &["--signer-name", "kubernetes.io/kubelet-serving"],
            ),
            "requires at least one DNS or IP",
        );
        let email = csr(
            d,
            kind,
            "/O=system:nodes/CN=system:node:n1",
            &["subjectAltName=DNS:n1,email:n1@example.com"],
            &format!("serving-email-{kind}"),
        );
        refused(
            &sign(
                &f,
                &email,
                &["--signer-name", "kubernetes.io/kubelet-serving"],
            ),
            "forbids email and URI",
        );

        // system:masters.
        let masters = csr(
            d,
            kind,
            "/O=system:masters/CN=root",
            &[],
            &format!("masters-{kind}"),
        );
        refused(&sign(&f, &masters, &[]), "O=system:masters is refused");
        issued(
            &f,
            &sign(&f, &masters, &["--allow-system-masters"]),
            "sslclient",
            &format!("masters-{kind}"),
        );
    }
}

#[test]
fn requests_are_checked_and_only_sans_are_honoured() {
    let f = fixture();
    let d = &f.dir;
    // Requested CA bits and key usages are dropped.
    let greedy = csr(
        d,
        "p256",
        "/CN=greedy",
        &[
            "basicConstraints=critical,CA:TRUE",
            "keyUsage=critical,keyCertSign,cRLSign",
            "subjectAltName=DNS:greedy.example",
        ],
        "greedy",
    );
    let t = issued(&f, &sign(&f, &greedy, &[]), "sslclient", "greedy");
    assert_eq!(ext_line(&t, "X509v3 Basic Constraints:"), "CA:FALSE");
    assert_eq!(
        ext_line(&t, "X509v3 Key Usage:"),
        "Digital Signature, Key Encipherment"
    );
    assert_eq!(
        ext_line(&t, "X509v3 Subject Alternative Name:"),
        "DNS:greedy.example"
    );

    // A tampered request: CN jane → jone inside the signed part.
    let jane = csr(d, "rsa2048", "/CN=jane", &[], "tamper");
    let der = ::pem::parse(std::fs::read(&jane).unwrap())
        .unwrap()
        .into_contents();
    let at = der.windows(4).position(|w| w == b"jane").unwrap();
    let mut bad = der.clone();
    bad[at + 1] = b'o';
    let tampered = d.join("tampered.csr");
    std::fs::write(
        &tampered,
        ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", bad)),
    )
    .unwrap();
    refused(&sign(&f, &tampered, &[]), "signature does not verify");

    // RSA-1024, wrong PEM type, garbage, truncated PEM, missing file, unknown signer.
    refused(
        &sign(&f, &csr(d, "rsa1024", "/CN=old", &[], "old"), &[]),
        "unsupported key size RSA-1024",
    );
    refused(
        &sign(&f, &f.root.join("pki/ca.crt"), &[]),
        "not CERTIFICATE REQUEST",
    );
    let garbage = d.join("garbage.csr");
    std::fs::write(&garbage, "hello: [").unwrap();
    refused(
        &sign(&f, &garbage, &[]),
        "not a CertificateSigningRequest object",
    );
    let trunc = d.join("trunc.csr");
    let text_csr = std::fs::read_to_string(&jane).unwrap();
    std::fs::write(&trunc, &text_csr[..text_csr.len() / 2]).unwrap();
    refused(&sign(&f, &trunc, &[]), "not a PEM certificate request");
    refused(&sign(&f, &d.join("absent.csr"), &[]), "No such file");
    refused(
        &sign(&f, &jane, &["--signer-name", "example.com/unknown"]),
        "unknown signer name \"example.com/unknown\"",
    );
    refused(
        &sign(
            &f,
            &jane,
            &["--signer-name", "kubernetes.io/legacy-unknown"],
        ),
        "unknown signer name",
    );
    refused(
        &sign(&f, &jane, &["--expiration-seconds", "599"]),
        "below the minimum of 600",
    );

    // expirationSeconds under 8h: NotAfter = now + ttl, NotBefore = now - 5 min.
    let out = sign(&f, &jane, &["--expiration-seconds", "3600"]);
    issued(&f, &out, "sslclient", "short");
    let dates = String::from_utf8(
        openssl(&[
            "x509",
            "-in",
            d.join("short.crt").to_str().unwrap(),
            "-noout",
            "-startdate",
            "-enddate",
        ])
        .stdout,
    )
    .unwrap();
    let stamp = |prefix: &str| {
        let line = dates.lines().find(|l| l.starts_with(prefix)).unwrap();
        let out = std::process::Command::new("date")
            .args(["-d", &line[prefix.len()..], "+%s"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(stamp("notAfter=") - stamp("notBefore="), 3600 + 300);
}

#[test]
fn object_form_round_trips_through_k8s_openapi() {
    let f = fixture();
    let c = csr(&f.dir, "p256", "/CN=jane/O=dev", &[], "obj");
    let request = base64_encode(&std::fs::read(&c).unwrap());
    for (ext, body) in [
        (
            "yaml",
            format!(
                "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: jane\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400\n  usages:\n  - client auth\n"
            ),
        ),
        (
            "json",
            format!(
                "{{\"apiVersion\":\"certificates.k8s.io/v1\",\"kind\":\"CertificateSigningRequest\",\"metadata\":{{\"name\":\"jane\"}},\"spec\":{{\"request\":\"{request}\",\"signerName\":\"kubernetes.io/kube-apiserver-client\",\"usages\":[\"digital signature\",\"client auth\"]}}}}"
            ),
        ),
    ] {
        let path = f.dir.join(format!("jane.{ext}"));
        std::fs::write(&path, body).unwrap();
        for format in ["yaml", "json"] {
            let out = kpki(&[
                "sign",
                path.to_str().unwrap(),
                "--dir",
                f.root.to_str().unwrap(),
                "-o",
                format,
            ]);
            let (stdout, stderr) = text(&out);
            assert!(out.status.success(), "{stderr}");
            let obj: CertificateSigningRequest = if format == "json" {
                serde_json::from_str(&stdout).unwrap()
            } else {
                serde_norway::from_str(&stdout).unwrap()
            };
            assert_eq!(obj.metadata.name.as_deref(), Some("jane"));
            let status = obj.status.unwrap();
            let cond = &status.conditions.unwrap()[0];
            assert_eq!(
                (cond.type_.as_str(), cond.status.as_str()),
                ("Approved", "True")
            );
            let pem_cert = status.certificate.unwrap().0;
            let path = f.dir.join("obj.crt");
            std::fs::write(&path, &pem_cert).unwrap();
            assert!(
                openssl(&[
                    "verify",
                    "-CAfile",
                    f.root.join("pki/ca.crt").to_str().unwrap(),
                    "-purpose",
                    "sslclient",
                    path.to_str().unwrap()
                ])
                .status
                .success()
            );
        }
    }
    // Truncated base64 in spec.request.
    let bad = f.dir.join("bad.yaml");
    std::fs::write(&bad, format!("apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: x\nspec:\n  request: {}\n  signerName: kubernetes.io/kube-apiserver-client\n", &request[..request.len() - 3])).unwrap();
    refused(
        &kpki(&[
            "sign",
            bad.to_str().unwrap(),
            "--dir",
            f.root.to_str().unwrap(),
        ]),
        "spec.request",
    );
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn a_subject_with_several_groups_keeps_every_value_in_order() {
    let f = fixture();
    for kind in ["rsa2048", "p256"] {
        let name = format!("groups-{kind}");
        let c = csr(&f.dir, kind, "/CN=sam/O=dev/O=ops/OU=team", &[], &name);
        let t = issued(&f, &sign(&f, &c, &[]), "sslclient", &name);
        assert!(
            t.contains("Subject: CN = sam, O = dev, O = ops, OU = team"),
            "{t}"
        );
    }
}

#[test]
fn a_subject_with_two_cns_is_refused() {
    let f = fixture();
    let c = csr(
        &f.dir,
        "p256",
        "/O=system:nodes/CN=system:node:a/CN=system:node:victim",
        &[],
        "two-cn",
    );
    let out = sign(
        &f,
        &c,
        &[
            "--signer-name",
            "kubernetes.io/kube-apiserver-client-kubelet",
        ],
    );
    refused(&out, "more than one CN");
}
