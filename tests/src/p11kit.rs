//! A SoftHSM token served by `p11-kit server` on a unix socket, used through
//! `p11-kit-client.so`: a remote HSM that tests can stop (kill) and start again.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::hsm;

/// The p11-kit client module (Debian `p11-kit-modules`).
pub const CLIENT_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";

/// Panics with an install hint unless p11-kit and its client module are installed.
pub fn require() {
    hsm::require_tool("p11-kit");
    assert!(
        Path::new(CLIENT_MODULE).exists(),
        "{CLIENT_MODULE} not found: run scripts/setup (apt-get install p11-kit-modules)"
    );
}

/// Points this process, and the `kpki` processes it starts, at the p11-kit server on
/// `socket`. Call it before any PKCS#11 module is loaded.
#[allow(unsafe_code)] // `set_var` is unsafe while other threads may read the environment.
pub fn use_server(socket: &Path) {
    // SAFETY: called by a test before it loads a PKCS#11 module or starts threads that read
    // the environment.
    unsafe {
        std::env::set_var(
            "P11_KIT_SERVER_ADDRESS",
            format!("unix:path={}", socket.display()),
        )
    };
}

/// Starts `p11-kit server` for token `token_label` on `socket` in its own process group.
pub fn start_server(socket: &Path, token_label: &str) -> Child {
    let _ = std::fs::remove_file(socket);
    let child = Command::new("p11-kit")
        .args([
            "server",
            "-f",
            "-n",
            socket.to_str().unwrap(),
            "--provider",
            hsm::SOFTHSM_MODULE,
            &format!("pkcs11:token={token_label}"),
        ])
        .env("SOFTHSM2_CONF", hsm::softhsm().conf())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start p11-kit server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "p11-kit server did not create {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Waits until every per-connection process of `server` has exited, i.e. until the server
/// has finished what its clients asked — also a client killed mid-call: its connection's
/// process completes the call (a key generation, say) and only then sees the socket closed.
/// Panics after `limit`.
pub fn wait_for_connections_to_end(server: &Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let busy = connection_processes(server.id());
        if busy.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "p11-kit server {}: connection processes {busy:?} still running after {limit:?}",
            server.id()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The processes of `server`'s process group other than the server itself.
fn connection_processes(server: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != server)
        .filter(|&pid| {
            // /proc/PID/stat: "pid (comm) state ppid pgrp …"; comm may hold spaces.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1;
                    after.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(server)
        })
        .collect()
}

/// Kills the server and the per-connection processes it forked (its process group).
pub fn stop_server(mut server: Child) {
    let status = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", server.id())])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill p11-kit server group");
    server.wait().expect("wait for p11-kit server");
}

/// The URI of key `object` on `token` reached through the client module.
pub fn key_uri(token: &hsm::TestToken, object: &str) -> String {
    format!(
        "pkcs11:token={};object={object}?module-path={CLIENT_MODULE}&pin-source=file:{}",
        token.label,
        token.pin_file.display()
    )
}
