//! `kpki init`: flags → [`ClusterSpec`](kpki_pki::config::ClusterSpec) →
//! `kpki_pki::init::run`, with kubeadm-style progress.

use clap::Args;

use crate::cluster_args::ClusterArgs;
use crate::output::{Format, OutputArgs, outln, print_data};

/// Flags of `kpki init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `kpki init`.
pub fn run(args: InitArgs) -> Result<(), String> {
    let spec = args.cluster.spec()?;
    let format = args.output.output;
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
