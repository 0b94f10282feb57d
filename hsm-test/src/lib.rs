//! SoftHSMv2 fixture for tests and benches.
//!
//! The first call in a process creates that process's own token directory (processes
//! sharing one race, see the PKCS#11 notes) and points `SOFTHSM2_CONF` at it, before any
//! PKCS#11 module is loaded; [`token`] then initialises a fresh token in it through
//! `hsm-test/softhsm-token.sh`. Missing tools fail loudly with the install hint.
#![allow(unsafe_code)] // `std::env::set_var`, done once before any module is loaded.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a test fixture: failing loudly is the point.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where Debian's softhsm2 package puts the module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The user PIN of every test token.
pub const USER_PIN: &str = "1234";
/// The SO PIN of every test token.
pub const SO_PIN: &str = "5678";

/// This process's SoftHSM directory.
#[derive(Debug)]
pub struct SoftHsm {
    dir: PathBuf,
    conf: PathBuf,
}

/// A freshly initialised token in this process's directory.
#[derive(Debug, Clone)]
pub struct TestToken {
    /// Token label.
    pub label: String,
    /// File holding the user PIN (mode 0600).
    pub pin_file: PathBuf,
}

/// Panics with an install hint unless `tool` is on PATH (tests never skip silently).
pub fn require_tool(tool: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| {
        panic!(
            "{tool} not found on PATH: run scripts/setup (it installs softhsm2, opensc, openssl, p11-kit, etcd, cfssl)"
        )
    })
}

/// Where `tool` is on PATH (`command -v`), if anywhere.
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .expect("run sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// The SoftHSM module path; panics with an install hint when softhsm2 is not installed.
pub fn module() -> PathBuf {
    let p = PathBuf::from(SOFTHSM_MODULE);
    assert!(
        p.exists(),
        "{SOFTHSM_MODULE} not found: run scripts/setup (apt-get install softhsm2)"
    );
    p
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("softhsm-token.sh")
}

/// This process's SoftHSM directory, created on first use (which also sets `SOFTHSM2_CONF`).
pub fn softhsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        module();
        let root = std::env::temp_dir().join("kpki-hsm-test");
        std::fs::create_dir_all(&root).expect("create hsm-test root");
        remove_stale(&root);
        let dir = root.join(format!("{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create token dir");
        let conf = dir.join("softhsm2.conf");
        // SAFETY: called once, before any PKCS#11 module of this process reads it.
        unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
        SoftHsm { dir, conf }
    })
}

/// Removes directories of test processes that no longer run.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_ok() && !Path::new("/proc").join(&name).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl SoftHsm {
    /// The token directory root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `SOFTHSM2_CONF` file.
    pub fn conf(&self) -> &Path {
        &self.conf
    }
}

/// Initialises a new token (unique label within this process) and returns it.
pub fn token() -> TestToken {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let label = format!("kpki-test-{}", NEXT.fetch_add(1, Ordering::SeqCst));
    token_with_label(&label)
}

/// Initialises a new token with `label`.
pub fn token_with_label(label: &str) -> TestToken {
    let hsm = softhsm();
    let out = Command::new("bash")
        .arg(script())
        .arg(&hsm.dir)
        .arg(label)
        .arg(USER_PIN)
        .arg(SO_PIN)
        .output()
        .expect("run softhsm-token.sh");
    assert!(
        out.status.success(),
        "softhsm-token.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pin_file = hsm.dir.join(format!("{label}.pin"));
    write_private(&pin_file, USER_PIN);
    TestToken {
        label: label.to_string(),
        pin_file,
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write pin file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod pin file");
}

impl TestToken {
    /// The token's URI (module and PIN file included).
    pub fn token_uri(&self) -> String {
        format!(
            "pkcs11:token={}?module-path={}&pin-source=file:{}",
            self.label,
            module().display(),
            self.pin_file.display()
        )
    }

    /// The URI of object `label` on this token.
    pub fn key_uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={}&pin-source=file:{}",
            self.label,
            module().display(),
            self.pin_file.display()
        )
    }

    /// The same key URI with the PIN given inline (`pin-value`).
    pub fn key_uri_with_pin(&self, object: &str, pin: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={}&pin-value={pin}",
            self.label,
            module().display()
        )
    }
}

mod daemon;
pub mod kryoptic;
pub mod matrix;
pub mod nss;
pub mod opencryptoki;
pub mod tpm2;
