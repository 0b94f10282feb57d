//! `kpki certs`: lifecycle of the node's certificates (`check-expiration`, `generate-csr`,
//! `renew`).

use std::process::ExitCode;

use clap::Subcommand;
use kpki_pki::GoDuration;
use kpki_pki::expiration;
use time::OffsetDateTime;

use crate::cluster_args::ClusterArgs;
use crate::output::{Format, print_data};

/// Certificate lifecycle commands.
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Show when each certificate of the PKI expires (kubeadm's tables).
    CheckExpiration {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Exit with status 3 when anything expires within this window (e.g. 30d, 720h).
        #[arg(long, value_name = "DURATION")]
        warn_within: Option<String>,
    },
    /// Write keys and CSRs for every leaf and kubeconfig, for signing by an external CA.
    GenerateCsr {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Renew a certificate (kubeadm's names) or `all`, signed by its CA on its backend.
    Renew {
        /// apiserver, apiserver-kubelet-client, front-proxy-client, etcd-server, etcd-peer,
        /// etcd-healthcheck-client, apiserver-etcd-client, admin.conf, super-admin.conf,
        /// controller-manager.conf, scheduler.conf, or all.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Exit status of `check-expiration --warn-within` when something expires inside the window.
const EXPIRING: u8 = 3;

fn parse_window(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<GoDuration>()
        .map(GoDuration::get)
        .map_err(|e| format!("--warn-within: {e}"))
}

/// Runs a `kpki certs` command; returns the process exit code.
pub fn run(cmd: CertsCommand, format: Format) -> Result<ExitCode, String> {
    match cmd {
        CertsCommand::CheckExpiration {
            cluster,
            warn_within,
        } => {
            let window = warn_within.as_deref().map(parse_window).transpose()?;
            let spec = cluster.spec()?;
            let now = OffsetDateTime::now_utc();
            let report = expiration::check(&spec, &crate::backends::key_store())
                .map_err(|e| e.to_string())?;
            print_data(format, &expiration::to_info(&report, now), || {
                print!("{}", expiration::render_text(&report, now))
            })?;
            match window {
                Some(w) if expiration::expires_within(&report, now, w) => {
                    eprintln!(
                        "kpki: warning: certificates expire within {}",
                        warn_within.unwrap_or_default()
                    );
                    Ok(ExitCode::from(EXPIRING))
                }
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        CertsCommand::GenerateCsr { cluster } => {
            let spec = cluster.spec()?;
            let written = kpki_pki::gencsr::generate(&spec).map_err(|e| e.to_string())?;
            print_data(format, &written, || {
                for w in &written {
                    println!(
                        "[certs] Generated key {:?} and CSR {:?} for {}",
                        w.key.display().to_string(),
                        w.csr.display().to_string(),
                        w.name
                    );
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Renew { name, cluster } => {
            let spec = cluster.spec()?;
            let text = format == Format::Text;
            let mut progress = |line: String| {
                if text {
                    println!("{line}");
                }
            };
            let report =
                kpki_pki::renew::renew(&spec, &crate::backends::key_store(), &name, &mut progress)
                    .map_err(|e| e.to_string())?;
            print_data(format, &report, || {
                if name == "all" {
                    println!(
                        "\nDone renewing certificates. You must restart the kube-apiserver, kube-controller-manager, kube-scheduler and etcd, so that they can use the new certificates."
                    );
                } else if !report.restart.is_empty() {
                    println!(
                        "\nYou must restart {} so that it can use the new certificate.",
                        report.restart.join(", ")
                    );
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
