//! `kpki ca`: certificate authorities for any purpose, their keys on any backend.

use std::path::PathBuf;

use clap::Subcommand;
use kpki_pki::GoDuration;
use kpki_pki::ca::{self, NewCa, Outcome};
use kpki_pki::intermediate;
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
        audit: crate::cli_audit::AuditFileArg,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Make (or take) a CA key and write a request for a CA certificate, for an external root
    /// to sign: `<out-dir>/<file>.csr`, where `<file>` is kubeadm's (`ca`, `etcd/ca`,
    /// `front-proxy-ca`) or NAME. The request asks for basicConstraints CA:TRUE and keyUsage
    /// digitalSignature, keyCertSign, cRLSign.
    Csr {
        /// The CA's name: `ca`, `etcd-ca`, `front-proxy-ca`, or any file name.
        name: String,
        /// Where the key lives (default: `file:<out-dir>/<file>.key`, kubeadm's place).
        #[arg(long)]
        key: Option<String>,
        /// The subject, OpenSSL style: `/O=Example Bank/CN=kubernetes` (default: `/CN=` and
        /// kubeadm's CN for its CAs, else NAME).
        #[arg(long)]
        subject: Option<String>,
        /// Algorithm of a key made now: RSA-2048 (default), RSA-3072, RSA-4096, ECDSA-P256, ECDSA-P384.
        #[arg(long, short = 'a', default_value = "RSA-2048")]
        algorithm: KeyAlgorithm,
        /// The certificate directory (default: the current one).
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Check and say what would be done (request path, whether the key would be made);
        /// write nothing, make no key.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Install the CA certificate an external root signed for the key of `kpki ca csr`:
    /// checked to hold that key, to be a CA, and to chain through --chain up to a
    /// self-signed root within every path length constraint; written as `<out-dir>/<file>.crt`
    /// with the issuers in `<out-dir>/<file>-chain.crt` (docs/ca.md). Nothing is written
    /// when a check fails; an installed CA is never replaced.
    Install {
        /// The CA's name: `ca`, `etcd-ca`, `front-proxy-ca`, or any file name.
        name: String,
        /// The signed CA certificate (PEM; certificates after the first are taken as chain).
        #[arg(long)]
        cert: PathBuf,
        /// The issuers up to and including the root (PEM, any order).
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Where the key lives (default: `file:<out-dir>/<file>.key`).
        #[arg(long)]
        key: Option<String>,
        /// The certificate directory (default: the current one).
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Run every check and say what would be installed; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Rotate a CA (ca, etcd-ca, front-proxy-ca) or the service-account key (sa) without
    /// downtime: prepare, trust-both, reissue, retire, one phase per run; --status says where
    /// this node stands and what to restart.
    Rotate(crate::rotate_cmd::RotateArgs),
}

/// The file base (without `.crt`) of CA `name` in a certificate directory, and its default
/// CN: kubeadm's for its three CAs, else the name.
fn ca_file(name: &str) -> Result<(String, String), String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!(
            "CA name {name:?}: use a plain file name (no '/', not starting with '.')"
        ));
    }
    Ok(kpki_pki::catalogue::cas(true)
        .find(|c| c.name == name)
        .map(|c| (c.base.to_string(), c.cn.to_string()))
        .unwrap_or_else(|| (name.to_string(), name.to_string())))
}

fn key_or_default(
    key: Option<String>,
    out_dir: &std::path::Path,
    base: &str,
) -> Result<KeyUri, String> {
    match key {
        Some(k) => k.parse().map_err(|e| format!("--key: {e}")),
        None => Ok(KeyUri::file(out_dir.join(format!("{base}.key")))),
    }
}

#[derive(Serialize)]
struct CsrReport {
    name: String,
    request: PathBuf,
    key: String,
    key_action: &'static str,
    subject: String,
    spki_sha256: String,
}

#[derive(Serialize)]
struct InstallReport {
    name: String,
    certificate: PathBuf,
    chain: Option<PathBuf>,
    key: String,
    action: &'static str,
    path: Vec<String>,
    path_len: Option<u32>,
    name_constraints: bool,
    spki_sha256: String,
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
        CaCommand::Csr {
            name,
            key,
            subject,
            algorithm,
            out_dir,
            dry_run,
            output,
        } => {
            let (base, cn) = ca_file(&name)?;
            let key = key_or_default(key, &out_dir, &base)?;
            let subject = match subject {
                Some(s) => {
                    intermediate::parse_subject(&s).map_err(|e| format!("--subject: {e}"))?
                }
                None => intermediate::parse_subject(&format!("/CN={}", cn.replace('/', "\\/")))
                    .map_err(|e| e.to_string())?,
            };
            let csr = out_dir.join(format!("{base}.csr"));
            tracing::info!(%name, %key, %algorithm, "writing a CA request");
            let request = intermediate::CaRequest {
                subject: subject.clone(),
                key: key.clone(),
                algorithm,
                csr: csr.clone(),
            };
            let store = crate::backends::key_store();
            let done = if dry_run {
                intermediate::csr_plan(&store, &request)
            } else {
                intermediate::csr(&store, &request)
            }
            .map_err(|e| e.to_string())?;
            let report = CsrReport {
                name,
                request: csr,
                key: key.to_string(),
                key_action: match (done.key_created, dry_run) {
                    (true, false) => "created",
                    (true, true) => "would be created",
                    (false, _) => "existing",
                },
                subject: subject.display(),
                spki_sha256: done.spki_sha256,
            };
            print_data(output.output, &report, || {
                if dry_run {
                    outln!(
                        "[dry-run] {} request {} for {} (key {}, {}); nothing was written",
                        report.name,
                        report.request.display(),
                        report.subject,
                        report.key,
                        report.key_action
                    );
                    return;
                }
                outln!(
                    "[ca] {} request {} for {} (key {}, {}; SPKI SHA-256 {}): have the root sign it, then run `kpki ca install {} --cert <signed.crt> --chain <root and intermediates>`",
                    report.name,
                    report.request.display(),
                    report.subject,
                    report.key,
                    report.key_action,
                    report.spki_sha256,
                    report.name
                );
            })
        }
        CaCommand::Install {
            name,
            cert,
            chain,
            key,
            out_dir,
            dry_run,
            output,
        } => {
            let (base, _) = ca_file(&name)?;
            let key = key_or_default(key, &out_dir, &base)?;
            let target = out_dir.join(format!("{base}.crt"));
            tracing::info!(%name, %key, "installing a CA certificate");
            let done = intermediate::install(
                &crate::backends::key_store(),
                &intermediate::Install {
                    cert,
                    chain,
                    key: key.clone(),
                    target: target.clone(),
                    dry_run,
                },
                time::OffsetDateTime::now_utc(),
            )
            .map_err(|e| e.to_string())?;
            let report = InstallReport {
                name,
                certificate: target,
                chain: done.chain_file,
                key: key.to_string(),
                action: match (done.written, dry_run) {
                    (true, false) => "installed",
                    (true, true) => "would be installed (dry run: nothing was written)",
                    (false, _) => "exists",
                },
                path: done.path,
                path_len: done.path_len,
                name_constraints: done.name_constraints,
                spki_sha256: done.spki_sha256,
            };
            print_data(output.output, &report, || {
                let chain = report
                    .chain
                    .as_ref()
                    .map(|c| format!(", chain {}", c.display()))
                    .unwrap_or_default();
                let path_len = report
                    .path_len
                    .map(|n| format!(", path length {n}"))
                    .unwrap_or_default();
                let nc = if report.name_constraints {
                    ", name constraints enforced at issuance"
                } else {
                    ""
                };
                outln!(
                    "[ca] {} {}: certificate {}{chain}, key {}; path {}{path_len}{nc}",
                    report.name,
                    report.action,
                    report.certificate.display(),
                    report.key,
                    report.path.join(", issued by ")
                );
            })
        }
        CaCommand::Rotate(args) => crate::rotate_cmd::run(args),
        CaCommand::Create {
            name,
            key,
            cn,
            algorithm,
            validity,
            out_dir,
            dry_run,
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
                let created = crate::cli_audit::within(
                    audit.audit_file.as_deref(),
                    "kpki ca create",
                    |audit| {
                        let created = ca::create(&store, &new).map_err(|e| e.to_string())?;
                        if let Some(audit) = audit
                            && created.outcome != Outcome::Exists
                        {
                            let text = std::fs::read_to_string(&cert)
                                .map_err(|e| format!("{}: {e}", cert.display()))?;
                            audit.issued(&text, None, &key.to_string())?;
                        }
                        Ok(created)
                    },
                )?;
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
