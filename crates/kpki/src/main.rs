//! The `kpki` command: a thin CLI over `kpki-pki`. Exit codes (the one list, also in
//! `kpki --help` and the README): 0 success, 1 the command failed or refused (one line on
//! stderr), 2 usage error (one line on stderr), 3 `certs check-expiration --warn-within`
//! found a certificate expiring inside the window or missing; a closed stdout pipe ends the
//! process by SIGPIPE, as it ends `cat`.
//!
//! Modules: `cluster_args` (the flags naming a node's PKI, resolved into a `ClusterSpec`),
//! `init_cmd`, `certs_cmd`, `sign_cmd`, `kubeconfig_cmd` (users, components and nodes),
//! `keys` (backend key management), `ca_cmd`, `audit_cmd`, `cli_audit` (the audit file of
//! offline issuance), `serve_cmd` (the daemon),
//! `packaging_cmd` (completions and manual pages), `backends` (the key store), `input`
//! (`-` for stdin) and `output` (`-o`, and stdout that ends quietly on a closed pipe).

// The doc comments of the clap types are the command's `--help` text, written for a
// terminal: `<file>` and `host[:port]` there are placeholders, not HTML or links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

mod audit_cmd;
mod backends;
mod ca_cmd;
mod certs_cmd;
mod cli_audit;
mod cluster_args;
mod init_cmd;
mod input;
mod keys;
mod kubeconfig_cmd;
mod output;
mod packaging_cmd;
mod rotate_cmd;
mod serve_cmd;
mod sign_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use output::OutputArgs;

/// Exit status of a usage error (the command line could not be understood).
const USAGE: u8 = 2;

/// The exit codes and environment, shown under `kpki --help`.
const AFTER_HELP: &str = "\
Exit status:
  0    success
  1    the command failed or refused (one line on stderr: kpki: error: ...)
  2    usage error: bad command, flag or flag value (one line on stderr)
  3    certs check-expiration --warn-within: certificates expiring or missing
  141  stdout closed early (kpki ... | head -1): ended by SIGPIPE, silently

Environment:
  KPKI_LOG     log filter of every command, on stderr (default warn)
  KPKI_CONFIG  kpki.toml of the commands that work on a node's PKI
  KPKI__<SECTION>__<FIELD>  any kpki.toml field, e.g. KPKI__CLUSTER__NODE_NAME";

/// Kubernetes PKI with CA keys held in files or PKCS#11 tokens.
#[derive(Parser, Debug)]
#[command(name = "kpki", version, about, long_about = None, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the kubeadm PKI and kubeconfigs, with CA keys on their configured backends.
    Init(init_cmd::InitArgs),
    /// Certificates of the node: check-expiration, renew, generate-csr.
    #[command(subcommand)]
    Certs(certs_cmd::CertsCommand),
    /// Sign a CSR (PEM or CertificateSigningRequest object) under the Kubernetes signer rules.
    Sign(sign_cmd::SignArgs),
    /// Kubeconfigs: user (a person or tool), component (kube-proxy).
    #[command(subcommand)]
    Kubeconfig(kubeconfig_cmd::KubeconfigCommand),
    /// Worker nodes: add (kubelet serving certificate and client kubeconfig).
    #[command(subcommand)]
    Node(kubeconfig_cmd::NodeCommand),
    /// Describe a certificate, bundle, CSR, kubeconfig, key file or public key (never key material).
    Inspect {
        /// The file; `-` reads stdin.
        file: std::path::PathBuf,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Keys on files or PKCS#11 tokens: create, list, show, import.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Certificate authorities for any purpose, keys on any backend: create, csr, install (an
    /// intermediate of an external root), rotate.
    #[command(subcommand)]
    Ca(ca_cmd::CaCommand),
    /// The signing daemon's audit log: verify.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Run the signing daemon (mTLS API, policy, audit, metrics; token signer; CSR controller).
    Serve(serve_cmd::ServeArgs),
    /// Print a shell completion script: bash, zsh or fish.
    Completion(packaging_cmd::CompletionArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    Man(packaging_cmd::ManArgs),
}

impl Command {
    /// The command's name for log lines (never its arguments, which may name PIN files).
    fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Certs(_) => "certs",
            Command::Sign(_) => "sign",
            Command::Kubeconfig(_) => "kubeconfig",
            Command::Node(_) => "node",
            Command::Inspect { .. } => "inspect",
            Command::Keys(_) => "keys",
            Command::Ca(_) => "ca",
            Command::Audit(_) => "audit",
            Command::Serve(_) => "serve",
            Command::Completion(_) => "completion",
            Command::Man(_) => "man",
        }
    }
}

/// Parses the command line; help and version go to stdout (exit 0), a usage error is one
/// line on stderr and exit 2.
fn parse() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            // Through kpki's writer (a closed pipe ends by SIGPIPE); styled on a terminal.
            let help = e.render();
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                output::out!("{}", help.ansi());
            } else {
                output::out!("{help}");
            }
            output::flush_stdout();
            Err(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `kpki` or `kpki certs` alone: the help is the answer, and still a usage error.
            eprint!("{}", e.render());
            Err(ExitCode::from(USAGE))
        }
        Err(e) => {
            eprintln!("kpki: error: {}", usage_line(&e.render().to_string()));
            Err(ExitCode::from(USAGE))
        }
    }
}

/// clap's multi-line usage error as one line: its first paragraph (the message and, for a
/// missing argument, the arguments listed under it), and where to look.
fn usage_line(rendered: &str) -> String {
    let paragraph: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let text = paragraph.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    if text.is_empty() {
        "usage error (see --help)".into()
    } else {
        format!("{text} (see --help)")
    }
}

/// Installs the stderr log subscriber: `KPKI_LOG` filters every command.
fn init_logs(command: &Command) {
    // cryptoki logs every vendor mechanism it cannot name at ERROR; silence it unless asked.
    let (default_level, json) = match command {
        Command::Serve(a) => ("info", a.log_format == serve_cmd::LogFormat::Json),
        _ => ("warn", false),
    };
    let directives = std::env::var("KPKI_LOG").unwrap_or_else(|_| default_level.into());
    let directives = if directives.contains("cryptoki") {
        directives
    } else {
        format!("{directives},cryptoki=off")
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(directives))
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logs(&cli.command);
    tracing::debug!(
        command = cli.command.name(),
        version = env!("CARGO_PKG_VERSION"),
        "kpki"
    );
    let result = match cli.command {
        Command::Init(args) => init_cmd::run(args).map(|()| ExitCode::SUCCESS),
        Command::Certs(cmd) => certs_cmd::run(cmd),
        Command::Sign(args) => sign_cmd::run(args).map(|()| ExitCode::SUCCESS),
        Command::Kubeconfig(cmd) => kubeconfig_cmd::run_kubeconfig(cmd).map(|()| ExitCode::SUCCESS),
        Command::Node(cmd) => kubeconfig_cmd::run_node(cmd).map(|()| ExitCode::SUCCESS),
        Command::Inspect { file, output } => inspect(&file, output.output),
        Command::Keys(cmd) => keys::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Ca(cmd) => ca_cmd::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Audit(cmd) => audit_cmd::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve_cmd::run(args).map(|()| ExitCode::SUCCESS),
        Command::Completion(args) => {
            packaging_cmd::completion(args, Cli::command()).map(|()| ExitCode::SUCCESS)
        }
        Command::Man(args) => packaging_cmd::man(args, Cli::command()).map(|()| ExitCode::SUCCESS),
    };
    output::flush_stdout();
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the underlying parser printed.
            let line: Vec<&str> = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            eprintln!("kpki: error: {}", line.join(" "));
            ExitCode::from(1)
        }
    }
}

/// `kpki inspect FILE|-`.
fn inspect(file: &std::path::Path, format: output::Format) -> Result<ExitCode, String> {
    let path = input::path(file);
    tracing::info!(file = %path.display(), "inspecting");
    let items = kpki_pki::inspect::inspect(&path).map_err(|e| e.to_string())?;
    output::print_data(format, &items, || {
        output::out!("{}", kpki_pki::inspect::render_text(&items))
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_become_one_line() {
        let cases = [
            (
                "error: unexpected argument '--bogus' found\n\n  tip: ...\n\nUsage: kpki init [OPTIONS]\n\nFor more information, try '--help'.\n",
                "unexpected argument '--bogus' found (see --help)",
            ),
            ("\n\nerror: x\n", "x (see --help)"),
            (
                "error: the following required arguments were not provided:\n  --address <ADDRESSES>\n\nUsage: kpki node add --address <ADDRESSES> <NAME>\n",
                "the following required arguments were not provided: --address <ADDRESSES> (see --help)",
            ),
            ("", "usage error (see --help)"),
        ];
        for (rendered, want) in cases {
            assert_eq!(usage_line(rendered), want);
        }
    }

    #[test]
    fn output_flag_only_where_it_does_something() {
        let takes_o = |args: &[&str]| {
            let mut argv = vec!["kpki"];
            argv.extend_from_slice(args);
            argv.extend(["-o", "json"]);
            Cli::try_parse_from(argv).is_ok()
        };
        let with = [
            &["init"][..],
            &["certs", "check-expiration"],
            &["certs", "renew", "all"],
            &["certs", "generate-csr"],
            &["sign", "x.csr"],
            &["node", "add", "w1", "--address", "10.0.0.1"],
            &["inspect", "x"],
            &["keys", "show", "file:/k"],
            &["keys", "list", "file:/d"],
            &["keys", "create", "file:/k"],
            &["audit", "verify", "a.jsonl"],
            &["ca", "create", "mesh", "--key", "file:/k"],
            &["ca", "rotate", "ca"],
            &["ca", "rotate", "--status"],
        ];
        for args in with {
            assert!(takes_o(args), "{args:?} should take -o");
        }
        let without = [
            &["kubeconfig", "user", "--client-name", "jane"][..],
            &["kubeconfig", "component", "kube-proxy"],
            &["serve", "-c", "s.toml"],
            &["completion", "bash"],
            &["man"],
        ];
        for args in without {
            assert!(!takes_o(args), "{args:?} should refuse -o");
        }
    }
}
