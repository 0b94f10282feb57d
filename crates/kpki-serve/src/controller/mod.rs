//! The Certificates API signer: a Kubernetes controller that signs approved
//! `certificates.k8s.io/v1` CertificateSigningRequests of the signer names `[kubernetes]`
//! lists with their CAs (on tokens or files), as kube-controller-manager's csrsigning
//! controller would if it could reach the key. It runs inside `kpki serve` or alone
//! (`kpki serve --controller-only`).
//!
//! [`config`] checks the section; [`run`] elects a leader on a `coordination.k8s.io` Lease
//! and, while this replica leads, runs a kube-runtime controller over every CSR (watch with
//! re-list, retries with backoff). `sign` handles one object (the issuance of `/v1/sign`,
//! then `/status`), `approve` is the optional rule-based approver, `object` reads what
//! both need from an object.

mod approve;
pub mod config;
mod object;
mod sign;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use kpki_pki::csr_stage::{Stage, stage};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

pub use config::{KubernetesConfig, Settings};

use crate::app::App;
use sign::Ctx;

/// How often a controller that cannot reach the API server at start tries again.
const RETRY_START: Duration = Duration::from_secs(2);

/// How long a replica that stops gives its lease release to finish.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for the cluster `settings` names (reads the kubeconfig; does not call the API
/// server).
pub async fn connect(settings: &Settings) -> Result<Client, String> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("[kubernetes] kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| format!("[kubernetes] kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("[kubernetes]: no kubeconfig given and none found in the cluster or $KUBECONFIG: {e}")
        })?,
    };
    Client::try_from(config).map_err(|e| format!("[kubernetes] client: {e}"))
}

/// Runs the controller until `stop` turns true: takes part in leader election and signs
/// while this replica holds the lease; releases the lease when stopping. An API server that
/// cannot be reached at start is tried again every 2 s.
pub async fn run(
    app: Arc<App>,
    settings: Settings,
    client: Client,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let lease = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.lease_duration.as_secs())
            .with_grace(settings.renew_before.as_secs())
            .build()
            .await;
        match built {
            Ok(lease) => break lease,
            Err(e) => {
                tracing::warn!(lease = %format!("{}/{}", settings.namespace, settings.lease_name), error = %e, "CSR controller cannot reach its lease yet");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_START) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    };
    let (mut leading, lease_task) = lease.watch().await;
    tracing::info!(identity = %settings.identity, lease = %format!("{}/{}", settings.namespace, settings.lease_name), "CSR controller waiting for the lease");
    let ctx = Arc::new(Ctx {
        app: Arc::clone(&app),
        client: client.clone(),
        api: Api::all(client),
        settings,
        issued: Mutex::new(HashMap::new()),
    });
    loop {
        // Wait to lead (or to stop).
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() {
                    return Err("CSR controller: leader election ended".into());
                },
                _ = stop.changed() => break,
            }
        }
        if *stop.borrow() {
            break;
        }
        tracing::info!(identity = %ctx.settings.identity, "CSR controller leading: signing");
        app.metrics.csr.leader.set(1);
        let signing = sign_while_leading(Arc::clone(&ctx));
        tokio::pin!(signing);
        let lost = async {
            while *leading.borrow_and_update() {
                if leading.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            _ = &mut signing => tracing::error!("CSR controller stopped on its own"),
            _ = lost => tracing::warn!(identity = %ctx.settings.identity, "CSR controller lost the lease: stopped signing"),
            reason = unconfirmed(&ctx) => tracing::warn!(identity = %ctx.settings.identity, %reason, "CSR controller cannot confirm it holds the lease: stopped signing"),
            _ = stop.changed() => {}
        }
        app.metrics.csr.leader.set(0);
        if *stop.borrow() {
            break;
        }
    }
    app.metrics.csr.leader.set(0);
    drop(leading);
    match tokio::time::timeout(RELEASE_TIMEOUT, lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("CSR controller released its lease"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "CSR controller lease release failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "CSR controller lease task failed"),
        Err(_) => tracing::warn!("CSR controller lease release timed out"),
    }
    Ok(())
}

/// Returns once this replica cannot confirm it holds the Lease: another holder is recorded,
/// or the Lease could not be read for a whole `lease_duration` (a replica cut off from the
/// API server stops signing within the lease duration, before another may take over).
async fn unconfirmed(ctx: &Ctx) -> String {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let every = (ctx.settings.renew_before / 2).max(Duration::from_millis(500));
    let mut confirmed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match leases.get(&ctx.settings.lease_name).await {
            Ok(lease) => {
                let holder = lease
                    .spec
                    .and_then(|s| s.holder_identity)
                    .unwrap_or_default();
                if holder != ctx.settings.identity {
                    return format!("the lease names {holder:?}");
                }
                confirmed = Instant::now();
            }
            Err(e) if confirmed.elapsed() + every >= ctx.settings.lease_duration => {
                return format!("lease unreadable for {:?}: {e}", confirmed.elapsed());
            }
            Err(_) => {}
        }
    }
}

/// The kube-runtime controller over every CertificateSigningRequest, with the pending gauge
/// refreshed from its cache.
async fn sign_while_leading(ctx: Arc<Ctx>) {
    let controller = Controller::new(ctx.api.clone(), watcher::Config::default())
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency));
    let store = controller.store();
    let gauge = tokio::spawn(pending_gauge(store, Arc::clone(&ctx)));
    controller
        .run(sign::reconcile, sign::error_policy, Arc::clone(&ctx))
        .for_each(|result| async move {
            if let Err(e) = result {
                match e {
                    controller::Error::ReconcilerFailed(..) => {}
                    e => tracing::warn!(error = %e, "CSR controller"),
                }
            }
        })
        .await;
    gauge.abort();
}

/// Counts the approved, unsigned requests of the handled signers every second.
async fn pending_gauge(store: Store<CertificateSigningRequest>, ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let pending = store
            .state()
            .iter()
            .filter(|o| ctx.settings.signers.contains(&o.spec.signer_name))
            .filter(|o| stage(o) == Stage::Approved)
            .count();
        ctx.app
            .metrics
            .csr
            .pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}
