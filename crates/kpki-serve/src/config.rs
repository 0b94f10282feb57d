//! The daemon's configuration file (TOML): listener, CAs, signer names, policy rules, audit.
//! Unknown keys are errors; every value is checked at load so a bad file never starts (or,
//! on SIGHUP, never replaces a good one).

use kpki_pki::GoDuration;
pub use kpki_pki::config::ConfigError;
use kpki_signer::KeyUri;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The HTTPS listener (required unless the daemon runs with `--jwt-only`).
    #[serde(default)]
    pub listen: Option<Listen>,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Connection caps and timeouts of every listener (read at start only).
    #[serde(default)]
    pub connections: crate::limits::ConnectionLimits,
    /// CAs by name (`ca`, `front-proxy-ca`, or any name): certificate and key URI.
    #[serde(default)]
    pub cas: BTreeMap<String, CaConfig>,
    /// Signer names (and cfssl profiles) by name: which CA signs them.
    #[serde(default)]
    pub signers: BTreeMap<String, SignerConfig>,
    /// Policy rules, tried in order; a request is allowed when one rule allows it.
    #[serde(default)]
    pub policy: Vec<RuleConfig>,
    /// The audit trail (required with the HTTPS listener).
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// Signing and HSM health.
    #[serde(default)]
    pub signing: SigningConfig,
    /// cfssl-compatible endpoints.
    #[serde(default)]
    pub cfssl: CfsslConfig,
    /// The service-account token signer for kube-apiserver (ExternalJWTSigner).
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// The Certificates API signer (CSR controller).
    #[serde(default)]
    pub kubernetes: Option<crate::controller::KubernetesConfig>,
}

/// The ExternalJWTSigner gRPC service on a unix socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The unix socket kube-apiserver's `--service-account-signing-endpoint` names.
    pub socket: PathBuf,
    /// Owner (uid) of the socket file; default: the daemon's user. Mode is always 0600.
    pub socket_uid: Option<u32>,
    /// Peer uids allowed to call (checked with SO_PEERCRED); empty: any peer that can open
    /// the socket.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// The key that signs tokens (URI).
    pub signing_key: KeyUri,
    /// Keys that only verify (earlier signing keys, the cluster's old `sa.pub`).
    #[serde(default)]
    pub verify_keys: Vec<VerifyKey>,
    /// `max_token_expiration_seconds` answered by `Metadata` (Go duration, ≥ 10m; default 24h).
    #[serde(default = "default_max_token_expiration")]
    pub max_token_expiration: GoDuration,
    /// `refresh_hint_seconds` answered by `FetchKeys` (Go duration; default 5m).
    #[serde(default = "default_refresh_hint")]
    pub refresh_hint: GoDuration,
    /// Largest claims segment accepted, in bytes (base64url text; default 65536).
    #[serde(default = "default_max_claims_bytes")]
    pub max_claims_bytes: usize,
    /// Write a `token` record to the audit trail for every `Sign` call (needs `[audit]`).
    #[serde(default)]
    pub audit: bool,
}

fn default_max_token_expiration() -> GoDuration {
    hours(24)
}

fn default_refresh_hint() -> GoDuration {
    GoDuration(Duration::from_secs(5 * 60))
}

fn hours(h: u64) -> GoDuration {
    GoDuration(Duration::from_secs(h * 3600))
}

fn default_max_claims_bytes() -> usize {
    64 * 1024
}

/// A verify-only token key: a key URI or a PEM public key file (`sa.pub`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyKey {
    /// Key URI (its public key is listed).
    pub key: Option<KeyUri>,
    /// PEM `PUBLIC KEY` file.
    pub public_key: Option<PathBuf>,
    /// Leave it out of kube-apiserver's OIDC discovery document (default true: a
    /// verify-only key is kept for tokens already issued).
    #[serde(default = "default_true")]
    pub exclude_from_oidc_discovery: bool,
}

fn default_true() -> bool {
    true
}

/// The HTTPS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Address and port, e.g. `0.0.0.0:8443`.
    pub address: SocketAddr,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key: a key URI (`pkcs11:…` keeps it on a token: the handshake is
    /// signed there and no key file exists; `file:/…`) or a plain path to a PEM key file
    /// (mode 0600).
    #[serde(deserialize_with = "listen_key")]
    pub key: KeyUri,
    /// CA certificates that client certificates must chain to (PEM files).
    pub client_cas: Vec<PathBuf>,
    /// Optional plain-HTTP listener for `/healthz`, `/readyz` and `/metrics` only (probes
    /// and scrapers that hold no client certificate).
    #[serde(default)]
    pub ops_address: Option<SocketAddr>,
}

/// `listen.key`: a key URI, or a plain path (relative paths stay relative to the working
/// directory, as they always were).
fn listen_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<KeyUri, D::Error> {
    let text = zeroize::Zeroizing::new(String::deserialize(d)?);
    let t = text.trim();
    if t.starts_with("pkcs11:") || t.starts_with("file:") {
        t.parse().map_err(serde::de::Error::custom)
    } else if t.is_empty() {
        Err(serde::de::Error::custom("listen.key is empty"))
    } else {
        Ok(KeyUri::file(t))
    }
}

/// Request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest wait for a signing session of the CA's key before answering 503 `busy`, and
    /// for the token to answer a signing call before answering 503 `hsm_unavailable`
    /// (Go duration).
    pub request_timeout: GoDuration,
    /// Grace period for in-flight requests on SIGTERM (Go duration).
    pub shutdown_grace: GoDuration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 64 * 1024,
            request_timeout: GoDuration(Duration::from_secs(30)),
            shutdown_grace: GoDuration(Duration::from_secs(30)),
        }
    }
}

/// One CA.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// The CA certificate (PEM).
    pub cert: PathBuf,
    /// The CA key URI (`pkcs11:…` or `file:…`).
    pub key: KeyUri,
    /// Longest validity this CA grants (Go duration; default 8760h).
    #[serde(default = "default_max_validity")]
    pub max_validity: GoDuration,
}

fn default_max_validity() -> GoDuration {
    hours(8760)
}

/// A signer name or cfssl profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    /// The CA (a key of `[cas]`) that signs for it.
    pub ca: String,
    /// Usages (Kubernetes words) when a request names none; default: the signer's own.
    #[serde(default)]
    pub usages: Vec<String>,
}

/// Which callers a rule is for: CN pattern and/or any of some O values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerMatch {
    /// Regular expression the caller's CN must match entirely.
    pub cn: Option<String>,
    /// The caller must carry at least one of these O values.
    #[serde(default)]
    pub orgs: Vec<String>,
}

/// One policy rule: who may request what.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name used in audit lines and logs.
    pub name: String,
    /// Callers the rule applies to.
    pub callers: CallerMatch,
    /// Signer names / profiles the rule allows.
    pub signers: Vec<String>,
    /// Regular expression the requested CN must match entirely (default: any).
    pub cn: Option<String>,
    /// O values a request may carry (default: none). `system:masters` only when listed.
    #[serde(default)]
    pub orgs: Vec<String>,
    /// Allowed DNS SANs: a name equal to a suffix without its leading dot, or ending in it.
    #[serde(default)]
    pub dns_suffixes: Vec<String>,
    /// Allowed IP SANs (CIDRs).
    #[serde(default)]
    pub ip_ranges: Vec<String>,
    /// Allowed URI SAN prefixes.
    #[serde(default)]
    pub uri_prefixes: Vec<String>,
    /// Longest validity a request may ask for (Go duration; default 24h).
    #[serde(default = "default_rule_validity")]
    pub max_validity: GoDuration,
    /// Key types a request may carry: `RSA` (any size ≥ 2048), `RSA-2048`, `RSA-3072`,
    /// `RSA-4096`, `ECDSA-P256`, `ECDSA-P384`, `Ed25519` (default: all).
    #[serde(default)]
    pub key_types: Vec<String>,
}

fn default_rule_validity() -> GoDuration {
    hours(24)
}

/// Where and how the audit trail is written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The log file (JSON lines, hash-chained).
    pub path: PathBuf,
    /// `true`: fdatasync each line before answering; `false`: write to the kernel only.
    #[serde(default)]
    pub fsync: bool,
    /// Free space on the log's volume below which `/readyz` fails (bytes; 0: no check).
    #[serde(default = "crate::limits::default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// Denied requests a caller may make in a burst before it is refused with
    /// `rate_limited` (0: no limit).
    #[serde(default = "crate::limits::default_denied_burst")]
    pub denied_burst: u32,
    /// Denied requests per second a caller regains once its burst is spent.
    #[serde(default = "crate::limits::default_denied_per_second")]
    pub denied_per_second: f64,
    /// The key (URI) that signs checkpoints of the chain (default: no checkpoints).
    #[serde(default)]
    pub checkpoint_key: Option<KeyUri>,
    /// Lines between two signed checkpoints (default 1000); the close record of a clean
    /// stop is signed too.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Also send each line to the local syslog socket as it is written.
    #[serde(default)]
    pub syslog: bool,
    /// The syslog socket (default `/dev/log`, where journald and rsyslog listen).
    #[serde(default = "default_syslog_socket")]
    pub syslog_socket: PathBuf,
    /// The syslog facility of the copies (default `authpriv`).
    #[serde(default = "default_syslog_facility")]
    pub syslog_facility: String,
}

fn default_syslog_socket() -> PathBuf {
    PathBuf::from("/dev/log")
}

fn default_syslog_facility() -> String {
    "authpriv".into()
}

fn default_checkpoint_every() -> u64 {
    crate::audit::checkpoint::DEFAULT_EVERY
}

/// Signing concurrency and HSM health checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// PKCS#11 sessions per token.
    pub pool_size: usize,
    /// How often each CA key is probed for readiness (Go duration).
    pub probe_interval: GoDuration,
}

impl Default for SigningConfig {
    fn default() -> SigningConfig {
        SigningConfig {
            pool_size: 4,
            probe_interval: GoDuration(Duration::from_millis(500)),
        }
    }
}

/// cfssl-compatible endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfsslConfig {
    /// The signer used when a cfssl request names no profile.
    pub default_profile: String,
}

impl Default for CfsslConfig {
    fn default() -> CfsslConfig {
        CfsslConfig {
            default_profile: kpki_pki::csr::KUBE_APISERVER_CLIENT.into(),
        }
    }
}

impl ServeConfig {
    /// Reads and parses `path` (unknown keys are errors), with the process's `KPKI__…`
    /// variables over it (see [`ServeConfig::parse_with_env`]).
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("config {}: {e}", path.display())))?;
        ServeConfig::parse_with_env(&text, std::env::vars_os())
            .map_err(|e| ConfigError(format!("config {}: {}", path.display(), e.0)))
    }

    /// Parses TOML text with `KPKI__SECTION__FIELD` variables of `vars` over it, as for
    /// kpki.toml: `KPKI__LISTEN__ADDRESS=0.0.0.0:9443`, `KPKI__CAS__CA__KEY=pkcs11:…`,
    /// `KPKI__AUDIT__FSYNC=true`. Only the daemon's own sections are read (kpki.toml's
    /// `KPKI__CLUSTER__…`, `KPKI__KEYS__…`, `KPKI__SIGNERS__…` are left to it); names are
    /// lower-cased; a value
    /// replacing a string stays a string, any other is read as a TOML value when it is one
    /// (`true`, `30`, `["a", "b"]`) and as a string otherwise.
    pub fn parse_with_env(
        text: &str,
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Result<ServeConfig, ConfigError> {
        let mut overrides: Vec<(Vec<String>, String)> = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let key = k.to_str()?.strip_prefix("KPKI__")?.to_ascii_lowercase();
                let path: Vec<String> = key.split("__").map(String::from).collect();
                ENV_SECTIONS
                    .contains(&path[0].as_str())
                    .then_some((path, v.to_string_lossy().into_owned()))
            })
            .collect();
        if overrides.is_empty() {
            // The file alone: errors keep their line and column.
            return ServeConfig::parse(text);
        }
        overrides.sort();
        let mut tree: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError(one_line(&e.to_string())))?;
        for (path, value) in overrides {
            let name = format!("KPKI__{}", path.join("__").to_ascii_uppercase());
            override_value(&mut tree, &path, &value)
                .map_err(|problem| ConfigError(format!("{name}: {problem}")))?;
        }
        tree.try_into()
            .map_err(|e: toml::de::Error| ConfigError(one_line(&e.to_string())))
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<ServeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(one_line(&e.to_string())))
    }

    /// The CA that signs `signer` (a signer name or profile); `kubernetes.io/*` signers
    /// default to `ca`.
    pub fn ca_for(&self, signer: &str) -> Option<&str> {
        match self.signers.get(signer) {
            Some(s) => Some(s.ca.as_str()),
            None if signer.starts_with("kubernetes.io/") && self.cas.contains_key("ca") => {
                Some("ca")
            }
            None => None,
        }
    }
}

/// Sections `KPKI__…` variables may set: the daemon's own. `[[policy]]` (an array of tables)
/// cannot be addressed by name, and `signers` is left out because kpki.toml has a
/// `[signers]` of another shape (`KPKI__SIGNERS__…` is its).
const ENV_SECTIONS: &[&str] = &[
    "listen",
    "limits",
    "connections",
    "cas",
    "audit",
    "signing",
    "cfssl",
    "jwt",
    "kubernetes",
];

/// Sets `path` in `tree` to `value` (creating tables on the way).
fn override_value(tree: &mut toml::Table, path: &[String], value: &str) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("no field named".into());
    };
    if path.iter().any(String::is_empty) {
        return Err("empty name segment".into());
    }
    let mut table = tree;
    for p in parents {
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a table in the file"))?;
    }
    let as_string = matches!(table.get(last), Some(toml::Value::String(_)));
    let parsed = if as_string {
        None
    } else {
        toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    table.insert(
        last.clone(),
        parsed.unwrap_or_else(|| toml::Value::String(value.to_string())),
    );
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[listen]
address = "127.0.0.1:8443"
cert = "/tmp/s.crt"
key = "/tmp/s.key"
client_cas = ["/tmp/ca.crt"]

[cas.ca]
cert = "/etc/kubernetes/pki/ca.crt"
key = "file:/etc/kubernetes/pki/ca.key"

[audit]
path = "/var/log/kpki/audit.jsonl"
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = ServeConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.limits.max_body_bytes, 65536);
        assert_eq!(c.ca_for("kubernetes.io/kubelet-serving"), Some("ca"));
        assert_eq!(c.ca_for("example.com/x"), None);
    }

    /// One row: environment variables, then what the listener's address, the CA key and
    /// `audit.fsync` read, or a fragment of the error.
    type EnvRow = (
        &'static [(&'static str, &'static str)],
        Result<(&'static str, &'static str, bool), &'static str>,
    );

    #[rustfmt::skip]
    const ENV: &[EnvRow] = &[
        (&[], Ok(("127.0.0.1:8443", "file:/etc/kubernetes/pki/ca.key", false))),
        (&[("KPKI__LISTEN__ADDRESS", "0.0.0.0:9443")], Ok(("0.0.0.0:9443", "file:/etc/kubernetes/pki/ca.key", false))),
        (&[("KPKI__CAS__CA__KEY", "pkcs11:token=k8s;object=ca")], Ok(("127.0.0.1:8443", "pkcs11:token=k8s;object=ca", false))),
        (&[("KPKI__AUDIT__FSYNC", "true")], Ok(("127.0.0.1:8443", "file:/etc/kubernetes/pki/ca.key", true))),
        // kpki.toml's sections and other programs' variables are not the daemon's.
        (&[("KPKI__CLUSTER__NODE_NAME", "cp1"), ("KPKI_LOG", "debug"), ("KPKI__CERT_DIR", "/x"), ("KPKI__SIGNERS__X", "ca")], Ok(("127.0.0.1:8443", "file:/etc/kubernetes/pki/ca.key", false))),
        (&[("KPKI__LISTEN__ADDRESS", "nowhere")], Err("invalid socket address")),
        (&[("KPKI__AUDIT__FSINK", "true")], Err("unknown field `fsink`")),
        (&[("KPKI__AUDIT__FSYNC", "maybe")], Err("invalid type")),
        (&[("KPKI__LISTEN__ADDRESS__PORT", "1")], Err("KPKI__LISTEN__ADDRESS__PORT: address is not a table")),
    ];

    #[test]
    fn environment_variables_override_the_file() {
        for (vars, want) in ENV {
            let vars = vars.iter().map(|(k, v)| ((*k).into(), (*v).into()));
            let got = ServeConfig::parse_with_env(MINIMAL, vars).map(|c| {
                (
                    c.listen
                        .as_ref()
                        .map(|l| l.address.to_string())
                        .unwrap_or_default(),
                    c.cas["ca"].key.to_string(),
                    c.audit.as_ref().is_some_and(|a| a.fsync),
                )
            });
            match (want, got) {
                (Ok((addr, key, fsync)), Ok(got)) => {
                    assert_eq!(
                        (got.0.as_str(), got.1.as_str(), got.2),
                        (*addr, *key, *fsync)
                    );
                }
                (Err(fragment), Err(e)) => {
                    assert!(e.0.contains(fragment), "{fragment}: {}", e.0);
                    assert!(!e.0.contains('\n'), "one line: {}", e.0);
                }
                (want, got) => panic!("want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = MINIMAL.replace("[audit]", "[audit]\nfsink = true");
        let e = ServeConfig::parse(&text).unwrap_err().0;
        assert!(e.contains("unknown field `fsink`"), "{e}");
        assert!(!e.contains('\n'));
    }

    /// One row: what replaces the `[cas.ca]` key and adds to `[limits]`, then the CA's key
    /// URI and the request timeout (ms) read, or a fragment of the error.
    type Row = (
        &'static str,
        &'static str,
        Result<(&'static str, u64), &'static str>,
    );

    #[rustfmt::skip]
    const TYPED: &[Row] = &[
        ("file:/etc/kubernetes/pki/ca.key", "", Ok(("file:/etc/kubernetes/pki/ca.key", 30_000))),
        ("pkcs11:token=k8s;object=ca", "request_timeout = \"1.5s\"", Ok(("pkcs11:token=k8s;object=ca", 1_500))),
        ("file:/k", "request_timeout = \"1d\"", Ok(("file:/k", 86_400_000))),
        ("file:/k", "request_timeout = \"250ms\"", Ok(("file:/k", 250))),
        ("file:/k", "request_timeout = \"30\"", Err("invalid duration \"30\": missing unit")),
        ("file:/k", "request_timeout = 30", Err("invalid type")),
        ("bogus:x", "", Err("invalid key URI \"bogus:x\"")),
        ("pkcs11:object=ca", "", Err("no token, serial or slot-id attribute")),
        ("file:relative.key", "", Err("invalid key URI")),
    ];

    #[test]
    fn values_are_read_into_their_types() {
        for (key, limits, want) in TYPED {
            let text = MINIMAL
                .replace("file:/etc/kubernetes/pki/ca.key", key)
                .replace("[audit]", &format!("[limits]\n{limits}\n\n[audit]"));
            let got = ServeConfig::parse(&text).map(|c| {
                let ca = &c.cas["ca"];
                (
                    ca.key.to_string(),
                    c.limits.request_timeout.get().as_millis(),
                )
            });
            match (want, got) {
                (Ok((uri, ms)), Ok((got_uri, got_ms))) => {
                    assert_eq!(
                        (got_uri.as_str(), got_ms),
                        (*uri, u128::from(*ms)),
                        "{text}"
                    )
                }
                (Err(fragment), Err(e)) => {
                    assert!(e.0.contains(fragment), "{text}: {}", e.0);
                    assert!(!e.0.contains('\n'), "one line: {}", e.0);
                }
                (want, got) => panic!("{text}: want {want:?}, got {got:?}"),
            }
        }
        let c = ServeConfig::parse(MINIMAL).expect("minimal");
        assert_eq!(
            c.cas["ca"].max_validity.get(),
            Duration::from_secs(8760 * 3600)
        );
        assert_eq!(c.signing.probe_interval.get(), Duration::from_millis(500));
        assert_eq!(c.limits.shutdown_grace.get(), Duration::from_secs(30));
    }
}
