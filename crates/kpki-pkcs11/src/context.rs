//! One initialised PKCS#11 context per module (and `C_Initialize` arguments) per process.
//!
//! `C_Initialize` may run once per process and `C_Finalize` ends every user of the module,
//! so contexts live in a process-wide table keyed by the module path and the `pReserved`
//! string some modules need (NSS softokn's `configdir=…`, the URI's `x-init-reserved`).
//! A context is only re-initialised when a module lost its connection and must start
//! afresh (a remote `p11-kit-client.so`, tpm2-pkcs11 after its resource manager restarted);
//! every user of the module sees the epoch change and finds its sessions and handles again.
//!
//! Token information cryptoki cannot convert is read again through the module's own
//! function list, without cryptoki's conversion of `utcTime` (openCryptoki's soft token
//! reports it blank-padded, which cryptoki refuses, and would otherwise hide the token).

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error, Rv, RvError};
use cryptoki::slot::Slot;
use kpki_signer::{KeyError, Result};

/// Which module, initialised how: the path and the `C_Initialize` `pReserved` string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleId {
    /// Path of the shared library.
    pub path: PathBuf,
    /// The string passed as `pReserved` to `C_Initialize`, if any.
    pub init_reserved: Option<String>,
}

impl ModuleId {
    /// A module loaded without `C_Initialize` arguments.
    pub fn plain(path: impl Into<PathBuf>) -> ModuleId {
        ModuleId {
            path: path.into(),
            init_reserved: None,
        }
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.init_reserved {
            None => write!(f, "{}", self.path.display()),
            Some(r) => write!(f, "{} (x-init-reserved {r:?})", self.path.display()),
        }
    }
}

/// The token information kpki needs, read without parsing `utcTime`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenInfo {
    /// `label`, trailing blanks removed.
    pub label: String,
    /// `manufacturerID`, trailing blanks removed.
    pub manufacturer: String,
    /// `model`, trailing blanks removed.
    pub model: String,
    /// `serialNumber`, trailing blanks removed.
    pub serial: String,
    /// `flags` (`CKF_*`).
    pub flags: u64,
    /// `ulMaxSessionCount` (0: no limit stated).
    pub max_sessions: u64,
}

/// `CKF_TOKEN_INITIALIZED`.
pub(crate) const CKF_TOKEN_INITIALIZED: u64 = 0x0000_0400;

/// `CKF_USER_PIN_TO_BE_CHANGED`.
pub(crate) const CKF_USER_PIN_TO_BE_CHANGED: u64 = 0x0008_0000;

impl TokenInfo {
    fn from_raw(raw: &cryptoki_sys::CK_TOKEN_INFO) -> TokenInfo {
        let text = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .trim_end_matches([' ', '\0'])
                .to_string()
        };
        TokenInfo {
            label: text(&raw.label),
            manufacturer: text(&raw.manufacturerID),
            model: text(&raw.model),
            serial: text(&raw.serialNumber),
            flags: raw.flags,
            max_sessions: raw.ulMaxSessionCount,
        }
    }
}

/// The module's own function list (loaded again: the same library instance), used for
/// calls whose cryptoki wrappers refuse what some tokens return.
struct Raw {
    _library: cryptoki_sys::Pkcs11,
    list: cryptoki_sys::CK_FUNCTION_LIST,
}

impl Raw {
    // The one place kpki reaches past cryptoki: its TokenInfo conversion refuses what some
    // tokens return, and it has no way to hand out the function list.
    #[allow(unsafe_code)]
    fn load(path: &Path) -> Option<Raw> {
        // SAFETY: loading the same PKCS#11 module cryptoki already loaded; the library
        // stays loaded as long as `_library` lives, which outlives every use of `list`.
        unsafe {
            let library = cryptoki_sys::Pkcs11::new(path).ok()?;
            let get = library.C_GetFunctionList.as_ref().ok()?;
            let mut list: *mut cryptoki_sys::CK_FUNCTION_LIST = std::ptr::null_mut();
            if get(&mut list) != cryptoki_sys::CKR_OK || list.is_null() {
                return None;
            }
            let list = *list;
            Some(Raw {
                _library: library,
                list,
            })
        }
    }

    #[allow(unsafe_code)]
    fn token_info(&self, slot: Slot) -> Option<std::result::Result<TokenInfo, Error>> {
        let f = self.list.C_GetTokenInfo?;
        let mut info = cryptoki_sys::CK_TOKEN_INFO::default();
        // SAFETY: a valid C_GetTokenInfo of an initialised module, writing into `info`.
        let rv = unsafe { f(slot.id(), &mut info) };
        Some(
            Rv::from(rv)
                .into_result(Function::GetTokenInfo)
                .map(|()| TokenInfo::from_raw(&info)),
        )
    }
}

/// The library's `C_GetInfo` strings, for messages and for telling implementations apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibraryInfo {
    /// `manufacturerID` (e.g. `tpm2-software.github.io`).
    pub manufacturer: String,
    /// `libraryDescription` (e.g. `TPM2.0 Cryptoki`).
    pub description: String,
}

impl LibraryInfo {
    /// tpm2-pkcs11: derives public-key usage from the TPM key and refuses templates that
    /// state it otherwise; takes no private keys through `C_CreateObject`.
    pub(crate) fn is_tpm2_pkcs11(&self) -> bool {
        self.manufacturer.contains("tpm2-software") || self.description.starts_with("TPM2")
    }
}

struct Entry {
    ctx: Pkcs11,
    epoch: u64,
    library: LibraryInfo,
    // Kept alive while the module may still read it.
    _reserved: Option<CString>,
}

/// Per module: the current epoch (shared with every [`Module`] handed out) and its raw
/// function list.
struct Shared {
    current: AtomicU64,
    raw: Option<Raw>,
    in_flight: AtomicUsize,
    drained: (Mutex<()>, Condvar),
    attached: AtomicUsize,
}

impl Shared {
    fn new(path: &Path) -> Shared {
        Shared {
            current: AtomicU64::new(0),
            raw: Raw::load(path),
            in_flight: AtomicUsize::new(0),
            drained: (Mutex::new(()), Condvar::new()),
            attached: AtomicUsize::new(0),
        }
    }

    /// Waits (at most `limit`) until no operation runs on the module's sessions.
    fn drain(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut guard = self.drained.0.lock().unwrap_or_else(|p| p.into_inner());
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    in_flight = self.in_flight.load(Ordering::SeqCst),
                    "re-initialising a PKCS#11 module while calls are still running on it"
                );
                return;
            }
            guard = self
                .drained
                .1
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// One operation running on a module's sessions: a re-initialisation waits for it (up to
/// [`DRAIN_LIMIT`]), so no call ever runs on a session number that a re-initialised module
/// may have given to someone else.
pub(crate) struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _guard = self
                .shared
                .drained
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.shared.drained.1.notify_all();
        }
    }
}

/// A token connected through a module: while any exists, looking for a missing token does
/// not re-initialise the module (that would cut the connected tokens off).
pub(crate) struct Attached {
    shared: Arc<Shared>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.shared.attached.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a re-initialisation waits for running calls to finish.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// An initialised module as handed to tokens: the context, the epoch it belongs to, and
/// what the library says it is.
#[derive(Clone)]
pub struct Module {
    /// The cryptoki context.
    pub ctx: Pkcs11,
    /// The initialisation this context belongs to (changes on every re-initialisation).
    pub epoch: u64,
    /// `C_GetInfo` of the library.
    pub library: LibraryInfo,
    shared: Arc<Shared>,
}

impl Module {
    /// False once the module was re-initialised after this context was handed out: its
    /// sessions and object handles are gone (and their numbers may be reused).
    pub(crate) fn is_current(&self) -> bool {
        self.shared.current.load(Ordering::SeqCst) == self.epoch
    }

    /// Counts a connected token until the guard is dropped.
    pub(crate) fn attach(&self) -> Attached {
        self.shared.attached.fetch_add(1, Ordering::SeqCst);
        Attached {
            shared: Arc::clone(&self.shared),
        }
    }

    /// How many tokens of this process are connected through the module.
    pub(crate) fn attached(&self) -> usize {
        self.shared.attached.load(Ordering::SeqCst)
    }

    /// Marks an operation as running on this context's sessions, or `None` when the module
    /// was re-initialised since (the caller must reconnect).
    pub(crate) fn enter(&self) -> Option<InFlight> {
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight {
            shared: Arc::clone(&self.shared),
        };
        self.is_current().then_some(guard)
    }

    /// `C_GetTokenInfo`. When cryptoki cannot convert what the token returned (a
    /// blank-padded `utcTime`), the same call again through the module's own function
    /// list, without that conversion. Not first: a module whose `C_GetFunctionList` hands
    /// out a new, uninitialised instance per call (p11-kit's client and proxy modules)
    /// answers that second list with `CKR_CRYPTOKI_NOT_INITIALIZED`.
    pub(crate) fn token_info(&self, slot: Slot) -> std::result::Result<TokenInfo, Error> {
        let t = match self.ctx.get_token_info(slot) {
            Ok(t) => t,
            Err(e @ Error::Pkcs11(..)) => return Err(e),
            Err(conversion) => {
                return match self.shared.raw.as_ref().and_then(|r| r.token_info(slot)) {
                    Some(Ok(info)) => Ok(info),
                    _ => Err(conversion),
                };
            }
        };
        let mut flags = 0;
        if t.token_initialized() {
            flags |= CKF_TOKEN_INITIALIZED;
        }
        if t.user_pin_to_be_changed() {
            flags |= CKF_USER_PIN_TO_BE_CHANGED;
        }
        Ok(TokenInfo {
            label: t.label().trim_end().to_string(),
            manufacturer: t.manufacturer_id().trim_end().to_string(),
            model: t.model().trim_end().to_string(),
            serial: t.serial_number().trim_end().to_string(),
            flags,
            max_sessions: match t.max_session_count() {
                cryptoki::slot::Limit::Max(n) => n,
                _ => 0,
            },
        })
    }
}

#[derive(Default)]
struct Table {
    entries: HashMap<ModuleId, Entry>,
    shared: HashMap<PathBuf, Arc<Shared>>,
    // Epochs are per library (C_Finalize ends every initialisation of it) and never go
    // back, even across a failed reload.
    epochs: HashMap<PathBuf, u64>,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(Table::default()))
}

fn module_error(id: &ModuleId, problem: impl Into<String>) -> KeyError {
    KeyError::Module {
        module: id.to_string(),
        problem: problem.into(),
    }
}

// `CInitializeArgs::new_with_reserved` is unsafe in cryptoki: it takes a raw pointer.
#[allow(unsafe_code)]
fn load(id: &ModuleId) -> Result<Entry> {
    if !id.path.exists() {
        return Err(module_error(
            id,
            "file not found (is the HSM client library installed? e.g. apt-get install softhsm2)",
        ));
    }
    // dlopen of a FIFO or a device would wait or read without end: shared objects only.
    if !id.path.is_file() {
        return Err(module_error(
            id,
            "not a regular file (a PKCS#11 module is a shared object)",
        ));
    }
    let ctx = Pkcs11::new(&id.path).map_err(|e| module_error(id, format!("cannot load: {e}")))?;
    let reserved = match &id.init_reserved {
        None => None,
        Some(r) => Some(
            CString::new(r.as_str())
                .map_err(|_| module_error(id, "x-init-reserved contains a NUL byte"))?,
        ),
    };
    let args = match &reserved {
        None => CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK),
        Some(c) => {
            let ptr = NonNull::new(c.as_ptr() as *mut std::ffi::c_void)
                .ok_or_else(|| module_error(id, "x-init-reserved: null pointer"))?;
            // SAFETY: `pReserved` points to a NUL-terminated string that lives in the
            // table entry (and so outlives the module's use of it).
            unsafe { CInitializeArgs::new_with_reserved(CInitializeFlags::OS_LOCKING_OK, ptr) }
        }
    };
    match ctx.initialize(args) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            let hint = match (&e, &id.init_reserved) {
                (Error::Pkcs11(RvError::ArgumentsBad, _), None) => {
                    " (this module needs C_Initialize arguments: add x-init-reserved=… to the \
                     key URI, e.g. NSS softokn's configdir='sql:/path/to/db' certPrefix='' \
                     keyPrefix='' secmod='secmod.db' flags=, percent-encoded)"
                }
                _ => "",
            };
            return Err(module_error(
                id,
                format!("C_Initialize failed: {}{hint}", crate::errors::describe(&e)),
            ));
        }
    }
    let library = ctx
        .get_library_info()
        .map(|i| LibraryInfo {
            manufacturer: i.manufacturer_id().trim_end().to_string(),
            description: i.library_description().trim_end().to_string(),
        })
        .unwrap_or_default();
    Ok(Entry {
        ctx,
        epoch: 0,
        library,
        _reserved: reserved,
    })
}

impl Table {
    fn shared(&mut self, path: &Path) -> Arc<Shared> {
        Arc::clone(
            self.shared
                .entry(path.to_path_buf())
                .or_insert_with(|| Arc::new(Shared::new(path))),
        )
    }

    fn handed_out(&mut self, id: &ModuleId) -> Option<Module> {
        let shared = self.shared(&id.path);
        let e = self.entries.get(id)?;
        Some(Module {
            ctx: e.ctx.clone(),
            epoch: e.epoch,
            library: e.library.clone(),
            shared,
        })
    }

    fn insert(&mut self, id: &ModuleId, mut entry: Entry) -> Module {
        let epoch = *self.epochs.get(&id.path).unwrap_or(&0);
        entry.epoch = epoch;
        let shared = self.shared(&id.path);
        shared.current.store(epoch, Ordering::SeqCst);
        let module = Module {
            ctx: entry.ctx.clone(),
            epoch,
            library: entry.library.clone(),
            shared,
        };
        self.entries.insert(id.clone(), entry);
        module
    }
}

/// The context of module `id`, loading and initialising it on first use.
pub fn module(id: &ModuleId) -> Result<Module> {
    let mut table = table()
        .lock()
        .map_err(|_| module_error(id, "module table poisoned"))?;
    if let Some(m) = table.handed_out(id) {
        return Ok(m);
    }
    let entry = load(id)?;
    Ok(table.insert(id, entry))
}

/// Finalises and re-initialises module `id` if it is still at `epoch` (another thread may
/// already have done it), so a module whose transport or state broke can start afresh.
/// Every other token of the module notices the epoch change and reconnects.
pub fn reinitialize(id: &ModuleId, epoch: u64) -> Result<Module> {
    let mut table = table()
        .lock()
        .map_err(|_| module_error(id, "module table poisoned"))?;
    let current = *table.epochs.get(&id.path).unwrap_or(&0);
    if current != epoch
        && let Some(m) = table.handed_out(id)
    {
        return Ok(m);
    }
    let next = current.max(epoch) + 1;
    table.epochs.insert(id.path.clone(), next);
    // Users of the old context see they are stale from here on, even if reloading fails;
    // calls already running finish first.
    let shared = table.shared(&id.path);
    shared.current.store(next, Ordering::SeqCst);
    shared.drain(DRAIN_LIMIT);
    // Every initialisation of this library ends with one C_Finalize.
    let same_library: Vec<ModuleId> = table
        .entries
        .keys()
        .filter(|k| k.path == id.path)
        .cloned()
        .collect();
    let mut finalized = false;
    for key in same_library {
        if let Some(old) = table.entries.remove(&key)
            && !finalized
        {
            finalized = true;
            // Errors are expected here: the module is broken, which is why we are here.
            if let Err(e) = old.ctx.finalize() {
                tracing::debug!(module = %id, error = ?e, "C_Finalize of a broken module");
            }
        }
    }
    tracing::debug!(module = %id, epoch = next, "PKCS#11 module re-initialised (C_Finalize + C_Initialize)");
    let entry = load(id)?;
    Ok(table.insert(id, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(label: &str, serial: &str, utc: &[u8; 16]) -> cryptoki_sys::CK_TOKEN_INFO {
        let mut t = cryptoki_sys::CK_TOKEN_INFO::default();
        let pad = |dst: &mut [u8], s: &str| {
            dst.fill(b' ');
            dst[..s.len()].copy_from_slice(s.as_bytes());
        };
        pad(&mut t.label, label);
        pad(&mut t.manufacturerID, "IBM Corp.");
        pad(&mut t.model, "IBM SoftTok");
        pad(&mut t.serialNumber, serial);
        t.utcTime = *utc;
        t.flags = 0x44D;
        t
    }

    #[test]
    fn token_info_is_read_whatever_utc_time_holds() {
        // (utcTime as tokens report it, label, serial)
        let cases: [(&[u8; 16], &str, &str); 4] = [
            (b"        12:56:54", "kpki", "123"),
            (b"2026112914213000", "kpki", "123"),
            (
                b"                ",
                "NSS Certificate DB",
                "0000000000000000",
            ),
            (&[0u8; 16], "a", "1"),
        ];
        for (utc, label, serial) in cases {
            let info = TokenInfo::from_raw(&raw(label, serial, utc));
            assert_eq!(info.label, label);
            assert_eq!(info.serial, serial);
            assert_eq!(info.manufacturer, "IBM Corp.");
            assert_eq!(info.model, "IBM SoftTok");
            assert_eq!(info.flags, 0x44D);
        }
    }

    #[test]
    fn module_ids_differ_by_init_arguments() {
        let a = ModuleId::plain("/usr/lib/x86_64-linux-gnu/libsoftokn3.so");
        let b = ModuleId {
            init_reserved: Some("configdir='sql:/a'".into()),
            ..a.clone()
        };
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "/usr/lib/x86_64-linux-gnu/libsoftokn3.so");
        assert!(
            b.to_string()
                .contains("x-init-reserved \"configdir='sql:/a'\"")
        );
    }

    #[test]
    fn missing_module_is_one_clear_error() {
        let err = module(&ModuleId::plain("/nonexistent/libnothing.so"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("/nonexistent/libnothing.so") && err.contains("file not found"),
            "{err}"
        );
    }
}
