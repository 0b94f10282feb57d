//! `kpki audit`: checks of the signing daemon's audit log.

use std::path::PathBuf;

use clap::Subcommand;
use kpki_serve::audit::{CheckpointKey, VerifyOptions, verify_with};

use crate::output::{OutputArgs, outln, print_data};

/// Audit log commands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify an audit log: every line's hash, the sequence, the chain and a final close record;
    /// with `--key`, every signed checkpoint and a signed close record.
    Verify {
        /// The audit log; `-` reads stdin.
        file: PathBuf,
        /// Accept a log without a final close record (the log of a running daemon).
        #[arg(long)]
        allow_open: bool,
        /// The checkpoint key's certificate or public key (PEM): every checkpoint must be
        /// signed by it, and the lines after the last checkpoint are reported.
        #[arg(long, value_name = "CERT|PUBKEY")]
        key: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Runs a `kpki audit` command.
pub fn run(cmd: AuditCommand) -> Result<(), String> {
    match cmd {
        AuditCommand::Verify {
            file,
            allow_open,
            key,
            output,
        } => {
            let key = key.as_deref().map(checkpoint_key).transpose()?;
            let path = crate::input::path(&file);
            tracing::info!(file = %path.display(), allow_open, "verifying audit log");
            let v = verify_with(&path, VerifyOptions { allow_open }, key.as_ref())
                .map_err(|e| format!("audit log {}: {e}", file.display()))?;
            print_data(output.output, &v, || {
                outln!(
                    "audit log {}: {} lines, {} decisions ({} allowed), chain intact, {}",
                    file.display(),
                    v.lines,
                    v.decisions,
                    v.allowed,
                    if v.closed {
                        "closed cleanly"
                    } else {
                        "not closed (still open)"
                    }
                );
                if key.is_some() {
                    outln!(
                        "{} checkpoints signed by the given key; {}",
                        v.checkpoints,
                        match v.unanchored_from {
                            Some(from) if from == v.lines =>
                                format!("line {from} is not anchored by a checkpoint"),
                            Some(from) =>
                                format!("lines {from}-{} are not anchored by a checkpoint", v.lines),
                            None => "every line is anchored".to_string(),
                        }
                    );
                }
            })
        }
    }
}

/// The checkpoint key in the PEM file `path` (a certificate or a public key).
fn checkpoint_key(path: &std::path::Path) -> Result<CheckpointKey, String> {
    let what = |e: String| format!("--key {}: {e}", path.display());
    let pem = kpki_atomic::read::input(&crate::input::path(path), kpki_atomic::read::PEM_MAX)
        .map_err(|e| what(e.to_string()))?;
    CheckpointKey::from_pem(&pem).map_err(what)
}
