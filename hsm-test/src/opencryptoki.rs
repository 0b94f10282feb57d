//! openCryptoki soft-token fixture. The soft token is one per machine
//! (`/var/lib/opencryptoki/swtok`), so a test holds an exclusive `flock` on
//! [`OPENCRYPTOKI_LOCK`] for its whole life; within it the store is wiped and initialised
//! afresh (re-initialising an initialised 3.8.1 token leaves SO login failing), `pkcsslotd`
//! is started when it is not running (and stopped again at the end when this fixture
//! started it), and the lock directories that systemd's tmpfiles.d would make are created.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::daemon::{FileLock, require, require_file, run, run_with_input, wait_for};
use crate::matrix::Parts;

/// The module Debian's libopencryptoki0 installs.
pub const OPENCRYPTOKI_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so";

/// The lock every user of the system-wide soft token takes (flock, exclusive). Whoever
/// starts `pkcsslotd` while holding it must not pass the lock's descriptor on (with
/// `flock(1)`, use `-o`), or the daemon holds the lock for as long as it runs.
pub const OPENCRYPTOKI_LOCK: &str = "/tmp/kpki-opencryptoki.lock";

/// The soft token's slot in Debian's default `/etc/opencryptoki/opencryptoki.conf`.
const SLOT: &str = "3";
const STORE: &str = "/var/lib/opencryptoki/swtok";
const PID_FILE: &str = "/var/run/pkcsslotd.pid";
/// The user PIN (openCryptoki wants 4 to 8 characters, changed once after set).
const USER_PIN: &str = "22223333";
/// The SO PIN after the default (87654321) is changed.
const SO_PIN: &str = "12345678";
const FIRST_USER_PIN: &str = "11111111";
/// Marker in the token directory: this fixture started pkcsslotd (holds its pid).
const STARTED: &str = "started-pkcsslotd";

fn slotd_pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(PID_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "pkcsslotd").then_some(pid)
}

pub(crate) fn start(dir: &Path) -> Parts {
    require_file(
        Path::new(OPENCRYPTOKI_MODULE),
        "apt-get install opencryptoki libopencryptoki0",
    );
    require("pkcsconf", "apt-get install opencryptoki");
    let lock = FileLock::acquire(Path::new(OPENCRYPTOKI_LOCK));

    // What tmpfiles.d does at boot under systemd.
    for sub in ["icsf", "swtok", "tpm", "lite", "ccatok", "ep11tok"] {
        std::fs::create_dir_all(format!("/var/lock/opencryptoki/{sub}"))
            .expect("create /var/lock/opencryptoki");
    }
    run(
        "chgrp pkcs11 /var/lock/opencryptoki",
        Command::new("chgrp").args(["-R", "pkcs11", "/var/lock/opencryptoki"]),
    );
    run(
        "chmod /var/lock/opencryptoki",
        Command::new("chmod").args(["-R", "0770", "/var/lock/opencryptoki"]),
    );

    // A fresh store.
    for f in ["MK_SO", "MK_USER", "NVTOK.DAT"] {
        let _ = std::fs::remove_file(Path::new(STORE).join(f));
    }
    if let Ok(entries) = std::fs::read_dir(Path::new(STORE).join("TOK_OBJ")) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_file("/dev/shm/var.lib.opencryptoki.swtok");

    if slotd_pid().is_none() {
        // It daemonises; no pipes, so nothing waits on the daemon's inherited stdio.
        let st = Command::new("/usr/sbin/pkcsslotd")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run /usr/sbin/pkcsslotd");
        assert!(st.success(), "pkcsslotd failed to start: {st}");
        wait_for(
            "pkcsslotd writes its pid file",
            Duration::from_secs(10),
            || slotd_pid().is_some(),
        );
        let pid = slotd_pid().unwrap_or_default();
        std::fs::write(dir.join(STARTED), pid.to_string()).expect("write marker");
    }

    let pkcsconf = || Command::new("pkcsconf");
    // CKR_SESSION_EXISTS here means some process outside the lock holds the token open.
    run_with_input(
        "pkcsconf -I (init token; CKR_SESSION_EXISTS = another process holds the soft token \
         open without taking /tmp/kpki-opencryptoki.lock)",
        pkcsconf().args(["-I", "-c", SLOT, "-S", "87654321"]),
        "kpki\n",
    );
    run(
        "pkcsconf -P (SO PIN)",
        pkcsconf().args(["-P", "-c", SLOT, "-S", "87654321", "-n", SO_PIN]),
    );
    run(
        "pkcsconf -u (user PIN)",
        pkcsconf().args(["-u", "-c", SLOT, "-S", SO_PIN, "-n", FIRST_USER_PIN]),
    );
    run(
        "pkcsconf -p (change user PIN)",
        pkcsconf().args(["-p", "-c", SLOT, "-U", FIRST_USER_PIN, "-n", USER_PIN]),
    );
    Parts {
        module: OPENCRYPTOKI_MODULE.into(),
        label: "kpki".into(),
        pin: USER_PIN.into(),
        env: Vec::new(),
        init_reserved: None,
        tpm2: None,
        daemons: Vec::new(),
        lock: Some(lock),
    }
}

/// Stops pkcsslotd when the fixture whose directory is `dir` started it (while the lock is
/// still held).
pub(crate) fn stop(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join(STARTED)) else {
        return;
    };
    if slotd_pid().map(|p| p.to_string()) != Some(text.trim().to_string()) {
        return;
    }
    let _ = Command::new("kill").args(["-TERM", text.trim()]).status();
    let gone = (0..60).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        slotd_pid().is_none()
    });
    if !gone {
        let _ = Command::new("kill").args(["-KILL", text.trim()]).status();
        let _ = std::fs::remove_file(PID_FILE);
    }
}
