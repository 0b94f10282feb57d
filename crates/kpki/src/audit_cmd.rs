//! `kpki audit`: checks of the signing daemon's audit log.

use std::path::PathBuf;

use clap::Subcommand;
use kpki_serve::audit::{VerifyOptions, verify};

use crate::output::{OutputArgs, outln, print_data};

/// Audit log commands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify an audit log: every line's hash, the sequence, the chain and a final close record.
    Verify {
        /// The audit log; `-` reads stdin.
        file: PathBuf,
        /// Accept a log without a final close record (the log of a running daemon).
        #[arg(long)]
        allow_open: bool,
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
            output,
        } => {
            let path = crate::input::path(&file);
            tracing::info!(file = %path.display(), allow_open, "verifying audit log");
            let v = verify(&path, VerifyOptions { allow_open })
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
            })
        }
    }
}
