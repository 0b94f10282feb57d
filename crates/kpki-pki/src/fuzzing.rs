//! Entry points for the coverage-guided fuzz targets in `fuzz/` (not an API: hidden from the
//! documentation). Each one runs a parser that reads outside input the way the commands do,
//! for parsers that are private to this crate.

use std::path::Path;

/// Reads `text` as the kubeconfig document `renew` and the credential commands edit: parse,
/// find the current user's embedded client certificate, replace the credentials, render.
#[doc(hidden)]
pub fn kubeconfig_document(text: &str) {
    let path = Path::new("fuzz.conf");
    let Ok(mut doc) = crate::kubeconfig::Document::parse(path, text) else {
        return;
    };
    let _ = doc.embedded_client_cert(path);
    if doc.set_credentials(path, "ca", "cert", "key").is_ok() {
        let _ = doc.render(path);
    }
}

/// Parses `text` as kubeadm configuration YAML (`--kubeadm-config`).
#[doc(hidden)]
pub fn kubeadm_yaml(text: &str) {
    let _ = crate::kubeadm_yaml::parse(text);
}
