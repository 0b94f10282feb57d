//! The service-account token keys: the signing key on its backend and the verify-only keys,
//! their key ids (kube-apiserver's rule for in-tree keys) and JWS algorithms.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kpki_pki::keystore::KeyStore;
use kpki_signer::{KeyUri, Signer, spki};

use crate::config::{ConfigError, JwtConfig};

/// The smallest `max_token_expiration_seconds` kube-apiserver accepts.
pub const MIN_TOKEN_EXPIRATION: Duration = Duration::from_secs(600);

/// One key `FetchKeys` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenKey {
    /// Key id.
    pub kid: String,
    /// PKIX DER.
    pub spki_der: Vec<u8>,
    /// Verify-only, kept out of OIDC discovery.
    pub exclude_from_oidc_discovery: bool,
}

/// The key set of the token signer, built from `[jwt]`.
pub struct JwtKeys {
    /// The signing key.
    pub signing: Arc<dyn Signer>,
    /// Its key URI as printed (never a PIN value).
    pub signing_uri: String,
    /// Its JWS algorithm (`RS256`, `ES256`, `ES384`).
    pub alg: &'static str,
    /// Its key id.
    pub kid: String,
    /// base64url of `{"alg":…,"kid":…,"typ":"JWT"}`.
    pub header: String,
    /// Every listed key, the signing key first.
    pub keys: Vec<TokenKey>,
    /// When the key set last changed.
    pub data_timestamp: SystemTime,
    /// `refresh_hint_seconds`.
    pub refresh_hint_seconds: i64,
    /// `max_token_expiration_seconds`.
    pub max_token_expiration_seconds: i64,
    /// Largest claims segment accepted.
    pub max_claims_bytes: usize,
}

/// kube-apiserver's key id for in-tree keys: unpadded base64url of SHA-256 of the PKIX DER.
pub fn key_id(spki_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, spki_der))
}

fn public_key_file(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let what = format!("jwt.verify_keys: {}", path.display());
    let bytes = std::fs::read(path).map_err(|e| ConfigError(format!("{what}: {e}")))?;
    let block = pem::parse(&bytes).map_err(|e| ConfigError(format!("{what}: not PEM ({e})")))?;
    if block.tag() != "PUBLIC KEY" {
        return Err(ConfigError(format!(
            "{what}: expected a PUBLIC KEY block, got {}",
            block.tag()
        )));
    }
    let der = block.into_contents();
    // Only keys kpki can name (RSA, ECDSA P-256/P-384) verify service-account tokens.
    spki::algorithm_of(&der).map_err(|e| ConfigError(format!("{what}: {e}")))?;
    Ok(der)
}

fn open(uri: &KeyUri, keys: &KeyStore, what: &str) -> Result<Arc<dyn Signer>, ConfigError> {
    keys.open(uri)
        .map_err(|e| ConfigError(format!("{what}: {e}")))
}

impl JwtKeys {
    /// Opens the signing key and reads the verify-only keys of `cfg`.
    pub fn build(cfg: &JwtConfig, keys: &KeyStore) -> Result<JwtKeys, ConfigError> {
        let signing = open(&cfg.signing_key, keys, "jwt.signing_key")?;
        let alg = signing.algorithm().jws_name();
        let kid = key_id(signing.public_key_spki());
        let header = URL_SAFE_NO_PAD
            .encode(serde_json::json!({ "alg": alg, "kid": kid, "typ": "JWT" }).to_string());
        let mut listed = vec![TokenKey {
            kid: kid.clone(),
            spki_der: signing.public_key_spki().to_vec(),
            exclude_from_oidc_discovery: false,
        }];
        for (i, v) in cfg.verify_keys.iter().enumerate() {
            let what = format!("jwt.verify_keys[{i}]");
            let der = match (&v.key, &v.public_key) {
                (Some(uri), None) => open(uri, keys, &what)?.public_key_spki().to_vec(),
                (None, Some(path)) => public_key_file(path)?,
                _ => {
                    return Err(ConfigError(format!(
                        "{what}: give exactly one of key (URI) or public_key (PEM file)"
                    )));
                }
            };
            if listed.iter().any(|k| k.spki_der == der) {
                continue; // the same key twice (e.g. the signing key again) is listed once
            }
            listed.push(TokenKey {
                kid: key_id(&der),
                spki_der: der,
                exclude_from_oidc_discovery: v.exclude_from_oidc_discovery,
            });
        }
        let max = cfg.max_token_expiration.get();
        if max < MIN_TOKEN_EXPIRATION {
            return Err(ConfigError(format!(
                "jwt.max_token_expiration: {}s is below kube-apiserver's minimum of 600s",
                max.as_secs()
            )));
        }
        let refresh = cfg.refresh_hint.get();
        if refresh.as_secs() == 0 {
            return Err(ConfigError("jwt.refresh_hint: must be at least 1s".into()));
        }
        Ok(JwtKeys {
            signing_uri: signing.uri().to_string(),
            signing,
            alg,
            kid,
            header,
            keys: listed,
            data_timestamp: SystemTime::now(),
            refresh_hint_seconds: i64::try_from(refresh.as_secs()).unwrap_or(i64::MAX),
            max_token_expiration_seconds: i64::try_from(max.as_secs()).unwrap_or(i64::MAX),
            max_claims_bytes: cfg.max_claims_bytes,
        })
    }

    /// True when both list the same keys the same way (so `data_timestamp` stays).
    pub fn same_key_set(&self, other: &JwtKeys) -> bool {
        self.keys == other.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_unpadded_base64url_of_the_spki_sha256() {
        let kid = key_id(b"abc");
        assert_eq!(kid, "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
        assert_eq!(kid.len(), 43);
    }
}
