//! `kpki ca rotate`: runs the next (or the named) phase of a CA or service-account key
//! rotation on this node's PKI, or reports where the rotation stands (`--status`).

use clap::Args;
use kpki_pki::GoDuration;
use kpki_pki::rotate::{self, Phase, Request, Target};
use kpki_signer::KeyUri;

use crate::cluster_args::ClusterArgs;
use crate::output::{OutputArgs, outln, print_data};

/// `kpki ca rotate` arguments.
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// What to rotate: ca, etcd-ca, front-proxy-ca or sa (not with --status).
    #[arg(value_parser = parse_target, required_unless_present = "status")]
    target: Option<Target>,
    /// The phase to run: prepare, trust-both, reissue or retire (default: the next one on
    /// this node). A phase already done here changes nothing.
    #[arg(long, value_parser = parse_phase, conflicts_with = "status")]
    phase: Option<Phase>,
    /// Where the new key goes (prepare): `pkcs11:token=..;object=..` or `file:/path`.
    /// Default: the next generation beside the old key (`ca.key` → `ca-2.key`,
    /// `object=kubernetes-ca` → `kubernetes-ca-2`). Never the old key.
    #[arg(long, value_name = "URI", conflicts_with = "status")]
    new_key: Option<String>,
    /// sa only: the longest lifetime of a service-account token (Go duration or days);
    /// retire waits this long after reissue. Default 8760h.
    #[arg(long, value_name = "DURATION", conflicts_with = "status")]
    token_lifetime: Option<GoDuration>,
    /// Say what the phase would write and which key it would make, and write nothing (the
    /// refusals are those of a real run).
    #[arg(long, conflicts_with = "status")]
    dry_run: bool,
    /// Say which phase this node is at, whether it is behind another node, and what must be
    /// restarted now.
    #[arg(long)]
    status: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    output: OutputArgs,
}

fn parse_target(text: &str) -> Result<Target, String> {
    text.parse()
}

fn parse_phase(text: &str) -> Result<Phase, String> {
    text.parse()
}

/// Runs `kpki ca rotate`.
pub fn run(args: RotateArgs) -> Result<(), String> {
    let spec = args.cluster.spec()?;
    if args.status {
        let status = rotate::status(&spec).map_err(|e| e.to_string())?;
        return print_data(args.output.output, &status, || print_status(&status));
    }
    let target = args
        .target
        .ok_or_else(|| "name what to rotate: ca, etcd-ca, front-proxy-ca or sa".to_string())?;
    let new_key = args
        .new_key
        .as_deref()
        .map(|k| k.parse::<KeyUri>().map_err(|e| format!("--new-key: {e}")))
        .transpose()?;
    let request = Request {
        target,
        phase: args.phase,
        new_key,
        token_lifetime: args
            .token_lifetime
            .map_or(rotate::DEFAULT_TOKEN_LIFETIME, GoDuration::get),
        dry_run: args.dry_run,
    };
    tracing::info!(%target, phase = ?args.phase, "rotating");
    let report =
        rotate::run(&spec, &crate::backends::key_store(), &request).map_err(|e| e.to_string())?;
    print_data(args.output.output, &report, || {
        if report.dry_run {
            if report.changed {
                outln!("[dry-run] {} {} would write:", report.target, report.phase);
                for w in &report.written {
                    outln!("[dry-run]   {w}");
                }
            } else {
                outln!(
                    "[dry-run] {} {}: already done on this node, nothing would change",
                    report.target,
                    report.phase
                );
            }
            outln!("[dry-run] nothing was written");
            return;
        }
        if report.changed {
            outln!("[rotate] {} {}: done", report.target, report.phase);
        } else {
            outln!(
                "[rotate] {} {}: already done on this node, nothing changed",
                report.target,
                report.phase
            );
        }
        for w in &report.written {
            outln!("[rotate] wrote {w}");
        }
        for n in &report.notes {
            outln!("[rotate] note: {n}");
        }
        if !report.restart.is_empty() {
            outln!("[rotate] restart now: {}", report.restart.join(", "));
        }
        match report.next {
            Some(next) => outln!(
                "[rotate] next: kpki ca rotate {} --phase {next} (on every node, after the restarts)",
                report.target
            ),
            None => outln!("[rotate] {} rotation finished on this node", report.target),
        }
    })
}

fn print_status(s: &rotate::Status) {
    let Some(target) = &s.target else {
        for n in &s.notes {
            outln!("{n}");
        }
        return;
    };
    outln!(
        "rotation of {target} (started {})",
        s.started.as_deref().unwrap_or("-")
    );
    outln!("  old key: {}", s.old_key.as_deref().unwrap_or("-"));
    outln!("  new key: {}", s.new_key.as_deref().unwrap_or("-"));
    outln!(
        "  this node ({}): {}{}",
        s.node,
        s.phase.map_or("nothing done", Phase::name),
        if s.behind { " (behind)" } else { "" }
    );
    for (node, phase) in &s.nodes {
        if *node != s.node {
            outln!("  node {node}: {phase}");
        }
    }
    if s.finished {
        outln!("  finished on every node known");
    } else if let Some(next) = s.next {
        outln!("  next: kpki ca rotate {target} --phase {next}");
    }
    if !s.restart.is_empty() {
        outln!(
            "  restart (after this node's last phase): {}",
            s.restart.join(", ")
        );
    }
    for n in &s.notes {
        outln!("  note: {n}");
    }
}
