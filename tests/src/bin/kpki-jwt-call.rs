//! Calls `Sign` (package v1) on an ExternalJWTSigner socket and prints the gRPC status code
//! and message, one line: used to call the signer as another uid (`setpriv`).

use clap::Parser;
use kpki_e2e::jwt_client::{self, V1Client, proto};

/// Flags.
#[derive(Parser)]
struct Args {
    /// The signer's unix socket.
    #[arg(long)]
    socket: std::path::PathBuf,
    /// base64url claims.
    #[arg(long, default_value = "e30")]
    claims: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut client = V1Client::new(jwt_client::channel(&args.socket).await?);
    match client
        .sign(proto::v1::SignJwtRequest {
            claims: args.claims,
        })
        .await
    {
        Ok(_) => println!("Ok"),
        Err(s) => println!("{:?}: {}", s.code(), s.message()),
    }
    Ok(())
}
