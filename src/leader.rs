//! Leader election on a `coordination.k8s.io` Lease: only the leader reconciles.
//!
//! Replicas wait as standbys. When the leader stops renewing (it died, or lost the API
//! server), a standby takes the Lease after its duration and starts the controllers; the
//! delivery ledger makes that hand-over safe even if the old leader's last calls were still
//! in flight. A leader that loses the Lease stops its controllers and returns an error, so
//! the process exits and Kubernetes restarts it as a standby.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};

use crate::runtime::{RunConfig, run};

/// Where the Lease lives and how long it is held without renewal.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    /// Seconds a leader holds the Lease without renewing it.
    pub lease_duration_s: u64,
    /// Seconds before expiry at which the leader renews.
    pub renew_grace_s: u64,
}

impl Default for LeaderElection {
    fn default() -> Self {
        Self {
            namespace: std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "kmailops-system".into()),
            lease_name: "kmailops-leader".into(),
            lease_duration_s: 15,
            renew_grace_s: 5,
        }
    }
}

/// Runs the controllers while this process holds the Lease, until `shutdown` resolves. On
/// shutdown the in-flight sends finish, then the Lease is released so a standby takes over
/// at once instead of after the lease duration.
pub async fn run_as_leader(
    client: Client,
    config: RunConfig,
    election: LeaderElection,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let identity = config.settings.instance_id.clone();
    let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_parameters(
            LeaseParams::new(
                identity.clone(),
                election.lease_duration_s.max(2),
                election.renew_grace_s.clamp(1, election.lease_duration_s.max(2) - 1),
            )
            .with_field_manager(format!("kmailops-leader-{identity}")),
        )
        .build()
        .await
        .with_context(|| {
            format!(
                "preparing leader election on Lease {}/{} (may this account get, create and update leases there?)",
                election.namespace, election.lease_name
            )
        })?;
    let (mut leading, lease_task) = manager.watch().await;
    let mut shutdown = Box::pin(shutdown);

    tracing::info!(lease = %format!("{}/{}", election.namespace, election.lease_name), identity = %identity, "waiting to become the leader");
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() {
                    anyhow::bail!("leader election stopped before this process became the leader");
                }
            }
            _ = &mut shutdown => {
                drop(leading);
                let _ = lease_task.await;
                return Ok(());
            }
        }
    }
    tracing::info!(identity = %identity, "became the leader; starting the controllers");

    // Stop the controllers on shutdown, or when the Lease is lost. The watcher task owns the
    // only receiver of the lease state: aborting it closes the channel, which is what makes
    // the lease task release the Lease.
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        while leading.changed().await.is_ok() {
            if !*leading.borrow_and_update() {
                let _ = lost_tx.send(());
                return;
            }
        }
    });
    let lost = Arc::new(AtomicBool::new(false));
    let stop = {
        let lost = lost.clone();
        async move {
            tokio::select! {
                _ = &mut shutdown => {}
                Ok(()) = lost_rx => lost.store(true, Ordering::SeqCst),
            }
        }
    };
    let result = run(client, config, stop).await;
    watcher.abort();
    let _ = watcher.await;
    match tokio::time::timeout(Duration::from_secs(10), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "releasing the Lease failed; a standby takes over when it expires")
        }
        _ => tracing::warn!("releasing the Lease timed out; a standby takes over when it expires"),
    }
    let lost = lost.load(Ordering::SeqCst);
    result?;
    if lost {
        anyhow::bail!("lost the leader Lease; exiting so this process restarts as a standby");
    }
    Ok(())
}
