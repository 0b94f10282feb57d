//! A token: found by label or serial, logged in once, with a bounded session pool that
//! reconnects when the token goes away and comes back.
//!
//! Login state is per token per process (PKCS#11), so one "anchor" session holds the login
//! for the life of the connection. Signing sessions are leased from a pool of at most
//! `pool_size`; callers beyond that wait. Any error that means the connection was lost
//! marks the connection broken: the next lease finds the slot again by label/serial, logs
//! in again and bumps the generation so keys look their handles up again. Sessions are
//! opened "no-drop" and closed explicitly, so a session of a broken, re-initialised module
//! is never closed by handle number against its successor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use kpki_signer::{KeyError, PinSource, Pkcs11Uri, Result};
use zeroize::Zeroizing;

use crate::context;
use crate::errors::{describe, is_connection_loss};

/// Default number of signing sessions per token.
pub const DEFAULT_POOL_SIZE: usize = 2;

/// How a token is named: label and/or serial (never by slot number, which changes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Selector {
    module: PathBuf,
    label: Option<String>,
    serial: Option<String>,
}

struct Connection {
    ctx: Pkcs11,
    slot: Slot,
    anchor: Session,
    mechanisms: Arc<[MechanismType]>,
}

struct State {
    connection: Option<Connection>,
    generation: u64,
    idle: Vec<Session>,
    in_use: usize,
    peak_in_use: usize,
    pin: Option<Zeroizing<String>>,
    needs_reinit: bool,
}

/// One token of one module, shared by every key on it in this process.
pub struct Token {
    selector: Selector,
    name: String,
    pool_size: usize,
    gate: tokio::sync::Semaphore,
    state: Mutex<State>,
    returned: Condvar,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// A session leased from a token's pool; returned on drop unless marked broken.
pub struct Lease<'a> {
    token: &'a Token,
    session: Option<Session>,
    generation: u64,
    mechanisms: Arc<[MechanismType]>,
}

impl Lease<'_> {
    /// The leased session.
    pub fn session(&self) -> &Session {
        // Invariant: `session` is only taken in `drop`/`broken`, which consume the lease.
        self.session
            .as_ref()
            .unwrap_or_else(|| unreachable!("lease without session"))
    }

    /// The connection generation this session belongs to (changes on every reconnect).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True when the token lists this mechanism.
    pub fn has_mechanism(&self, m: MechanismType) -> bool {
        self.mechanisms.contains(&m)
    }

    /// Reports the connection as lost: the session is discarded and the next lease reconnects.
    pub fn broken(mut self) {
        let session = self.session.take();
        self.token.release(session, self.generation, true);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            self.token.release(Some(s), self.generation, false);
        }
    }
}

fn registry() -> &'static Mutex<HashMap<Selector, Arc<Token>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Selector, Arc<Token>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The module path of a URI: its `module-path`, else `$KPKI_PKCS11_MODULE`.
pub fn module_path(uri: &Pkcs11Uri) -> Result<PathBuf> {
    if let Some(p) = &uri.module_path {
        return Ok(p.clone());
    }
    std::env::var_os("KPKI_PKCS11_MODULE").map(PathBuf::from).ok_or_else(|| KeyError::InvalidUri {
        uri: uri.to_string(),
        problem: "no module-path (add ?module-path=/usr/lib/softhsm/libsofthsm2.so or set KPKI_PKCS11_MODULE)".into(),
    })
}

fn read_pin(uri: &Pkcs11Uri) -> Result<Option<Zeroizing<String>>> {
    match &uri.pin {
        None => Ok(None),
        Some(PinSource::Value(v)) => Ok(Some(v.clone())),
        Some(PinSource::File(path)) => {
            let raw = Zeroizing::new(std::fs::read(path).map_err(|e| KeyError::io(path, e))?);
            let text = std::str::from_utf8(&raw)
                .map_err(|_| KeyError::key_file(path, "PIN file is not UTF-8 text"))?;
            Ok(Some(Zeroizing::new(
                text.trim_end_matches(['\n', '\r']).to_string(),
            )))
        }
    }
}

impl Token {
    /// The process-wide token named by `uri`, created on first use with `pool_size` sessions.
    /// A PIN in `uri` replaces the remembered one while the token is not logged in.
    pub fn get(uri: &Pkcs11Uri, pool_size: usize) -> Result<Arc<Token>> {
        if uri.token.is_none() && uri.serial.is_none() {
            return Err(KeyError::InvalidUri {
                uri: uri.to_string(),
                problem: "name the token by token= (label) or serial=; slot numbers change".into(),
            });
        }
        let selector = Selector {
            module: module_path(uri)?,
            label: uri.token.clone(),
            serial: uri.serial.clone(),
        };
        let pin = read_pin(uri)?;
        let mut reg = registry()
            .lock()
            .map_err(|_| KeyError::Crypto("token registry poisoned".into()))?;
        if let Some(t) = reg.get(&selector) {
            if pin.is_some() {
                let mut st = t.lock();
                if st.connection.is_none() {
                    st.pin = pin;
                }
            }
            return Ok(Arc::clone(t));
        }
        let pool_size = pool_size.max(1);
        let token = Arc::new(Token {
            name: uri.token_description(),
            selector: selector.clone(),
            pool_size,
            gate: tokio::sync::Semaphore::new(pool_size),
            state: Mutex::new(State {
                connection: None,
                generation: 0,
                idle: Vec::new(),
                in_use: 0,
                peak_in_use: 0,
                pin,
                needs_reinit: false,
            }),
            returned: Condvar::new(),
        });
        reg.insert(selector, Arc::clone(&token));
        Ok(token)
    }

    /// The token's label (or serial) for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The module path.
    pub fn module(&self) -> &Path {
        &self.selector.module
    }

    /// Maximum number of concurrent signing sessions.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// Sessions currently leased.
    pub fn sessions_in_use(&self) -> usize {
        self.lock().in_use
    }

    /// The most sessions ever leased at once.
    pub fn sessions_peak(&self) -> usize {
        self.lock().peak_in_use
    }

    /// The async gate sized like the pool (see `Signer::concurrency_gate`).
    pub fn gate(&self) -> &tokio::sync::Semaphore {
        &self.gate
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn unavailable(&self, problem: impl Into<String>) -> KeyError {
        KeyError::Unavailable {
            token: self.name.clone(),
            problem: problem.into(),
        }
    }

    /// Leases a signing session, connecting (or reconnecting) first if needed. Waits while
    /// all `pool_size` sessions are leased.
    pub fn lease(&self) -> Result<Lease<'_>> {
        let mut st = self.lock();
        loop {
            if st.connection.is_none() {
                self.connect(&mut st)?;
            }
            let state: &mut State = &mut st;
            let Some(conn) = state.connection.as_ref() else {
                continue;
            };
            let mechanisms = Arc::clone(&conn.mechanisms);
            if let Some(session) = state.idle.pop() {
                state.in_use += 1;
                state.peak_in_use = state.peak_in_use.max(state.in_use);
                return Ok(Lease {
                    token: self,
                    session: Some(session),
                    generation: state.generation,
                    mechanisms,
                });
            }
            if state.in_use < self.pool_size {
                match conn.ctx.open_ro_session_no_drop(conn.slot) {
                    Ok(session) => {
                        state.in_use += 1;
                        state.peak_in_use = state.peak_in_use.max(state.in_use);
                        return Ok(Lease {
                            token: self,
                            session: Some(session),
                            generation: state.generation,
                            mechanisms,
                        });
                    }
                    Err(e) if is_connection_loss(&e) => {
                        self.disconnect(state);
                        return Err(self.unavailable(format!("C_OpenSession: {}", describe(&e))));
                    }
                    Err(e) => return Err(crate::errors::op_error(&self.name, "C_OpenSession", &e)),
                }
            }
            st = self.returned.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn release(&self, session: Option<Session>, generation: u64, broken: bool) {
        let mut st = self.lock();
        st.in_use = st.in_use.saturating_sub(1);
        if let Some(session) = session {
            if broken || generation != st.generation {
                // The session's connection is gone; closing it could hit a successor's handle.
                drop(session);
            } else {
                st.idle.push(session);
            }
        }
        if broken && generation == st.generation {
            self.disconnect(&mut st);
        }
        drop(st);
        self.returned.notify_one();
    }

    /// Runs `f` on a fresh read-write session (key generation and administration).
    pub fn with_rw_session<T>(&self, f: impl FnOnce(&Session) -> Result<T>) -> Result<T> {
        let session = {
            let mut st = self.lock();
            if st.connection.is_none() {
                self.connect(&mut st)?;
            }
            let conn = st
                .connection
                .as_ref()
                .ok_or_else(|| self.unavailable("not connected"))?;
            match conn.ctx.open_rw_session(conn.slot) {
                Ok(s) => s,
                Err(e) => {
                    let err = crate::errors::op_error(&self.name, "C_OpenSession (read-write)", &e);
                    if is_connection_loss(&e) {
                        self.disconnect(&mut st);
                    }
                    return Err(err);
                }
            }
        };
        f(&session)
    }

    /// True when the token answers now (reconnecting if it was lost).
    pub fn probe(&self) -> bool {
        let mut st = self.lock();
        if let Some(conn) = st.connection.as_ref() {
            match conn.anchor.get_session_info() {
                Ok(_) => return true,
                Err(_) => self.disconnect(&mut st),
            }
        }
        self.connect(&mut st).is_ok()
    }

    fn disconnect(&self, st: &mut State) {
        // Closing is safe here: the module has not been re-initialised yet, so these handles
        // still name our own sessions (or nothing). Errors are expected when the token is gone.
        for session in st.idle.drain(..) {
            let _ = session.close();
        }
        if let Some(conn) = st.connection.take() {
            let _ = conn.anchor.close();
            st.generation += 1;
            st.needs_reinit = true;
            tracing::warn!(token = %self.name, "PKCS#11 connection lost; will reconnect on next use");
        }
    }

    fn connect(&self, st: &mut State) -> Result<()> {
        let module = &self.selector.module;
        let (mut ctx, epoch) = context::module(module)?;
        if st.needs_reinit {
            // A module whose transport broke (remote tokens) only recovers after re-initialising;
            // first see whether the slot answers as is.
            if self.find_slot(&ctx).is_err() {
                ctx = context::reinitialize(module, epoch)?.0;
            }
        }
        let slot = match self.find_slot(&ctx) {
            // The token was there before: it went away and may come back.
            Err(KeyError::TokenNotFound(what)) if st.needs_reinit => {
                return Err(self.unavailable(format!("token went away ({what})")));
            }
            other => other?,
        };
        let anchor = ctx
            .open_ro_session_no_drop(slot)
            .map_err(|e| crate::errors::op_error(&self.name, "C_OpenSession", &e))?;
        if let Err(e) = self.login(&anchor, st.pin.as_ref()) {
            let _ = anchor.close();
            return Err(e);
        }
        let mechanisms: Arc<[MechanismType]> = ctx
            .get_mechanism_list(slot)
            .map_err(|e| crate::errors::op_error(&self.name, "C_GetMechanismList", &e))?
            .into();
        st.needs_reinit = false;
        st.connection = Some(Connection {
            ctx,
            slot,
            anchor,
            mechanisms,
        });
        Ok(())
    }

    /// One pass over the slots: `Ok(None)` when every token answered and none matches,
    /// `Err` when a call failed (possibly transiently).
    fn scan_slots(&self, ctx: &Pkcs11) -> std::result::Result<Option<Slot>, Error> {
        for slot in ctx.get_slots_with_token()? {
            let info = ctx.get_token_info(slot)?;
            let label_ok = self
                .selector
                .label
                .as_deref()
                .is_none_or(|l| info.label().trim_end() == l);
            let serial_ok = self
                .selector
                .serial
                .as_deref()
                .is_none_or(|s| info.serial_number().trim_end() == s);
            if label_ok && serial_ok {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    fn find_slot(&self, ctx: &Pkcs11) -> Result<Slot> {
        // SoftHSM's file store can transiently fail C_GetTokenInfo while another process
        // writes it; retry briefly before concluding the token is absent.
        let mut last = None;
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(40));
            }
            match self.scan_slots(ctx) {
                Ok(Some(slot)) => return Ok(slot),
                Ok(None) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if is_connection_loss(&e) => {
                Err(self.unavailable(format!("listing slots: {}", describe(&e))))
            }
            _ => Err(KeyError::TokenNotFound(format!(
                "no token with {} in module {}",
                match (&self.selector.label, &self.selector.serial) {
                    (Some(l), Some(s)) => format!("label {l:?} and serial {s:?}"),
                    (Some(l), None) => format!("label {l:?}"),
                    (None, Some(s)) => format!("serial {s:?}"),
                    (None, None) => "any label".into(),
                },
                self.selector.module.display()
            ))),
        }
    }

    fn login(&self, session: &Session, pin: Option<&Zeroizing<String>>) -> Result<()> {
        let login_error = |problem: &str| KeyError::Login {
            token: self.name.clone(),
            problem: problem.to_string(),
        };
        let Some(pin) = pin else {
            return Err(login_error(
                "no PIN given: add pin-source=file:/path/to/pin to the key URI",
            ));
        };
        let auth = AuthPin::new(pin.as_str().into());
        match session.login(UserType::User, Some(&auth)) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(Error::Pkcs11(RvError::PinIncorrect, _)) => {
                Err(login_error("wrong PIN (CKR_PIN_INCORRECT)"))
            }
            Err(Error::Pkcs11(RvError::PinLocked, _)) => {
                Err(login_error("PIN is locked (CKR_PIN_LOCKED)"))
            }
            Err(Error::Pkcs11(RvError::PinLenRange, _)) => {
                Err(login_error("PIN has the wrong length (CKR_PIN_LEN_RANGE)"))
            }
            Err(Error::Pkcs11(RvError::UserPinNotInitialized, _)) => {
                Err(login_error("user PIN not initialised on the token"))
            }
            Err(e) if is_connection_loss(&e) => {
                Err(self.unavailable(format!("C_Login: {}", describe(&e))))
            }
            Err(e) => Err(login_error(&describe(&e))),
        }
    }
}
