//! One initialised PKCS#11 context per module per process.
//!
//! `C_Initialize` may run once per process and `C_Finalize` ends every user of the module,
//! so contexts live in a process-wide table and are only re-initialised when a module
//! (e.g. a remote `p11-kit-client.so`) lost its connection and must start afresh.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use kpki_signer::{KeyError, Result};

struct Entry {
    ctx: Pkcs11,
    epoch: u64,
}

fn table() -> &'static Mutex<HashMap<PathBuf, Entry>> {
    static TABLE: OnceLock<Mutex<HashMap<PathBuf, Entry>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn module_error(path: &Path, problem: impl Into<String>) -> KeyError {
    KeyError::Module {
        module: path.display().to_string(),
        problem: problem.into(),
    }
}

fn load(path: &Path) -> Result<Pkcs11> {
    if !path.exists() {
        return Err(module_error(
            path,
            "file not found (is the HSM client library installed? e.g. apt-get install softhsm2)",
        ));
    }
    let ctx = Pkcs11::new(path).map_err(|e| module_error(path, format!("cannot load: {e}")))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(module_error(
            path,
            format!("C_Initialize failed: {}", crate::errors::describe(&e)),
        )),
    }
}

/// The context of the module at `path`, loading and initialising it on first use,
/// with an epoch that changes each time it is re-initialised.
pub fn module(path: &Path) -> Result<(Pkcs11, u64)> {
    let mut table = table()
        .lock()
        .map_err(|_| module_error(path, "module table poisoned"))?;
    if let Some(e) = table.get(path) {
        return Ok((e.ctx.clone(), e.epoch));
    }
    let ctx = load(path)?;
    table.insert(
        path.to_path_buf(),
        Entry {
            ctx: ctx.clone(),
            epoch: 0,
        },
    );
    Ok((ctx, 0))
}

/// Finalises and re-initialises the module if it is still at `epoch` (another thread may
/// already have done it), so a module whose transport broke can reconnect.
pub fn reinitialize(path: &Path, epoch: u64) -> Result<(Pkcs11, u64)> {
    let mut table = table()
        .lock()
        .map_err(|_| module_error(path, "module table poisoned"))?;
    if let Some(e) = table.get(path).filter(|e| e.epoch != epoch) {
        return Ok((e.ctx.clone(), e.epoch));
    }
    let next = epoch + 1;
    if let Some(old) = table.remove(path) {
        // Errors are expected here: the module is broken, which is why we are here.
        let _ = old.ctx.finalize();
    }
    let ctx = load(path)?;
    table.insert(
        path.to_path_buf(),
        Entry {
            ctx: ctx.clone(),
            epoch: next,
        },
    );
    Ok((ctx, next))
}
