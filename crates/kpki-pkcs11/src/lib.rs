//! kpki's PKCS#11 key backend (cryptoki 0.12).
//!
//! - one initialised context per module per process ([`context`]);
//! - tokens found by label or serial, logged in once from `pin-source`/`pin-value`;
//! - a bounded session pool per token that reconnects (re-login, re-find keys by id/label)
//!   after the token went away ([`token`]);
//! - keys generated on the token: sensitive, never extractable, sign-only (`keygen`),
//!   after checking the token's mechanisms and key sizes (`mechanisms`);
//! - signing with the best mechanism the token lists ([`key`]), with recovery that
//!   reconnects, logs in again and finally re-initialises the module ([`token`]);
//! - errors classified by what they mean: lost, busy or failing, refused (`errors`).
//!
//! Modules: `backend` ([`Pkcs11Backend`], the `KeyBackend` over tokens), [`context`],
//! `errors`, `import` (key material written to a token), [`key`] ([`Pkcs11Key`]), `keygen`,
//! `mechanisms`, `retry` (bounded back-off for busy tokens) and [`token`] ([`Token`]).

mod backend;
pub mod context;
mod errors;
mod import;
pub mod key;
mod keygen;
mod mechanisms;
mod retry;
pub mod token;

pub use backend::Pkcs11Backend;
pub use key::Pkcs11Key;
pub use token::Token;
