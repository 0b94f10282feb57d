//! kpki's software key backend: keys in PEM files written as kubeadm writes them
//! (PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, LF endings, mode 0600), loaded from
//! PKCS#1, SEC1 or PKCS#8 only when the file is private to its (root) owner.
//!
//! Key files are written with `kpki-atomic` (final mode before an atomic rename).
//!
//! Modules: `backend` ([`SoftBackend`]), `keyfile` (PEM encoding and the file's permission
//! check), `material` (reading key material to import), `softkey` ([`SoftKey`]).

mod backend;
mod keyfile;
mod material;
mod softkey;

pub use backend::SoftBackend;
pub use keyfile::check_key_file_permissions;
pub use material::read_key_material;
pub use softkey::SoftKey;
