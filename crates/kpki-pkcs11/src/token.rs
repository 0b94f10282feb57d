//! A token: found by label or serial, logged in once, with a bounded session pool that
//! reconnects when the token goes away and comes back, and re-initialises its module when
//! reconnecting is not enough.
//!
//! Login state is per token per process (PKCS#11), so one "anchor" session holds the login
//! for the life of the connection. Signing sessions are leased from a pool of at most
//! `pool_size`; callers beyond that wait. Recovery (`Token::run`) climbs a ladder:
//! a lost session reconnects (find the slot again, log in again, bump the generation so
//! keys look their handles up again); a token that keeps failing after that has its module
//! finalised and initialised again ([`context::reinitialize`]), which every other token of
//! that module notices through the module epoch. Sessions are opened "no-drop" and closed
//! only while their module is still the same initialisation, so a session number that a
//! re-initialised module gave to someone else is never closed or used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use kpki_signer::{KeyError, PinSource, Pkcs11Uri, Result};
use zeroize::Zeroizing;

use crate::context::{
    self, CKF_TOKEN_INITIALIZED, CKF_USER_PIN_TO_BE_CHANGED, InFlight, Module, ModuleId, TokenInfo,
};
use crate::errors::{Class, busy_error, class, describe, op_error};
use crate::retry::{BUSY_BUDGET, Backoff};

/// Default number of signing sessions per token.
pub(crate) const DEFAULT_POOL_SIZE: usize = 2;

/// How long a reconnect retries a failing token before the recovery ladder escalates.
const RECONNECT_BUDGET: Duration = Duration::from_millis(300);

/// How long a first connection's scan that found no match but an uninitialised token (or
/// no token at all) looks again (a reconnect gives up after [`RECONNECT_BUDGET`]): SoftHSM's file store shows a token as uninitialised (empty
/// label) while another process rewrites it, e.g. on every login; openCryptoki's soft token
/// can be missing from the slot list while several processes attach at once.
const UNSETTLED_BUDGET: Duration = Duration::from_secs(2);

/// How a token is named: label and/or serial (never by slot number, which changes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Selector {
    module: ModuleId,
    label: Option<String>,
    serial: Option<String>,
}

struct Connection {
    _attached: context::Attached,
    module: Module,
    slot: Slot,
    anchor: Session,
    mechanisms: Arc<[MechanismType]>,
    info: TokenInfo,
}

struct State {
    connection: Option<Connection>,
    generation: u64,
    // Module epoch of the last connection, for re-initialising while disconnected.
    epoch: u64,
    idle: Vec<Session>,
    in_use: usize,
    peak_in_use: usize,
    pin: Option<Zeroizing<String>>,
    needs_reinit: bool,
}

/// A failed step inside the token layer: a PKCS#11 call (classified, see [`Class`]) or an
/// error already stated for the user.
#[derive(Debug)]
pub(crate) enum Fail {
    /// A PKCS#11 call failed.
    Ck {
        /// The call (`C_Sign`).
        op: &'static str,
        /// What it returned.
        err: Error,
    },
    /// A finished error.
    Key(KeyError),
}

impl Fail {
    /// A failed PKCS#11 call.
    pub(crate) fn ck(op: &'static str) -> impl Fn(Error) -> Fail {
        move |err| Fail::Ck { op, err }
    }

    /// The class of the failure ([`Class::Other`] for finished errors).
    pub(crate) fn class(&self) -> Class {
        match self {
            Fail::Ck { err, .. } => class(err),
            Fail::Key(_) => Class::Other,
        }
    }

    /// The error for the user.
    pub(crate) fn into_key_error(self, token: &str) -> KeyError {
        match self {
            Fail::Ck { op, err } => op_error(token, op, &err),
            Fail::Key(e) => e,
        }
    }
}

impl From<KeyError> for Fail {
    fn from(e: KeyError) -> Fail {
        Fail::Key(e)
    }
}

/// What key creation needs to know about the connected token.
#[derive(Clone)]
pub(crate) struct TokenView {
    /// The module context (for `C_GetMechanismInfo`).
    pub(crate) module: Module,
    /// The token's slot.
    pub(crate) slot: Slot,
    /// `C_GetTokenInfo`.
    pub(crate) info: TokenInfo,
    /// `C_GetMechanismList`.
    pub(crate) mechanisms: Arc<[MechanismType]>,
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
    // Ended before the session goes back (so a re-initialisation never waits on the
    // token's lock): a re-initialisation waits for it.
    in_flight: Option<InFlight>,
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
    pub(crate) fn has_mechanism(&self, m: MechanismType) -> bool {
        self.mechanisms.contains(&m)
    }

    /// Reports the connection as lost: the session is discarded and the next lease reconnects.
    pub fn broken(mut self) {
        drop(self.in_flight.take());
        let session = self.session.take();
        self.token.release(session, self.generation, true);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        drop(self.in_flight.take());
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
            let raw = Zeroizing::new(
                kpki_atomic::read::secret_file(
                    path,
                    kpki_atomic::read::PIN_MAX,
                    kpki_atomic::read::Readers::OwnGroup,
                )
                .map_err(|e| KeyError::io(path, e))?,
            );
            let text = std::str::from_utf8(&raw)
                .map_err(|_| KeyError::key_file(path, "PIN file is not UTF-8 text"))?;
            Ok(Some(Zeroizing::new(
                text.trim_end_matches(['\n', '\r']).to_string(),
            )))
        }
    }
}

/// The outcome of one pass over the slots.
#[derive(Debug, Default)]
struct Scan {
    /// Labels of the tokens that answered and did not match.
    seen: Vec<String>,
    /// How many of those reported themselves uninitialised (no CKF_TOKEN_INITIALIZED).
    uninitialised: usize,
    /// Slots whose token could not be read, with the cause.
    causes: Vec<String>,
    /// The first failure that may pass (busy store), if any.
    transient: Option<Error>,
}

impl Scan {
    fn describe(&self, wanted: &str, module: &ModuleId) -> String {
        let mut text = format!("no token with {wanted} in module {module}");
        if !self.seen.is_empty() {
            let seen: Vec<String> = self
                .seen
                .iter()
                .map(|l| match l.strip_suffix(" (uninitialised)") {
                    Some(bare) => format!("{bare:?} (uninitialised)"),
                    None => format!("{l:?}"),
                })
                .collect();
            text.push_str(&format!("; tokens present: {}", seen.join(", ")));
        }
        if !self.causes.is_empty() {
            text.push_str(&format!("; unreadable: {}", self.causes.join("; ")));
        }
        text
    }
}

/// Whether a token answering with `info` is the one `label`/`serial` name.
fn matches(info: &TokenInfo, label: Option<&str>, serial: Option<&str>) -> bool {
    label.is_none_or(|l| info.label == l.trim_end())
        && serial.is_none_or(|s| info.serial == s.trim_end())
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
            module: ModuleId {
                path: module_path(uri)?,
                init_reserved: uri.init_reserved.clone(),
            },
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
                epoch: 0,
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
        &self.selector.module.path
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
        self.lease_inner().map_err(|f| f.into_key_error(&self.name))
    }

    pub(crate) fn lease_inner(&self) -> std::result::Result<Lease<'_>, Fail> {
        let mut st = self.lock();
        loop {
            let in_flight = self.enter_current(&mut st)?;
            let state: &mut State = &mut st;
            let Some(conn) = state.connection.as_ref() else {
                continue;
            };
            let mechanisms = Arc::clone(&conn.mechanisms);
            // An idle session, else a new one while the pool has room, else wait.
            let session = match state.idle.pop() {
                Some(session) => Some(session),
                None if state.in_use < self.pool_size => {
                    match conn.module.ctx.open_ro_session_no_drop(conn.slot) {
                        Ok(session) => Some(session),
                        Err(err) => {
                            drop(in_flight);
                            if class(&err) == Class::Lost {
                                self.disconnect(state);
                            }
                            return Err(Fail::Ck {
                                op: "C_OpenSession",
                                err,
                            });
                        }
                    }
                }
                None => None,
            };
            if let Some(session) = session {
                state.in_use += 1;
                state.peak_in_use = state.peak_in_use.max(state.in_use);
                return Ok(Lease {
                    token: self,
                    session: Some(session),
                    generation: state.generation,
                    mechanisms,
                    in_flight: Some(in_flight),
                });
            }
            drop(in_flight);
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

    /// Runs `op` on a leased session with recovery: a lost connection reconnects and logs
    /// in again; a token that fails without saying why (`CKR_GENERAL_ERROR`, …) is retried,
    /// then reconnected, then its module re-initialised; only a token that still fails
    /// after all that is reported unavailable. Other errors are returned as they are.
    pub(crate) fn run<T>(
        &self,
        op: impl Fn(&Lease<'_>) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        let mut lost = 0u32;
        let mut failing = 0u32;
        loop {
            let (lease, fail) = match self.lease_inner() {
                Ok(lease) => match op(&lease) {
                    Ok(v) => return Ok(v),
                    Err(f) => (Some(lease), f),
                },
                Err(f) => (None, f),
            };
            let generation = lease
                .as_ref()
                .map(Lease::generation)
                .unwrap_or_else(|| self.lock().generation);
            let what = match &fail {
                Fail::Ck { op, err } => format!("{op}: {}", describe(err)),
                Fail::Key(e) => e.to_string(),
            };
            match fail.class() {
                Class::Lost => {
                    lost += 1;
                    match lease {
                        Some(l) => l.broken(),
                        None => self.mark_broken(generation),
                    }
                    match lost {
                        1 => {}
                        2 => self.reinitialize(generation, &what)?,
                        _ => {
                            return Err(self.unavailable(format!(
                                "{what} (still lost after reconnecting and re-initialising the module)"
                            )));
                        }
                    }
                }
                Class::Failing => {
                    failing += 1;
                    tracing::debug!(token = %self.name, step = failing, error = %what, "token failing; recovering");
                    match failing {
                        1 => {
                            drop(lease);
                            std::thread::sleep(Duration::from_millis(30));
                        }
                        2 => match lease {
                            // Reconnect and log in again.
                            Some(l) => l.broken(),
                            None => self.mark_broken(generation),
                        },
                        3 => {
                            drop(lease);
                            self.reinitialize(generation, &what)?;
                        }
                        _ => {
                            return Err(self.unavailable(format!(
                                "{what} (still failing after retrying, reconnecting, logging in \
                                 again and re-initialising the module)"
                            )));
                        }
                    }
                }
                Class::Refused | Class::Other => {
                    drop(lease);
                    return Err(fail.into_key_error(&self.name));
                }
            }
        }
    }

    /// Disconnects if the connection is still at `generation`.
    fn mark_broken(&self, generation: u64) {
        let mut st = self.lock();
        if st.generation == generation {
            self.disconnect(&mut st);
        }
    }

    /// `C_Finalize` + `C_Initialize` of this token's module (unless another thread already
    /// did since `generation`), then reconnect on next use. A module that cannot be loaded
    /// again makes the token unavailable.
    fn reinitialize(&self, generation: u64, why: &str) -> Result<()> {
        let epoch = {
            let mut st = self.lock();
            if st.generation != generation && st.connection.is_some() {
                return Ok(());
            }
            self.disconnect(&mut st);
            st.epoch
        };
        tracing::warn!(token = %self.name, error = %why, "token keeps failing after reconnect; re-initialising its module");
        context::reinitialize(&self.selector.module, epoch)
            .map(|_| {
                let mut st = self.lock();
                // Reconnect normally: the module is fresh.
                st.needs_reinit = false;
            })
            .map_err(|e| self.unavailable(format!("{why}; re-initialising the module failed: {e}")))
    }

    /// `C_Finalize` + `C_Initialize` of this token's module so that it reads its object
    /// store again, for a lookup of `what` that found nothing: some modules (tpm2-pkcs11)
    /// read it once, at `C_Initialize`, and do not see objects other processes created
    /// since. Goes through the same epoch machinery as recovery: new calls on the module
    /// wait, calls already running on it finish first, and every connected token of the
    /// module reconnects on its next use. Not done when the module was already
    /// re-initialised since this token last connected (it has read its store since).
    pub(crate) fn reread_objects(&self, what: &str) -> Result<()> {
        let epoch = {
            let st = self.lock();
            match &st.connection {
                Some(c) if !c.module.is_current() => return Ok(()),
                // Only modules known to read their store once (tpm2-pkcs11): for the others
                // a re-initialisation finds nothing new and, in a daemon whose token is
                // coming back from an outage, stalls every other call on the module.
                Some(c) if !c.module.library.is_tpm2_pkcs11() => return Ok(()),
                Some(c) => c.module.epoch,
                None => st.epoch,
            }
        };
        tracing::info!(
            token = %self.name,
            key = %what,
            "key not found; re-initialising the module (re-reading the token's objects) to look once more"
        );
        context::reinitialize(&self.selector.module, epoch)
            .map(|_| ())
            .map_err(|e| {
                self.unavailable(format!(
                    "re-initialising the module to look for {what} again failed: {e}"
                ))
            })
    }

    /// [`Token::reread_objects`] for a module whose `C_Initialize` itself can find its store
    /// busy (tpm2-pkcs11: sqlite "database is locked" while other processes write): loading
    /// the module again is retried with backoff for up to [`BUSY_BUDGET`].
    pub(crate) fn reread_objects_when_free(&self, what: &str) -> Result<()> {
        let mut backoff = Backoff::new(BUSY_BUDGET);
        let mut outcome = self.reread_objects(what);
        loop {
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) if backoff.pause() => {
                    tracing::debug!(token = %self.name, error = %e, "module busy while re-reading its objects; loading it again");
                    // The failed attempt left the module unloaded (and this token's
                    // connection stale): load it again; the token reconnects on next use.
                    outcome = context::module(&self.selector.module)
                        .map(|_| ())
                        .map_err(|e| {
                            self.unavailable(format!(
                                "loading the module again to look for {what} failed: {e}"
                            ))
                        });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `op` on a fresh read-write session (key generation and administration). Busy
    /// tokens are retried with backoff for up to [`BUSY_BUDGET`]; a lost connection is
    /// reconnected once.
    pub(crate) fn with_rw_session<T>(
        &self,
        mut op: impl FnMut(&Session, &TokenView) -> std::result::Result<T, Fail>,
    ) -> Result<T> {
        let mut backoff = Backoff::new(BUSY_BUDGET);
        let mut lost = 0;
        loop {
            let fail = match self.rw_attempt(&mut op) {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            match (fail.class(), &fail) {
                (Class::Lost, _) if lost == 0 => lost += 1,
                (Class::Failing, Fail::Ck { op, err }) => {
                    if !backoff.pause() {
                        return Err(busy_error(&self.name, op, err, backoff.waited()));
                    }
                    tracing::debug!(token = %self.name, op, error = %describe(err), "token busy; retrying");
                }
                _ => return Err(fail.into_key_error(&self.name)),
            }
        }
    }

    fn rw_attempt<T>(
        &self,
        op: &mut impl FnMut(&Session, &TokenView) -> std::result::Result<T, Fail>,
    ) -> std::result::Result<T, Fail> {
        let (view, in_flight) = {
            let mut st = self.lock();
            loop {
                let in_flight = self.enter_current(&mut st)?;
                let Some(conn) = st.connection.as_ref() else {
                    continue;
                };
                let view = TokenView {
                    module: conn.module.clone(),
                    slot: conn.slot,
                    info: conn.info.clone(),
                    mechanisms: Arc::clone(&conn.mechanisms),
                };
                break (view, in_flight);
            }
        };
        let session = match view.module.ctx.open_rw_session_no_drop(view.slot) {
            Ok(s) => s,
            Err(err) => {
                drop(in_flight);
                if class(&err) == Class::Lost {
                    let mut st = self.lock();
                    self.disconnect(&mut st);
                }
                return Err(Fail::Ck {
                    op: "C_OpenSession (read-write)",
                    err,
                });
            }
        };
        let result = op(&session, &view);
        if view.module.is_current()
            && let Err(e) = session.close()
        {
            tracing::debug!(token = %self.name, error = %describe(&e), "closing a read-write session");
        }
        // Before taking the token's lock: a re-initialisation may be waiting for it.
        drop(in_flight);
        if result
            .as_ref()
            .err()
            .is_some_and(|f| f.class() == Class::Lost)
        {
            let mut st = self.lock();
            self.disconnect(&mut st);
        }
        result
    }

    /// Connects `st` to the current initialisation of the module (dropping a connection
    /// from an earlier one, reconnecting as needed) and enters it: the guard keeps the module
    /// from being re-initialised while it is held.
    fn enter_current(&self, st: &mut State) -> std::result::Result<InFlight, Fail> {
        loop {
            if st
                .connection
                .as_ref()
                .is_some_and(|c| !c.module.is_current())
            {
                self.forget_stale(st);
            }
            if st.connection.is_none() {
                self.connect(st)?;
            }
            let Some(conn) = st.connection.as_ref() else {
                continue;
            };
            match conn.module.enter() {
                Some(in_flight) => return Ok(in_flight),
                None => self.forget_stale(st),
            }
        }
    }

    /// Drops a connection whose module was re-initialised by someone else: its sessions
    /// and handles are gone (not closed: their numbers may belong to new sessions now).
    fn forget_stale(&self, st: &mut State) {
        st.idle.clear();
        if st.connection.take().is_some() {
            st.generation += 1;
            st.needs_reinit = false;
            tracing::info!(token = %self.name, "module re-initialised; reconnecting");
        }
    }

    fn disconnect(&self, st: &mut State) {
        let current = st
            .connection
            .as_ref()
            .is_some_and(|c| c.module.is_current());
        if !current {
            self.forget_stale(st);
            return;
        }
        // Closing is safe here: the module has not been re-initialised, so these handles
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

    fn connect(&self, st: &mut State) -> std::result::Result<(), Fail> {
        let id = &self.selector.module;
        let reconnect = st.needs_reinit;
        // A module that worked in this process and cannot be initialised again (its back
        // end is down) makes the token unavailable, not misconfigured.
        let gone = |e: KeyError| {
            if reconnect {
                Fail::Key(self.unavailable(format!("reconnecting: {e}")))
            } else {
                Fail::Key(e)
            }
        };
        let mut module = context::module(id).map_err(gone)?;
        if reconnect {
            // A module whose transport broke (remote tokens) only recovers after
            // re-initialising; first see whether the slot answers as is.
            if !matches!(self.find_slot(&module), Ok(Ok(_))) {
                module = context::reinitialize(id, module.epoch).map_err(gone)?;
            }
        }
        let mut backoff = Backoff::new(if reconnect {
            RECONNECT_BUDGET
        } else {
            BUSY_BUDGET
        });
        // A reconnect (the token answered before and went away) gives up within its own
        // budget, unsettled token or not: callers get `unavailable` and the daemon turns
        // unready at once instead of after the first connection's longer patience.
        let mut unsettled = Backoff::new(if reconnect {
            RECONNECT_BUDGET
        } else {
            UNSETTLED_BUDGET
        });
        loop {
            match self.try_connect(&module, st.pin.as_ref()) {
                Ok(conn) => {
                    st.epoch = conn.module.epoch;
                    st.connection = Some(conn);
                    st.needs_reinit = false;
                    return Ok(());
                }
                Err(Attempt::NotFound(scan)) => {
                    self.after_not_found(
                        &scan,
                        &mut module,
                        reconnect,
                        &mut backoff,
                        &mut unsettled,
                    )?;
                }
                Err(Attempt::Fail(Fail::Ck {
                    err: Error::Pkcs11(RvError::UserPinNotInitialized, _),
                    ..
                })) => {
                    if unsettled.pause() {
                        if module.attached() == 0 {
                            module = context::reinitialize(id, module.epoch)?;
                        }
                        continue;
                    }
                    return Err(Fail::Key(KeyError::Login {
                        token: self.name.clone(),
                        problem:
                            "user PIN not initialised on the token (CKR_USER_PIN_NOT_INITIALIZED)"
                                .into(),
                    }));
                }
                Err(Attempt::Fail(f)) => {
                    if f.class() == Class::Failing && backoff.pause() {
                        continue;
                    }
                    if let (Class::Failing, Fail::Ck { op, err }, false) =
                        (f.class(), &f, reconnect)
                    {
                        return Err(Fail::Key(busy_error(&self.name, op, err, backoff.waited())));
                    }
                    return Err(f);
                }
            }
        }
    }

    /// After a lookup that found no matching token: `Ok` to try again (the module read
    /// afresh where that helps), or the error to give up with.
    fn after_not_found(
        &self,
        scan: &Scan,
        module: &mut Module,
        reconnect: bool,
        backoff: &mut Backoff,
        unsettled: &mut Backoff,
    ) -> std::result::Result<(), Fail> {
        let id = &self.selector.module;
        let wanted = self.wanted();
        if scan.transient.is_some() && backoff.pause() {
            // A slot that failed to answer (SoftHSM's store caught mid-write
            // answers C_GetTokenInfo with CKR_GENERAL_ERROR) stays that way in
            // modules that read their store at C_Initialize: read it again, while
            // no other token of this process uses the module. Only on a first
            // connection: a reconnect of a token that went away (the daemon in an
            // outage) must not stall in re-initialisations.
            if !reconnect && module.attached() == 0 {
                *module = context::reinitialize(id, module.epoch)?;
            }
            return Ok(());
        }
        // Some modules only read their store at C_Initialize: SoftHSM shows a
        // token caught mid-write as uninitialised, openCryptoki's soft token can
        // be missing from the slot list while other processes attach. Both stay
        // that way until re-initialised.
        let empty = scan.seen.is_empty() && scan.causes.is_empty() && !reconnect;
        if scan.transient.is_none() && (scan.uninitialised > 0 || empty) && unsettled.pause() {
            // Only while no other token of this process uses the module.
            if module.attached() == 0 {
                *module = context::reinitialize(id, module.epoch)?;
            }
            return Ok(());
        }
        let text = scan.describe(&wanted, id);
        if reconnect && scan.transient.is_none() && scan.causes.is_empty() {
            // The token was there before: it went away and may come back.
            return Err(Fail::Key(
                self.unavailable(format!("token went away ({text})")),
            ));
        }
        Err(Fail::Key(KeyError::TokenNotFound(text)))
    }

    fn wanted(&self) -> String {
        match (&self.selector.label, &self.selector.serial) {
            (Some(l), Some(s)) => format!("label {l:?} and serial {s:?}"),
            (Some(l), None) => format!("label {l:?}"),
            (None, Some(s)) => format!("serial {s:?}"),
            (None, None) => "any label".into(),
        }
    }

    fn try_connect(
        &self,
        module: &Module,
        pin: Option<&Zeroizing<String>>,
    ) -> std::result::Result<Connection, Attempt> {
        let (slot, info) = match self.find_slot(module).map_err(Attempt::Fail)? {
            Ok(found) => found,
            Err(scan) => return Err(Attempt::NotFound(scan)),
        };
        let anchor = module.ctx.open_ro_session_no_drop(slot).map_err(|err| {
            Attempt::Fail(Fail::Ck {
                op: "C_OpenSession",
                err,
            })
        })?;
        if let Err(e) = self.login(&anchor, pin, &info) {
            let _ = anchor.close();
            return Err(Attempt::Fail(e));
        }
        let mechanisms: Arc<[MechanismType]> = match module.ctx.get_mechanism_list(slot) {
            Ok(m) => m.into(),
            Err(err) => {
                let _ = anchor.close();
                return Err(Attempt::Fail(Fail::Ck {
                    op: "C_GetMechanismList",
                    err,
                }));
            }
        };
        Ok(Connection {
            _attached: module.attach(),
            module: module.clone(),
            slot,
            anchor,
            mechanisms,
            info,
        })
    }

    /// One pass over the slots. A slot whose token cannot be read is skipped with its cause
    /// kept; only failing to list the slots at all is an error.
    fn find_slot(
        &self,
        module: &Module,
    ) -> std::result::Result<std::result::Result<(Slot, TokenInfo), Scan>, Fail> {
        let slots = module
            .ctx
            .get_slots_with_token()
            .map_err(Fail::ck("C_GetSlotList"))?;
        let mut scan = Scan::default();
        for slot in slots {
            match module.token_info(slot) {
                Ok(info) => {
                    if matches(
                        &info,
                        self.selector.label.as_deref(),
                        self.selector.serial.as_deref(),
                    ) {
                        return Ok(Ok((slot, info)));
                    }
                    if info.flags & CKF_TOKEN_INITIALIZED == 0 {
                        scan.uninitialised += 1;
                        scan.seen.push(format!("{} (uninitialised)", info.label));
                    } else {
                        scan.seen.push(info.label);
                    }
                }
                Err(err) => {
                    scan.causes.push(format!(
                        "slot {}: C_GetTokenInfo: {}",
                        slot.id(),
                        describe(&err)
                    ));
                    if scan.transient.is_none() && class(&err) == Class::Failing {
                        scan.transient = Some(err);
                    }
                }
            }
        }
        Ok(Err(scan))
    }

    fn login(
        &self,
        session: &Session,
        pin: Option<&Zeroizing<String>>,
        info: &TokenInfo,
    ) -> std::result::Result<(), Fail> {
        let login_error = |problem: &str| {
            Fail::Key(KeyError::Login {
                token: self.name.clone(),
                problem: problem.to_string(),
            })
        };
        let Some(pin) = pin else {
            return Err(login_error(
                "no PIN given: add pin-source=file:/path/to/pin to the key URI",
            ));
        };
        let auth = AuthPin::new(pin.as_str().into());
        let result = match session.login(UserType::User, Some(&auth)) {
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
            Err(Error::Pkcs11(RvError::PinExpired, _)) => Err(login_error(
                "the user PIN must be changed before use (CKR_PIN_EXPIRED); change it with \
                 the token's own tool (e.g. pkcsconf -p, pkcs11-tool --change-pin)",
            )),
            // Kept as a call failure: a store caught mid-write reads like this (see connect).
            Err(err @ Error::Pkcs11(RvError::UserPinNotInitialized, _)) => {
                Err(Fail::Ck { op: "C_Login", err })
            }
            Err(err) if matches!(class(&err), Class::Lost | Class::Failing) => {
                Err(Fail::Ck { op: "C_Login", err })
            }
            Err(e) => Err(login_error(&describe(&e))),
        };
        if result.is_ok() && info.flags & CKF_USER_PIN_TO_BE_CHANGED != 0 {
            tracing::warn!(
                token = %self.name,
                "the token asks for the user PIN to be changed (CKF_USER_PIN_TO_BE_CHANGED)"
            );
        }
        result
    }
}

/// Why one connection attempt did not connect.
enum Attempt {
    /// The slots were read and none matched.
    NotFound(Scan),
    /// A call failed.
    Fail(Fail),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(label: &str, serial: &str) -> TokenInfo {
        TokenInfo {
            label: label.into(),
            manufacturer: String::new(),
            model: String::new(),
            serial: serial.into(),
            flags: 0,
            max_sessions: 0,
        }
    }

    #[test]
    fn tokens_match_by_label_and_serial() {
        let t = info("kpki", "123");
        let cases = [
            (Some("kpki"), None, true),
            (Some("kpki"), Some("123"), true),
            (None, Some("123"), true),
            (Some("kpki "), None, true),
            (Some("other"), None, false),
            (Some("kpki"), Some("124"), false),
            (None, None, true),
        ];
        for (label, serial, want) in cases {
            assert_eq!(matches(&t, label, serial), want, "{label:?} {serial:?}");
        }
    }

    #[test]
    fn not_found_lists_tokens_seen_and_causes() {
        let scan = Scan {
            uninitialised: 1,
            seen: vec!["other".into(), " (uninitialised)".into()],
            causes: vec!["slot 3: C_GetTokenInfo: GeneralError in GetTokenInfo".into()],
            transient: None,
        };
        let text = scan.describe("label \"kpki\"", &ModuleId::plain("/m.so"));
        assert_eq!(
            text,
            "no token with label \"kpki\" in module /m.so; tokens present: \"other\", \"\" \
             (uninitialised); \
             unreadable: slot 3: C_GetTokenInfo: GeneralError in GetTokenInfo"
        );
        let empty = Scan::default().describe("serial \"1\"", &ModuleId::plain("/m.so"));
        assert_eq!(empty, "no token with serial \"1\" in module /m.so");
    }
}
