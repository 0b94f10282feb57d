//! Approved → certificate latency of kpki's CSR controller for 1,000 CertificateSigningRequests
//! approved at once (through the `/approval` subresource, 32 in flight), RSA-2048 cluster
//! CA on SoftHSM behind `p11-kit server`, real kube-apiserver; next to, in the same run,
//! kube-controller-manager's own csrsigning controller with an RSA-2048 CA key file (what
//! kubeadm clusters use when the key is on disk). Latency is measured from the moment a watch
//! (`kubectl get csr -w`) sees a request approved to the moment it sees its certificate, so
//! both sides pay the same watch delay. Also: kpki controller CPU per certificate.
//! `KPKI_BENCH_CSRS` sets the count (default 1000).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kpki_e2e::cluster::{Cluster, Options, eventually};
use kpki_e2e::{csr_api, openssl_csr};
use serde_json::Value;

#[derive(Default)]
struct Seen {
    approved: HashMap<String, Instant>,
    signed: HashMap<String, Instant>,
}

/// Watches every CSR (kube-rs watcher as `super-admin.conf`); records when each was first
/// seen approved and first seen signed.
fn watch(
    c: &Cluster,
) -> (
    Arc<Mutex<Seen>>,
    std::thread::JoinHandle<()>,
    Arc<AtomicBool>,
) {
    use futures::StreamExt;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use kube::runtime::watcher;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let kubeconfig = c.path("super-admin.conf");
    let (s, halt) = (Arc::clone(&seen), Arc::clone(&stop));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            let client = kube::Client::try_from(config).unwrap();
            let api: kube::Api<CertificateSigningRequest> = kube::Api::all(client);
            let mut events = watcher(api, watcher::Config::default()).boxed();
            let _ = ready_tx.send(());
            while !halt.load(Ordering::Relaxed) {
                let next = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
                let Ok(Some(Ok(event))) = next else { continue };
                let now = Instant::now();
                let objects = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => vec![o],
                    _ => vec![],
                };
                let mut seen = s.lock().unwrap();
                for o in objects {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    let status = o.status.as_ref();
                    let conditions = status.and_then(|s| s.conditions.as_ref());
                    if conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Approved")) {
                        seen.approved.entry(name.clone()).or_insert(now);
                    }
                    if status
                        .and_then(|s| s.certificate.as_ref())
                        .is_some_and(|c| !c.0.is_empty())
                    {
                        seen.signed.entry(name).or_insert(now);
                    }
                }
            }
        });
    });
    ready_rx.recv().expect("watcher started");
    (seen, handle, stop)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

struct Run {
    p50: Duration,
    p99: Duration,
    max: Duration,
    wall: Duration,
}

/// Approves every CSR of `names` as the cluster admin through the `/approval` subresource,
/// 32 requests in flight (one client: no per-process start-up, no client-side throttling).
fn approve_all(c: &Cluster, names: &[String]) {
    use futures::StreamExt;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestCondition,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(c.path("admin.conf")).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let api: kube::Api<CertificateSigningRequest> =
            kube::Api::all(kube::Client::try_from(config).unwrap());
        let api = &api;
        futures::stream::iter(names)
            .map(|name| async move {
                let mut o = api.get(name).await.unwrap();
                o.status
                    .get_or_insert_with(Default::default)
                    .conditions
                    .get_or_insert_with(Vec::new)
                    .push(CertificateSigningRequestCondition {
                        type_: "Approved".into(),
                        status: "True".into(),
                        reason: Some("BenchApprove".into()),
                        message: Some("approved by the bench".into()),
                        ..Default::default()
                    });
                api.replace_subresource("approval", name, &Default::default(), &o)
                    .await
                    .unwrap();
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
    });
}

/// Creates `n` CSRs, approves them all at once, waits for every certificate.
fn run(c: &Cluster, n: usize, prefix: &str) -> Run {
    let pem = openssl_csr(
        c.dir.path(),
        prefix,
        "p256",
        &format!("/O=dev/CN={prefix}"),
        &[],
    );
    let objects: Vec<Value> = (0..n)
        .map(|i| {
            csr_api::object(
                &format!("{prefix}-{i}"),
                &pem,
                "kubernetes.io/kube-apiserver-client",
                &["client auth"],
                Some(3600),
            )
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let (seen, watcher, stop) = watch(c);
    csr_api::create(c, "admin.conf", &objects);
    let start = Instant::now();
    approve_all(c, &names);
    eprintln!("  {n} approved in {:?}", start.elapsed());
    eventually(
        "every certificate",
        Duration::from_secs(300),
        Duration::from_millis(200),
        || {
            let s = seen.lock().unwrap();
            let done = names.iter().filter(|n| s.signed.contains_key(*n)).count();
            if done == names.len() {
                Ok(())
            } else {
                Err(format!("{done}/{}", names.len()))
            }
        },
    );
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    let s = seen.lock().unwrap();
    let mut lat: Vec<Duration> = names
        .iter()
        .map(|n| s.signed[n].saturating_duration_since(*s.approved.get(n).unwrap_or(&s.signed[n])))
        .collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    Run {
        p50: pct(0.50),
        p99: pct(0.99),
        max: *lat.last().unwrap(),
        wall,
    }
}

fn main() {
    let n: usize = std::env::var("KPKI_BENCH_CSRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);

    eprintln!("kpki controller (RSA-2048 CA on SoftHSM via p11-kit):");
    let c = Cluster::start(Options {
        algorithm: "RSA-2048",
        controller_manager: true,
        ..Options::default()
    });
    let kubeconfig = csr_api::install_rbac(&c);
    let r = csr_api::replica(&c, &kubeconfig, "bench");
    let mut d = csr_api::start(&c, &r);
    csr_api::wait_leading(&r, &mut d);
    let cpu0 = cpu_seconds(d.pid());
    let kpki = run(&c, n, "k");
    let cpu = cpu_seconds(d.pid()) - cpu0;
    d.stop();
    let log = std::fs::read_to_string(c.path("bench.log")).unwrap_or_default()
        + &std::fs::read_to_string(c.path("bench.err")).unwrap_or_default();
    let retried = log.matches("trying again").count();
    eprintln!("  controller: {retried} reconciles retried");
    for l in log.lines().filter(|l| l.contains("trying again")).take(3) {
        eprintln!("    {l}");
    }
    drop(c);

    eprintln!("kube-controller-manager csrsigning (RSA-2048 CA key file):");
    let dir = tempfile::tempdir().unwrap();
    let (ca_crt, ca_key) = kpki_e2e::openssl_ca(dir.path(), "ca", "rsa2048", "/CN=kubernetes");
    let c = Cluster::start(Options {
        algorithm: "RSA-2048",
        ca_files: Some((ca_crt, ca_key)),
        controller_manager: true,
        controller_manager_signs: true,
        before_init: None,
    });
    let base = run(&c, n, "b");
    drop(c);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("approved → certificate, {n} CSRs approved at once (watch-observed):");
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "", "p50_ms", "p99_ms", "max_ms", "wall_s", "cpu_ms/cert"
    );
    println!(
        "{:<44} {:>9.0} {:>9.0} {:>9.0} {:>9.1} {:>12.2}",
        "kpki controller, CA on SoftHSM",
        ms(kpki.p50),
        ms(kpki.p99),
        ms(kpki.max),
        kpki.wall.as_secs_f64(),
        cpu * 1000.0 / n as f64
    );
    println!(
        "{:<44} {:>9.0} {:>9.0} {:>9.0} {:>9.1} {:>12}",
        "kube-controller-manager csrsigning, key file",
        ms(base.p50),
        ms(base.p99),
        ms(base.max),
        base.wall.as_secs_f64(),
        "-"
    );
    println!(
        "p99 ratio kpki/kcm: {:.2}; target p99 <= 2000 ms: {}",
        ms(kpki.p99) / ms(base.p99).max(1.0),
        if kpki.p99 <= Duration::from_secs(2) {
            "met"
        } else {
            "NOT met"
        }
    );
}
