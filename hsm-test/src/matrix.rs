//! Every PKCS#11 implementation that runs here, as one fixture type: [`Token::start`] brings
//! up a private, freshly initialised token of a [`TokenKind`] for one test (its own directory,
//! daemons and environment; openCryptoki's system-wide soft token is serialised with a file
//! lock instead), and [`Token`] tells the test the module, the URIs, the environment a `kpki`
//! process needs, and which algorithms the token can and cannot do. Dropping the token kills
//! the daemons it started, releases the lock and removes its directory.
//!
//! What each token can do comes from its own mechanism list (`pkcs11-tool -M` /
//! `C_GetMechanismInfo`; NSS through kpki, as pkcs11-tool cannot pass its init arguments),
//! measured on Debian bookworm; the conformance test holds kpki to it (supported ones made
//! and used, the others refused naming the mechanism or range):
//!
//! | token | RSA key sizes | EC | so |
//! |---|---|---|---|
//! | SoftHSMv2 2.6.1 | 512–16384 | `CKM_EC_KEY_PAIR_GEN` | all five |
//! | Kryoptic 1.5.4 (`minimal`) | 1024–16384 | `CKM_EC_KEY_PAIR_GEN` (P-256/384/521) | all five |
//! | openCryptoki 3.8.1 soft token | 512–4096 | none | RSA only |
//! | tpm2-pkcs11 1.9.0 on swtpm 0.7.1 | 1024–3072 | `CKM_EC_KEY_PAIR_GEN` (P-256/384) | no RSA-4096 |
//! | NSS softokn 3.87 | 2048–4096 made and used by the conformance test | `CKM_EC_KEY_PAIR_GEN` | all five |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::daemon::{Daemon, FileLock};
use crate::tpm2::Tpm2;

/// The PKCS#11 implementations of the test matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// SoftHSMv2 (Debian `softhsm2`), one token directory per process.
    SoftHsm,
    /// Kryoptic, built from crates.io by `scripts/build-kryoptic`; own config and sqlite file.
    Kryoptic,
    /// openCryptoki's soft token (Debian `opencryptoki`): one per machine, serialised.
    OpenCryptoki,
    /// tpm2-pkcs11 on swtpm with tpm2-abrmd on a private D-Bus session bus.
    Tpm2,
    /// NSS softokn (`libsoftokn3.so`) loaded directly, with `C_Initialize` reserved arguments.
    Nss,
}

/// The RSA and ECDSA algorithm names kpki knows (`--algorithm` values).
pub const ALGORITHMS: [&str; 5] = [
    "RSA-2048",
    "RSA-3072",
    "RSA-4096",
    "ECDSA-P256",
    "ECDSA-P384",
];

impl TokenKind {
    /// Every kind, in matrix order.
    pub const ALL: [TokenKind; 5] = [
        TokenKind::SoftHsm,
        TokenKind::Kryoptic,
        TokenKind::OpenCryptoki,
        TokenKind::Tpm2,
        TokenKind::Nss,
    ];

    /// A short name for test names and reports.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::SoftHsm => "softhsm",
            TokenKind::Kryoptic => "kryoptic",
            TokenKind::OpenCryptoki => "opencryptoki",
            TokenKind::Tpm2 => "tpm2",
            TokenKind::Nss => "nss",
        }
    }

    /// The algorithms the token can generate and sign with (see the module table).
    pub fn supported(self) -> Vec<&'static str> {
        ALGORITHMS
            .into_iter()
            .filter(|a| !self.unsupported().iter().any(|(u, _)| u == a))
            .collect()
    }

    /// The algorithms the token cannot do, each with the text kpki's refusal must contain
    /// (the missing mechanism or the supported key-size range).
    pub fn unsupported(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // No EC mechanism at all in the soft token's mechanism list.
            TokenKind::OpenCryptoki => &[
                ("ECDSA-P256", "CKM_EC_KEY_PAIR_GEN"),
                ("ECDSA-P384", "CKM_EC_KEY_PAIR_GEN"),
            ],
            // CKM_RSA_PKCS_KEY_PAIR_GEN reports ulMaxKeySize 3072 (the TPM's own limit).
            TokenKind::Tpm2 => &[("RSA-4096", "3072")],
            TokenKind::SoftHsm | TokenKind::Kryoptic | TokenKind::Nss => &[],
        }
    }

    /// True when the token can be taken away and brought back under a running daemon
    /// (served by `p11-kit server`, or a TPM whose resource manager can restart).
    pub fn can_stop(self) -> bool {
        matches!(
            self,
            TokenKind::SoftHsm | TokenKind::Kryoptic | TokenKind::Tpm2
        )
    }
}

/// A private token for one test. See the module documentation.
#[derive(Debug)]
pub struct Token {
    kind: TokenKind,
    module: PathBuf,
    label: String,
    pin_file: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
    init_reserved: Option<String>,
    tpm2: Option<Tpm2>,
    daemons: Vec<Daemon>,
    _lock: Option<FileLock>,
    _env_guard: Option<MutexGuard<'static, ()>>,
}

/// What a token kind's setup hands back to [`Token::start`].
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) module: PathBuf,
    pub(crate) label: String,
    pub(crate) pin: String,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) init_reserved: Option<String>,
    pub(crate) tpm2: Option<Tpm2>,
    pub(crate) daemons: Vec<Daemon>,
    pub(crate) lock: Option<FileLock>,
}

/// Tests in one process share its environment; tokens that set it are taken one at a time.
fn env_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_dir(kind: TokenKind) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let root = std::env::temp_dir().join("kpki-tokens");
    std::fs::create_dir_all(&root).expect("create token root");
    remove_stale(&root);
    let dir = root.join(format!(
        "{}-{}-{}",
        std::process::id(),
        kind.name(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create token dir");
    dir
}

/// Removes the directories of test processes that no longer run.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next() else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            crate::daemon::kill_recorded(&e.path());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Percent-encodes `s` for a PKCS#11 URI (RFC 7512: everything but unreserved characters).
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Token {
    /// Brings up a fresh token of `kind`, sets the environment its module needs in this
    /// process (so `kpki` processes started by the test inherit it) and returns it. Panics
    /// with the install hint when a package is missing.
    pub fn start(kind: TokenKind) -> Token {
        let guard = env_lock();
        let dir = new_dir(kind);
        let parts = match kind {
            TokenKind::SoftHsm => softhsm_parts(),
            TokenKind::Kryoptic => crate::kryoptic::start(&dir),
            TokenKind::OpenCryptoki => crate::opencryptoki::start(&dir),
            TokenKind::Tpm2 => crate::tpm2::start(&dir),
            TokenKind::Nss => crate::nss::start(&dir),
        };
        let pin_file = dir.join("user.pin");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&pin_file, &parts.pin).expect("write pin file");
            std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600))
                .expect("chmod pin file");
        }
        let token = Token {
            kind,
            module: parts.module,
            label: parts.label,
            pin_file,
            dir,
            env: parts.env,
            init_reserved: parts.init_reserved,
            tpm2: parts.tpm2,
            daemons: parts.daemons,
            _lock: parts.lock,
            _env_guard: Some(guard),
        };
        token.export_env();
        token
    }

    /// Which implementation this is.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The PKCS#11 module.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The file holding the user PIN (mode 0600).
    pub fn pin_file(&self) -> &Path {
        &self.pin_file
    }

    /// The user PIN.
    pub fn pin(&self) -> String {
        std::fs::read_to_string(&self.pin_file).expect("read pin file")
    }

    /// This token's private directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `C_Initialize` reserved argument string the module needs (NSS), if any.
    pub fn init_reserved(&self) -> Option<&str> {
        self.init_reserved.as_deref()
    }

    /// The URI query: module, `x-init-reserved` when the module needs it, PIN file.
    pub fn uri_query(&self) -> String {
        self.uri_query_for(&self.module)
    }

    /// The URI query with another module (e.g. the p11-kit client in front of this token).
    pub fn uri_query_for(&self, module: &Path) -> String {
        let mut q = format!("module-path={}", module.display());
        if module == self.module
            && let Some(r) = &self.init_reserved
        {
            q.push_str("&x-init-reserved=");
            q.push_str(&pct(r));
        }
        q.push_str(&format!("&pin-source=file:{}", self.pin_file.display()));
        q
    }

    /// The token's URI.
    pub fn token_uri(&self) -> String {
        format!("pkcs11:token={}?{}", pct(&self.label), self.uri_query())
    }

    /// The URI of key `object` on this token.
    pub fn key_uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={}?{}",
            pct(&self.label),
            pct(object),
            self.uri_query()
        )
    }

    /// The environment a process using the module needs (`SOFTHSM2_CONF`, `KRYOPTIC_CONF`,
    /// `TPM2_PKCS11_TCTI`, `TPM2_PKCS11_STORE`, `DBUS_SESSION_BUS_ADDRESS`, ...).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// A command for `program` with this token's environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Sets this token's environment in this process (done by [`Token::start`]; tests in one
    /// process take tokens one at a time, see `env_lock`).
    #[allow(unsafe_code)]
    fn export_env(&self) {
        for (k, v) in &self.env {
            // SAFETY: the token's env lock is held, and the fixture runs before the test loads
            // a module or starts threads that read these variables.
            unsafe { std::env::set_var(k, v) };
        }
    }

    /// The TPM's daemons (swtpm, tpm2-abrmd) for outage tests; panics for other kinds.
    pub fn tpm2(&mut self) -> &mut Tpm2 {
        let kind = self.kind;
        self.tpm2
            .as_mut()
            .unwrap_or_else(|| panic!("{} is not a TPM token", kind.name()))
    }

    /// Panics with the logs when a daemon this token started has exited.
    pub fn assert_daemons_running(&mut self) {
        let log = self.dir.join("daemons.log");
        for d in &mut self.daemons {
            d.assert_running(&log);
        }
        if let Some(t) = self.tpm2.as_mut() {
            t.assert_running();
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        // Daemons first (they hold files in the directory), then the lock, then the files.
        self.tpm2.take();
        self.daemons.clear();
        if self.kind == TokenKind::OpenCryptoki {
            crate::opencryptoki::stop(&self.dir);
        }
        self._lock.take();
        if self.kind != TokenKind::SoftHsm {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn softhsm_parts() -> Parts {
    let t = crate::token();
    Parts {
        module: crate::module(),
        label: t.label,
        pin: crate::USER_PIN.to_string(),
        env: vec![(
            "SOFTHSM2_CONF".into(),
            crate::softhsm().conf().display().to_string(),
        )],
        init_reserved: None,
        tpm2: None,
        daemons: Vec::new(),
        lock: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_and_unsupported_partition_the_algorithms() {
        for k in TokenKind::ALL {
            let s = k.supported();
            assert_eq!(s.len() + k.unsupported().len(), ALGORITHMS.len(), "{k:?}");
            assert!(s.contains(&"RSA-2048"), "{k:?}");
        }
    }

    #[test]
    fn percent_encoding_keeps_unreserved_only() {
        for (input, want) in [
            ("kpki", "kpki"),
            ("NSS Certificate DB", "NSS%20Certificate%20DB"),
            ("configdir='sql:/d'", "configdir%3D%27sql%3A/d%27"),
            ("a;b&c=d", "a%3Bb%26c%3Dd"),
        ] {
            assert_eq!(pct(input), want);
        }
    }
}
