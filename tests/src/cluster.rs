//! A real control plane on kpki's PKI: etcd, `kpki serve --jwt-only` as the
//! service-account token signer, kube-apiserver and (on request) kube-controller-manager, all
//! on free loopback ports in one temporary directory, torn down on drop.
//!
//! The PKI comes from `kpki init` with a kubeadm v1beta4 configuration; the three CA keys and
//! the service-account key are on a SoftHSM token (or, with [`Options::ca_files`], the
//! cluster CA is a file pair the test made). kube-apiserver gets
//! `--service-account-signing-endpoint` and no service-account key files; the token signer
//! reaches its key through `p11-kit server`, so a test can take the token away and give it
//! back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::serve::free_port;
use crate::{hsm, kpki, p11kit, peers, text};

/// Settings of a cluster under test.
#[derive(Debug, Clone)]
pub struct Options {
    /// kubeadm `encryptionAlgorithm` of every key kpki makes.
    pub algorithm: &'static str,
    /// A cluster CA made by the test (`ca.crt`, `ca.key`), placed before `kpki init`; the
    /// other CAs stay on the token.
    pub ca_files: Option<(PathBuf, PathBuf)>,
    /// Start kube-controller-manager too.
    pub controller_manager: bool,
    /// kube-controller-manager signs CertificateSigningRequests itself (csrsigning on, with
    /// `ca_files` as `--cluster-signing-cert-file`/`--cluster-signing-key-file`): the
    /// baseline kpki's controller is compared with.
    pub controller_manager_signs: bool,
    /// Runs on the empty certificate directory with the cluster's token before `kpki init`
    /// (e.g. to install CAs signed by an external root, keys on that token).
    pub before_init: Option<fn(&Path, &hsm::TestToken)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            algorithm: "ECDSA-P256",
            ca_files: None,
            controller_manager: false,
            controller_manager_signs: false,
            before_init: None,
        }
    }
}

/// A process of the cluster with its log file.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("create log"))
            .stderr(std::fs::File::create(log.with_extension("err")).expect("create log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name, child, log }
    }

    fn log_tail(&self) -> String {
        let mut all = std::fs::read_to_string(&self.log).unwrap_or_default();
        all.push_str(&std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default());
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running control plane.
pub struct Cluster {
    /// Everything lives here: `pki/`, the kubeconfigs, logs, etcd data.
    pub dir: tempfile::TempDir,
    /// The token holding the CA keys and the service-account key.
    pub token: hsm::TestToken,
    /// kube-apiserver's secure port on 127.0.0.1.
    pub port: u16,
    /// The kubeadm configuration `kpki init` read.
    pub kubeadm_config: PathBuf,
    /// The token signer's config file (rewrite it and call [`Cluster::reload_signer`]).
    pub signer_config: PathBuf,
    /// The token signer's socket.
    pub signer_socket: PathBuf,
    /// The service-account key's URI through the p11-kit client module.
    pub sa_key_uri: String,
    /// `--dir`, `--kubeadm-config` and `--key` flags naming this cluster's PKI for `kpki`.
    pub kpki_args: Vec<String>,
    p11kit_socket: PathBuf,
    p11kit: Option<Child>,
    etcd: Option<Proc>,
    signer: Option<Proc>,
    apiserver: Option<Proc>,
    controller_manager: Option<Proc>,
}

/// Calls `attempt` every `every` until it returns `Ok`, for at most `limit`; panics with
/// `what` and the last error after that. Returns the value and how long it took.
pub fn eventually<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match attempt() {
            Ok(v) => return (v, start.elapsed()),
            Err(e) if start.elapsed() >= limit => {
                panic!("{what}: not within {limit:?}: {e}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// The issuer every token of the test clusters carries.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A kubeadm v1beta4 configuration for node `cp1` at 127.0.0.1:`port`.
pub fn kubeadm_config(port: u16, algorithm: &str) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  name: cp1
localAPIEndpoint:
  advertiseAddress: 127.0.0.1
  bindPort: {port}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
clusterName: kubernetes
networking:
  serviceSubnet: 10.96.0.0/12
  dnsDomain: cluster.local
encryptionAlgorithm: {algorithm}
",
        version = peers::kubernetes_version()
    )
}

impl Cluster {
    /// Initialises the PKI and starts etcd, the token signer and kube-apiserver (and
    /// kube-controller-manager with [`Options::controller_manager`]); returns once
    /// kube-apiserver is ready and kubeadm's `kubeadm:cluster-admins` binding exists.
    pub fn start(options: Options) -> Cluster {
        let apiserver_bin = peers::kubernetes("kube-apiserver");
        let etcd_bin = peers::etcd();
        p11kit::require();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let token = hsm::token();
        let port = free_port();
        let kubeadm_config = root.join("kubeadm.yaml");
        std::fs::write(
            &kubeadm_config,
            self::kubeadm_config(port, options.algorithm),
        )
        .expect("write kubeadm config");

        let pki = root.join("pki");
        std::fs::create_dir_all(&pki).expect("pki dir");
        let mut keys = vec![
            format!("etcd-ca={}", token.key_uri("etcd-ca")),
            format!("front-proxy-ca={}", token.key_uri("front-proxy-ca")),
            format!("sa={}", token.key_uri("sa")),
        ];
        match &options.ca_files {
            Some((crt, key)) => {
                std::fs::copy(crt, pki.join("ca.crt")).expect("copy ca.crt");
                std::fs::copy(key, pki.join("ca.key")).expect("copy ca.key");
            }
            None => keys.push(format!("ca={}", token.key_uri("ca"))),
        }
        if let Some(prepare) = options.before_init {
            prepare(&pki, &token);
        }
        let mut args = vec![
            "init".to_string(),
            "--dir".into(),
            root.display().to_string(),
            "--kubeadm-config".into(),
            kubeadm_config.display().to_string(),
        ];
        for k in &keys {
            args.push("--key".into());
            args.push(k.clone());
        }
        let kpki_args = args[1..].to_vec();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = kpki(&argv);
        assert!(out.status.success(), "kpki init: {:?}", text(&out));

        let p11kit_socket = root.join("p11kit.sock");
        let sa_key_uri = p11kit::key_uri(&token, "sa");
        let signer_socket = root.join("jwt.sock");
        let signer_config = root.join("signer.toml");
        // A key that only verifies, as an earlier file `sa.pub` would after a migration:
        // listed by FetchKeys, excluded from discovery.
        let legacy = root.join("legacy-sa.key");
        crate::openssl_key(&legacy, "p256");
        let legacy_pub = root.join("legacy-sa.pub");
        let out = crate::openssl(&[
            "pkey",
            "-in",
            legacy.to_str().expect("UTF-8 path"),
            "-pubout",
            "-out",
            legacy_pub.to_str().expect("UTF-8 path"),
        ]);
        assert!(out.status.success(), "{:?}", text(&out));
        std::fs::write(
            &signer_config,
            signer_config_text(&signer_socket, &sa_key_uri, &[(&legacy_pub, true)]),
        )
        .expect("write signer config");

        let mut c = Cluster {
            dir,
            token,
            port,
            kubeadm_config,
            signer_config,
            signer_socket,
            sa_key_uri,
            kpki_args,
            p11kit_socket,
            p11kit: None,
            etcd: None,
            signer: None,
            apiserver: None,
            controller_manager: None,
        };
        c.start_token_server();
        c.start_etcd(&etcd_bin);
        c.start_signer();
        c.start_apiserver(&apiserver_bin);
        c.wait_ready();
        let out = c.kubectl(
            "super-admin.conf",
            &[
                "create",
                "clusterrolebinding",
                "kubeadm:cluster-admins",
                "--clusterrole=cluster-admin",
                "--group=kubeadm:cluster-admins",
            ],
        );
        assert!(
            out.status.success(),
            "bind kubeadm:cluster-admins: {:?}",
            text(&out)
        );
        if options.controller_manager_signs {
            c.start_controller_manager_with(&[
                format!(
                    "--cluster-signing-cert-file={}",
                    c.pki().join("ca.crt").display()
                ),
                format!(
                    "--cluster-signing-key-file={}",
                    c.pki().join("ca.key").display()
                ),
                "--controllers=*".into(),
            ]);
        } else if options.controller_manager {
            c.start_controller_manager();
        }
        c
    }

    /// Runs `kpki <args…>` followed by this cluster's [`Cluster::kpki_args`].
    pub fn kpki(&self, args: &[&str]) -> Output {
        let mut argv: Vec<&str> = args.to_vec();
        argv.extend(self.kpki_args.iter().map(String::as_str));
        kpki(&argv)
    }

    /// The certificate directory.
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// A file in the cluster's directory (kubeconfigs live at the top).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `kubectl --kubeconfig <dir>/<kubeconfig> args…`.
    pub fn kubectl(&self, kubeconfig: &str, args: &[&str]) -> Output {
        self.kubectl_with(&self.path(kubeconfig), args)
    }

    /// `kubectl --kubeconfig <kubeconfig> args…` for a kubeconfig anywhere.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        hsm::require_tool("kubectl");
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// `kubectl auth whoami -o json` with `kubeconfig`: (user, groups).
    pub fn whoami(&self, kubeconfig: &Path) -> (String, Vec<String>) {
        let out = self.kubectl_with(kubeconfig, &["auth", "whoami", "-o", "json"]);
        assert!(
            out.status.success(),
            "kubectl auth whoami with {}: {:?}",
            kubeconfig.display(),
            text(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("whoami JSON");
        let info = &v["status"]["userInfo"];
        let user = info["username"].as_str().unwrap_or_default().to_string();
        let groups = info["groups"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (user, groups)
    }

    /// Starts the p11-kit server in front of the token (again, after [`Cluster::stop_token`]).
    pub fn start_token_server(&mut self) {
        assert!(self.p11kit.is_none(), "p11-kit server already running");
        self.p11kit = Some(p11kit::start_server(&self.p11kit_socket, &self.token.label));
    }

    /// Kills the p11-kit server: the token signer loses its key.
    pub fn stop_token(&mut self) {
        if let Some(server) = self.p11kit.take() {
            p11kit::stop_server(server);
        }
    }

    fn start_etcd(&mut self, bin: &Path) {
        let root = self.dir.path();
        let pki = self.pki();
        let client = free_port();
        let peer = free_port();
        let f = |n: &str| pki.join("etcd").join(n).display().to_string();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--name=cp1".to_string(),
            format!("--data-dir={}", root.join("etcd-data").display()),
            format!("--listen-client-urls=https://127.0.0.1:{client}"),
            format!("--advertise-client-urls=https://127.0.0.1:{client}"),
            format!("--listen-peer-urls=https://127.0.0.1:{peer}"),
            format!("--initial-advertise-peer-urls=https://127.0.0.1:{peer}"),
            format!("--initial-cluster=cp1=https://127.0.0.1:{peer}"),
            "--listen-metrics-urls=".into(),
            format!("--cert-file={}", f("server.crt")),
            format!("--key-file={}", f("server.key")),
            "--client-cert-auth=true".into(),
            format!("--trusted-ca-file={}", f("ca.crt")),
            format!("--peer-cert-file={}", f("peer.crt")),
            format!("--peer-key-file={}", f("peer.key")),
            "--peer-client-cert-auth=true".into(),
            format!("--peer-trusted-ca-file={}", f("ca.crt")),
            "--snapshot-count=10000".into(),
        ]);
        self.etcd = Some(Proc::spawn("etcd", root, &mut cmd));
        std::fs::write(root.join("etcd.port"), client.to_string()).expect("write etcd port");
    }

    fn etcd_client_port(&self) -> u16 {
        std::fs::read_to_string(self.path("etcd.port"))
            .expect("etcd port")
            .trim()
            .parse()
            .expect("port")
    }

    /// Starts `kpki serve --jwt-only` with [`Cluster::signer_config`]; returns once its socket
    /// exists.
    pub fn start_signer(&mut self) {
        let _ = std::fs::remove_file(&self.signer_socket);
        let mut cmd = Command::new(crate::kpki_bin());
        cmd.args(["serve", "--jwt-only", "--config"])
            .arg(&self.signer_config)
            .env("KPKI_LOG", "info")
            .env(
                "P11_KIT_SERVER_ADDRESS",
                format!("unix:path={}", self.p11kit_socket.display()),
            );
        let mut proc = Proc::spawn("kpki-signer", self.dir.path(), &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.signer_socket.exists() {
            if let Ok(Some(st)) = proc.child.try_wait() {
                panic!("kpki serve --jwt-only exited ({st}): {}", proc.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "token signer socket not created: {}",
                proc.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signer = Some(proc);
    }

    /// Sends SIGHUP to the token signer (after the test rewrote its config).
    pub fn reload_signer(&self) {
        let signer = self.signer.as_ref().expect("signer running");
        let st = Command::new("kill")
            .args(["-HUP", &signer.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(st.success());
    }

    /// The token signer's log so far.
    pub fn signer_log(&self) -> String {
        self.signer.as_ref().map(Proc::log_tail).unwrap_or_default()
    }

    fn start_apiserver(&mut self, bin: &Path) {
        let pki = self.pki();
        let p = |n: &str| pki.join(n).display().to_string();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.port),
            format!("--cert-dir={}", self.path("apiserver-certs").display()),
            format!(
                "--etcd-servers=https://127.0.0.1:{}",
                self.etcd_client_port()
            ),
            format!("--etcd-cafile={}", p("etcd/ca.crt")),
            format!("--etcd-certfile={}", p("apiserver-etcd-client.crt")),
            format!("--etcd-keyfile={}", p("apiserver-etcd-client.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!(
                "--kubelet-client-certificate={}",
                p("apiserver-kubelet-client.crt")
            ),
            format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
            format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
            format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
            format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            format!("--service-account-issuer={SA_ISSUER}"),
            format!(
                "--service-account-signing-endpoint={}",
                self.signer_socket.display()
            ),
            "--service-cluster-ip-range=10.96.0.0/12".into(),
            "--enable-bootstrap-token-auth=true".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--allow-privileged=true".into(),
            "--endpoint-reconciler-type=none".into(),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
        ]);
        self.apiserver = Some(Proc::spawn("kube-apiserver", self.dir.path(), &mut cmd));
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.kubectl("super-admin.conf", &["get", "--raw=/readyz"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            for p in [&mut self.etcd, &mut self.signer, &mut self.apiserver]
                .into_iter()
                .flatten()
            {
                if let Ok(Some(st)) = p.child.try_wait() {
                    panic!(
                        "{} exited ({st}) before the API was ready:\n{}",
                        p.name,
                        p.log_tail()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 120 s: {:?}\n--- kube-apiserver:\n{}",
                text(&out),
                self.apiserver
                    .as_ref()
                    .map(Proc::log_tail)
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts kube-controller-manager with kpki's `controller-manager.conf` for every
    /// kubeconfig flag, leader election on.
    pub fn start_controller_manager(&mut self) {
        self.start_controller_manager_with(&["--controllers=*,-csrsigning".into()]);
    }

    /// Starts kube-controller-manager as [`Cluster::start_controller_manager`] does, with
    /// `extra` flags (one of them `--controllers=…`).
    pub fn start_controller_manager_with(&mut self, extra: &[String]) {
        let bin = peers::kubernetes("kube-controller-manager");
        let conf = self.path("controller-manager.conf").display().to_string();
        let pki = self.pki();
        let mut cmd = Command::new(bin);
        cmd.args([
            format!("--kubeconfig={conf}"),
            format!("--authentication-kubeconfig={conf}"),
            format!("--authorization-kubeconfig={conf}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()),
            format!("--cert-dir={}", self.path("kcm-certs").display()),
            "--leader-elect=true".into(),
            // As kubeadm runs it: each controller with its own service account, whose tokens
            // kube-apiserver has kpki's token signer sign.
            "--use-service-account-credentials=true".into(),
            format!("--root-ca-file={}", pki.join("ca.crt").display()),
            format!(
                "--requestheader-client-ca-file={}",
                pki.join("front-proxy-ca.crt").display()
            ),
            format!("--client-ca-file={}", pki.join("ca.crt").display()),
            "--service-cluster-ip-range=10.96.0.0/12".into(),
        ]);
        cmd.args(extra);
        self.controller_manager = Some(Proc::spawn(
            "kube-controller-manager",
            self.dir.path(),
            &mut cmd,
        ));
    }

    /// kube-controller-manager's log so far.
    pub fn controller_manager_log(&self) -> String {
        self.controller_manager
            .as_ref()
            .map(Proc::log_tail)
            .unwrap_or_default()
    }

    /// kube-apiserver's log so far.
    pub fn apiserver_log(&self) -> String {
        self.apiserver
            .as_ref()
            .map(Proc::log_tail)
            .unwrap_or_default()
    }
}

/// A `kpki serve` process a test started beside the cluster (the CSR controller), with its
/// log; stopped (SIGTERM) on drop.
pub struct Daemon(Proc);

impl Daemon {
    /// SIGKILL: no clean shutdown, no lease release.
    pub fn kill(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }

    /// SIGTERM and wait (SIGKILL after 5 s).
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.0.child.try_wait(), Ok(Some(_)))
    }

    /// The last lines of its log.
    pub fn log(&self) -> String {
        self.0.log_tail()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Cluster {
    /// Starts `kpki serve <args…>` named `name` (its log is `<dir>/<name>.log`), with the
    /// token reached through this cluster's p11-kit server.
    pub fn start_kpki_serve(&self, name: &'static str, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(crate::kpki_bin());
        cmd.arg("serve").args(args).env("KPKI_LOG", "info").env(
            "P11_KIT_SERVER_ADDRESS",
            format!("unix:path={}", self.p11kit_socket.display()),
        );
        Daemon(Proc::spawn(name, self.dir.path(), &mut cmd))
    }

    /// The cluster CA key's URI through the p11-kit client module (a remote HSM the test
    /// can take away with [`Cluster::stop_token`]).
    pub fn remote_key_uri(&self, object: &str) -> String {
        p11kit::key_uri(&self.token, object)
    }

    /// Stops kube-apiserver (SIGTERM) and starts it again; returns once it is ready.
    pub fn restart_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.stop();
        }
        self.start_apiserver(&peers::kubernetes("kube-apiserver"));
        self.wait_ready();
    }
}

/// A verify-only key of the token signer's configuration.
pub trait VerifyKey {
    /// The TOML line naming the key.
    fn toml(&self) -> String;
}

impl VerifyKey for PathBuf {
    fn toml(&self) -> String {
        format!("public_key = \"{}\"", self.display())
    }
}

impl VerifyKey for String {
    fn toml(&self) -> String {
        format!("key = \"{self}\"")
    }
}

/// The token signer's configuration: signing key `key`; `verify_only` are public key files
/// (PEM) or key URIs that only verify, each with its `exclude_from_oidc_discovery`.
pub fn signer_config_text(
    socket: &Path,
    key: &str,
    verify_only: &[(&dyn VerifyKey, bool)],
) -> String {
    let mut s = format!(
        "[jwt]\nsocket = \"{}\"\nsigning_key = \"{key}\"\nrefresh_hint = \"10s\"\n",
        socket.display()
    );
    for (k, exclude) in verify_only {
        s.push_str(&format!(
            "\n[[jwt.verify_keys]]\n{}\nexclude_from_oidc_discovery = {exclude}\n",
            k.toml()
        ));
    }
    s.push_str("\n[signing]\nprobe_interval = \"200ms\"\n");
    s
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in [
            &mut self.controller_manager,
            &mut self.apiserver,
            &mut self.signer,
            &mut self.etcd,
        ]
        .into_iter()
        .flatten()
        {
            p.stop();
        }
        if let Some(server) = self.p11kit.take() {
            p11kit::stop_server(server);
        }
    }
}
