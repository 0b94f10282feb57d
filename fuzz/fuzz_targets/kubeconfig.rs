//! Kubeconfig files: the typed reading (current cluster, user and CA) and the document that
//! `renew` edits in place (embedded client certificate, new credentials, rendering).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = kpki_pki::kubeconfig::parse(text) {
        let _ = k.current_cluster();
        let _ = k.current_user();
        let _ = k.current_ca_pem();
    }
    kpki_pki::fuzzing::kubeconfig_document(text);
});
