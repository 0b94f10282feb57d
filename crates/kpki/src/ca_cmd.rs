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
        /// Print what would be done (certificate path, key URI without a PIN, whether the
        /// key would be made or taken) and write nothing, on disk or on the token.
        #[arg(long)]
        dry_run: bool,
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
    #[serde(skip_serializing_if = "String::is_empty")]
    spki_sha256: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
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
            dry_run,
            output,
        } => {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(format!(
                    "CA name {name:?}: use a plain file name (no '/', not starting with '.')"
                ));
            }
            let key: KeyUri = key.parse().map_err(|e| format!("--key: {e}"))?;
            let cert = out_dir.join(format!("{name}.crt"));
            tracing::info!(%name, %key, %algorithm, dry_run, "creating a CA");
            let new = NewCa {
                cn: cn.unwrap_or_else(|| name.clone()),
                key: key.clone(),
                algorithm,
                validity: validity.get(),
                cert: cert.clone(),
            };
            let store = crate::backends::key_store();
            let (outcome, spki_sha256) = if dry_run {
                let (outcome, spki) = ca::plan(&store, &new).map_err(|e| e.to_string())?;
                (outcome, spki.unwrap_or_default())
            } else {
                let created = ca::create(&store, &new).map_err(|e| e.to_string())?;
                (created.outcome, created.spki_sha256)
            };
            let action = match (outcome, dry_run) {
                (Outcome::Created, false) => "created",
                (Outcome::KeyTaken, false) => "created with the existing key",
                (Outcome::Exists, _) => "exists",
                (Outcome::Created, true) => "would be created with a new key",
                (Outcome::KeyTaken, true) => "would be created with the existing key",
            };
            let report = Report {
                name,
                certificate: cert,
                key: key.to_string(),
                action,
                spki_sha256,
                dry_run,
            };
            print_data(output.output, &report, || {
                let tag = if dry_run { "[dry-run]" } else { "[ca]" };
                let spki = if report.spki_sha256.is_empty() {
                    String::new()
                } else {
                    format!(" (SPKI SHA-256 {})", report.spki_sha256)
                };
                outln!(
                    "{tag} {} {}: certificate {}, key {}{spki}",
                    report.name,
                    report.action,
                    report.certificate.display(),
                    report.key,
                );
            })
        }
    }
}
