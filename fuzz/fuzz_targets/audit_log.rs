//! `kpki audit verify FILE`: the audit log's lines (JSON records with their own hash, the
//! sequence and the chain) as the verifier reads them.
#![no_main]

use kpki_serve::audit::{VerifyOptions, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = kpki_fuzz::scratch_file("audit.log", data);
    for allow_open in [false, true] {
        let mut options = VerifyOptions::default();
        options.allow_open = allow_open;
        let _ = verify(&path, options);
    }
});
