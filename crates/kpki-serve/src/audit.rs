//! The signing daemon's audit trail: an append-only, hash-chained JSON Lines file.
//!
//! # Line format
//!
//! One JSON object per line, UTF-8, each line ended by a single LF. The fields come in this
//! order: `seq`, `prev`, the fields of a [`Record`], and `hash` last:
//!
//! ```text
//! {"seq":2,"prev":"5d41…","time":"2026-11-22T10:00:00Z","event":"decision","caller":{"cn":"jane","orgs":["dev"]},"decision":"allow","serial":"1f","hash":"9a0b…"}
//! ```
//!
//! - `seq`: 1 on the first line of the file, then one more on every line. A restarted daemon
//!   continues the sequence of the file it reopens.
//! - `prev`: lowercase hex SHA-256 of the previous line's exact bytes (without its LF); 64 zeros
//!   on the first line.
//! - `hash`: lowercase hex SHA-256 of the line's own exact bytes with the value of `hash`
//!   emptied, i.e. of the line as it reads with `"hash":""`. Because `hash` is always the last
//!   field, the hashed bytes are found textually (the line minus its final 64 hex digits), with
//!   no dependence on how a JSON library would re-encode the object.
//!
//! # Bounded lines
//!
//! What a caller sends never makes a line long ([`bound`], applied to every record as it is
//! appended): `subject`, `reason` and `signer_name` keep at most [`MAX_TEXT`] bytes of JSON,
//! the caller's CN and each O value [`MAX_NAME`] (at most [`MAX_ORGS`] O values), and a cut
//! value ends with `…`. A SAN list of more than [`MAX_SANS`] values, or more than
//! [`MAX_SANS_BYTES`] bytes of JSON, is summarized: `sans` lists its first values (at most
//! [`SUMMARY_SANS`], [`MAX_SANS_BYTES`]` / 2` bytes, each cut to [`MAX_NAME`]), and two fields
//! follow the record's fields, before `hash`: `sans_total`, the number of SANs, and
//! `sans_sha256`, the lowercase hex SHA-256 of every SAN string in request order, each
//! followed by one LF ([`san_digest`]). A line is thus at most [`MAX_LINE`] bytes. Lines
//! written before these fields existed verify as before: [`verify`] reads the fields it
//! knows and hashes the bytes as they are.
//!
//! A daemon's run starts with an `open` record ([`AuditLog::open`]) and, on a clean shutdown,
//! ends with a `close` record ([`AuditLog::close`]); in between come `decision`, `approval`,
//! `token` and `checkpoint` records.
//!
//! # What [`verify`] detects
//!
//! It reads the file from the start and reports the first line at which it stops being a
//! well-formed chain:
//!
//! - A changed line, the first and the last included, fails its own `hash`: the error names
//!   the changed line, whatever the change (a value, a field, white space).
//! - A removed line, or lines out of order, break `seq` at the first line out of place: the
//!   error names the position of the missing or displaced line. A file whose first lines are
//!   missing fails at line 1 (`seq` is not 1 or `prev` is not zero).
//! - A line changed and then given a fresh `hash` fails at the next line, whose `prev` no longer
//!   matches.
//! - A removed last line: the log of a daemon that shut down cleanly ends with a `close` record,
//!   so a log that ends otherwise fails at its last line. The same error reports a daemon that
//!   crashed, or a log cut short. [`VerifyOptions::allow_open`] accepts a log without its
//!   `close` record, for the log of a running daemon; removing its last lines goes undetected.
//! - Structure: the first line is an `open` record, a `close` record is followed by nothing or
//!   by the `open` record of the next run, a `decision` record carries a decision.
//!
//! # What it does not detect
//!
//! The hashes carry no secret: whoever can write the file can rewrite it from any line onwards
//! with freshly computed hashes, or cut it after any `close` record. The chain makes the log
//! tamper-evident against accidental damage and against edits that do not recompute it.
//! [`checkpoint`]s signed with a key the forger cannot use (on a token) hold a deliberate
//! forger to account for every line up to the last checkpoint ([`verify_with`]); the lines
//! after it are reported as unsigned. [`syslog`] copies each line off the host as it is
//! written.
//!
//! # Writing
//!
//! The file is opened with `O_APPEND` and created with mode 0600 if missing. Lines are written
//! under a mutex, each with a single `write_all` of the whole line and its LF, so concurrent
//! callers produce one consistent chain. With [`SyncMode::Flush`] (the default) a line has
//! reached the kernel when [`AuditLog::append`] returns: it survives a crash of the daemon, not
//! of the machine. [`SyncMode::Fsync`] also waits for `fdatasync`. [`AuditLog::open`] checks
//! the last line of an existing file (JSON, `hash`, `seq` equal to the line count, final LF)
//! and refuses to extend a damaged log; `kpki audit verify` checks the whole file.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{self, SHA256};
pub use checkpoint::{Checkpoint, CheckpointKey, Checkpointer};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset};

pub mod checkpoint;
pub mod syslog;

/// `prev` of the first line of a file: 64 zeros.
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Length of a lowercase hex SHA-256.
const HEX_LEN: usize = 64;

/// What precedes the hash value at the end of every line.
const HASH_KEY: &[u8] = b",\"hash\":\"";

/// What follows the hash value: the end of the string and of the object.
const LINE_END: &[u8] = b"\"}";

/// Longest `subject`, `reason` or `signer_name` in a line, in bytes of JSON.
pub const MAX_TEXT: usize = 512;

/// Longest caller CN, O value or listed SAN in a line, in bytes of JSON.
pub const MAX_NAME: usize = 256;

/// Most caller O values in a line (a last value `…+N` counts the rest).
pub const MAX_ORGS: usize = 16;

/// Most SANs listed in full; a longer list is summarized.
pub const MAX_SANS: usize = 16;

/// Most bytes of JSON of the SANs listed in full; a longer list is summarized.
pub const MAX_SANS_BYTES: usize = 2048;

/// Most SANs listed in a summary.
pub const SUMMARY_SANS: usize = 8;

/// Longest line [`AuditLog::append`] writes, LF included.
pub const MAX_LINE: usize = 10 * 1024;

/// A summarized SAN list: written after the record's fields.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SanSummary {
    /// The number of SANs asked for.
    pub sans_total: u64,
    /// [`san_digest`] of all of them.
    pub sans_sha256: String,
}

/// Lowercase hex SHA-256 of the SAN strings `sans`, each followed by one LF.
pub fn san_digest(sans: &[String]) -> String {
    let mut ctx = digest::Context::new(&SHA256);
    for san in sans {
        ctx.update(san.as_bytes());
        ctx.update(b"\n");
    }
    hex::encode(ctx.finish())
}

/// Bytes `c` takes in a JSON string.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

fn json_str_len(s: &str) -> usize {
    s.chars().map(json_len).sum()
}

/// `s` cut so that it takes at most `max` bytes of JSON, ending with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if json_str_len(s) <= max {
        return s.to_string();
    }
    let budget = max.saturating_sub('…'.len_utf8());
    let mut used = 0;
    let mut out = String::new();
    for c in s.chars() {
        used += json_len(c);
        if used > budget {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// `record` with every caller-controlled field bounded (see the module's "Bounded lines"),
/// and the summary of its SAN list when it was too long to list.
pub fn bound(mut record: Record) -> (Record, Option<SanSummary>) {
    for text in [
        &mut record.subject,
        &mut record.reason,
        &mut record.signer_name,
    ]
    .into_iter()
    .flatten()
    {
        *text = cut(text, MAX_TEXT);
    }
    if let Some(caller) = record.caller.as_mut() {
        caller.cn = cut(&caller.cn, MAX_NAME);
        if caller.orgs.len() > MAX_ORGS {
            let rest = caller.orgs.len() - (MAX_ORGS - 1);
            caller.orgs.truncate(MAX_ORGS - 1);
            caller.orgs.push(format!("…+{rest}"));
        }
        for o in &mut caller.orgs {
            *o = cut(o, MAX_NAME);
        }
    }
    let bytes: usize = record.sans.iter().map(|s| json_str_len(s) + 3).sum();
    if record.sans.len() <= MAX_SANS && bytes <= MAX_SANS_BYTES {
        for san in &mut record.sans {
            *san = cut(san, MAX_NAME);
        }
        return (record, None);
    }
    let summary = SanSummary {
        sans_total: record.sans.len() as u64,
        sans_sha256: san_digest(&record.sans),
    };
    let mut listed = Vec::new();
    let mut used = 0;
    for san in record.sans.iter().take(SUMMARY_SANS) {
        let san = cut(san, MAX_NAME);
        used += json_str_len(&san) + 3;
        if used > MAX_SANS_BYTES / 2 {
            break;
        }
        listed.push(san);
    }
    record.sans = listed;
    (record, Some(summary))
}

/// What a line's record is about.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The daemon started and opened the log.
    Open,
    /// The daemon decided on a request.
    Decision,
    /// The CSR controller's approver decided on a CertificateSigningRequest (approved it, or
    /// left it to humans).
    Approval,
    /// The daemon shut down cleanly and closed the log.
    Close,
    /// The chain head signed with the checkpoint key ([`checkpoint`]).
    Checkpoint,
    /// The token signer decided on a `Sign` call (with `jwt.audit`).
    Token,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Event::Open => "open",
            Event::Decision => "decision",
            Event::Approval => "approval",
            Event::Close => "close",
            Event::Checkpoint => "checkpoint",
            Event::Token => "token",
        })
    }
}

/// The outcome of a request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The request was granted (a certificate was issued).
    Allow,
    /// The request was refused by policy or for lack of authorization.
    Deny,
    /// The request failed for another reason (malformed input, signer failure).
    Error,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Error => "error",
        })
    }
}

/// The authenticated client of a request, from its TLS client certificate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The client certificate's subject common name.
    pub cn: String,
    /// The client certificate's subject organizations, in certificate order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<String>,
}

impl Caller {
    /// The user running this process, as `uid:<n>` (offline issuance by the CLI).
    pub fn this_process() -> Caller {
        Caller {
            cn: format!("uid:{}", rustix::process::getuid().as_raw()),
            orgs: Vec::new(),
        }
    }
}

/// One audit record: the fields of a line after `seq` and `prev`. Absent fields are left out of
/// the line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When the event happened: RFC 3339 in UTC, whole seconds, e.g. `2026-11-22T10:00:00Z`.
    pub time: String,
    /// What the record is about.
    pub event: Event,
    /// The authenticated client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    /// The client's socket address, e.g. `10.0.0.7:51234`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The API endpoint, e.g. `/v1/sign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Lowercase hex SHA-256 of the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_sha256: Option<String>,
    /// The signer the request named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer_name: Option<String>,
    /// The requested subject, e.g. `O=dev, CN=jane`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The requested subject alternative names, e.g. `DNS:a.example`, `IP:10.0.0.1`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
    /// The outcome, on `decision` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The policy rule that allowed the request, or that matched the caller and refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// A stable error code when the request was not allowed, e.g. `policy_denied`: the wire
    /// word of a [`crate::error_code::ErrorCode`] when written; read back as text, so a log
    /// verifies whatever codes the daemon that wrote it knew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A human-readable reason for the outcome or event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The issued certificate's serial number, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The issued certificate's notAfter, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// The URI of the CA key that signed (never carries a PIN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_uri: Option<String>,
    /// The Kubernetes CertificateSigningRequest decided on (CSR controller records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<CsrRef>,
    /// The signature of a `checkpoint` or `close` record over the chain head
    /// ([`checkpoint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// A CertificateSigningRequest object by name and uid (a name is reused after deletion; the
/// uid is not).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CsrRef {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

impl Record {
    /// True when the record carries nothing but `time`, `event` and `checkpoint`: the fields a
    /// checkpoint's signature covers.
    fn only_signed_fields(&self) -> bool {
        let bare = Record {
            time: self.time.clone(),
            checkpoint: self.checkpoint.clone(),
            ..Record::new(self.event)
        };
        *self == bare
    }

    /// A record of `event` at the current time, with every other field empty.
    pub fn new(event: Event) -> Record {
        Record {
            time: rfc3339(OffsetDateTime::now_utc()),
            event,
            caller: None,
            remote: None,
            endpoint: None,
            request_sha256: None,
            signer_name: None,
            subject: None,
            sans: Vec::new(),
            decision: None,
            rule: None,
            code: None,
            reason: None,
            serial: None,
            not_after: None,
            key_uri: None,
            csr: None,
            checkpoint: None,
        }
    }
}

/// `t` in RFC 3339 in UTC with whole seconds, e.g. `2026-11-22T10:00:00Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// How far a line is pushed before [`AuditLog::append`] returns.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Written to the kernel: survives a crash of the daemon, not of the machine.
    #[default]
    Flush,
    /// Written and `fdatasync`ed: survives a crash of the machine.
    Fsync,
}

/// The line an append wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendedLine {
    /// The line's `seq`.
    pub seq: u64,
    /// Lowercase hex SHA-256 of the line's bytes: the next line's `prev`.
    pub hash: String,
}

/// Why the audit log cannot be opened or written. Messages are one line and name the file.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file cannot be opened or created.
    #[error("audit log {}: cannot open: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file cannot be locked for this writer.
    #[error("audit log {}: cannot lock: {source}", path.display())]
    Lock {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The path exists and is not a regular file.
    #[error("audit log {}: not a regular file", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// The existing file cannot be read.
    #[error("audit log {}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The existing file's last line does not continue a chain; it is not extended.
    #[error(
        "audit log {}: line {line}: {problem}; refusing to extend a damaged log (check it with `kpki audit verify`)",
        path.display()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The damaged line (1-based).
        line: u64,
        /// What is wrong with it.
        problem: String,
    },
    /// A record cannot be encoded as JSON.
    #[error("audit log {}: cannot encode a record: {source}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// Writing a line failed; the file still ends with the previous complete line.
    #[error("audit log {}: write failed: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Syncing a written line to disk failed.
    #[error("audit log {}: sync to disk failed: {source}", path.display())]
    Sync {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The log was closed; nothing more is appended.
    #[error("audit log {}: already closed", path.display())]
    Closed {
        /// The file.
        path: PathBuf,
    },
    /// An earlier write or sync failed and left the end of the file unknown.
    #[error(
        "audit log {}: an earlier write failed and the end of the file is unknown; check it with `kpki audit verify` and restart",
        path.display()
    )]
    Failed {
        /// The file.
        path: PathBuf,
    },
}

/// The daemon's audit log: appends hash-chained lines to one file. Shared by reference (e.g.
/// in an `Arc`) between tasks and threads.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    sync: SyncMode,
    checkpoints: Option<Checkpointer>,
    copy: Option<syslog::SyslogCopy>,
    state: Mutex<State>,
}

/// What a log writes besides its lines.
#[derive(Default)]
struct Extras {
    checkpoints: Option<Checkpointer>,
    copy: Option<syslog::SyslogCopy>,
}

/// The writer's position in the chain.
#[derive(Debug)]
struct State {
    file: File,
    /// `seq` of the last line in the file (0 for an empty file).
    seq: u64,
    /// Hex SHA-256 of the last line in the file (zeros for an empty file).
    prev: String,
    /// Length of the file up to and including the last complete line.
    len: u64,
    /// A `close` record was written.
    closed: bool,
    /// A write or sync failed and left the file's end unknown.
    failed: bool,
    /// Lines written since the last checkpoint (or since the log was opened).
    since_checkpoint: u64,
}

impl AuditLog {
    /// Opens the log at `path`, creating it with mode 0600 if missing, continues the chain of
    /// its last line and appends an `open` record. Refuses a file whose last line is not a
    /// complete audit line with the `seq` of its position.
    pub fn open(path: &Path, sync: SyncMode) -> Result<AuditLog, AuditError> {
        Self::open_inner(path, sync, None, Extras::default())
    }

    /// [`AuditLog::open`] with checkpoints and a syslog copy from the `open` record on.
    pub fn open_with(
        path: &Path,
        sync: SyncMode,
        checkpoints: Option<Checkpointer>,
        copy: Option<syslog::SyslogCopy>,
    ) -> Result<AuditLog, AuditError> {
        Self::open_inner(path, sync, None, Extras { checkpoints, copy })
    }

    /// [`AuditLog::open`] for one short-lived writer among several processes (the CLI's
    /// offline issuance): holds an exclusive lock (`flock`) on the file until the log is
    /// dropped, waiting at most `wait` for another holder to finish.
    pub fn open_locked(
        path: &Path,
        sync: SyncMode,
        wait: Duration,
    ) -> Result<AuditLog, AuditError> {
        Self::open_inner(path, sync, Some(wait), Extras::default())
    }

    fn open_inner(
        path: &Path,
        sync: SyncMode,
        lock: Option<Duration>,
        extras: Extras,
    ) -> Result<AuditLog, AuditError> {
        let open_err = |source| AuditError::Open {
            path: path.to_path_buf(),
            source,
        };
        let (file, created) = match OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (
                OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(open_err)?,
                false,
            ),
            Err(e) => return Err(open_err(e)),
        };
        let read_err = |source| AuditError::Read {
            path: path.to_path_buf(),
            source,
        };
        if !file.metadata().map_err(read_err)?.is_file() {
            return Err(AuditError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if let Some(wait) = lock {
            lock_file(&file, wait).map_err(|source| AuditError::Lock {
                path: path.to_path_buf(),
                source,
            })?;
        }
        if created && sync == SyncMode::Fsync {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| AuditError::Sync {
                    path: path.to_path_buf(),
                    source,
                })?;
        }

        let (count, last) = last_line(&file).map_err(read_err)?;
        let mut open = Record::new(Event::Open);
        let (seq, prev) = if count == 0 {
            (0, ZERO_HASH.to_string())
        } else {
            let damaged = |problem: String| AuditError::Damaged {
                path: path.to_path_buf(),
                line: count,
                problem,
            };
            let Some(line) = last.strip_suffix(b"\n") else {
                return Err(damaged(NO_NEWLINE.to_string()));
            };
            let parsed = check_line(line).map_err(damaged)?;
            if parsed.seq != count {
                return Err(damaged(seq_problem(parsed.seq, count)));
            }
            if parsed.record.event != Event::Close {
                open.reason = Some(format!(
                    "the previous run left no close record (last line {count})"
                ));
            }
            (parsed.seq, sha256_hex(line))
        };
        let len = file.metadata().map_err(read_err)?.len();
        let log = AuditLog {
            path: path.to_path_buf(),
            sync,
            checkpoints: extras.checkpoints,
            copy: extras.copy,
            state: Mutex::new(State {
                file,
                seq,
                prev,
                len,
                closed: false,
                failed: false,
                since_checkpoint: 0,
            }),
        };
        log.append(open)?;
        Ok(log)
    }

    /// This log with checkpoints signed by `checkpoints` from now on: after every
    /// [`Checkpointer::every`] lines, and in the `close` record.
    pub fn with_checkpoints(mut self, checkpoints: Checkpointer) -> AuditLog {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// This log with a copy of every line from now on sent to syslog as it is written.
    pub fn with_syslog(mut self, copy: syslog::SyslogCopy) -> AuditLog {
        self.copy = Some(copy);
        self
    }

    /// True when the next append also writes a checkpoint (a signature, which may wait on a
    /// token): async callers move such an append off the runtime's workers.
    pub fn checkpoint_due(&self) -> bool {
        match &self.checkpoints {
            Some(c) => {
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.since_checkpoint + 1 >= c.every()
            }
            None => false,
        }
    }

    /// How appends reach the disk.
    pub fn sync_mode(&self) -> SyncMode {
        self.sync
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as the next line of the chain, and a checkpoint after it when one is
    /// due. A `close` record closes the log (signed, with checkpoints).
    pub fn append(&self, record: Record) -> Result<AppendedLine, AuditError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let appended = self.write(&mut state, record)?;
        if let Some(c) = &self.checkpoints
            && !state.closed
            && state.since_checkpoint >= c.every()
        {
            // A checkpoint that cannot be signed now is tried again after the next line.
            match self.sign(c, &state, Record::new(Event::Checkpoint)) {
                Ok(record) => {
                    self.write(&mut state, record)?;
                }
                Err(e) => tracing::warn!(error = %e, "audit checkpoint postponed"),
            }
        }
        Ok(appended)
    }

    /// `record` (a checkpoint or close) signed as the next line of the chain.
    fn sign(&self, c: &Checkpointer, state: &State, mut record: Record) -> Result<Record, String> {
        let checkpoint = c.sign(record.event, state.seq + 1, &state.prev, &record.time)?;
        record.checkpoint = Some(checkpoint);
        Ok(record)
    }

    /// Writes `record` as the next line.
    fn write(&self, state: &mut State, record: Record) -> Result<AppendedLine, AuditError> {
        if state.closed {
            return Err(AuditError::Closed {
                path: self.path.clone(),
            });
        }
        if state.failed {
            return Err(AuditError::Failed {
                path: self.path.clone(),
            });
        }
        let seq = state.seq + 1;
        let (record, summary) = bound(record);
        let mut line =
            encode_line(seq, &state.prev, &record, summary.as_ref()).map_err(|source| {
                AuditError::Encode {
                    path: self.path.clone(),
                    source,
                }
            })?;
        let hash = sha256_hex(&line);
        line.push(b'\n');
        if let Err(source) = state.file.write_all(&line) {
            // Cut a partly written line so that the file still ends on a complete one.
            let len = state.len;
            if state.file.set_len(len).is_err() {
                state.failed = true;
            }
            return Err(AuditError::Write {
                path: self.path.clone(),
                source,
            });
        }
        state.len += line.len() as u64;
        state.seq = seq;
        state.prev.clone_from(&hash);
        if record.checkpoint.is_some() {
            state.since_checkpoint = 0;
        } else {
            state.since_checkpoint += 1;
        }
        if record.event == Event::Close {
            state.closed = true;
        }
        if self.sync == SyncMode::Fsync
            && let Err(source) = state.file.sync_data()
        {
            // After a failed fdatasync the kernel may have dropped the line: stop here.
            state.failed = true;
            return Err(AuditError::Sync {
                path: self.path.clone(),
                source,
            });
        }
        if let Some(copy) = &self.copy {
            line.pop();
            copy.send(&line);
        }
        Ok(AppendedLine { seq, hash })
    }

    /// Appends the `close` record of a clean shutdown, signed when the log has checkpoints
    /// (unsigned, with the reason, when the key cannot sign); later appends fail.
    pub fn close(&self) -> Result<AppendedLine, AuditError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut record = Record::new(Event::Close);
        if let Some(c) = &self.checkpoints {
            match self.sign(c, &state, record.clone()) {
                Ok(signed) => record = signed,
                Err(e) => {
                    tracing::error!(error = %e, "the close record is not signed");
                    record.reason = Some(format!("not signed: {e}"));
                }
            }
        }
        self.write(&mut state, record)
    }
}

/// Takes an exclusive lock on `file`, polling until `wait` has passed.
fn lock_file(file: &File, wait: Duration) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("still locked by another process after {wait:?}"),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// The number of lines of `file` and its last line (with its LF, if any).
fn last_line(file: &File) -> io::Result<(u64, Vec<u8>)> {
    let mut reader = BufReader::new(file);
    let mut count = 0;
    let mut line = Vec::new();
    let mut last = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok((count, last));
        }
        count += 1;
        std::mem::swap(&mut line, &mut last);
    }
}

/// The bytes of line `seq` (without LF) carrying `record` (and the summary of its SANs)
/// after `prev`.
fn encode_line(
    seq: u64,
    prev: &str,
    record: &Record,
    summary: Option<&SanSummary>,
) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct LineOut<'a> {
        seq: u64,
        prev: &'a str,
        #[serde(flatten)]
        record: &'a Record,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        summary: Option<&'a SanSummary>,
        hash: &'a str,
    }
    let mut line = serde_json::to_vec(&LineOut {
        seq,
        prev,
        record,
        summary,
        hash: "",
    })?;
    // The line ends with `,"hash":""}`: the digest goes between the quotes.
    let own = sha256_hex(&line);
    let at = line.len().saturating_sub(LINE_END.len());
    line.splice(at..at, own.bytes());
    Ok(line)
}

/// A line as read back.
#[derive(Deserialize)]
struct LineIn {
    seq: u64,
    prev: String,
    #[serde(flatten)]
    record: Record,
}

/// Parses one line (without LF) and checks its own `hash`.
fn check_line(line: &[u8]) -> Result<LineIn, String> {
    if line.is_empty() {
        return Err("empty line".into());
    }
    let parsed: LineIn = serde_json::from_slice(line).map_err(|e| describe_json_error(&e))?;
    let Some((head, stated)) = split_hash(line) else {
        return Err(
            "the line does not end with its \"hash\" field (the line was changed, or is not an audit record)"
                .into(),
        );
    };
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(head);
    ctx.update(LINE_END);
    if hex::encode(ctx.finish()).as_bytes() != stated {
        return Err("the line does not match its \"hash\" (the line was changed)".into());
    }
    Ok(parsed)
}

/// Splits a line into the bytes before the hash value (ending in `"hash":"`) and the value.
fn split_hash(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = line.strip_suffix(LINE_END)?;
    let (head, hash) = body.split_at_checked(body.len().checked_sub(HEX_LEN)?)?;
    head.ends_with(HASH_KEY).then_some((head, hash))
}

/// A serde_json error without its "at line 1 column N" (every audit line is one JSON line).
fn describe_json_error(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => {
            let text = e.to_string();
            let text = text.rfind(" at line ").map_or(&text[..], |i| &text[..i]);
            format!("not an audit record: {text}")
        }
        _ => format!(
            "not valid JSON at column {} (the line was changed or cut short)",
            e.column()
        ),
    }
}

const NO_NEWLINE: &str = "the line has no LF at its end (the line was cut short)";

fn seq_problem(found: u64, expected: u64) -> String {
    if expected == 1 {
        format!(
            "seq {found} where 1 was expected (the file starts mid-chain: its first lines are missing)"
        )
    } else {
        format!("seq {found} where {expected} was expected (a line is missing or out of order)")
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&SHA256, data))
}

/// What [`verify`] accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accept a log that does not end with a `close` record: the log of a running daemon.
    pub allow_open: bool,
}

/// A verified log.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Lines in the file.
    pub lines: u64,
    /// `decision` records.
    pub decisions: u64,
    /// `decision` records with decision `allow`.
    pub allowed: u64,
    /// The file ends with a `close` record.
    pub closed: bool,
    /// Lowercase hex SHA-256 of the last line: compare it with a copy kept elsewhere.
    pub head: String,
    /// Signed records (`checkpoint`, and `close` records with a signature).
    pub checkpoints: u64,
    /// Fingerprint of the key the checkpoints were checked with ([`verify_with`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// With a key: the first of the lines after the last checkpoint, which no signature
    /// covers (up to the last line); `None` when every line is covered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unanchored_from: Option<u64>,
}

/// Why a log fails verification: the first line at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The line (1-based); 0 when the file as a whole cannot be read.
    pub line: u64,
    /// What is wrong, in one line.
    pub problem: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.problem)
        } else {
            write!(f, "line {}: {}", self.line, self.problem)
        }
    }
}

impl std::error::Error for VerifyError {}

/// Verifies the whole log at `path`: every line's JSON and own `hash`, consecutive `seq` from
/// 1, every `prev`, the order of `open` and `close` records, and (unless
/// [`VerifyOptions::allow_open`]) a final `close` record.
pub fn verify(path: &Path, options: VerifyOptions) -> Result<Verified, VerifyError> {
    verify_with(path, options, None)
}

/// Lines `from` to `to` as words: `line 7` or `lines 7-9`.
fn line_range(from: u64, to: u64) -> String {
    if from == to {
        format!("line {from}")
    } else {
        format!("lines {from}-{to}")
    }
}

/// [`verify`], and with `key` every checkpoint's signature: a checkpoint signed by another
/// key or over other content fails at its line, and a closed log must end with a signed
/// `close` record. Lines after the last checkpoint are reported in
/// [`Verified::unanchored_from`] (a log still open) or fail (a closed log).
pub fn verify_with(
    path: &Path,
    options: VerifyOptions,
    key: Option<&CheckpointKey>,
) -> Result<Verified, VerifyError> {
    let fail = |line: u64, problem: String| VerifyError { line, problem };
    let file = File::open(path).map_err(|e| fail(0, format!("cannot open: {e}")))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut buf = Vec::new();
    let mut n: u64 = 0;
    let mut prev = ZERO_HASH.to_string();
    let mut last_event: Option<Event> = None;
    let (mut decisions, mut allowed) = (0, 0);
    // The last line a valid signature covers (with a key), and the signed records.
    let (mut anchored, mut checkpoints) = (0u64, 0u64);
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| fail(n + 1, format!("cannot read: {e}")))?;
        if read == 0 {
            break;
        }
        n += 1;
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err(fail(n, NO_NEWLINE.into()));
        };
        let parsed = check_line(line).map_err(|p| fail(n, p))?;
        if parsed.seq != n {
            return Err(fail(n, seq_problem(parsed.seq, n)));
        }
        if parsed.prev != prev {
            return Err(fail(
                n,
                if n == 1 {
                    "prev is not 64 zeros (the file starts mid-chain: its first lines are missing)"
                        .into()
                } else {
                    format!(
                        "prev does not match the hash of line {} (line {} was changed or removed)",
                        n - 1,
                        n - 1
                    )
                },
            ));
        }
        let event = parsed.record.event;
        match last_event {
            None if event != Event::Open => {
                return Err(fail(
                    n,
                    format!("the log starts with a {event} record instead of open"),
                ));
            }
            Some(Event::Close) if event != Event::Open => {
                return Err(fail(
                    n,
                    format!(
                        "a {event} record follows the close record of line {}",
                        n - 1
                    ),
                ));
            }
            _ => {}
        }
        if matches!(event, Event::Decision | Event::Approval | Event::Token)
            && parsed.record.decision.is_none()
        {
            return Err(fail(n, format!("a {event} record without a decision")));
        }
        if let Some(c) = &parsed.record.checkpoint {
            if !matches!(event, Event::Checkpoint | Event::Close)
                || !parsed.record.only_signed_fields()
            {
                return Err(fail(
                    n,
                    format!("a signed {event} record carries fields its signature does not cover"),
                ));
            }
            checkpoints += 1;
            if let Some(key) = key {
                key.check(c, event, n, &parsed.prev, &parsed.record.time)
                    .map_err(|p| {
                        fail(
                            n,
                            format!(
                                "{p}: {} changed after it was signed, or the checkpoint was forged",
                                if anchored + 1 == n {
                                    format!("line {n} was")
                                } else {
                                    format!("a line of {} was", line_range(anchored + 1, n))
                                }
                            ),
                        )
                    })?;
                anchored = n;
            }
        } else if event == Event::Checkpoint {
            return Err(fail(n, "a checkpoint record without a signature".into()));
        }
        if event == Event::Decision {
            decisions += 1;
            if parsed.record.decision == Some(Decision::Allow) {
                allowed += 1;
            }
        }
        prev = sha256_hex(line);
        last_event = Some(event);
    }
    if n == 0 {
        return Err(fail(1, "missing: the file is empty".into()));
    }
    let closed = last_event == Some(Event::Close);
    let tail = match key {
        Some(_) if anchored < n => format!(
            "; {} after the last checkpoint {} not signed",
            line_range(anchored + 1, n),
            if anchored + 1 == n { "is" } else { "are" }
        ),
        _ => String::new(),
    };
    if !closed && !options.allow_open {
        return Err(fail(
            n,
            format!(
                "the log ends without a close record (truncated, or the daemon did not shut down cleanly){tail}"
            ),
        ));
    }
    if closed && !tail.is_empty() {
        return Err(fail(
            n,
            format!("the close record is not signed with the checkpoint key{tail}"),
        ));
    }
    Ok(Verified {
        lines: n,
        decisions,
        allowed,
        closed,
        head: prev,
        checkpoints,
        key: key.map(|k| k.id().to_string()),
        unanchored_from: (key.is_some() && anchored < n).then_some(anchored + 1),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A fresh directory under the system temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "kpki-audit-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn decision(i: u64) -> Record {
        let allow = !i.is_multiple_of(3);
        Record {
            caller: Some(Caller {
                cn: format!("user-{i}"),
                orgs: vec!["dev".into()],
            }),
            remote: Some("10.0.0.7:51234".into()),
            endpoint: Some("/v1/sign".into()),
            request_sha256: Some(sha256_hex(&i.to_be_bytes())),
            signer_name: Some("kubernetes.io/kube-apiserver-client".into()),
            subject: Some(format!("O=dev, CN=user-{i}")),
            sans: vec!["DNS:a.example".into(), "IP:10.0.0.1".into()],
            decision: Some(if allow {
                Decision::Allow
            } else {
                Decision::Deny
            }),
            code: (!allow).then(|| crate::error_code::ErrorCode::PolicyDenied.to_string()),
            reason: (!allow).then(|| "organization dev may not request IP SANs".into()),
            serial: allow.then(|| format!("{i:x}")),
            not_after: allow.then(|| "2026-11-23T10:00:00Z".into()),
            key_uri: Some("pkcs11:token=kpki;object=ca".into()),
            ..Record::new(Event::Decision)
        }
    }

    /// A closed log with `decisions` decision records: `decisions + 2` lines.
    fn write_log(path: &Path, decisions: u64) {
        let log = AuditLog::open(path, SyncMode::Flush).unwrap();
        for i in 0..decisions {
            log.append(decision(i)).unwrap();
        }
        log.close().unwrap();
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    fn verify_err(path: &Path) -> VerifyError {
        verify(path, VerifyOptions::default()).unwrap_err()
    }

    /// `line` with its `hash` recomputed over its (edited) content.
    fn rehash(line: &str) -> String {
        let (head, _) = split_hash(line.as_bytes()).unwrap();
        let mut body = head.to_vec();
        body.extend_from_slice(LINE_END);
        let own = sha256_hex(&body);
        format!("{}{own}\"}}", String::from_utf8(head.to_vec()).unwrap())
    }

    #[test]
    fn audit_log_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<AuditLog>();
    }

    #[test]
    fn audit_chain_verifies() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        write_log(&path, 6);
        let v = verify(&path, VerifyOptions::default()).unwrap();
        assert_eq!(v.lines, 8);
        assert_eq!(v.decisions, 6);
        assert_eq!(v.allowed, 4);
        assert!(v.closed);
        let all = lines(&path);
        assert_eq!(v.head, sha256_hex(all[7].as_bytes()));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // Field order and format.
        assert!(
            all[0].starts_with(&format!("{{\"seq\":1,\"prev\":\"{ZERO_HASH}\",\"time\":\"")),
            "{}",
            all[0]
        );
        assert!(all[0].contains("\"event\":\"open\""), "{}", all[0]);
        assert!(all[7].contains("\"event\":\"close\""), "{}", all[7]);
        let second = &all[1];
        assert!(
            second.starts_with(&format!(
                "{{\"seq\":2,\"prev\":\"{}\",",
                sha256_hex(all[0].as_bytes())
            )),
            "{second}"
        );
        // Absent fields and empty lists are left out; time has whole seconds in UTC.
        assert!(!all[0].contains("null"), "{}", all[0]);
        assert!(!all[0].contains("sans"), "{}", all[0]);
        let value: serde_json::Value = serde_json::from_str(&all[0]).unwrap();
        let time = value["time"].as_str().unwrap();
        assert_eq!(time.len(), 20, "{time}");
        assert!(time.ends_with('Z'), "{time}");
        // Every line ends with its own hash.
        for line in &all {
            let (_, hash) = split_hash(line.as_bytes()).unwrap();
            assert_eq!(hash.len(), 64);
            check_line(line.as_bytes()).unwrap();
        }
        // Records round-trip.
        let parsed: LineIn = serde_json::from_str(&all[2]).unwrap();
        assert_eq!(parsed.seq, 3);
        let mut expected = decision(1);
        expected.time = parsed.record.time.clone();
        assert_eq!(parsed.record, expected);
    }

    #[test]
    fn audit_deleting_any_line_fails_at_that_line() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        write_log(&path, 5);
        let all = lines(&path);
        assert_eq!(all.len(), 7);

        // First line: the file starts at seq 2.
        let mut cut = all.clone();
        cut.remove(0);
        write_lines(&path, &cut);
        let e = verify_err(&path);
        assert_eq!(e.line, 1, "{e}");
        assert!(e.problem.contains("seq 2 where 1 was expected"), "{e}");

        // A middle line (line 4): the next line sits at its place.
        let mut cut = all.clone();
        cut.remove(3);
        write_lines(&path, &cut);
        let e = verify_err(&path);
        assert_eq!(e.line, 4, "{e}");
        assert_eq!(
            e.to_string(),
            "line 4: seq 5 where 4 was expected (a line is missing or out of order)"
        );

        // The last line (close): the log ends at line 6 without a close record.
        let mut cut = all.clone();
        cut.pop();
        write_lines(&path, &cut);
        let e = verify_err(&path);
        assert_eq!(e.line, 6, "{e}");
        assert!(
            e.problem
                .contains("the log ends without a close record (truncated"),
            "{e}"
        );

        // Everything: line 1 is missing.
        std::fs::write(&path, "").unwrap();
        let e = verify_err(&path);
        assert_eq!(e.line, 1, "{e}");
        let e = verify(&path, VerifyOptions { allow_open: true }).unwrap_err();
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn audit_editing_any_line_fails_at_that_line() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        write_log(&path, 5);
        let all = lines(&path);
        let last = all.len() - 1;

        let edits: [(usize, &str, &str); 5] = [
            (0, "\"event\":\"open\"", "\"event\":\"open\" "),
            (1, "\"decision\":\"deny\"", "\"decision\":\"allow\""),
            (2, "\"decision\":\"allow\"", "\"decision\":\"deny\""),
            (3, "\"seq\":4", "\"seq\":4.0"),
            (
                last,
                "\"event\":\"close\"",
                "\"event\":\"close\",\"reason\":\"x\"",
            ),
        ];
        for (i, from, to) in edits {
            assert!(all[i].contains(from), "{from} not in {}", all[i]);
            let mut edited = all.clone();
            edited[i] = all[i].replacen(from, to, 1);
            write_lines(&path, &edited);
            let e = verify_err(&path);
            assert_eq!(e.line, i as u64 + 1, "{from} -> {to}: {e}");
            let e = verify(&path, VerifyOptions { allow_open: true }).unwrap_err();
            assert_eq!(e.line, i as u64 + 1, "{from} -> {to}: {e}");
        }

        // A changed value on the first line.
        let mut edited = all.clone();
        edited[0] = all[0].replacen("\"time\":\"2", "\"time\":\"1", 1);
        write_lines(&path, &edited);
        let e = verify_err(&path);
        assert_eq!(
            e.to_string(),
            "line 1: the line does not match its \"hash\" (the line was changed)"
        );

        // A line changed and re-hashed fails at the next line.
        let mut edited = all.clone();
        edited[2] = rehash(&all[2].replacen("\"decision\":\"allow\"", "\"decision\":\"deny\"", 1));
        check_line(edited[2].as_bytes()).unwrap();
        write_lines(&path, &edited);
        let e = verify_err(&path);
        assert_eq!(
            e.to_string(),
            "line 4: prev does not match the hash of line 3 (line 3 was changed or removed)"
        );

        // A broken line, and a last line cut short.
        let mut edited = all.clone();
        edited[1] = all[1][..all[1].len() / 2].to_string();
        write_lines(&path, &edited);
        let e = verify_err(&path);
        assert_eq!(e.line, 2, "{e}");
        assert!(e.problem.starts_with("not valid JSON"), "{e}");
        let mut text = all.join("\n");
        text.push('\n');
        std::fs::write(&path, &text[..text.len() - 1]).unwrap();
        let e = verify_err(&path);
        assert_eq!(e.line, all.len() as u64, "{e}");
        assert!(e.problem.contains("no LF"), "{e}");
    }

    #[test]
    fn audit_swapped_lines_fail() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        write_log(&path, 5);
        let mut all = lines(&path);
        all.swap(2, 3);
        write_lines(&path, &all);
        let e = verify_err(&path);
        assert_eq!(
            e.to_string(),
            "line 3: seq 4 where 3 was expected (a line is missing or out of order)"
        );
    }

    #[test]
    fn audit_reopened_log_continues_the_chain() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        write_log(&path, 2); // lines 1-4
        write_log(&path, 3); // lines 5-9
        let all = lines(&path);
        assert_eq!(all.len(), 9);
        let fifth: serde_json::Value = serde_json::from_str(&all[4]).unwrap();
        assert_eq!(fifth["seq"], 5);
        assert_eq!(fifth["event"], "open");
        assert_eq!(fifth["prev"], sha256_hex(all[3].as_bytes()));
        assert!(fifth.get("reason").is_none(), "{fifth}");
        let v = verify(&path, VerifyOptions::default()).unwrap();
        assert_eq!((v.lines, v.decisions, v.closed), (9, 5, true));

        // A close record is followed by the open record of the next run, or by nothing.
        let mut after_close: Vec<String> = all[..4].to_vec();
        let next = encode_line(5, &sha256_hex(all[3].as_bytes()), &decision(9), None).unwrap();
        after_close.push(String::from_utf8(next).unwrap());
        write_lines(&path, &after_close);
        let e = verify(&path, VerifyOptions { allow_open: true }).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 5: a decision record follows the close record of line 4"
        );
    }

    #[test]
    fn audit_log_without_close_fails_unless_allow_open() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        let log = AuditLog::open(&path, SyncMode::Fsync).unwrap();
        log.append(decision(1)).unwrap();
        log.append(decision(3)).unwrap();
        drop(log); // as if the daemon crashed

        let e = verify_err(&path);
        assert_eq!(
            e.to_string(),
            "line 3: the log ends without a close record (truncated, or the daemon did not shut down cleanly)"
        );
        let v = verify(&path, VerifyOptions { allow_open: true }).unwrap();
        assert_eq!(
            (v.lines, v.decisions, v.allowed, v.closed),
            (3, 2, 1, false)
        );

        // The next run records the unclean end and continues.
        let log = AuditLog::open(&path, SyncMode::Flush).unwrap();
        let closed = log.close().unwrap();
        assert_eq!(closed.seq, 5);
        assert!(matches!(
            log.append(decision(4)),
            Err(AuditError::Closed { .. })
        ));
        let all = lines(&path);
        let fourth: serde_json::Value = serde_json::from_str(&all[3]).unwrap();
        assert_eq!(
            fourth["reason"],
            "the previous run left no close record (last line 3)"
        );
        let v = verify(&path, VerifyOptions::default()).unwrap();
        assert_eq!((v.lines, v.closed), (5, true));
        assert_eq!(v.head, closed.hash);
    }

    #[test]
    fn audit_open_refuses_a_damaged_log() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        write_log(&path, 2);
        let all = lines(&path);

        let mut text = all.join("\n");
        text.push_str("\n{\"seq\":5,\"prev\":\"x\"");
        std::fs::write(&path, &text).unwrap();
        let e = AuditLog::open(&path, SyncMode::Flush).unwrap_err();
        assert!(matches!(e, AuditError::Damaged { line: 5, .. }), "{e}");
        assert!(
            e.to_string().starts_with(&format!(
                "audit log {}: line 5: the line has no LF",
                path.display()
            )),
            "{e}"
        );

        text.push('\n');
        std::fs::write(&path, &text).unwrap();
        let e = AuditLog::open(&path, SyncMode::Flush).unwrap_err();
        assert!(matches!(e, AuditError::Damaged { line: 5, .. }), "{e}");

        // A removed line shows as a seq that differs from the line count.
        let mut cut = all.clone();
        cut.remove(1);
        write_lines(&path, &cut);
        let e = AuditLog::open(&path, SyncMode::Flush).unwrap_err();
        assert!(matches!(e, AuditError::Damaged { line: 3, .. }), "{e}");
        assert!(e.to_string().contains("seq 4 where 3 was expected"), "{e}");

        // The file was left as it was.
        assert_eq!(lines(&path), cut);
    }

    #[test]
    fn audit_concurrent_appends_form_one_chain() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        let log = Arc::new(AuditLog::open(&path, SyncMode::Flush).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    (0..1000u64)
                        .map(|i| log.append(decision(t * 1000 + i)).unwrap().seq)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        log.close().unwrap();
        seqs.sort_unstable();
        assert_eq!(seqs, (2..=8001).collect::<Vec<_>>());
        let v = verify(&path, VerifyOptions::default()).unwrap();
        assert_eq!((v.lines, v.decisions, v.closed), (8002, 8000, true));
    }

    #[test]
    fn audit_verify_reports_unreadable_files() {
        let dir = TempDir::new();
        let e = verify(&dir.file("missing.log"), VerifyOptions::default()).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.to_string().starts_with("cannot open: "), "{e}");
        let e = AuditLog::open(&dir.0, SyncMode::Flush).unwrap_err();
        assert!(e.to_string().starts_with("audit log "), "{e}");
    }

    #[test]
    fn audit_lines_are_bounded() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        let log = AuditLog::open(&path, SyncMode::Flush).unwrap();
        let many: Vec<String> = (0..5200).map(|i| format!("DNS:host-{i}.example")).collect();
        let nasty = "\u{1}\"".repeat(40_000);
        let huge = Record {
            caller: Some(Caller {
                cn: nasty.clone(),
                orgs: vec![nasty.clone(); 40],
            }),
            signer_name: Some(nasty.clone()),
            subject: Some(nasty.clone()),
            reason: Some(nasty.clone()),
            sans: std::iter::once(format!("DNS:{nasty}"))
                .chain(many.iter().cloned())
                .collect(),
            ..decision(1)
        };
        // (record, SANs listed, summary total).
        let cases: Vec<(Record, usize, Option<u64>)> = vec![
            (decision(2), 2, None),
            (
                Record {
                    sans: many[..16].to_vec(),
                    ..decision(3)
                },
                16,
                None,
            ),
            (
                Record {
                    sans: many[..17].to_vec(),
                    ..decision(4)
                },
                8,
                Some(17),
            ),
            (
                Record {
                    sans: many.clone(),
                    ..decision(5)
                },
                8,
                Some(5200),
            ),
            (huge.clone(), 8, Some(5201)),
        ];
        for (record, listed, total) in &cases {
            log.append(record.clone()).unwrap();
            let line = lines(&path).pop().unwrap();
            assert!(line.len() < MAX_LINE, "{} bytes", line.len());
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let sans = v["sans"].as_array().unwrap();
            assert_eq!(sans.len(), *listed, "{line}");
            assert_eq!(v["sans_total"].as_u64(), *total, "{line}");
            if total.is_some() {
                assert_eq!(
                    v["sans_sha256"].as_str().unwrap(),
                    san_digest(&record.sans),
                    "the digest covers every SAN"
                );
                assert_eq!(sans[0].as_str().unwrap(), cut(&record.sans[0], MAX_NAME));
                // The summary comes after the record's fields, `hash` stays last.
                let at = line.find("\"sans_total\"").unwrap();
                assert!(line[..at].contains("\"key_uri\""), "{line}");
            } else {
                assert!(v.get("sans_sha256").is_none(), "{line}");
                assert_eq!(sans.len(), record.sans.len());
            }
        }
        let line = lines(&path).pop().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in ["subject", "reason", "signer_name"] {
            let text = v[field].as_str().unwrap();
            assert!(text.ends_with('…'), "{field}");
            assert!(json_str_len(text) <= MAX_TEXT, "{field}");
        }
        let orgs = v["caller"]["orgs"].as_array().unwrap();
        assert_eq!(orgs.len(), MAX_ORGS);
        assert_eq!(orgs[MAX_ORGS - 1], "…+25");
        log.close().unwrap();
        // Old lines (no summary) and new lines verify together.
        let v = verify(&path, VerifyOptions::default()).unwrap();
        assert_eq!(v.lines, 7);
    }

    #[test]
    fn audit_cut_counts_json_bytes() {
        let cases: [(&str, usize, &str); 5] = [
            ("short", 10, "short"),
            ("abcdefghij", 10, "abcdefghij"),
            ("abcdefghijk", 10, "abcdefg…"),
            ("\u{1}\u{1}\u{1}", 18, "\u{1}\u{1}\u{1}"),
            ("\u{1}\u{1}\u{1}", 11, "\u{1}…"),
        ];
        for (text, max, want) in cases {
            assert_eq!(cut(text, max), want, "{text:?} {max}");
            assert!(json_str_len(&cut(text, max)) <= max);
        }
    }

    /// A file key for checkpoints in `dir`, and its verifying side.
    fn checkpoint_key(dir: &TempDir) -> (Checkpointer, CheckpointKey) {
        let uri: kpki_signer::KeyUri = format!("file:{}", dir.file("cp.key").display())
            .parse()
            .unwrap();
        let signer = kpki_pki::keystore::KeyStore::default()
            .create(&uri, kpki_signer::KeyAlgorithm::EcdsaP256)
            .unwrap();
        let key = CheckpointKey::from_spki(signer.public_key_spki().to_vec()).unwrap();
        (Checkpointer::new(signer, 3), key)
    }

    #[test]
    fn audit_checkpoints_are_written_and_checked() {
        let dir = TempDir::new();
        let path = dir.file("audit.log");
        let (c, key) = checkpoint_key(&dir);
        let log = AuditLog::open_with(&path, SyncMode::Flush, Some(c), None).unwrap();
        for i in 0..5 {
            log.append(decision(i)).unwrap();
        }
        log.close().unwrap();
        // open, d, d, checkpoint, d, d, d, checkpoint, close (signed).
        let all = lines(&path);
        let events: Vec<String> = all
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
            .collect();
        assert_eq!(
            events.join(","),
            r#""open","decision","decision","checkpoint","decision","decision","decision","checkpoint","close""#
        );
        let v = verify_with(&path, VerifyOptions::default(), Some(&key)).unwrap();
        assert_eq!((v.lines, v.checkpoints, v.unanchored_from), (9, 3, None));
        assert_eq!(v.key.as_deref(), Some(key.id()));
        // Without a key the checkpoints are counted, not checked.
        let v = verify(&path, VerifyOptions::default()).unwrap();
        assert_eq!((v.checkpoints, v.key), (3, None));

        // (line edited, how, error) — each edit re-hashed so that the chain alone holds.
        let rows: [(usize, &str, &str, &str); 3] = [
            (
                3,
                "\"event\":\"checkpoint\"",
                "\"event\":\"checkpoint\",\"reason\":\"x\"",
                "line 4: a signed checkpoint record carries fields its signature does not cover",
            ),
            (
                2,
                "\"decision\":\"allow\"",
                "\"decision\":\"allow\",\"checkpoint\":{\"key\":\"k\",\"sig\":\"00\"}",
                "line 3: a signed decision record carries fields its signature does not cover",
            ),
            (
                7,
                ",\"checkpoint\":{",
                ",\"other\":{",
                "line 8: a checkpoint record without a signature",
            ),
        ];
        for (i, from, to, want) in rows {
            assert!(all[i].contains(from), "{}", all[i]);
            let mut edited = all.clone();
            edited[i] = rehash(&all[i].replacen(from, to, 1));
            for j in i + 1..edited.len() {
                let prev = sha256_hex(edited[j - 1].as_bytes());
                let at = edited[j].find(",\"prev\":\"").unwrap() + 9;
                let line = format!("{}{prev}{}", &edited[j][..at], &edited[j][at + 64..]);
                edited[j] = rehash(&line);
            }
            write_lines(&path, &edited);
            let e = verify_with(&path, VerifyOptions::default(), Some(&key)).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn audit_time_is_rfc3339_utc_seconds() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_341_600).unwrap();
        assert_eq!(rfc3339(t), "2026-11-22T10:00:00Z");
        let t = t.to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(rfc3339(t), "2026-11-22T10:00:00Z");
    }
}
