//! `serve.toml`: the daemon's configuration and its compiled policy.
#![no_main]

use kpki_serve::config::ServeConfig;
use kpki_serve::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = ServeConfig::parse(text) {
        let _ = Policy::compile(&config.policy);
    }
});
