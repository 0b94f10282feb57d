//! A kubeadm configuration file (`--kubeadm-config`): read from a file and resolved into the
//! cluster's facts as `kpki init` does.
#![no_main]

use kpki_pki::config::{Settings, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = kpki_fuzz::scratch_file("kubeadm.yaml", data);
    let settings = Settings {
        kubeadm_config: Some(path),
        ..Settings::default()
    };
    let _ = resolve(&settings);
});
