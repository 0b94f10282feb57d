//! `kpki-raw-sign`: the raw PKCS#11 signing rate of one token key, as a baseline for
//! `kpki serve`. Each of `--threads` threads opens its own session and loops `C_Sign` for
//! `--seconds` with the mechanism kpki uses for the key's type (`CKM_SHA256_RSA_PKCS` for
//! RSA; a SHA-256 digest computed in software, then `CKM_ECDSA`, for EC keys). The key is
//! found by label (a `pkcs11:` URI's `object=` value). Prints one JSON object.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_lc_rs::digest;
use clap::Parser;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// Raw `C_Sign` loop on one token key, several threads, one session each.
#[derive(Parser, Debug)]
#[command(name = "kpki-raw-sign", version)]
struct Args {
    /// The PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long)]
    module: PathBuf,
    /// The token label.
    #[arg(long)]
    token: String,
    /// File holding the user PIN (trailing newline ignored).
    #[arg(long)]
    pin_file: PathBuf,
    /// The private key's label (CKA_LABEL).
    #[arg(long)]
    label: String,
    /// Signing threads, each with its own session.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Measured time in seconds (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Bytes of the signed message (a client certificate's TBSCertificate is about this).
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
}

/// How a signature is made for the key's type.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `CKM_SHA256_RSA_PKCS` over the message.
    Rsa,
    /// `CKM_ECDSA` over the message's SHA-256 digest.
    Ecdsa,
}

impl Kind {
    fn mechanism_name(self) -> &'static str {
        match self {
            Kind::Rsa => "CKM_SHA256_RSA_PKCS",
            Kind::Ecdsa => "CKM_ECDSA (SHA-256 digest)",
        }
    }

    fn sign(self, session: &Session, key: ObjectHandle, message: &[u8]) -> anyhow::Result<()> {
        match self {
            Kind::Rsa => session.sign(&Mechanism::Sha256RsaPkcs, key, message),
            Kind::Ecdsa => {
                let d = digest::digest(&digest::SHA256, message);
                session.sign(&Mechanism::Ecdsa, key, d.as_ref())
            }
        }
        .context("C_Sign")?;
        Ok(())
    }
}

fn find_slot(ctx: &Pkcs11, token: &str) -> anyhow::Result<Slot> {
    for slot in ctx.get_slots_with_token().context("C_GetSlotList")? {
        let info = ctx.get_token_info(slot).context("C_GetTokenInfo")?;
        if info.label() == token {
            return Ok(slot);
        }
    }
    bail!("no token labelled {token:?}")
}

fn find_key(session: &Session, label: &str) -> anyhow::Result<(ObjectHandle, Kind)> {
    let handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .context("C_FindObjects")?;
    let handle = match handles.as_slice() {
        [h] => *h,
        [] => bail!("no private key labelled {label:?}"),
        _ => bail!("{} private keys labelled {label:?}", handles.len()),
    };
    let attrs = session
        .get_attributes(handle, &[AttributeType::KeyType])
        .context("C_GetAttributeValue")?;
    let kind = match attrs.first() {
        Some(Attribute::KeyType(t)) if *t == KeyType::RSA => Kind::Rsa,
        Some(Attribute::KeyType(t)) if *t == KeyType::EC => Kind::Ecdsa,
        other => bail!("key {label:?} has an unsupported type: {other:?}"),
    };
    Ok((handle, kind))
}

/// Finds the key and makes a few signatures on `session`.
fn warm_up(session: &Session, label: &str, message: &[u8]) -> anyhow::Result<(ObjectHandle, Kind)> {
    let (key, kind) = find_key(session, label)?;
    for _ in 0..20 {
        kind.sign(session, key, message)?;
    }
    Ok((key, kind))
}

/// Per-thread loop: warm up, wait for everyone, sign until `stop`.
fn worker(
    ctx: &Pkcs11,
    slot: Slot,
    label: &str,
    message: &[u8],
    start: &Barrier,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let session = ctx.open_ro_session(slot).context("C_OpenSession")?;
    let result = warm_up(&session, label, message);
    // Every thread reaches the barrier, also after an error, so none waits forever.
    start.wait();
    let (key, kind) = result?;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        kind.sign(&session, key, message)?;
        n += 1;
    }
    Ok(n)
}

fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let pin = std::fs::read_to_string(&args.pin_file)
        .with_context(|| format!("reading {}", args.pin_file.display()))?;
    let pin = pin.trim_end_matches(['\r', '\n']);
    let ctx =
        Pkcs11::new(&args.module).with_context(|| format!("loading {}", args.module.display()))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .context("C_Initialize")?;
    let slot = find_slot(&ctx, &args.token)?;
    // Login state is per token and application: this session keeps every other one logged in.
    let anchor = ctx.open_ro_session(slot).context("C_OpenSession")?;
    anchor
        .login(UserType::User, Some(&AuthPin::new(pin.into())))
        .context("C_Login")?;
    let (_, kind) = find_key(&anchor, &args.label)?;
    let message = vec![0x5au8; args.message_bytes];

    let start = Barrier::new(args.threads + 1);
    let stop = AtomicBool::new(false);
    let (counts, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|_| s.spawn(|| worker(&ctx, slot, &args.label, &message, &start, &stop)))
            .collect();
        start.wait();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(args.seconds.max(0.0)));
        stop.store(true, Ordering::Relaxed);
        let counts: Vec<anyhow::Result<u64>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("signing thread panicked")))
            })
            .collect();
        (counts, t0.elapsed())
    });
    let counts = counts.into_iter().collect::<anyhow::Result<Vec<u64>>>()?;
    let total: u64 = counts.iter().sum();
    let secs = elapsed.as_secs_f64();
    drop(anchor);
    Ok(serde_json::json!({
        "token": args.token,
        "label": args.label,
        "mechanism": kind.mechanism_name(),
        "threads": args.threads,
        "message_bytes": args.message_bytes,
        "seconds": secs,
        "signatures": total,
        "per_thread": counts,
        "rate": total as f64 / secs,
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kpki-raw-sign: {e:#}");
            ExitCode::FAILURE
        }
    }
}
