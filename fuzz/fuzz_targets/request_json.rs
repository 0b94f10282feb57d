//! The daemon's request bodies (`POST /v1/sign` and cfssl's `POST /api/v1/cfssl/sign`): the
//! JSON, the PEM it carries, the examination and the decision of the example policy.
#![no_main]

use std::sync::LazyLock;

use kpki_serve::config::ServeConfig;
use kpki_serve::fuzzing::{Endpoint, request};
use kpki_serve::policy::{Caller, Policy};
use libfuzzer_sys::fuzz_target;

static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    let text = include_str!("../../deploy/systemd/serve.toml.example");
    let config = ServeConfig::parse(text).expect("the example serve.toml parses");
    Policy::compile(&config.policy).expect("the example policy compiles")
});

fn caller(cn: &str, orgs: &[&str]) -> Caller {
    Caller {
        cn: cn.into(),
        orgs: orgs.iter().map(|o| o.to_string()).collect(),
    }
}

static CALLERS: LazyLock<[Caller; 4]> = LazyLock::new(|| {
    [
        caller("system:node:n1", &["system:nodes"]),
        caller("mesh-issuer", &["mesh-issuers"]),
        caller("admin", &["system:masters"]),
        caller("nobody", &[]),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let endpoint = if pick & 1 == 0 {
        Endpoint::Sign
    } else {
        Endpoint::CfsslSign
    };
    let who = &CALLERS[usize::from(pick >> 1) % CALLERS.len()];
    request(endpoint, body, &POLICY, who);
});
