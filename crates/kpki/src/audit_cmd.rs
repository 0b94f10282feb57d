//! `kpki audit`: checks of the signing daemon's audit log.

use std::path::PathBuf;

use clap::Subcommand;
use kpki_serve::audit::{VerifyOptions, verify};

use crate::output::{Format, print_data};

/// Audit log commands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify an audit log: every line's hash, the sequence, the chain and a final close record.
    Verify {
        /// The audit log.
        file: PathBuf,
        /// Accept a log without a final close record (the log of a running daemon).
        #[arg(long)]
        allow_open: bool,
    },
}

/// Runs a `kpki audit` command.
pub fn run(cmd: AuditCommand, format: Format) -> Result<(), String> {
    match cmd {
        AuditCommand::Verify { file, allow_open } => {
            let v = verify(&file, VerifyOptions { allow_open })
                .map_err(|e| format!("audit log {}: {e}", file.display()))?;
            print_data(format, &v, || {
                println!(
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
