//! `kpki keys`: create, list and show keys on any backend.

use clap::Subcommand;
use kpki_signer::{KeyAlgorithm, KeyInfo, KeyUri};

use crate::output::{OutputArgs, outln, print_data};

/// Key management commands.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key: `file:/path` (0600 PEM) or `pkcs11:token=..;object=..` (on the token).
    Create {
        /// Where the key goes.
        uri: String,
        /// RSA-2048 (default), RSA-3072, RSA-4096, ECDSA-P256 or ECDSA-P384.
        #[arg(long, short = 'a', default_value = "RSA-2048")]
        algorithm: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List the keys on a token (`pkcs11:token=..`) or in a directory (`file:/dir`).
    List {
        /// The token or directory.
        uri: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show one key: algorithm, SPKI SHA-256 fingerprint and, on tokens, its protection.
    Show {
        /// The key.
        uri: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Print a certificate signing request (PEM) made with the key, e.g. for `kpki serve`'s
    /// own `listen.key = "pkcs11:…"`: the token signs the request, no key file is made.
    Csr {
        /// The key (`pkcs11:token=..;object=..` or `file:/path`).
        uri: String,
        /// The subject CN.
        #[arg(long)]
        cn: String,
        /// A subject O value (repeatable).
        #[arg(long = "org")]
        orgs: Vec<String>,
        /// A DNS SAN (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// An IP SAN (repeatable).
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        /// Write the request to this file (mode 0644, atomically; never over an existing
        /// file) instead of stdout.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Copy an existing key file onto a token once (e.g. the cluster's `sa.key` before the
    /// token signs service-account tokens): created sensitive, non-extractable, sign-only.
    /// The file's key was exposed on disk; destroy the file afterwards.
    Import {
        /// Where the key goes (`pkcs11:token=..;object=..`).
        uri: String,
        /// The PEM key file (PKCS#1, SEC1 or PKCS#8; mode 0600).
        #[arg(long)]
        from: std::path::PathBuf,
        /// Required: acknowledges that this key existed outside the token.
        #[arg(long = "i-understand-the-key-existed-outside-the-token")]
        confirmed: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Runs a `kpki keys` command.
pub fn run(cmd: KeysCommand) -> Result<(), String> {
    let store = crate::backends::key_store();
    match cmd {
        KeysCommand::Create {
            uri,
            algorithm,
            output,
        } => {
            let format = output.output;
            let algorithm: KeyAlgorithm = algorithm.parse().map_err(|e| format!("{e}"))?;
            let uri: KeyUri = uri.parse().map_err(|e| format!("{e}"))?;
            tracing::info!(%uri, %algorithm, "creating key");
            let signer = store.create(&uri, algorithm).map_err(|e| e.to_string())?;
            let info = store.describe(signer.uri()).map_err(|e| e.to_string())?;
            print_data(format, &info, || {
                outln!("[keys] Created {} key {}", info.algorithm, info.uri);
                print_info(&info);
            })
        }
        KeysCommand::List { uri, output } => {
            let format = output.output;
            let uri: KeyUri = uri.parse().map_err(|e| format!("{e}"))?;
            tracing::info!(%uri, "listing keys");
            let keys = store.list(&uri).map_err(|e| e.to_string())?;
            print_data(format, &keys, || {
                outln!("{:<12} {:<64} URI", "ALGORITHM", "SPKI SHA-256");
                for k in &keys {
                    outln!(
                        "{:<12} {:<64} {}",
                        k.algorithm.to_string(),
                        k.spki_sha256,
                        k.uri
                    );
                }
            })
        }
        KeysCommand::Import {
            uri,
            from,
            confirmed,
            output,
        } => {
            let format = output.output;
            let uri: KeyUri = uri.parse().map_err(|e| format!("{e}"))?;
            let KeyUri::Pkcs11(p11) = &uri else {
                return Err(format!(
                    "{uri}: keys are imported onto tokens (pkcs11: URIs)"
                ));
            };
            if !confirmed {
                return Err(format!(
                    "importing {} copies a key that existed outside the token; pass --i-understand-the-key-existed-outside-the-token",
                    from.display()
                ));
            }
            if crate::input::is_stdin(&from) {
                return Err(
                    "--from -: a key is imported from its file (mode 0600), not from stdin".into(),
                );
            }
            tracing::info!(%uri, from = %from.display(), "importing key");
            let material = kpki_soft::read_key_material(&from).map_err(|e| e.to_string())?;
            let file_key = store
                .open(&KeyUri::File(from.clone()))
                .map_err(|e| e.to_string())?;
            let key = kpki_pkcs11::Pkcs11Backend::default()
                .import_key(p11, &material, file_key.public_key_spki())
                .map_err(|e| format!("{uri}: {e}"))?;
            drop(material);
            let info = store
                .describe(kpki_signer::Signer::uri(&key))
                .map_err(|e| e.to_string())?;
            eprintln!(
                "kpki: warning: {} was imported; it existed outside the token, whatever the token reports as CKA_NEVER_EXTRACTABLE. Destroy {} and its copies.",
                info.uri,
                from.display()
            );
            print_data(format, &info, || {
                outln!("[keys] Imported {} key {}", info.algorithm, info.uri);
                print_info(&info);
            })
        }
        KeysCommand::Csr {
            uri,
            cn,
            orgs,
            dns,
            ips,
            out,
        } => {
            let uri: KeyUri = uri.parse().map_err(|e| format!("{e}"))?;
            tracing::info!(%uri, %cn, "making a certificate signing request");
            let key = store.open(&uri).map_err(|e| e.to_string())?;
            let orgs: Vec<&str> = orgs.iter().map(String::as_str).collect();
            let pem = kpki_pki::gencsr::request_for_key(&key, &cn, &orgs, &dns, &ips)
                .map_err(|e| format!("{uri}: {e}"))?;
            match out {
                Some(path) => {
                    kpki_pki::store::create(&path, pem.as_bytes(), 0o644).map_err(|e| e.to_string())
                }
                None => {
                    crate::output::out!("{pem}");
                    Ok(())
                }
            }
        }
        KeysCommand::Show { uri, output } => {
            let format = output.output;
            let uri: KeyUri = uri.parse().map_err(|e| format!("{e}"))?;
            tracing::info!(%uri, "describing key");
            let info = store.describe(&uri).map_err(|e| e.to_string())?;
            print_data(format, &info, || print_info(&info))
        }
    }
}

fn print_info(info: &KeyInfo) {
    outln!("uri:               {}", info.uri);
    outln!("algorithm:         {}", info.algorithm);
    outln!("spki-sha256:       {}", info.spki_sha256);
    if let Some(l) = &info.label {
        outln!("label:             {l}");
    }
    if let Some(id) = &info.id {
        outln!("id:                {id}");
    }
    if let Some(p) = &info.protection {
        outln!("sensitive:         {}", p.sensitive);
        outln!("extractable:       {}", p.extractable);
        outln!("always-sensitive:  {}", p.always_sensitive);
        outln!("never-extractable: {}", p.never_extractable);
        outln!("local:             {}", p.local);
    }
}
