//! A certificate request as `kpki sign` reads it (PEM, or DER as the daemon holds it after
//! decoding), examined under a signer's rules: key, proof of possession, SANs, signer rules.
#![no_main]

use kpki_pki::csr::{SignRequest, examine};
use kpki_pki::csr_object::{self, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let der = if rest.starts_with(b"-----BEGIN") {
        match csr_object::read(rest) {
            Ok(Input::Pem(der)) => der,
            _ => return,
        }
    } else {
        rest.to_vec()
    };
    let request = SignRequest {
        csr_der: der,
        signer_name: kpki_fuzz::SIGNERS[usize::from(pick) % kpki_fuzz::SIGNERS.len()].into(),
        usages: Vec::new(),
        expiration_seconds: None,
        allow_system_masters: pick & 0x80 != 0,
    };
    if let Ok(examined) = examine(&request) {
        let _ = examined.san_strings();
        let _ = examined.subject.display();
    }
});
