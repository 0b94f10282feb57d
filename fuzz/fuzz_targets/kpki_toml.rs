//! `kpki.toml`: read from a file as every command does, then resolved into the cluster's
//! facts (a kubeadm config it names is not followed: that file is another target's).
#![no_main]

use kpki_pki::config::{Settings, read_settings, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = kpki_fuzz::scratch_file("kpki.toml", data);
    if let Ok(mut settings) = read_settings(Some(&path), &Settings::default()) {
        settings.kubeadm_config = None;
        let _ = resolve(&settings);
    }
});
