//! `kpki-load`: drives an HTTPS signing endpoint (`kpki serve`, `cfssl serve`) with one JSON
//! POST repeated over keep-alive mTLS connections, and prints throughput and client-side
//! latency percentiles, as one human line or (`--json`) one JSON object.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hyper::Uri;
use kpki_e2e::load::{self, ClientIdentity, LoadReport, LoadSpec, Target};

/// Load generator for HTTPS signing endpoints with mutual TLS.
#[derive(Parser, Debug)]
#[command(name = "kpki-load", version)]
struct Args {
    /// Endpoint, e.g. https://127.0.0.1:8888/api/v1/cfssl/sign.
    #[arg(long)]
    url: String,
    /// Name the server certificate must match; default: the host of --url.
    #[arg(long)]
    server_name: Option<String>,
    /// PEM file of the CA certificates the server certificate must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// PEM file of the client certificate (with --key); omit to present none.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM file of the client key (PKCS#1, SEC1 or PKCS#8).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// JSON file sent as the body of every POST.
    #[arg(long)]
    body_file: PathBuf,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in total, across all connections.
    #[arg(long, default_value_t = 1000)]
    requests: u64,
    /// Speak HTTP/2 (negotiated with ALPN) instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

async fn spec(args: &Args) -> anyhow::Result<LoadSpec> {
    let uri: Uri = args
        .url
        .parse()
        .with_context(|| format!("--url {:?} is not a URL", args.url))?;
    if uri.scheme_str() != Some("https") {
        bail!("--url must start with https://");
    }
    let host = uri
        .host()
        .context("--url has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to no address"))?;
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let identity = ClientIdentity {
        ca_pem: read(&args.ca, "CA file")?,
        cert_pem: args
            .cert
            .as_deref()
            .map(|p| read(p, "client certificate"))
            .transpose()?,
        key_pem: args
            .key
            .as_deref()
            .map(|p| read(p, "client key"))
            .transpose()?,
    };
    Ok(LoadSpec {
        target: Target {
            addr,
            server_name: args.server_name.clone().unwrap_or(host),
            identity,
            http2: args.http2,
        },
        path,
        body: read(&args.body_file, "body file")?,
        connections: args.connections,
        requests: args.requests,
        keep_bodies_every: 0,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn json(report: &LoadReport) -> serde_json::Value {
    let by_status: serde_json::Map<String, serde_json::Value> = report
        .by_status
        .iter()
        .map(|(status, n)| (status.to_string(), (*n).into()))
        .collect();
    serde_json::json!({
        "requests": report.requests,
        "ok": report.ok,
        "by_status": by_status,
        "transport_errors": report.transport_errors,
        "reconnects": report.reconnects,
        "elapsed_ms": ms(report.elapsed),
        "rate": report.rate,
        "p50_ms": ms(report.p50),
        "p90_ms": ms(report.p90),
        "p99_ms": ms(report.p99),
        "max_ms": ms(report.max),
        "first_error": report.first_error,
    })
}

fn human(report: &LoadReport) -> String {
    let statuses: Vec<String> = report
        .by_status
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect();
    let mut line = format!(
        "{} requests, {} ok ({}), {} transport errors, {} reconnects in {:.2} s: {:.1} ok/s, \
         latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        report.requests,
        report.ok,
        statuses.join(", "),
        report.transport_errors,
        report.reconnects,
        report.elapsed.as_secs_f64(),
        report.rate,
        ms(report.p50),
        ms(report.p90),
        ms(report.p99),
        ms(report.max),
    );
    if let Some(e) = &report.first_error {
        line.push_str(&format!("; first error: {e}"));
    }
    line
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = async {
        let spec = spec(&args).await?;
        load::run(&spec, |_| {}).await
    }
    .await;
    match result {
        Ok(report) => {
            if args.json {
                println!("{}", json(&report));
            } else {
                println!("{}", human(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kpki-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
