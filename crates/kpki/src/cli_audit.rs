//! The audit file of offline issuance: `sign`, `certs renew`, `node add`, `kubeconfig user`
//! and `ca create` append a run to it (`--audit-file`, `audit_file` in kpki.toml or
//! `KPKI__AUDIT_FILE`) in the daemon's chain format, verified by `kpki audit verify`: an
//! `open` record, one `decision` record per certificate issued (or one for the refusal), a
//! `close` record. The file is locked for the whole run, so concurrent runs form one chain.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kpki_serve::audit::{AuditLog, Caller, Decision, Event, Record, SyncMode};

/// How long a run waits for another run holding the file.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// `--audit-file`, on the commands that issue certificates.
#[derive(clap::Args, Debug)]
pub struct AuditFileArg {
    /// Append this run to an audit file: hash-chained lines as the daemon writes them, checked
    /// by `kpki audit verify` (also `audit_file` in kpki.toml).
    #[arg(long, value_name = "FILE", env = "KPKI__AUDIT_FILE")]
    pub audit_file: Option<PathBuf>,
}

/// One command's run in the audit file.
pub struct CliAudit {
    log: AuditLog,
    command: &'static str,
}

impl CliAudit {
    /// Opens `path` (if given) for the run of `command` (e.g. `kpki sign`); `None` without
    /// a path. Lines are synced to disk before the command goes on.
    pub fn open(path: Option<&Path>, command: &'static str) -> Result<Option<CliAudit>, String> {
        let Some(path) = path else { return Ok(None) };
        let log =
            AuditLog::open_locked(path, SyncMode::Fsync, LOCK_WAIT).map_err(|e| e.to_string())?;
        Ok(Some(CliAudit { log, command }))
    }

    fn record(&self) -> Record {
        Record {
            caller: Some(Caller::this_process()),
            endpoint: Some(self.command.to_string()),
            ..Record::new(Event::Decision)
        }
    }

    /// Records the certificate `text` holds (a PEM file or a kubeconfig), issued for
    /// `signer_name` (if any) with the CA key `key_uri`.
    pub fn issued(
        &self,
        text: &str,
        signer_name: Option<&str>,
        key_uri: &str,
    ) -> Result<(), String> {
        let cert = kpki_pki::issued::issued_certificate(text)
            .map_err(|e| format!("audit: reading the issued certificate: {e}"))?;
        let record = Record {
            signer_name: signer_name.map(str::to_string),
            subject: Some(cert.subject),
            sans: cert.sans,
            decision: Some(Decision::Allow),
            serial: Some(cert.serial),
            not_after: Some(cert.not_after),
            key_uri: Some(key_uri.to_string()),
            ..self.record()
        };
        self.log
            .append(record)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Records that the command failed with `reason` (nothing issued after it).
    pub fn failed(&self, reason: &str) -> Result<(), String> {
        let record = Record {
            decision: Some(Decision::Error),
            code: Some("refused".into()),
            reason: Some(reason.to_string()),
            ..self.record()
        };
        self.log
            .append(record)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Ends the run with its `close` record.
    pub fn close(self) -> Result<(), String> {
        self.log.close().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Runs `work` inside the audit run of `command` at `path` (if any): `work` records what it
/// issues; a failure is recorded as such and the run closed either way.
pub fn within<T>(
    path: Option<&Path>,
    command: &'static str,
    work: impl FnOnce(Option<&CliAudit>) -> Result<T, String>,
) -> Result<T, String> {
    let audit = CliAudit::open(path, command)?;
    let result = work(audit.as_ref());
    if let Some(audit) = audit {
        if let Err(e) = &result {
            audit.failed(e)?;
        }
        audit.close()?;
    }
    result
}
