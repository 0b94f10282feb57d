//! `kpki sign`: sign a PKCS#10 request (PEM) or a CertificateSigningRequest object under the
//! Kubernetes signer rules, with the CA configured for its signerName.

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

    let (spec, audit_file) = args
        .cluster
        .spec_and_audit_file(args.audit.audit_file.as_deref())?;
    crate::cli_audit::within(audit_file.as_deref(), "kpki sign", |audit| {
        sign(&spec, request, input, format, audit)
    })
}

/// Signs `request` (read from `input`) with the CA `spec` configures for its signer, records
/// it in `audit`, prints the result.
fn sign(
    spec: &kpki_pki::config::ClusterSpec,
    request: SignRequest,
    input: Input,
    format: Format,
    audit: Option<&crate::cli_audit::CliAudit>,
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
        ca_der: &ca.cert_der,
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
