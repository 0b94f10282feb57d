//! kpki's PKCS#11 key backend (cryptoki 0.12).
//!
//! - one initialised context per module per process ([`context`]);
//! - tokens found by label or serial, logged in once from `pin-source`/`pin-value`;
//! - a bounded session pool per token that reconnects (re-login, re-find keys by id/label)
//!   after the token went away ([`token`]);
//! - keys generated on the token: sensitive, never extractable, sign-only ([`keygen`]);
//! - signing with the best mechanism the token lists ([`key`]).

mod backend;
pub mod context;
mod errors;
mod import;
pub mod key;
mod keygen;
pub mod token;

pub use backend::Pkcs11Backend;
pub use key::Pkcs11Key;
pub use token::Token;
