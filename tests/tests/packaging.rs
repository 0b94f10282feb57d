//! Packaging: `kpki completion` scripts loaded by real bash, zsh and fish; `kpki man` pages
//! rendered by man-db; the systemd units checked by `systemd-analyze verify` with their
//! command lines accepted by this build; `Type=notify` readiness sent only once the token
//! signer's socket accepts connections; the LICENSE the manifests declare; the Dockerfile's
//! user and tag matching the Kubernetes manifest; the .deb of scripts/package-deb installed
//! by dpkg.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kpki_e2e::{hsm, kpki, kpki_bin, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

/// Writes `kpki completion <shell>` to `dir/<name>` and returns its path.
fn completion(dir: &Path, shell: &str, name: &str) -> PathBuf {
    let out = kpki(&["completion", shell]);
    assert!(out.status.success(), "{shell}: {:?}", text(&out));
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

#[test]
fn completions_load_in_bash_zsh_and_fish_and_complete_commands() {
    let dir = tempfile::tempdir().unwrap();

    hsm::require_tool("bash");
    let bash = completion(dir.path(), "bash", "kpki.bash");
    let script = format!(
        "source '{}'; complete -p kpki; COMP_WORDS=(kpki ce); COMP_CWORD=1; COMP_LINE='kpki ce'; COMP_POINT=7; _kpki kpki ce kpki; echo \"words: ${{COMPREPLY[*]}}\"; COMP_WORDS=(kpki certs re); COMP_CWORD=2; COMP_LINE='kpki certs re'; COMP_POINT=13; _kpki kpki re certs; echo \"words: ${{COMPREPLY[*]}}\"",
        bash.display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("-F _kpki kpki"), "{stdout}");
    assert!(stdout.contains("words: certs"), "{stdout}");
    assert!(stdout.contains("words: renew"), "{stdout}");

    hsm::require_tool("zsh");
    let zsh_dir = dir.path().join("zfunc");
    std::fs::create_dir(&zsh_dir).unwrap();
    completion(&zsh_dir, "zsh", "_kpki");
    let out = Command::new("zsh")
        .args(["-n", zsh_dir.join("_kpki").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "zsh -n: {:?}", text(&out));
    let script = format!(
        "fpath=('{}' $fpath); autoload -Uz compinit; compinit -u -d '{}/zcompdump'; print -r -- \"${{_comps[kpki]}}\"",
        zsh_dir.display(),
        dir.path().display()
    );
    let out = Command::new("zsh")
        .args(["-f", "-c", &script])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(text(&out).0.trim(), "_kpki", "{:?}", text(&out));

    hsm::require_tool("fish");
    let fish = completion(dir.path(), "fish", "kpki.fish");
    let script = format!(
        "source '{}'; complete -C 'kpki ce'; complete -C 'kpki certs check-expiration --warn'",
        fish.display()
    );
    let out = Command::new("fish")
        .args(["--no-config", "-c", &script])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("certs")), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("--warn-within")),
        "{stdout}"
    );
}

#[test]
fn man_pages_render_with_man_db() {
    hsm::require_tool("man");
    let dir = tempfile::tempdir().unwrap();
    let out = kpki(&["man", "--dir", dir.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert!(
        stdout.contains(&format!("Wrote {} pages", pages.len())),
        "{stdout}"
    );
    for want in [
        "kpki.1",
        "kpki-certs-check-expiration.1",
        "kpki-kubeconfig-user.1",
        "kpki-serve.1",
        "kpki-completion.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want}: {pages:?}");
    }
    let render = |page: &Path| {
        let out = Command::new("man")
            .args(["-l", "-P", "cat", page.to_str().unwrap()])
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{}: {stderr}", page.display());
        assert!(stderr.is_empty(), "{}: {stderr}", page.display());
        // Strip overstrike formatting (bold/underline) if any.
        let mut plain = String::new();
        let mut chars = stdout.chars().peekable();
        while let Some(c) = chars.next() {
            if chars.peek() == Some(&'\u{8}') {
                chars.next();
                continue;
            }
            plain.push(c);
        }
        plain
    };
    let top = render(&dir.path().join("kpki.1"));
    assert!(top.contains("NAME"), "{top}");
    assert!(top.contains("kpki - Kubernetes PKI"), "{top}");
    for sub in ["kpki-init(1)", "kpki-certs(1)", "kpki-serve(1)"] {
        assert!(top.contains(sub), "{sub}: {top}");
    }
    let check = render(&dir.path().join("kpki-certs-check-expiration.1"));
    assert!(check.contains("--warn-within"), "{check}");
    let user = render(&dir.path().join("kpki-kubeconfig-user.1"));
    assert!(
        user.contains("--validity-period") || user.contains("validity-period"),
        "{user}"
    );

    // `kpki man` alone prints kpki(1), the same page.
    let out = kpki(&["man"]);
    assert_eq!(
        out.stdout,
        std::fs::read(dir.path().join("kpki.1")).unwrap()
    );
    // Pages are replaced atomically on a second run.
    let again = kpki(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(again.status.success(), "{:?}", text(&again));
}

#[test]
fn systemd_units_verify_and_their_command_lines_parse() {
    let analyze = hsm::require_tool("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let bin = kpki_bin();
    let units = [
        ("kpki-serve.service", &[][..]),
        ("kpki-jwt.service", &["--jwt-only"][..]),
        ("kpki-csr-controller.service", &["--controller-only"][..]),
    ];
    for (unit, flags) in units {
        let text_unit = read(&format!("deploy/systemd/{unit}"));
        assert!(text_unit.contains("\nType=notify\n"), "{unit}");
        let exec = text_unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let argv: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(argv[0], "/usr/bin/kpki", "{unit}");
        assert_eq!(argv[1], "serve", "{unit}");
        for f in flags {
            assert!(argv.contains(f), "{unit}: {exec}");
        }
        // Same arguments against this build: past the command line (2 would be a usage
        // error), stopped by the configuration file that is not there (1).
        let mut args: Vec<String> = argv[1..].iter().map(|s| s.to_string()).collect();
        let config = args.iter().position(|a| a == "--config").unwrap() + 1;
        args[config] = dir.path().join("absent.toml").display().to_string();
        let out = Command::new(&bin).args(&args).output().unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{unit}: {stderr}");
        assert!(stderr.contains("absent.toml"), "{unit}: {stderr}");

        // systemd's own check, with ExecStart pointing at this build.
        let local = dir.path().join(unit);
        std::fs::write(
            &local,
            text_unit.replace("/usr/bin/kpki", bin.to_str().unwrap()),
        )
        .unwrap();
        let out = Command::new(&analyze)
            .args(["verify", "--man=no", local.to_str().unwrap()])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        // Units named in After=/Before= but absent on this machine are fine.
        let problems: Vec<&str> = stderr
            .lines()
            .chain(stdout.lines())
            .filter(|l| !l.contains("kubelet.service") && !l.trim().is_empty())
            .collect();
        assert!(
            out.status.success() && problems.is_empty(),
            "{unit}: {stdout}{stderr}"
        );
    }
}

#[test]
fn readiness_is_sent_once_the_token_signers_socket_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sa.key");
    let out = kpki(&[
        "keys",
        "create",
        &format!("file:{}", key.display()),
        "-a",
        "ECDSA-P256",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let socket = dir.path().join("jwt.sock");
    let config = dir.path().join("jwt.toml");
    std::fs::write(
        &config,
        format!(
            "[jwt]\nsocket = \"{}\"\nsigning_key = \"file:{}\"\n",
            socket.display(),
            key.display()
        ),
    )
    .unwrap();
    let notify = dir.path().join("notify");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(kpki_bin())
        .args(["serve", "--jwt-only", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .env("KPKI_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let got = listener.recv(&mut buf);
    // The moment READY=1 arrives, the socket is there and accepts a connection.
    let connect = UnixStream::connect(&socket);
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let n =
        got.unwrap_or_else(|e| panic!("no readiness after {:?} ({e}): {logs}", started.elapsed()));
    assert_eq!(&buf[..n], b"READY=1", "{logs}");
    assert!(connect.is_ok(), "{connect:?}: {logs}");

    // Not under systemd (no NOTIFY_SOCKET): nothing is sent and nothing is said about it.
    let mut child = Command::new(kpki_bin())
        .args(["serve", "--jwt-only", "--config", config.to_str().unwrap()])
        .env_remove("NOTIFY_SOCKET")
        .env("KPKI_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(!logs.contains("systemd"), "{logs}");
}

#[test]
fn license_dockerfile_and_manifest_agree() {
    let license = read("LICENSE");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    assert!(read("Cargo.toml").contains("license = \"Apache-2.0\""));

    let dockerfile = read("Dockerfile");
    let deployment = read("deploy/kubernetes/30-deployment.yaml");
    let image = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: registry.example.com/kpki:"))
        .unwrap_or_else(|| panic!("no kpki image in the Deployment"));
    assert!(
        dockerfile.contains(&format!(
            "docker build -t registry.example.com/kpki:{image} ."
        )),
        "the Dockerfile builds another tag than the Deployment runs ({image})"
    );
    assert_eq!(image, env!("CARGO_PKG_VERSION"));
    assert!(deployment.contains("built from the repository's Dockerfile"));
    // Non-root: the image's user is the uid the Deployment runs as.
    assert!(dockerfile.contains("\nUSER 10001:10001\n"));
    assert!(deployment.contains("runAsUser: 10001") && deployment.contains("runAsGroup: 10001"));
    // The final stage has no toolchain: multi-stage, the binary copied from the build stage.
    assert!(dockerfile.contains("AS build") && dockerfile.contains("COPY --from=build"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/kpki\"]"));
    assert!(deployment.contains("command: [\"/usr/local/bin/kpki\"]"));
    // SoftHSM only on request.
    assert!(dockerfile.contains("ARG WITH_SOFTHSM=false"));
    // Every RUN instruction is valid shell once its continuation lines are joined.
    let joined = dockerfile.replace("\\\n", " ");
    let runs: Vec<&str> = joined
        .lines()
        .filter_map(|l| l.strip_prefix("RUN "))
        .collect();
    assert_eq!(runs.len(), 3, "{joined}");
    for run in runs {
        let out = Command::new("sh").args(["-n", "-c", run]).output().unwrap();
        assert!(out.status.success(), "{run}: {:?}", text(&out));
    }
}

#[test]
fn the_deb_installs_kpki_its_man_pages_completions_and_units() {
    hsm::require_tool("cargo-deb");
    hsm::require_tool("dpkg");
    // The debug build this suite runs, packaged by the same script as a release.
    assert!(kpki_bin().is_file());
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("kpki.deb");
    let out = Command::new("bash")
        .arg(repo().join("scripts/package-deb"))
        .args(["--dev", "-o", deb.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "package-deb: {:?}", text(&out));

    let info = Command::new("dpkg-deb")
        .args(["-f", deb.to_str().unwrap()])
        .output()
        .unwrap();
    let fields = text(&info).0;
    assert!(fields.contains("Package: kpki\n"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}-1\n", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );

    // dpkg -i into a scratch root (its own database): no maintainer scripts run.
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-depends", "-i", deb.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg -i: {:?}", text(&out));

    let installed = root.join("usr/bin/kpki");
    let out = Command::new(&installed).arg("--version").output().unwrap();
    assert_eq!(
        text(&out).0.trim(),
        format!("kpki {}", env!("CARGO_PKG_VERSION"))
    );
    for unit in [
        "kpki-serve.service",
        "kpki-jwt.service",
        "kpki-csr-controller.service",
    ] {
        let got = std::fs::read(root.join("usr/lib/systemd/system").join(unit)).unwrap();
        assert_eq!(
            got,
            std::fs::read(repo().join("deploy/systemd").join(unit)).unwrap()
        );
    }
    assert!(root.join("usr/lib/sysusers.d/kpki.conf").is_file());
    for f in [
        "usr/share/bash-completion/completions/kpki",
        "usr/share/zsh/vendor-completions/_kpki",
        "usr/share/fish/vendor_completions.d/kpki.fish",
        "usr/share/doc/kpki/copyright",
        "usr/share/doc/kpki/examples/serve.toml.example",
    ] {
        assert!(root.join(f).is_file(), "{f}");
    }
    hsm::require_tool("man");
    let page = root.join("usr/share/man/man1/kpki-certs-renew.1.gz");
    let out = Command::new("man")
        .args(["-l", "-P", "cat", page.to_str().unwrap()])
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    assert!(stdout.contains("kpki-certs-renew"), "{stdout}");
    assert!(root.join("usr/share/man/man1/kpki.1.gz").is_file());
}
