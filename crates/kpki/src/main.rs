//! The `kpki` command: a thin CLI over `kpki-pki`. Exit codes: 0 success, 1 refusal or
//! error (one line on stderr), 2 usage error.
//!
//! Modules: `cluster_args` (the flags naming a node's PKI, resolved into a `ClusterSpec`),
//! `init_cmd`, `certs_cmd`, `sign_cmd`, `kubeconfig_cmd` (users, components and nodes),
//! `keys` (backend key management), `audit_cmd`, `serve_cmd` (the daemon) and `output`
//! (text, JSON and YAML).

// The doc comments of the clap types are the command's `--help` text, written for a
// terminal: `<file>` and `host[:port]` there are placeholders, not HTML or links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

mod audit_cmd;
mod backends;
mod ca_cmd;
mod certs_cmd;
mod cluster_args;
mod init_cmd;
mod keys;
mod kubeconfig_cmd;
mod output;
mod serve_cmd;
mod sign_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Format;

/// Kubernetes PKI with CA keys held in files or PKCS#11 tokens.
#[derive(Parser, Debug)]
#[command(name = "kpki", version, about, long_about = None)]
struct Cli {
    /// Output format for commands that print data.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Text)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the kubeadm PKI and kubeconfigs, with CA keys on their configured backends.
    Init(init_cmd::InitArgs),
    /// Certificate lifecycle: check-expiration.
    #[command(subcommand)]
    Certs(certs_cmd::CertsCommand),
    /// Sign a CSR (PEM or CertificateSigningRequest object) under the Kubernetes signer rules.
    Sign(sign_cmd::SignArgs),
    /// Kubeconfigs for users and components.
    #[command(subcommand)]
    Kubeconfig(kubeconfig_cmd::KubeconfigCommand),
    /// Worker node credentials.
    #[command(subcommand)]
    Node(kubeconfig_cmd::NodeCommand),
    /// Describe a certificate, bundle, CSR, kubeconfig, key file or public key (never key material).
    Inspect {
        /// The file.
        file: std::path::PathBuf,
    },
    /// Manage keys on their backends (files or PKCS#11 tokens).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Certificate authorities for any purpose, keys on any backend: create.
    #[command(subcommand)]
    Ca(ca_cmd::CaCommand),
    /// The signing daemon's audit log.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Run the signing daemon (mTLS API, policy, audit, metrics).
    Serve(serve_cmd::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // cryptoki logs every vendor mechanism it cannot name at ERROR; silence it unless asked.
    let (default_level, json) = match &cli.command {
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
    let result = match cli.command {
        Command::Init(args) => init_cmd::run(args, cli.output).map(|()| ExitCode::SUCCESS),
        Command::Certs(cmd) => certs_cmd::run(cmd, cli.output),
        Command::Sign(args) => sign_cmd::run(args, cli.output).map(|()| ExitCode::SUCCESS),
        Command::Kubeconfig(cmd) => kubeconfig_cmd::run_kubeconfig(cmd).map(|()| ExitCode::SUCCESS),
        Command::Node(cmd) => kubeconfig_cmd::run_node(cmd, cli.output).map(|()| ExitCode::SUCCESS),
        Command::Inspect { file } => kpki_pki::inspect::inspect(&file)
            .map_err(|e| e.to_string())
            .and_then(|items| {
                output::print_data(cli.output, &items, || {
                    print!("{}", kpki_pki::inspect::render_text(&items))
                })
            })
            .map(|()| ExitCode::SUCCESS),
        Command::Keys(cmd) => keys::run(cmd, cli.output).map(|()| ExitCode::SUCCESS),
        Command::Ca(cmd) => ca_cmd::run(cmd, cli.output).map(|()| ExitCode::SUCCESS),
        Command::Audit(cmd) => audit_cmd::run(cmd, cli.output).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve_cmd::run(args).map(|()| ExitCode::SUCCESS),
    };
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
