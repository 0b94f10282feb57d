//! `kpki serve`: runs the signing daemon (see `kpki-serve`) on a multi-threaded runtime.

use std::path::PathBuf;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `kpki serve` flags.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The daemon's configuration file (TOML).
    #[arg(long, short = 'c', env = "KPKI_SERVE_CONFIG")]
    pub config: PathBuf,
    /// Run only the service-account token signer (`[jwt]`), no HTTPS API: for
    /// control-plane nodes that need nothing else.
    #[arg(long, conflicts_with = "controller_only")]
    pub jwt_only: bool,
    /// Run only the CertificateSigningRequest controller (`[kubernetes]`), no HTTPS API:
    /// for a signer Deployment in the cluster.
    #[arg(long)]
    pub controller_only: bool,
    /// Log line format (level from KPKI_LOG, default info).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Check everything the daemon needs and exit without serving: the configuration, the
    /// policy, the files, every key signing a probe, the certificates matching their keys,
    /// every listener's address bindable. One line per item; exit 0 only when all hold.
    #[arg(long)]
    pub check: bool,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kpki-serve")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let parts = if args.jwt_only {
        kpki_serve::Parts::JwtOnly
    } else if args.controller_only {
        kpki_serve::Parts::ControllerOnly
    } else {
        kpki_serve::Parts::All
    };
    if args.check {
        let verdicts = runtime.block_on(kpki_serve::check::check(
            &args.config,
            parts,
            crate::backends::key_store_with_pool,
            |v| crate::output::outln!("{}", v.line()),
        ));
        runtime.shutdown_timeout(std::time::Duration::from_secs(2));
        return match verdicts.iter().find(|v| v.result.is_err()) {
            Some(v) => Err(format!(
                "serve --check: {} failed: {}",
                v.item,
                v.result.as_ref().err().map_or("", String::as_str)
            )),
            None => {
                crate::output::outln!("serve --check: all {} checks passed", verdicts.len());
                Ok(())
            }
        };
    }
    let result = runtime.block_on(kpki_serve::serve(
        args.config,
        parts,
        crate::backends::key_store_with_pool,
    ));
    // A probe or signature stuck on a hung token must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
