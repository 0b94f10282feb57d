//! Small process helpers shared by the token fixtures: running a setup tool and failing
//! loudly with its output, background daemons killed on drop, free TCP ports, waiting for a
//! condition, and the system-wide file lock that serialises openCryptoki users.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd`, panicking with its stdout and stderr unless it exits 0; returns its output.
pub(crate) fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with `input` on its stdin, panicking with its output unless it exits 0.
pub(crate) fn run_with_input(what: &str, cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Panics with `hint` unless `path` exists (a file a Debian package installs).
pub(crate) fn require_file(path: &Path, hint: &str) {
    assert!(
        path.exists(),
        "{} not found: run scripts/setup ({hint})",
        path.display()
    );
}

/// Panics with `hint` unless `tool` is on PATH.
pub(crate) fn require(tool: &str, hint: &str) -> PathBuf {
    crate::which(tool)
        .unwrap_or_else(|| panic!("{tool} not found on PATH: run scripts/setup ({hint})"))
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Polls `ready` every 50 ms until it is true; panics with `what` after `limit`.
pub(crate) fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The file in a token directory listing the daemons started for it (`<pid> <name>`).
const PIDS: &str = "daemon.pids";

/// Kills the daemons listed in `dir` that still run under their recorded name (the test
/// process that started them is gone).
pub(crate) fn kill_recorded(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join(PIDS)) else {
        return;
    };
    for line in text.lines() {
        let Some((pid, name)) = line.split_once(' ') else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // /proc/<pid>/comm holds the first 15 bytes of the program name.
        if !comm.trim().is_empty() && name.starts_with(comm.trim()) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// A daemon started by a fixture: killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub(crate) struct Daemon {
    name: String,
    child: Child,
}

impl Daemon {
    /// Starts `cmd` with stdout/stderr appended to `log`.
    pub(crate) fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Daemon {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open daemon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        // Recorded beside the log, so a later run can stop daemons of a killed test process.
        if let Some(dir) = log.parent() {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(PIDS))
                .expect("open daemon pid list");
            writeln!(f, "{} {}", child.id(), name).expect("record daemon pid");
        }
        Daemon {
            name: name.to_string(),
            child,
        }
    }

    /// Panics with the daemon's log when it has exited.
    /// True while the process runs.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn assert_running(&mut self, log: &Path) {
        if let Some(st) = self.child.try_wait().expect("try_wait") {
            panic!(
                "{} exited ({st}): {}",
                self.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Longest wait for a [`FileLock`]; the tests serialised by it take seconds each.
const LOCK_WAIT_SECS: u32 = 900;

/// `<pid> <command line>` of every process with `path` open (a daemon started by a shell
/// under `flock` inherits the lock and holds it for its whole life).
fn holders(path: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
        {
            let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            found.push(format!(
                "{} {}",
                p.file_name().to_string_lossy(),
                cmd.trim()
            ));
        }
    }
    found
}

/// An exclusive `flock(1)` on a file, held by a helper process for as long as this value
/// lives. The helper exits (releasing the lock) when its stdin closes, so the lock is also
/// released when the test process dies.
#[derive(Debug)]
pub(crate) struct FileLock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl FileLock {
    /// Waits for the exclusive lock on `path`.
    pub(crate) fn acquire(path: &Path) -> FileLock {
        require("flock", "apt-get install util-linux");
        let mut child = Command::new("flock")
            .args(["-x", "-w", &LOCK_WAIT_SECS.to_string()])
            .arg(path)
            .args(["-c", "echo locked; exec cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run flock");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("flock stdout"))
            .read_line(&mut line)
            .expect("read flock");
        assert_eq!(
            line.trim(),
            "locked",
            "no exclusive lock on {} within {LOCK_WAIT_SECS} s; processes holding it open: {}",
            path.display(),
            holders(path).join("; ")
        );
        FileLock { child, stdin }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
