//! `kpki init`: flags → [`ClusterSpec`](kpki_pki::config::ClusterSpec) →
//! `kpki_pki::init::run`, with kubeadm-style progress; `--dry-run` prints
//! `kpki_pki::init::dry_run`'s plan instead.

use clap::Args;

use crate::cluster_args::ClusterArgs;
use crate::output::{Format, OutputArgs, outln, print_data};

/// Flags of `kpki init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print the plan (each CA, key, certificate, kubeconfig with generate, keep or external;
    /// paths and key URIs, never a PIN) and write nothing. Every configured key is opened, so
    /// an unreachable token or a wrong PIN fails the dry run as it would fail the run.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `kpki init`.
pub fn run(args: InitArgs) -> Result<(), String> {
    let spec = args.cluster.spec()?;
    let format = args.output.output;
    if args.dry_run {
        return dry_run(&spec, format);
    }
    let text = format == Format::Text;
    let mut progress = |line: String| {
        tracing::info!("{line}");
        if text {
            outln!("{line}");
        }
    };
    let report = kpki_pki::init::run(&spec, &crate::backends::key_store(), &mut progress)
        .map_err(|e| e.to_string())?;
    print_data(format, &report, || {
        let counts = kpki_pki::init::counts(&report);
        outln!(
            "[init] PKI in {:?}, kubeconfigs in {:?} ({} generated, {} kept)",
            spec.cert_dir.display().to_string(),
            spec.kubeconfig_dir.display().to_string(),
            counts.get("generated").copied().unwrap_or(0),
            counts.get("kept").copied().unwrap_or(0)
        );
    })
}

/// `kpki init --dry-run`: the plan, nothing written.
fn dry_run(spec: &kpki_pki::config::ClusterSpec, format: Format) -> Result<(), String> {
    let report =
        kpki_pki::init::dry_run(spec, &crate::backends::key_store()).map_err(|e| e.to_string())?;
    print_data(format, &report, || {
        outln!(
            "[dry-run] PKI in {:?}, kubeconfigs in {:?}; nothing is written",
            spec.cert_dir.display().to_string(),
            spec.kubeconfig_dir.display().to_string()
        );
        for f in &report.files {
            outln!(
                "[dry-run] {:<8} {:<11} {:<28} {}",
                f.action,
                f.kind,
                f.name,
                f.path
            );
        }
        let counts = kpki_pki::init::counts(&report);
        outln!(
            "[dry-run] {} to generate, {} to keep",
            counts.get("generate").copied().unwrap_or(0),
            counts.get("keep").copied().unwrap_or(0)
        );
    })
}
