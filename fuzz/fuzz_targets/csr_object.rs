//! A CertificateSigningRequest object (YAML or JSON) as `kpki sign` reads it: the object,
//! the request it carries, its examination, and the approved object written back.
#![no_main]

use kpki_pki::csr::examine;
use kpki_pki::csr_object::{self, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Input::Object(mut object)) = csr_object::read(data) else {
        return;
    };
    if let Ok(request) = csr_object::request_of(&object, None) {
        let _ = examine(&request);
    }
    if csr_object::approve(&mut object, "-----BEGIN CERTIFICATE-----\n").is_ok() {
        let _ = serde_norway::to_string(&object);
        let _ = serde_json::to_string(&object);
    }
});
