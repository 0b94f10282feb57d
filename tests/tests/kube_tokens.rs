//! Service-account tokens from the HSM, judged by kube-apiserver: kube-apiserver signs through
//! `--service-account-signing-endpoint` on kpki's token signer (key on SoftHSM behind
//! `p11-kit server`), with no service-account key files. `kubectl create token` carries
//! kpki's key id, TokenReview authenticates it, discovery lists the signing key and not the
//! excluded verify-only key, tokens from before and after a SIGHUP rotation both review, and a
//! token outage makes token creation fail clearly and recover without restarting anything.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kpki_e2e::cluster::{Cluster, Options, VerifyKey, eventually, signer_config_text};
use kpki_e2e::{kpki, p11kit, text};
use serde_json::{Value, json};

/// kube-apiserver's key id: unpadded base64url of SHA-256 of the PKIX DER.
fn kid_of_pem(path: &Path) -> String {
    let pem = pem::parse(std::fs::read(path).unwrap()).unwrap();
    assert_eq!(pem.tag(), "PUBLIC KEY");
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, pem.contents()))
}

fn header_kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    v["kid"].as_str().unwrap().to_string()
}

fn create_token(c: &Cluster) -> Result<String, String> {
    let out = c.kubectl(
        "admin.conf",
        &["create", "token", "default", "-n", "default"],
    );
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap().trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// TokenReview of `token`: (authenticated, username).
fn review(c: &Cluster, token: &str) -> (bool, String) {
    let file = c.path("review.json");
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": { "token": token }
    });
    std::fs::write(&file, body.to_string()).unwrap();
    let out = c.kubectl(
        "admin.conf",
        &["create", "-f", file.to_str().unwrap(), "-o", "json"],
    );
    assert!(out.status.success(), "TokenReview: {:?}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["status"]["authenticated"].as_bool().unwrap_or(false),
        v["status"]["user"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn jwks_kids(c: &Cluster) -> Vec<String> {
    let out = c.kubectl("admin.conf", &["get", "--raw", "/openid/v1/jwks"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// The key id of a token key, from the SPKI SHA-256 `kpki keys show` reports.
fn kid_of_key(uri: &str) -> String {
    let out = kpki(&["keys", "show", uri, "-o", "json"]);
    assert!(out.status.success(), "kpki keys show: {:?}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hex_digest = v["spki_sha256"].as_str().unwrap().replace(':', "");
    URL_SAFE_NO_PAD.encode(hex::decode(hex_digest).unwrap())
}

#[test]
fn service_account_tokens_are_signed_by_the_token_and_survive_rotation_and_outage() {
    let mut c = Cluster::start(Options::default());
    const SA_USER: &str = "system:serviceaccount:default:default";
    // The `default` service account, as kube-controller-manager would create it.
    let out = c.kubectl(
        "admin.conf",
        &["create", "serviceaccount", "default", "-n", "default"],
    );
    assert!(out.status.success(), "{:?}", text(&out));

    // Signed by kpki's key: the kid of sa.pub (the token key's public half).
    let kid = kid_of_pem(&c.pki().join("sa.pub"));
    let legacy_kid = kid_of_pem(&c.path("legacy-sa.pub"));
    let first = create_token(&c).expect("kubectl create token");
    assert_eq!(header_kid(&first), kid);
    assert_eq!(review(&c, &first), (true, SA_USER.to_string()));

    // Discovery lists the signing key, not the verify-only key excluded from it.
    let kids = jwks_kids(&c);
    assert!(kids.contains(&kid), "{kids:?}");
    assert!(!kids.contains(&legacy_kid), "{kids:?}");

    // Rotation by SIGHUP: a new signing key on the token, the old one kept as verify-only.
    let next_direct = c.token.key_uri("sa-next");
    let out = kpki(&["keys", "create", &next_direct, "-a", "ECDSA-P256"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let next_kid = kid_of_key(&next_direct);
    let next_uri = p11kit::key_uri(&c.token, "sa-next");
    let old_uri = c.sa_key_uri.clone();
    std::fs::write(
        &c.signer_config,
        signer_config_text(
            &c.signer_socket,
            &next_uri,
            &[
                (&old_uri as &dyn VerifyKey, false),
                (&c.path("legacy-sa.pub"), true),
            ],
        ),
    )
    .unwrap();
    c.reload_signer();
    let half_second = Duration::from_millis(500);
    let (second, _) = eventually(
        "a token with the new key id",
        Duration::from_secs(60),
        half_second,
        || {
            let t = create_token(&c)?;
            if header_kid(&t) == next_kid {
                Ok(t)
            } else {
                Err(format!(
                    "still the old key id; signer log:\n{}",
                    c.signer_log()
                ))
            }
        },
    );
    assert_eq!(review(&c, &second), (true, SA_USER.to_string()));
    assert_eq!(
        review(&c, &first),
        (true, SA_USER.to_string()),
        "token from before the rotation"
    );
    eventually(
        "discovery after the rotation",
        Duration::from_secs(30),
        half_second,
        || {
            let kids = jwks_kids(&c);
            if kids.contains(&next_kid) && kids.contains(&kid) && !kids.contains(&legacy_kid) {
                Ok(())
            } else {
                Err(format!("{kids:?}"))
            }
        },
    );

    // Token outage: creation fails with a clear error, then works again, nothing restarted.
    c.stop_token();
    let fifth = Duration::from_millis(200);
    let (err, failed_after) = eventually(
        "token creation failing",
        Duration::from_secs(10),
        fifth,
        || match create_token(&c) {
            Err(e) => Ok(e),
            Ok(_) => Err("tokens are still created".into()),
        },
    );
    assert!(
        err.to_lowercase().contains("sign") || err.to_lowercase().contains("unavailable"),
        "unclear error while the token is away: {err}"
    );
    // Reviews of existing tokens keep working: the keys are cached.
    assert_eq!(review(&c, &second), (true, SA_USER.to_string()));
    c.start_token_server();
    let (third, back_after) = eventually(
        "a token after the token returned",
        Duration::from_secs(30),
        fifth,
        || create_token(&c).map_err(|e| format!("{e}\nsigner log:\n{}", c.signer_log())),
    );
    eprintln!(
        "token creation failed {failed_after:?} after the outage began ({err}) and worked {back_after:?} after the token returned"
    );
    assert_eq!(header_kid(&third), next_kid);
    assert_eq!(review(&c, &third), (true, SA_USER.to_string()));
}
