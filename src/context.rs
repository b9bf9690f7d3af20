//! What every reconcile shares: the API client, the caches the watches fill, the provider
//! clients, the limits, and the Event recorder.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use tokio::sync::Semaphore;

use crate::api::{EmailDelivery, EmailDeliveryStatus, EmailSenderConfig};
use crate::sender::clients::ProviderCache;

/// Field manager for every write the operator makes (shown in `managedFields`).
pub const FIELD_MANAGER: &str = "kmailops-controller";

/// Settings of one operator process.
#[derive(Clone, Debug)]
pub struct Settings {
    /// At most this many provider calls run at once.
    pub max_concurrent_sends: usize,
    /// How long a claimed delivery may stay without an outcome before another reconcile may
    /// call it `Unknown`: longer than any provider call can take.
    pub claim_ttl: Duration,
    /// How long EmailDeliveries are kept after their Email is gone.
    pub delivery_retention: Duration,
    /// Identifies this process in claims, so a restart can tell its own dead attempts apart
    /// from another replica's live ones.
    pub instance_id: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_concurrent_sends: 16,
            claim_ttl: Duration::from_secs(120),
            delivery_retention: Duration::from_secs(720 * 3600),
            instance_id: default_instance_id(),
        }
    }
}

/// Host name (the pod name in a Deployment) plus process id and start time: unique per process.
pub fn default_instance_id() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "kmailops".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_millisecond()
    )
}

/// Caches filled by the controller's watches. Reads come from here, never from the API server,
/// so an Email that is already handled costs no API request at all.
#[derive(Clone)]
pub struct Stores {
    pub senders: Store<EmailSenderConfig>,
    pub deliveries: Store<EmailDelivery>,
    pub secrets: Store<Secret>,
}

/// Shared state of the Email controller.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub stores: Stores,
    pub recorder: Recorder,
    pub providers: ProviderCache,
    /// Limits provider calls in flight across all Emails.
    pub send_slots: Semaphore,
    /// Ledger entries whose provider call runs in this process right now.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Outcomes of finished sends the API server did not take yet (it was unreachable).
    unrecorded: Mutex<HashMap<String, EmailDeliveryStatus>>,
}

/// Removes an entry from the in-flight set when the call ends, however it ends.
pub struct InFlightGuard {
    set: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        lock(&self.set).remove(&self.name);
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (single inserts and
/// removals), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Context {
    pub fn new(client: Client, settings: Settings, stores: Stores) -> Arc<Self> {
        let reporter = Reporter {
            controller: "kmailops".into(),
            instance: Some(settings.instance_id.clone()),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            providers: ProviderCache::new(crate::provider::http_client()),
            send_slots: Semaphore::new(settings.max_concurrent_sends.max(1)),
            in_flight: Arc::default(),
            unrecorded: Mutex::default(),
            client,
            settings,
            stores,
        })
    }
}

impl Context {
    /// Marks a ledger entry's provider call as running in this process until the guard drops.
    pub fn mark_in_flight(&self, entry: &str) -> InFlightGuard {
        lock(&self.in_flight).insert(entry.to_string());
        InFlightGuard {
            set: self.in_flight.clone(),
            name: entry.to_string(),
        }
    }

    /// Whether this process is calling the provider for `entry` right now.
    pub fn is_in_flight(&self, entry: &str) -> bool {
        lock(&self.in_flight).contains(entry)
    }

    /// Keeps an outcome the API server did not accept, to be written by the next reconcile.
    pub fn keep_unrecorded(&self, entry: &str, outcome: EmailDeliveryStatus) {
        lock(&self.unrecorded).insert(entry.to_string(), outcome);
    }

    /// Takes a kept outcome of `entry`, if any.
    pub fn take_unrecorded(&self, entry: &str) -> Option<EmailDeliveryStatus> {
        lock(&self.unrecorded).remove(entry)
    }
}
