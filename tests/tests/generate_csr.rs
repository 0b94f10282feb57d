//! `kpki certs generate-csr`: kubeadm's keys and CSRs for an external CA, partial
//! kubeconfigs, modes, and refusal to overwrite anything.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;

use kpki_e2e::{kpki, openssl, text};

#[test]
fn generate_csr_writes_keys_csrs_and_partial_kubeconfigs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("n");
    let args = [
        "certs",
        "generate-csr",
        "--dir",
        root.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "10.0.0.10",
        "--encryption-algorithm",
        "ECDSA-P256",
    ];
    let out = kpki(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    let pki = root.join("pki");
    assert_eq!(std::fs::metadata(&pki).unwrap().mode() & 0o777, 0o700);
    for (base, subject, san) in [
        (
            "apiserver",
            "subject=CN = kube-apiserver",
            Some(
                "DNS:cp1, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP Address:10.96.0.1, IP Address:10.0.0.10",
            ),
        ),
        (
            "apiserver-kubelet-client",
            "subject=CN = kube-apiserver-kubelet-client",
            None,
        ),
        (
            "etcd/peer",
            "subject=CN = cp1",
            Some(
                "DNS:cp1, DNS:localhost, IP Address:10.0.0.10, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
            ),
        ),
        (
            "apiserver-etcd-client",
            "subject=CN = kube-apiserver-etcd-client",
            None,
        ),
    ] {
        let csr = pki.join(format!("{base}.csr"));
        let key = pki.join(format!("{base}.key"));
        assert_eq!(
            std::fs::metadata(&csr).unwrap().mode() & 0o777,
            0o600,
            "{base}"
        );
        assert_eq!(
            std::fs::metadata(&key).unwrap().mode() & 0o777,
            0o600,
            "{base}"
        );
        assert!(
            std::fs::read_to_string(&key)
                .unwrap()
                .starts_with("-----BEGIN EC PRIVATE KEY-----")
        );
        let out = openssl(&[
            "req",
            "-in",
            csr.to_str().unwrap(),
            "-noout",
            "-verify",
            "-subject",
            "-text",
        ]);
        let t = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(t.contains("verify OK"), "{base}: {t}");
        assert!(t.contains(subject), "{base}: {t}");
        match san {
            Some(s) => assert!(t.contains(s), "{base}: {t}"),
            None => assert!(!t.contains("Subject Alternative Name"), "{base}: {t}"),
        }
        assert!(
            !t.contains("Key Usage") && !t.contains("Basic Constraints"),
            "{base}: CSRs carry no usages: {t}"
        );
        // The CSR belongs to the key written beside it.
        let a = openssl(&["req", "-in", csr.to_str().unwrap(), "-noout", "-pubkey"]).stdout;
        let b = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]).stdout;
        assert_eq!(a, b, "{base}");
    }
    for (file, subject) in [
        (
            "admin.conf",
            "O = kubeadm:cluster-admins, CN = kubernetes-admin",
        ),
        ("kubelet.conf", "O = system:nodes, CN = system:node:cp1"),
        ("scheduler.conf", "CN = system:kube-scheduler"),
    ] {
        let conf = root.join(file);
        assert_eq!(std::fs::metadata(&conf).unwrap().mode() & 0o777, 0o600);
        let cfg = kpki_pki::kubeconfig::parse(&std::fs::read_to_string(&conf).unwrap()).unwrap();
        let user = cfg.current_user().unwrap();
        assert!(
            user.client_key_data
                .as_deref()
                .is_some_and(|k| !k.is_empty()),
            "{file}: client key"
        );
        assert_eq!(
            user.client_certificate_data.as_deref(),
            Some(""),
            "{file}: no certificate yet"
        );
        assert_eq!(
            cfg.current_cluster()
                .unwrap()
                .certificate_authority_data
                .as_deref(),
            Some("")
        );
        let out = openssl(&[
            "req",
            "-in",
            root.join(format!("{file}.csr")).to_str().unwrap(),
            "-noout",
            "-subject",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("subject={subject}"),
            "{file}"
        );
    }

    // A second run refuses and writes nothing.
    let before: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let out = kpki(&args);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("file already exists"), "{err}");
    let after: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(before.len(), after.len());

    // One existing target is enough to refuse before anything is written.
    let other = dir.path().join("m");
    std::fs::create_dir_all(other.join("pki/etcd")).unwrap();
    std::fs::write(other.join("pki/etcd/peer.csr"), "x").unwrap();
    let out = kpki(&[
        "certs",
        "generate-csr",
        "--dir",
        other.to_str().unwrap(),
        "--node-name",
        "cp1",
        "--advertise-address",
        "10.0.0.10",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !other.join("pki/apiserver.key").exists(),
        "nothing may be written"
    );
    assert!(!other.join("admin.conf").exists());
}
