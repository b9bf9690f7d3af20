//! Leader election on a `coordination.k8s.io` Lease: only the leader reconciles.
//!
//! Every replica serves its probes and metrics from the start; leadership gates only the
//! controllers. Replicas wait as standbys, looking at the Lease every few seconds. When the
//! leader releases it (SIGTERM) a standby takes it at its next look; when the leader stops
//! renewing (it died, or lost the API server), after the lease duration. The new leader starts
//! the controllers; the delivery ledger makes that hand-over safe even if the old leader's
//! last calls were still in flight. A leader that loses the Lease stops its controllers and returns an error, so
//! the process exits and Kubernetes restarts it as a standby.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseParams};

use crate::metrics::{Endpoints, Readiness};
use crate::runtime::{RunConfig, run_with};

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

/// Serves `/metrics`, `/healthz` and `/readyz` on `config.metrics_addr` from the start (a
/// standby answers its probes and is ready: it can take over, so a rolling update completes),
/// and runs the controllers while this process holds the Lease, until `shutdown` resolves.
/// On shutdown the in-flight sends finish, then the Lease is released so a standby takes over
/// within its poll interval instead of after the lease duration.
pub async fn run_as_leader(
    client: Client,
    config: RunConfig,
    election: LeaderElection,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let endpoints = Endpoints::default();
    let _server = match config.metrics_addr {
        Some(addr) => Some(crate::metrics::serve(addr, endpoints.clone()).await?),
        None => None,
    };
    endpoints.metrics.leader.set(0);
    endpoints
        .ready
        .set(false, "standby: reaching the API server");
    let result = lead(client, config, election, endpoints.clone(), shutdown).await;
    endpoints.metrics.leader.set(0);
    endpoints.ready.set(false, "stopped");
    result
}

/// How often a standby looks at the Lease: a released Lease is taken within this time.
fn poll_interval(election: &LeaderElection) -> Duration {
    Duration::from_millis((election.lease_duration_s.max(2) * 250).clamp(500, 2000))
}

async fn lead(
    client: Client,
    config: RunConfig,
    election: LeaderElection,
    endpoints: Endpoints,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let identity = config.settings.instance_id.clone();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
    let mut shutdown = Box::pin(shutdown);
    let poll = poll_interval(&election);

    tracing::info!(lease = %format!("{}/{}", election.namespace, election.lease_name), identity = %identity, "waiting to become the leader");
    let (mut leading, lease_task) = loop {
        // Standby: ready, and looking at the Lease until it is released, lapses or is absent.
        tokio::select! {
            free = wait_until_free(&leases, &election, &identity, poll, &endpoints.ready) => free?,
            _ = &mut shutdown => return Ok(()),
        }
        let manager = LeaseManagerBuilder::new(client.clone(), &election.lease_name)
            .with_namespace(&election.namespace)
            .with_parameters(
                LeaseParams::new(
                    identity.clone(),
                    election.lease_duration_s.max(2),
                    election
                        .renew_grace_s
                        .clamp(1, election.lease_duration_s.max(2) - 1),
                )
                .with_field_manager(format!("kmailops-leader-{identity}")),
            )
            .build()
            .await
            .with_context(|| lease_access(&election))?;
        // The lease manager's own renew loop (it gets and patches the Lease; no API watch).
        let (mut leading, lease_task) = LeaseManager::watch(manager).await;
        // A free Lease is taken within a second or two (a lapsed one is cleared first); when
        // another standby was quicker, this one goes back to waiting.
        let won = tokio::select! {
            won = became_leader(&mut leading, poll * 2 + Duration::from_secs(3)) => won,
            _ = &mut shutdown => {
                drop(leading);
                let _ = lease_task.await;
                return Ok(());
            }
        };
        if won {
            break (leading, lease_task);
        }
        // Dropping the receiver ends the lease task; it releases nothing it does not hold.
        drop(leading);
        let _ = lease_task.await;
    };
    tracing::info!(identity = %identity, "became the leader; starting the controllers");
    endpoints.metrics.leader.set(1);

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
    let result = run_with(client, config, endpoints.clone(), stop).await;
    watcher.abort();
    let _ = watcher.await;
    match tokio::time::timeout(Duration::from_secs(10), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the leader Lease"),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "releasing the Lease failed; a standby takes over when it expires")
        }
        _ => tracing::warn!("releasing the Lease timed out; a standby takes over when it expires"),
    }
    endpoints.metrics.leader.set(0);
    let lost = lost.load(Ordering::SeqCst);
    result?;
    if lost {
        anyhow::bail!("lost the leader Lease; exiting so this process restarts as a standby");
    }
    Ok(())
}

fn lease_access(election: &LeaderElection) -> String {
    format!(
        "preparing leader election on Lease {}/{} (may this account get, create and update leases there?)",
        election.namespace, election.lease_name
    )
}

/// Whether `leading` turns true within `within`.
async fn became_leader(leading: &mut tokio::sync::watch::Receiver<bool>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if *leading.borrow_and_update() {
            return true;
        }
        match tokio::time::timeout_at(deadline, leading.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

/// Looks at the Lease every `poll` until nobody holds it (absent, released, or lapsed: its
/// holder stopped renewing), or this identity does. Ready while another replica leads.
async fn wait_until_free(
    leases: &Api<Lease>,
    election: &LeaderElection,
    identity: &str,
    poll: Duration,
    ready: &Readiness,
) -> anyhow::Result<()> {
    let mut warned = false;
    loop {
        match leases.get_opt(&election.lease_name).await {
            Ok(lease) => {
                warned = false;
                if is_free(lease.as_ref(), identity, jiff::Timestamp::now()) {
                    return Ok(());
                }
                // Ready only as a standby behind a live leader: a process about to take a free
                // Lease turns ready once its caches are filled, not for the moment in between.
                ready.set(true, "standby: ready to take over");
            }
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
                return Err(kube::Error::Api(s)).with_context(|| lease_access(election));
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "reading the leader Lease failed; retrying");
                    warned = true;
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Whether a standby may try to take `lease` at `now`.
fn is_free(lease: Option<&Lease>, identity: &str, now: jiff::Timestamp) -> bool {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return true;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return true;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .map(|t| t.0)
        .or(spec.acquire_time.as_ref().map(|t| t.0));
    match (renewed, spec.lease_duration_seconds) {
        (Some(at), Some(secs)) => {
            at + jiff::SignedDuration::from_secs(i64::from(secs.max(0))) < now
        }
        // A holder without renew time or duration: the lease manager treats it as lapsed.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed_s_ago: i64, duration: i32) -> Lease {
        let now = jiff::Timestamp::now();
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(
                    now - jiff::SignedDuration::from_secs(renewed_s_ago),
                )),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_free_when_absent_released_lapsed_or_our_own() {
        let now = jiff::Timestamp::now();
        assert!(is_free(None, "me", now));
        assert!(is_free(Some(&lease(None, 1, 15)), "me", now));
        assert!(is_free(Some(&lease(Some(""), 1, 15)), "me", now));
        assert!(is_free(Some(&lease(Some("me"), 1, 15)), "me", now));
        assert!(is_free(Some(&lease(Some("other"), 20, 15)), "me", now));
        assert!(!is_free(Some(&lease(Some("other"), 5, 15)), "me", now));
    }

    #[test]
    fn a_standby_looks_at_the_lease_often_enough_to_take_it_within_seconds() {
        let e = |s| LeaderElection {
            lease_duration_s: s,
            ..LeaderElection::default()
        };
        assert_eq!(poll_interval(&e(15)), Duration::from_secs(2));
        assert_eq!(poll_interval(&e(4)), Duration::from_secs(1));
        assert_eq!(poll_interval(&e(1)), Duration::from_millis(500));
    }
}
