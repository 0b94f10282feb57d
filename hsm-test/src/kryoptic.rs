//! Kryoptic fixture: the module built by `scripts/build-kryoptic` (cached by version), with
//! its own `KRYOPTIC_CONF` and sqlite store per token, initialised with `pkcs11-tool`.

use std::path::{Path, PathBuf};

use crate::daemon::{require, require_file, run};
use crate::matrix::Parts;

/// The Kryoptic version `scripts/build-kryoptic` builds.
pub const KRYOPTIC_VERSION: &str = "1.5.4";

/// The Kryoptic module: `$KPKI_KRYOPTIC_MODULE`, else the build cache
/// (`$KPKI_KRYOPTIC_CACHE`, default `$HOME/.cache/kpki/kryoptic`).
/// Panics with the build hint when it has not been built.
pub fn kryoptic_module() -> PathBuf {
    let path = std::env::var_os("KPKI_KRYOPTIC_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("KPKI_KRYOPTIC_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let home = std::env::var_os("HOME").unwrap_or_default();
                    Path::new(&home).join(".cache/kpki/kryoptic")
                });
            cache
                .join(format!("kryoptic-{KRYOPTIC_VERSION}"))
                .join("libkryoptic_pkcs11.so")
        });
    assert!(
        path.exists(),
        "{} not found: run scripts/setup (it runs scripts/build-kryoptic)",
        path.display()
    );
    path
}

pub(crate) fn start(dir: &Path) -> Parts {
    let module = kryoptic_module();
    require("pkcs11-tool", "apt-get install opensc");
    let conf = dir.join("kryoptic.conf");
    std::fs::write(
        &conf,
        format!(
            "[[slots]]\nslot = 1\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n",
            dir.join("token.sql").display()
        ),
    )
    .expect("write kryoptic.conf");
    let env = vec![("KRYOPTIC_CONF".to_string(), conf.display().to_string())];
    let tool = || {
        let mut c = std::process::Command::new("pkcs11-tool");
        c.arg("--module").arg(&module).envs(env.clone());
        c
    };
    run(
        "kryoptic init-token",
        tool().args(["--init-token", "--label", "kpki", "--so-pin", crate::SO_PIN]),
    );
    run(
        "kryoptic init-pin",
        tool().args([
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            crate::SO_PIN,
            "--init-pin",
            "--pin",
            crate::USER_PIN,
        ]),
    );
    require_file(&module, "scripts/build-kryoptic");
    Parts {
        module,
        label: "kpki".into(),
        pin: crate::USER_PIN.into(),
        env,
        init_reserved: None,
        tpm2: None,
        daemons: Vec::new(),
        lock: None,
    }
}
