//! Drives an ExternalJWTSigner socket with concurrent `Sign` calls (package v1) for a fixed
//! time and prints the rate and latency percentiles as one JSON object. Callers share one
//! HTTP/2 connection, as kube-apiserver does, unless `--connections` says otherwise.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use kpki_e2e::jwt_client::{self, V1Client, proto};

/// Flags.
#[derive(Parser)]
struct Args {
    /// The signer's unix socket.
    #[arg(long)]
    socket: std::path::PathBuf,
    /// Concurrent callers.
    #[arg(long, default_value_t = 16)]
    callers: usize,
    /// Connections the callers share (round robin).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "exp": 4_102_444_800u64, "iat": 1_700_000_000u64, "nbf": 1_700_000_000u64,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": "system:serviceaccount:default:bench",
            "kubernetes.io": { "namespace": "default", "serviceaccount": { "name": "bench", "uid": "5f3c" } }
        })
        .to_string(),
    );
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(jwt_client::channel(&args.socket).await?);
    }
    let warmup = Instant::now() + Duration::from_secs(1);
    let end = warmup + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for i in 0..args.callers {
        let mut client = V1Client::new(channels[i % channels.len()].clone());
        let claims = claims.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let r = client
                    .sign(proto::v1::SignJwtRequest {
                        claims: claims.clone(),
                    })
                    .await;
                if start >= warmup {
                    match r {
                        Ok(_) => latencies.push(start.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "callers": args.callers,
            "connections": args.connections,
            "tokens": all.len(),
            "errors": errors,
            "rate": all.len() as f64 / args.seconds as f64,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
        })
    );
    Ok(())
}
