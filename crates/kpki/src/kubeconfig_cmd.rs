//! `kpki kubeconfig user|component` and `kpki node add`: credentials for users, components
//! and worker nodes, signed by the cluster CA on its backend.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use kpki_pki::{onboard, store};

use crate::cluster_args::ClusterArgs;
use crate::output::{Format, print_data};

/// Kubeconfig commands.
#[derive(Subcommand, Debug)]
pub enum KubeconfigCommand {
    /// A user's kubeconfig, like `kubeadm kubeconfig user` (printed, or written with --out).
    User {
        /// The user name (certificate CN).
        #[arg(long)]
        client_name: String,
        /// A group (certificate O).
        #[arg(long = "org")]
        orgs: Vec<String>,
        /// Validity (Go duration, e.g. 24h; default: the certificate validity period).
        #[arg(long)]
        validity: Option<String>,
        /// Write the kubeconfig here (mode 0600; never replaces a file) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write a binding for the user: `clusterrole=<name>[,namespace=<ns>]`.
        #[arg(long)]
        rbac: Option<String>,
        /// Where the RBAC manifest goes (default: <client-name>-rbac.yaml beside --out).
        #[arg(long)]
        rbac_out: Option<PathBuf>,
        /// Issue O=system:masters (refused by default).
        #[arg(long)]
        allow_system_masters: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
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
    },
}

fn parse_rbac(text: &str) -> Result<(String, Option<String>), String> {
    let (mut role, mut ns) = (None, None);
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("clusterrole", v)) if !v.is_empty() => role = Some(v.to_string()),
            Some(("namespace", v)) if !v.is_empty() => ns = Some(v.to_string()),
            _ => {
                return Err(format!(
                    "--rbac {text:?}: expected clusterrole=<name>[,namespace=<ns>]"
                ));
            }
        }
    }
    Ok((
        role.ok_or_else(|| format!("--rbac {text:?}: clusterrole=<name> is required"))?,
        ns,
    ))
}

/// Writes a new file (never replacing one), naming an existing file in the error.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
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
        } => {
            let rbac = rbac.as_deref().map(parse_rbac).transpose()?;
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
            let spec = cluster.spec()?;
            let validity = match validity {
                Some(v) => v
                    .parse::<kpki_pki::GoDuration>()
                    .map_err(|e| format!("--validity: {e}"))?
                    .get(),
                None => spec.cert_validity,
            };
            let manifest = rbac
                .as_ref()
                .map(|(role, ns)| onboard::rbac_manifest(&client_name, role, ns.as_deref()))
                .transpose()
                .map_err(|e| e.to_string())?;
            let kubeconfig = onboard::user_kubeconfig(
                &spec,
                &crate::backends::key_store(),
                &client_name,
                &orgs,
                validity,
                allow_system_masters,
            )
            .map_err(|e| e.to_string())?;
            match &out {
                Some(path) => write_new(path, kubeconfig.as_bytes(), store::PRIVATE_MODE)?,
                None => print!("{}", kubeconfig.as_str()),
            }
            if let (Some(path), Some(m)) = (rbac_path, manifest) {
                write_new(&path, m.as_bytes(), store::CERT_MODE)?;
            }
            Ok(())
        }
        KubeconfigCommand::Component { name, out, cluster } => {
            let spec = cluster.spec()?;
            let kubeconfig =
                onboard::component_kubeconfig(&spec, &crate::backends::key_store(), &name)
                    .map_err(|e| e.to_string())?;
            let path = out.unwrap_or_else(|| spec.kubeconfig_dir.join(format!("{name}.conf")));
            write_new(&path, kubeconfig.as_bytes(), store::PRIVATE_MODE)?;
            println!("[kubeconfig] Wrote {:?}", path.display().to_string());
            Ok(())
        }
    }
}

/// Runs a `kpki node` command.
pub fn run_node(cmd: NodeCommand, format: Format) -> Result<(), String> {
    match cmd {
        NodeCommand::Add {
            name,
            addresses,
            out_dir,
            cluster,
        } => {
            let spec = cluster.spec()?;
            let dir = out_dir.unwrap_or_else(|| spec.kubeconfig_dir.join("nodes").join(&name));
            let files = onboard::add_node(
                &spec,
                &crate::backends::key_store(),
                &name,
                &addresses,
                &dir,
            )
            .map_err(|e| e.to_string())?;
            print_data(format, &files, || {
                println!(
                    "[node] Wrote {:?}, {:?} and {:?}",
                    files.serving_cert.display().to_string(),
                    files.serving_key.display().to_string(),
                    files.kubeconfig.display().to_string()
                )
            })
        }
    }
}
