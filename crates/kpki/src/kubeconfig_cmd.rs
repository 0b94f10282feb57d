//! `kpki kubeconfig user|component` and `kpki node add`: credentials for users, components
//! and worker nodes, signed by the cluster CA on its backend.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use kpki_pki::{onboard, store};

use crate::cluster_args::ClusterArgs;
use crate::output::{OutputArgs, out, outln, print_data};

/// Kubeconfig commands.
#[derive(Subcommand, Debug)]
pub enum KubeconfigCommand {
    /// A user's kubeconfig, like `kubeadm kubeconfig user` (printed, or written with --out).
    #[command(group(clap::ArgGroup::new("rbac_target").args(["out", "rbac_out"]).multiple(true)))]
    User {
        /// The user name (certificate CN).
        #[arg(long)]
        client_name: String,
        /// A group (certificate O).
        #[arg(long = "org")]
        orgs: Vec<String>,
        /// Validity (Go duration, e.g. 24h; default: the certificate validity period).
        /// kubeadm's name, --validity-period, is accepted too.
        #[arg(long, visible_alias = "validity-period", value_name = "DURATION", value_parser = parse_validity)]
        validity: Option<std::time::Duration>,
        /// Write the kubeconfig here (mode 0600; never replaces a file) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write a binding for the user: `clusterrole=<name>[,namespace=<ns>]` (needs
        /// --out or --rbac-out).
        #[arg(long, value_name = "SPEC", value_parser = parse_rbac, requires = "rbac_target")]
        rbac: Option<(String, Option<String>)>,
        /// Where the RBAC manifest goes (default: <client-name>-rbac.yaml beside --out).
        #[arg(long)]
        rbac_out: Option<PathBuf>,
        /// Issue O=system:masters (refused by default).
        #[arg(long)]
        allow_system_masters: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        audit: crate::cli_audit::AuditFileArg,
    },
    /// A component's kubeconfig (kube-proxy), written to <kubeconfig-dir>/<component>.conf.
    Component {
        /// The component.
        name: String,
        /// Write here instead of <kubeconfig-dir>/<component>.conf.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        audit: crate::cli_audit::AuditFileArg,
    },
}

/// Node commands.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// A worker node's kubelet serving certificate and client kubeconfig.
    Add {
        /// Node name.
        name: String,
        /// The node's IP addresses (serving certificate SANs).
        #[arg(long = "address", required = true)]
        addresses: Vec<IpAddr>,
        /// Output directory (default <kubeconfig-dir>/nodes/<name>).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[command(flatten)]
        audit: crate::cli_audit::AuditFileArg,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Parses `--rbac clusterrole=<name>[,namespace=<ns>]`; a malformed flag is a usage error.
pub(crate) fn parse_rbac(text: &str) -> Result<(String, Option<String>), String> {
    let (mut role, mut ns) = (None, None);
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("clusterrole", v)) if !v.is_empty() => role = Some(v.to_string()),
            Some(("namespace", v)) if !v.is_empty() => ns = Some(v.to_string()),
            _ => {
                return Err(format!(
                    "{text:?}: expected clusterrole=<name>[,namespace=<ns>]"
                ));
            }
        }
    }
    Ok((
        role.ok_or_else(|| format!("{text:?}: clusterrole=<name> is required"))?,
        ns,
    ))
}

/// Parses `--validity` (a Go duration, or days: `30d`); a malformed flag is a usage error.
fn parse_validity(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<kpki_pki::GoDuration>()
        .map(kpki_pki::GoDuration::get)
        .map_err(|e| e.to_string())
}

/// What to do with the files `node add` wrote: where they go on the node and the kubelet
/// flags that read them.
fn node_next_step(name: &str, files: &onboard::NodeFiles, ca: &Path) -> String {
    let show = |p: &Path| format!("{:?}", p.display().to_string());
    format!(
        "[node] Next: copy these to {name} and start its kubelet with\n\
         \x20   --kubeconfig=/etc/kubernetes/kubelet.conf                 (from {})\n\
         \x20   --tls-cert-file=/var/lib/kubelet/pki/kubelet.crt          (from {})\n\
         \x20   --tls-private-key-file=/var/lib/kubelet/pki/kubelet.key   (from {}, mode 0600)\n\
         \x20   --client-ca-file=/etc/kubernetes/pki/ca.crt               (from {})\n",
        show(&files.kubeconfig),
        show(&files.serving_cert),
        show(&files.serving_key),
        show(ca),
    )
}

/// Writes a new file (never replacing one), naming an existing file in the error.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    if path.exists() {
        return Err(format!(
            "{}: already exists; refusing to overwrite",
            path.display()
        ));
    }
    store::create(path, bytes, mode).map_err(|e| e.to_string())
}

/// Runs a `kpki kubeconfig` command.
pub fn run_kubeconfig(cmd: KubeconfigCommand) -> Result<(), String> {
    match cmd {
        KubeconfigCommand::User {
            client_name,
            orgs,
            validity,
            out,
            rbac,
            rbac_out,
            allow_system_masters,
            cluster,
            audit,
        } => {
            let rbac_path = match (&rbac, rbac_out, &out) {
                (None, _, _) => None,
                (Some(_), Some(p), _) => Some(p),
                (Some(_), None, Some(o)) => {
                    Some(o.with_file_name(format!("{client_name}-rbac.yaml")))
                }
                (Some(_), None, None) => {
                    return Err(
                        "--rbac needs --out or --rbac-out to know where the manifest goes".into(),
                    );
                }
            };
            let (spec, audit_file) = cluster.spec_and_audit_file(audit.audit_file.as_deref())?;
            let validity = validity.unwrap_or(spec.cert_validity);
            tracing::info!(
                client_name,
                key = %spec.ca_key(kpki_pki::catalogue::CaId::Ca),
                validity_seconds = validity.as_secs(),
                "issuing a user kubeconfig"
            );
            let manifest = rbac
                .as_ref()
                .map(|(role, ns)| onboard::rbac_manifest(&client_name, role, ns.as_deref()))
                .transpose()
                .map_err(|e| e.to_string())?;
            let ca_key = spec.ca_key(kpki_pki::catalogue::CaId::Ca).to_string();
            crate::cli_audit::within(audit_file.as_deref(), "kpki kubeconfig user", |audit| {
                let kubeconfig = onboard::user_kubeconfig(
                    &spec,
                    &crate::backends::key_store(),
                    &client_name,
                    &orgs,
                    validity,
                    allow_system_masters,
                )
                .map_err(|e| e.to_string())?;
                if let Some(audit) = audit {
                    audit.issued(&kubeconfig, None, &ca_key)?;
                }
                match &out {
                    Some(path) => write_new(path, kubeconfig.as_bytes(), store::PRIVATE_MODE)?,
                    None => out!("{}", kubeconfig.as_str()),
                }
                if let (Some(path), Some(m)) = (rbac_path, manifest) {
                    write_new(&path, m.as_bytes(), store::CERT_MODE)?;
                }
                Ok(())
            })
        }
        KubeconfigCommand::Component {
            name,
            out,
            cluster,
            audit,
        } => {
            let (spec, audit_file) = cluster.spec_and_audit_file(audit.audit_file.as_deref())?;
            tracing::info!(component = %name, "issuing a component kubeconfig");
            let ca_key = spec.ca_key(kpki_pki::catalogue::CaId::Ca).to_string();
            crate::cli_audit::within(
                audit_file.as_deref(),
                "kpki kubeconfig component",
                |audit| {
                    let kubeconfig =
                        onboard::component_kubeconfig(&spec, &crate::backends::key_store(), &name)
                            .map_err(|e| e.to_string())?;
                    if let Some(audit) = audit {
                        audit.issued(&kubeconfig, None, &ca_key)?;
                    }
                    let path =
                        out.unwrap_or_else(|| spec.kubeconfig_dir.join(format!("{name}.conf")));
                    write_new(&path, kubeconfig.as_bytes(), store::PRIVATE_MODE)?;
                    outln!("[kubeconfig] Wrote {:?}", path.display().to_string());
                    Ok(())
                },
            )
        }
    }
}

/// Runs a `kpki node` command.
pub fn run_node(cmd: NodeCommand) -> Result<(), String> {
    match cmd {
        NodeCommand::Add {
            name,
            addresses,
            out_dir,
            cluster,
            audit,
            output,
        } => {
            let (spec, audit_file) = cluster.spec_and_audit_file(audit.audit_file.as_deref())?;
            let dir = out_dir.unwrap_or_else(|| spec.kubeconfig_dir.join("nodes").join(&name));
            tracing::info!(node = %name, dir = %dir.display(), "issuing node credentials");
            let ca_key = spec.ca_key(kpki_pki::catalogue::CaId::Ca).to_string();
            let files =
                crate::cli_audit::within(audit_file.as_deref(), "kpki node add", |audit| {
                    let files = onboard::add_node(
                        &spec,
                        &crate::backends::key_store(),
                        &name,
                        &addresses,
                        &dir,
                    )
                    .map_err(|e| e.to_string())?;
                    if let Some(audit) = audit {
                        for path in [&files.serving_cert, &files.kubeconfig] {
                            let text = std::fs::read_to_string(path)
                                .map_err(|e| format!("{}: {e}", path.display()))?;
                            audit.issued(&text, None, &ca_key)?;
                        }
                    }
                    Ok(files)
                })?;
            print_data(output.output, &files, || {
                outln!(
                    "[node] Wrote {:?}, {:?} and {:?}",
                    files.serving_cert.display().to_string(),
                    files.serving_key.display().to_string(),
                    files.kubeconfig.display().to_string()
                );
                out!(
                    "{}",
                    node_next_step(&name, &files, &spec.cert_dir.join("ca.crt"))
                );
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_specs() {
        assert_eq!(
            parse_rbac("clusterrole=view").unwrap(),
            ("view".to_string(), None)
        );
        assert_eq!(
            parse_rbac("clusterrole=edit,namespace=dev").unwrap(),
            ("edit".to_string(), Some("dev".to_string()))
        );
        for bad in [
            "role=view",
            "namespace=dev",
            "clusterrole=",
            "clusterrole=a,x",
            "",
        ] {
            assert!(parse_rbac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_step_names_every_file_and_its_kubelet_flag() {
        let files = onboard::NodeFiles {
            serving_cert: "/o/w1/kubelet.crt".into(),
            serving_key: "/o/w1/kubelet.key".into(),
            kubeconfig: "/o/w1/kubelet.conf".into(),
        };
        let text = node_next_step("w1", &files, Path::new("/p/ca.crt"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("[node] Next: copy these to w1"));
        for (flag, from) in [
            ("--kubeconfig=", "/o/w1/kubelet.conf"),
            ("--tls-cert-file=", "/o/w1/kubelet.crt"),
            ("--tls-private-key-file=", "/o/w1/kubelet.key"),
            ("--client-ca-file=", "/p/ca.crt"),
        ] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.trim_start().starts_with(flag) && l.contains(from)),
                "{flag} {from}: {text}"
            );
        }
    }
}
