//! NSS softokn fixture: `libsoftokn3.so` loaded directly, with a private sql database made by
//! `certutil -N` (token "NSS Certificate DB", user PIN = the database password). The module
//! needs `C_Initialize` reserved arguments naming the database; they go into the key URI as
//! the vendor query attribute `x-init-reserved` (RFC 7512 section 2.3 allows `x-` attributes).

use std::path::Path;

use crate::daemon::{require, require_file, run};
use crate::matrix::Parts;

/// Where Debian's libnss3 puts the softokn module.
pub const NSS_SOFTOKN_MODULE: &str = "/usr/lib/x86_64-linux-gnu/libsoftokn3.so";

/// The label of softokn's key and certificate token.
pub const NSS_TOKEN_LABEL: &str = "NSS Certificate DB";

pub(crate) fn start(dir: &Path) -> Parts {
    require_file(Path::new(NSS_SOFTOKN_MODULE), "apt-get install libnss3");
    require("certutil", "apt-get install libnss3-tools");
    let db = dir.join("db");
    std::fs::create_dir_all(&db).expect("create NSS db dir");
    let pw = dir.join("db.pw");
    std::fs::write(&pw, crate::USER_PIN).expect("write NSS password file");
    run(
        "certutil -N",
        std::process::Command::new("certutil")
            .arg("-N")
            .arg("-d")
            .arg(format!("sql:{}", db.display()))
            .arg("-f")
            .arg(&pw),
    );
    Parts {
        module: NSS_SOFTOKN_MODULE.into(),
        label: NSS_TOKEN_LABEL.into(),
        pin: crate::USER_PIN.into(),
        env: Vec::new(),
        init_reserved: Some(format!(
            "configdir='sql:{}' certPrefix='' keyPrefix='' secmod='secmod.db' flags=",
            db.display()
        )),
        tpm2: None,
        daemons: Vec::new(),
        lock: None,
    }
}
