//! `kpki sign`: sign a PKCS#10 request (PEM) or a CertificateSigningRequest object under the
//! Kubernetes signer rules, with the CA configured for its signerName. For an API client
//! certificate, optionally also a kubeconfig (the user's key stays in her file) and an RBAC
//! binding for the certificate's user.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use kpki_pki::csr::{self, Authority, SignRequest};
use kpki_pki::csr_object::{self, Input};
use serde::Serialize;

use crate::cluster_args::ClusterArgs;
use crate::output::{Format, OutputArgs, out, print_data, print_json, print_yaml};

/// Flags of `kpki sign`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The request: a PEM CERTIFICATE REQUEST or a certificates.k8s.io/v1 object; `-` for stdin.
    input: PathBuf,
    /// signerName (default: the object's spec.signerName, else kubernetes.io/kube-apiserver-client).
    #[arg(long)]
    signer_name: Option<String>,
    /// Usages, comma-separated Kubernetes words (default: the object's spec.usages, else the signer's).
    #[arg(long, value_delimiter = ',')]
    usages: Vec<String>,
    /// Requested validity in seconds (at least 600), like spec.expirationSeconds.
    #[arg(long)]
    expiration_seconds: Option<i64>,
    /// Issue client certificates with O=system:masters (refused by default).
    #[arg(long)]
    allow_system_masters: bool,
    /// kube-apiserver-client only: also write a kubeconfig for the certificate's user (its
    /// CN) here, mode 0600, never replacing a file: the certificate embedded, the private key
    /// referenced by --client-key (it stays with its owner and is never read).
    #[arg(long, value_name = "PATH", requires = "client_key")]
    kubeconfig_out: Option<PathBuf>,
    /// The path of the user's private key as her kubeconfig names it (`client-key`).
    #[arg(long, value_name = "PATH", requires = "kubeconfig_out")]
    client_key: Option<String>,
    /// kube-apiserver-client only: also write a binding for the certificate's user:
    /// `clusterrole=<name>[,namespace=<ns>]`, to --rbac-out.
    #[arg(long, value_name = "SPEC", value_parser = crate::kubeconfig_cmd::parse_rbac, requires = "rbac_out")]
    rbac: Option<(String, Option<String>)>,
    /// Where the RBAC manifest goes (never replaces a file).
    #[arg(long, value_name = "PATH", requires = "rbac")]
    rbac_out: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    audit: crate::cli_audit::AuditFileArg,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Serialize)]
struct Issued<'a> {
    certificate: &'a str,
}

/// Runs `kpki sign`.
pub fn run(args: SignArgs) -> Result<(), String> {
    let format = args.output.output;
    tracing::info!(input = %args.input.display(), "reading the request");
    let bytes = if crate::input::is_stdin(&args.input) {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| format!("stdin: {e}"))?;
        b
    } else {
        std::fs::read(&args.input).map_err(|e| format!("{}: {e}", args.input.display()))?
    };
    let input = csr_object::read(&bytes).map_err(|e| format!("{}: {e}", args.input.display()))?;
    let mut request = match &input {
        Input::Pem(der) => SignRequest {
            csr_der: der.clone(),
            signer_name: args
                .signer_name
                .clone()
                .unwrap_or_else(|| csr::KUBE_APISERVER_CLIENT.to_string()),
            usages: vec![],
            expiration_seconds: None,
            allow_system_masters: false,
        },
        Input::Object(object) => csr_object::request_of(object, args.signer_name.as_deref())
            .map_err(|e| e.to_string())?,
    };
    if !args.usages.is_empty() {
        request.usages = args.usages.clone();
    }
    if args.expiration_seconds.is_some() {
        request.expiration_seconds = args.expiration_seconds;
    }
    request.allow_system_masters = args.allow_system_masters;
    let extras = [args.kubeconfig_out.as_ref(), args.rbac_out.as_ref()];
    if extras.iter().any(Option::is_some) && request.signer_name != csr::KUBE_APISERVER_CLIENT {
        return Err(format!(
            "--kubeconfig-out and --rbac are for {} certificates, not {}",
            csr::KUBE_APISERVER_CLIENT,
            request.signer_name
        ));
    }
    // Nothing is written unless everything can be.
    for path in extras.into_iter().flatten() {
        if path.exists() {
            return Err(format!(
                "{}: already exists; refusing to overwrite",
                path.display()
            ));
        }
    }

    let (spec, audit_file) = args
        .cluster
        .spec_and_audit_file(args.audit.audit_file.as_deref())?;
    crate::cli_audit::within(audit_file.as_deref(), "kpki sign", |audit| {
        sign(&spec, request, input, format, audit, &args)
    })
}

/// Signs `request` (read from `input`) with the CA `spec` configures for its signer, records
/// it in `audit`, writes the kubeconfig and RBAC manifest `args` asks for, prints the result.
fn sign(
    spec: &kpki_pki::config::ClusterSpec,
    request: SignRequest,
    input: Input,
    format: Format,
    audit: Option<&crate::cli_audit::CliAudit>,
    args: &SignArgs,
) -> Result<(), String> {
    let ca_id = spec
        .signer_cas
        .get(&request.signer_name)
        .copied()
        .ok_or_else(|| {
            format!(
                "unknown signer name {:?}: kpki signs {} (add others under [signers] in kpki.toml)",
                request.signer_name,
                spec.signer_cas
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let ca = kpki_pki::authority::open(spec, &crate::backends::key_store(), ca_id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "the CA for {} has no key ({}); it cannot sign",
                request.signer_name,
                spec.ca_key(ca_id)
            )
        })?;
    let authority = Authority {
        signer: &ca.signer,
        max_validity: spec.signing_duration,
    };
    tracing::info!(
        signer_name = %request.signer_name,
        key = %spec.ca_key(ca_id),
        "signing"
    );
    let issued = csr::sign(&request, &authority, time::OffsetDateTime::now_utc())
        .map_err(|e| e.to_string())?;
    if let Some(audit) = audit {
        audit.issued(
            &issued.pem,
            Some(&request.signer_name),
            &spec.ca_key(ca_id).to_string(),
        )?;
    }
    if let (Some(path), Some(key)) = (&args.kubeconfig_out, &args.client_key) {
        let (user, yaml) =
            kpki_pki::onboard::kubeconfig_for_certificate(spec, &ca.cert_der, &issued.der, key)
                .map_err(|e| e.to_string())?;
        crate::kubeconfig_cmd::write_new(path, yaml.as_bytes(), kpki_pki::store::PRIVATE_MODE)?;
        tracing::info!(user, kubeconfig = %path.display(), "kubeconfig written");
    }
    if let (Some(path), Some((role, ns))) = (&args.rbac_out, &args.rbac) {
        let user = kpki_pki::onboard::certificate_user(&issued.der).map_err(|e| e.to_string())?;
        let manifest = kpki_pki::onboard::rbac_manifest(&user, role, ns.as_deref())
            .map_err(|e| e.to_string())?;
        crate::kubeconfig_cmd::write_new(path, manifest.as_bytes(), kpki_pki::store::CERT_MODE)?;
    }
    match input {
        Input::Pem(_) => print_data(
            format,
            &Issued {
                certificate: &issued.pem,
            },
            || out!("{}", issued.pem),
        ),
        Input::Object(mut object) => {
            csr_object::approve(&mut object, &issued.pem).map_err(|e| e.to_string())?;
            match format {
                Format::Json => print_json(&object),
                Format::Yaml | Format::Text => print_yaml(&object),
            }
        }
    }
}
