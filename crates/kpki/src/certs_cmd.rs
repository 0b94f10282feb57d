//! `kpki certs`: lifecycle of the node's certificates (`check-expiration`, `generate-csr`,
//! `renew`).

use std::process::ExitCode;

use clap::Subcommand;
use kpki_pki::GoDuration;
use kpki_pki::expiration;
use time::OffsetDateTime;

use crate::cluster_args::ClusterArgs;
use crate::output::{Format, OutputArgs, outln, print_data};

/// Certificate lifecycle commands.
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Show when each certificate of the PKI expires (kubeadm's tables).
    CheckExpiration {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Exit with status 3 when anything expires within this window (e.g. 30d, 720h) or
        /// is missing.
        #[arg(long, value_name = "DURATION", value_parser = parse_window)]
        warn_within: Option<Window>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write keys and CSRs for every leaf and kubeconfig, for signing by an external CA.
    GenerateCsr {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Renew a certificate (kubeadm's names) or `all`, signed by its CA on its backend.
    Renew {
        /// apiserver, apiserver-kubelet-client, front-proxy-client, etcd-server, etcd-peer,
        /// etcd-healthcheck-client, apiserver-etcd-client, admin.conf, super-admin.conf,
        /// controller-manager.conf, scheduler.conf, or all.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print what would be renewed (files, signing CA and its key URI, never a PIN) and
        /// write nothing; the CA keys are opened, so an unreachable key fails the dry run.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        audit: crate::cli_audit::AuditFileArg,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Exit status of `check-expiration --warn-within` when something expires inside the window
/// or is missing.
const EXPIRING: u8 = 3;

/// The `--warn-within` window as given and as a duration.
#[derive(Debug, Clone)]
pub struct Window {
    text: String,
    duration: std::time::Duration,
}

/// Parses `30d` or a Go duration (`720h`); a malformed window is a usage error.
fn parse_window(text: &str) -> Result<Window, String> {
    let duration = text
        .parse::<GoDuration>()
        .map(GoDuration::get)
        .map_err(|e| e.to_string())?;
    Ok(Window {
        text: text.to_string(),
        duration,
    })
}

/// Names of the certificates and CAs whose file is missing.
fn missing(report: &expiration::Report) -> Vec<&str> {
    report
        .certificates
        .iter()
        .chain(&report.authorities)
        .filter(|r| r.not_after.is_none())
        .map(|r| r.name.as_str())
        .collect()
}

/// Runs a `kpki certs` command; returns the process exit code.
pub fn run(cmd: CertsCommand) -> Result<ExitCode, String> {
    match cmd {
        CertsCommand::CheckExpiration {
            cluster,
            warn_within,
            output,
        } => {
            let spec = cluster.spec()?;
            let now = OffsetDateTime::now_utc();
            let report = expiration::check(&spec, &crate::backends::key_store())
                .map_err(|e| e.to_string())?;
            print_data(output.output, &expiration::to_info(&report, now), || {
                crate::output::out!("{}", expiration::render_text(&report, now))
            })?;
            let Some(window) = warn_within else {
                return Ok(ExitCode::SUCCESS);
            };
            let missing = missing(&report);
            let expiring = expiration::expires_within(&report, now, window.duration);
            if expiring {
                eprintln!("kpki: warning: certificates expire within {}", window.text);
            }
            if !missing.is_empty() {
                eprintln!("kpki: warning: missing: {}", missing.join(", "));
            }
            Ok(if expiring || !missing.is_empty() {
                ExitCode::from(EXPIRING)
            } else {
                ExitCode::SUCCESS
            })
        }
        CertsCommand::GenerateCsr { cluster, output } => {
            let spec = cluster.spec()?;
            let written = kpki_pki::gencsr::generate(&spec).map_err(|e| e.to_string())?;
            print_data(output.output, &written, || {
                for w in &written {
                    outln!(
                        "[certs] Generated key {:?} and CSR {:?} for {}",
                        w.key.display().to_string(),
                        w.csr.display().to_string(),
                        w.name
                    );
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Renew {
            name,
            cluster,
            dry_run,
            audit,
            output,
        } => {
            let (spec, audit_file) = cluster.spec_and_audit_file(audit.audit_file.as_deref())?;
            let format = output.output;
            let text = format == Format::Text;
            let mut progress = |line: String| {
                tracing::info!("{line}");
                if text {
                    outln!("{line}");
                }
            };
            let report = if dry_run {
                kpki_pki::renew::dry_run(&spec, &crate::backends::key_store(), &name, &mut progress)
                    .map_err(|e| e.to_string())?
            } else {
                crate::cli_audit::within(audit_file.as_deref(), "kpki certs renew", |audit| {
                    let mut issued = Vec::new();
                    let report = kpki_pki::renew::renew(
                        &spec,
                        &crate::backends::key_store(),
                        &name,
                        &mut progress,
                        &mut issued,
                    );
                    // Every signature is recorded, those before a failure included.
                    if let Some(audit) = audit {
                        for r in &issued {
                            audit.issued(&r.pem, None, &r.ca_key)?;
                        }
                    }
                    report.map_err(|e| e.to_string())
                })?
            };
            print_data(format, &report, || {
                if dry_run {
                    outln!(
                        "[dry-run] {} to renew; nothing is written",
                        report.would_renew.len()
                    );
                } else if name == "all" {
                    outln!(
                        "\nDone renewing certificates. You must restart the kube-apiserver, kube-controller-manager, kube-scheduler and etcd, so that they can use the new certificates."
                    );
                } else if !report.restart.is_empty() {
                    outln!(
                        "\nYou must restart {} so that it can use the new certificate.",
                        report.restart.join(", ")
                    );
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_in_days_or_go_durations() {
        let ok = [
            ("30d", 30 * 86400),
            ("0d", 0),
            ("720h", 720 * 3600),
            ("1h30m", 5400),
        ];
        for (text, secs) in ok {
            assert_eq!(
                parse_window(text).unwrap().duration.as_secs(),
                secs,
                "{text}"
            );
        }
        for bad in ["soon", "d", "-1d", "30 d", "99999999999999999d", ""] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_names_certificates_and_authorities() {
        let row = |name: &str, present: bool| expiration::Row {
            name: name.into(),
            not_after: present.then(OffsetDateTime::now_utc),
            ca_name: None,
            externally_managed: false,
        };
        let report = expiration::Report {
            certificates: vec![row("apiserver", true), row("etcd-peer", false)],
            authorities: vec![row("ca", true), row("etcd-ca", false)],
        };
        assert_eq!(missing(&report), vec!["etcd-peer", "etcd-ca"]);
        let whole = expiration::Report {
            certificates: vec![row("apiserver", true)],
            authorities: vec![row("ca", true)],
        };
        assert!(missing(&whole).is_empty());
    }
}
