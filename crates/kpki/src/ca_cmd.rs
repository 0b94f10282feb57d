//! `kpki ca`: certificate authorities for any purpose, their keys on any backend.

use std::path::PathBuf;

use clap::Subcommand;
use kpki_pki::GoDuration;
use kpki_pki::ca::{self, NewCa, Outcome};
use kpki_signer::{KeyAlgorithm, KeyUri};
use serde::Serialize;

use crate::output::{OutputArgs, outln, print_data};

/// CA commands.
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a self-signed CA (kubeadm's CA profile): its key made on the backend the URI
    /// names (or taken from it when it exists there), its certificate written to
    /// `<out-dir>/<NAME>.crt`. Again with the same arguments: nothing changes.
    Create {
        /// The CA's name: the certificate file's name and, by default, its CN.
        name: String,
        /// Where the key lives: `pkcs11:token=..;object=..` or `file:/path`.
        #[arg(long)]
        key: String,
        /// The common name (default: NAME).
        #[arg(long)]
        cn: Option<String>,
        /// Algorithm of a key made now: RSA-2048 (default), RSA-3072, RSA-4096, ECDSA-P256, ECDSA-P384.
        #[arg(long, short = 'a', default_value = "RSA-2048")]
        algorithm: KeyAlgorithm,
        /// Validity (Go duration, or days as `3650d`; default 87600h, kubeadm's 10 years).
        #[arg(long, default_value = "87600h")]
        validity: GoDuration,
        /// The directory for `<NAME>.crt` (default: the current one).
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[command(flatten)]
        audit: crate::cli_audit::AuditFileArg,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Serialize)]
struct Report {
    name: String,
    certificate: PathBuf,
    key: String,
    action: &'static str,
    spki_sha256: String,
}

/// Runs a `kpki ca` command.
pub fn run(cmd: CaCommand) -> Result<(), String> {
    match cmd {
        CaCommand::Create {
            name,
            key,
            cn,
            algorithm,
            validity,
            out_dir,
            audit,
            output,
        } => {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(format!(
                    "CA name {name:?}: use a plain file name (no '/', not starting with '.')"
                ));
            }
            let key: KeyUri = key.parse().map_err(|e| format!("--key: {e}"))?;
            let cert = out_dir.join(format!("{name}.crt"));
            tracing::info!(%name, %key, %algorithm, "creating a CA");
            let created =
                crate::cli_audit::within(audit.audit_file.as_deref(), "kpki ca create", |audit| {
                    let created = ca::create(
                        &crate::backends::key_store(),
                        &NewCa {
                            cn: cn.unwrap_or_else(|| name.clone()),
                            key: key.clone(),
                            algorithm,
                            validity: validity.get(),
                            cert: cert.clone(),
                        },
                    )
                    .map_err(|e| e.to_string())?;
                    if let Some(audit) = audit
                        && created.outcome != Outcome::Exists
                    {
                        let text = std::fs::read_to_string(&cert)
                            .map_err(|e| format!("{}: {e}", cert.display()))?;
                        audit.issued(&text, None, &key.to_string())?;
                    }
                    Ok(created)
                })?;
            let action = match created.outcome {
                Outcome::Created => "created",
                Outcome::KeyTaken => "created with the existing key",
                Outcome::Exists => "exists",
            };
            let report = Report {
                name,
                certificate: cert,
                key: key.to_string(),
                action,
                spki_sha256: created.spki_sha256,
            };
            print_data(output.output, &report, || {
                outln!(
                    "[ca] {} {}: certificate {}, key {} (SPKI SHA-256 {})",
                    report.name,
                    report.action,
                    report.certificate.display(),
                    report.key,
                    report.spki_sha256
                );
            })
        }
    }
}
