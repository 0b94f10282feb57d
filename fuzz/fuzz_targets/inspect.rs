//! `kpki inspect FILE`: a certificate, request, key or kubeconfig, PEM or DER, described as
//! text and as JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = kpki_fuzz::scratch_file("inspect", data);
    if let Ok(items) = kpki_pki::inspect::inspect(&path) {
        let _ = kpki_pki::inspect::render_text(&items);
        let _ = serde_json::to_string(&items);
    }
});
