//! TPM 2.0 fixture: swtpm (a software TPM on two free local TCP ports, state in the token
//! directory), a private D-Bus session bus, tpm2-abrmd on it, and a tpm2-pkcs11 store made
//! by `tpm2_ptool`. Every piece belongs to the token, so TPM tests run in parallel. The
//! resource manager and the TPM can be stopped and started again ([`Tpm2`]) for outage tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::daemon::{Daemon, free_port, require, require_file, run, wait_for};
use crate::matrix::Parts;

/// The module Debian's libtpm2-pkcs11-1 installs.
pub const TPM2_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";

const TCTI: &str = "tabrmd:bus_type=session";
const HINT: &str = "apt-get install swtpm swtpm-tools tpm2-abrmd libtss2-tcti-tabrmd0 \
                    libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-tools dbus";

/// The daemons behind one TPM token.
#[derive(Debug)]
pub struct Tpm2 {
    dir: PathBuf,
    port: u16,
    ctrl_port: u16,
    bus: String,
    swtpm: Option<Daemon>,
    dbus: Option<Daemon>,
    abrmd: Option<Daemon>,
}

impl Tpm2 {
    fn log(&self) -> PathBuf {
        self.dir.join("daemons.log")
    }

    /// Starts swtpm on the token's ports and state directory. With tpm2-abrmd stopped
    /// (nothing knows the ports yet) ports taken meanwhile by another process are given up
    /// for new ones, as on the first start.
    pub fn start_swtpm(&mut self) {
        if self.abrmd.is_none() {
            self.first_start_swtpm();
            return;
        }
        // After a stop the killed swtpm may hold its ports a moment longer: try again.
        let start = std::time::Instant::now();
        while !self.try_start_swtpm() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "swtpm listens on port {} within 10 s; see {}",
                self.port,
                self.log().display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts swtpm; false when it exited at once (its ports were taken after they were
    /// picked: free ports are only known free when picked).
    fn try_start_swtpm(&mut self) -> bool {
        let state = self.dir.join("state");
        std::fs::create_dir_all(&state).expect("create TPM state dir");
        let log = self.log();
        self.swtpm = Some(Daemon::spawn(
            "swtpm",
            Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", state.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
                .arg("--ctrl")
                .arg(format!(
                    "type=tcp,port={},bindaddr=127.0.0.1",
                    self.ctrl_port
                ))
                .args(["--flags", "not-need-init,startup-clear"]),
            &log,
        ));
        let port = self.port;
        let start = std::time::Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            if let Some(d) = self.swtpm.as_mut()
                && !d.is_running()
            {
                self.swtpm = None;
                return false;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "swtpm listens on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// First start of swtpm: on ports taken since they were picked, picks others (at most
    /// 5 times). Later restarts keep the ports tpm2-abrmd knows.
    fn first_start_swtpm(&mut self) {
        for _ in 0..5 {
            if self.try_start_swtpm() {
                return;
            }
            (self.port, self.ctrl_port) = port_pair();
        }
        panic!(
            "swtpm did not start on 5 port pairs; see {}",
            self.log().display()
        );
    }

    /// Kills swtpm (the TPM disappears; its state stays on disk).
    pub fn stop_swtpm(&mut self) {
        self.swtpm.take();
    }

    /// Starts tpm2-abrmd on the token's bus and waits until it answers.
    pub fn start_abrmd(&mut self) {
        let log = self.log();
        self.abrmd = Some(Daemon::spawn(
            "tpm2-abrmd",
            Command::new("tpm2-abrmd")
                .args(["--session", "--allow-root"])
                .arg(format!("--tcti=swtpm:host=127.0.0.1,port={}", self.port))
                .env("DBUS_SESSION_BUS_ADDRESS", &self.bus),
            &log,
        ));
        let bus = self.bus.clone();
        wait_for("tpm2-abrmd answers", Duration::from_secs(15), || {
            Command::new("tpm2_getrandom")
                .args(["-T", TCTI, "4"])
                .env("DBUS_SESSION_BUS_ADDRESS", &bus)
                .output()
                .is_ok_and(|o| o.status.success())
        });
    }

    /// Kills tpm2-abrmd (every open TPM context of a client breaks).
    pub fn stop_abrmd(&mut self) {
        self.abrmd.take();
    }

    /// The tpm2-abrmd process id, if it runs.
    pub fn abrmd_pid(&self) -> Option<u32> {
        self.abrmd.as_ref().map(Daemon::pid)
    }

    pub(crate) fn assert_running(&mut self) {
        let log = self.log();
        for d in [&mut self.swtpm, &mut self.dbus, &mut self.abrmd]
            .into_iter()
            .flatten()
        {
            d.assert_running(&log);
        }
    }
}

impl Drop for Tpm2 {
    fn drop(&mut self) {
        self.abrmd.take();
        self.swtpm.take();
        self.dbus.take();
    }
}

/// A free port whose next port up is free too: the swtpm TCTI reaches the control channel
/// there.
fn port_pair() -> (u16, u16) {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return (p, p + 1);
        }
    }
}

pub(crate) fn start(dir: &Path) -> Parts {
    require_file(Path::new(TPM2_MODULE), HINT);
    for tool in [
        "swtpm",
        "tpm2-abrmd",
        "dbus-daemon",
        "tpm2_ptool",
        "tpm2_getrandom",
    ] {
        require(tool, HINT);
    }
    let (port, ctrl_port) = port_pair();
    let sock = dir.join("dbus.sock");
    let bus = format!("unix:path={}", sock.display());
    let mut tpm = Tpm2 {
        dir: dir.to_path_buf(),
        port,
        ctrl_port,
        bus: bus.clone(),
        swtpm: None,
        dbus: None,
        abrmd: None,
    };
    tpm.dbus = Some(Daemon::spawn(
        "dbus-daemon",
        Command::new("dbus-daemon")
            .args(["--session", "--nofork"])
            .arg(format!("--address={bus}")),
        &tpm.log(),
    ));
    wait_for("dbus-daemon socket", Duration::from_secs(10), || {
        sock.exists()
    });
    tpm.first_start_swtpm();
    tpm.start_abrmd();

    let store = dir.join("store");
    std::fs::create_dir_all(&store).expect("create tpm2-pkcs11 store");
    let env = vec![
        ("DBUS_SESSION_BUS_ADDRESS".to_string(), bus),
        ("TPM2_PKCS11_TCTI".to_string(), TCTI.to_string()),
        ("TPM2TOOLS_TCTI".to_string(), TCTI.to_string()),
        ("TPM2_PKCS11_STORE".to_string(), store.display().to_string()),
    ];
    let ptool = || {
        let mut c = Command::new("tpm2_ptool");
        c.envs(env.clone());
        c
    };
    let path = format!("--path={}", store.display());
    run("tpm2_ptool init", ptool().args(["init", &path]));
    run(
        "tpm2_ptool addtoken",
        ptool().args([
            "addtoken",
            "--pid=1",
            "--label=kpki",
            &format!("--sopin={}", crate::SO_PIN),
            &format!("--userpin={}", crate::USER_PIN),
            &path,
        ]),
    );
    Parts {
        module: TPM2_MODULE.into(),
        label: "kpki".into(),
        pin: crate::USER_PIN.into(),
        env,
        init_reserved: None,
        tpm2: Some(tpm),
        daemons: Vec::new(),
        lock: None,
    }
}
