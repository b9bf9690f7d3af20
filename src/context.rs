//! What every reconcile shares: the API client, the caches the watches fill, the provider
//! clients, the limits, and the Event publisher.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::Semaphore;

use crate::api::{EmailDelivery, EmailDeliveryStatus, EmailSenderConfig, EmailTemplate};
use crate::email::ledger_index::LedgerIndex;
use crate::events::{EventPublisher, Reporter};
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::sender::clients::ProviderCache;
use crate::sender::rate_limit::RateLimiters;
use crate::template::SharedBuiltins;

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
    /// Folder of built-in templates (`layouts/base.html`, ...), watched for changes.
    pub templates_dir: Option<std::path::PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_concurrent_sends: 16,
            claim_ttl: Duration::from_secs(120),
            delivery_retention: Duration::from_secs(720 * 3600),
            instance_id: default_instance_id(),
            templates_dir: None,
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
    /// The ledger, trimmed to what reconciles read (`ledger::trim_for_cache`).
    pub deliveries: Store<EmailDelivery>,
    /// The ledger's entries by Email name, from the same watch.
    pub ledger: Arc<LedgerIndex>,
    pub secrets: Store<Secret>,
    pub templates: Store<EmailTemplate>,
}

/// Shared state of the Email controller.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub stores: Stores,
    pub events: EventPublisher,
    pub providers: ProviderCache,
    /// The templates folder's files, swapped whole when the folder changes.
    pub builtin_templates: SharedBuiltins,
    /// Limits provider calls in flight across all Emails.
    pub send_slots: Semaphore,
    /// Ledger entries whose provider call runs in this process right now.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Outcomes of finished sends the API server did not take yet (it was unreachable).
    unrecorded: Mutex<HashMap<String, EmailDeliveryStatus>>,
    /// Emails whose status this process wrote and whose write the cache has not shown yet:
    /// uid -> the resourceVersion the write was computed from (see [`Context::is_stale`]).
    status_written_from: Mutex<HashMap<String, String>>,
    pub metrics: Metrics,
    pub rate_limits: RateLimiters,
    /// The last send through each sender, shown in its status.
    activity: Arc<Mutex<HashMap<String, SendActivity>>>,
    /// The client each sender's last health check used, to check again when it changes.
    checked_clients: Mutex<HashMap<String, Arc<dyn Provider>>>,
    /// Set once shutdown began: no new provider call is claimed after it, so a stopping
    /// replica only finishes the calls already under way and hands the rest to its successor.
    stopping: std::sync::atomic::AtomicBool,
    /// Asks the sender controller to look at a sender again (e.g. to show a recent send).
    sender_wakeups: tokio::sync::mpsc::UnboundedSender<ObjectRef<EmailSenderConfig>>,
}

/// The last send through a sender.
#[derive(Clone, Debug)]
pub struct SendActivity {
    pub time: jiff::Timestamp,
    /// The error of that send; `None` when it succeeded.
    pub error: Option<String>,
    /// When the sender controller was last woken to show this.
    flushed: Option<std::time::Instant>,
    /// A wake-up of the sender controller is already planned.
    wakeup_planned: bool,
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
    pub fn new(
        client: Client,
        settings: Settings,
        stores: Stores,
        metrics: Metrics,
        sender_wakeups: tokio::sync::mpsc::UnboundedSender<ObjectRef<EmailSenderConfig>>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "kmailops".into(),
            instance: settings.instance_id.clone(),
        };
        Arc::new(Self {
            events: EventPublisher::new(client.clone(), reporter),
            providers: ProviderCache::new(crate::provider::http_client()),
            builtin_templates: SharedBuiltins::default(),
            send_slots: Semaphore::new(settings.max_concurrent_sends.max(1)),
            in_flight: Arc::default(),
            unrecorded: Mutex::default(),
            status_written_from: Mutex::default(),
            metrics,
            rate_limits: RateLimiters::default(),
            activity: Arc::default(),
            checked_clients: Mutex::default(),
            sender_wakeups,
            stopping: Default::default(),
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

    /// Notes that this process wrote the status of the object `uid`, computed from its version
    /// `from_version`.
    pub fn note_status_write(&self, uid: &str, from_version: &str) {
        lock(&self.status_written_from).insert(uid.to_string(), from_version.to_string());
    }

    /// Whether `uid` at `version` is a version this process has already written a status over,
    /// i.e. the cache does not show that write yet. A reconcile triggered in that moment (a
    /// sender's status changed, a requeue) would otherwise act on the status from before its
    /// own write: repeat the ledger lookup and overwrite a fresh `Sent` with
    /// `RecoveredFromLedger`. The note is dropped once any other version is seen, so it lives
    /// only until the watch catches up.
    pub fn is_stale(&self, uid: &str, version: &str) -> bool {
        let mut written = lock(&self.status_written_from);
        match written.get(uid) {
            Some(from) if from == version => true,
            Some(_) => {
                written.remove(uid);
                false
            }
            None => false,
        }
    }
}

impl Context {
    /// Notes a send through `sender` (`namespace/name`) and, at most every 15 s per sender,
    /// wakes the sender controller to show it in the sender's status: a burst of sends costs
    /// a few status writes, not one per Email.
    pub fn record_send(&self, sender: &str, error: Option<String>) {
        const AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(15);
        let mut map = lock(&self.activity);
        let entry = map.entry(sender.to_string()).or_insert(SendActivity {
            time: jiff::Timestamp::now(),
            error: None,
            flushed: None,
            wakeup_planned: false,
        });
        entry.time = jiff::Timestamp::now();
        entry.error = error;
        let Some((ns, name)) = sender.split_once('/') else {
            return;
        };
        if entry.wakeup_planned {
            return;
        }
        entry.wakeup_planned = true;
        let wait = entry
            .flushed
            .map(|t| AT_MOST_EVERY.saturating_sub(t.elapsed()))
            .unwrap_or_default();
        let target = ObjectRef::new(name).within(ns);
        let (activity, wakeups, key) = (
            self.activity.clone(),
            self.sender_wakeups.clone(),
            sender.to_string(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(e) = lock(&activity).get_mut(&key) {
                e.wakeup_planned = false;
                e.flushed = Some(std::time::Instant::now());
            }
            // A closed channel only means the operator is shutting down.
            let _ = wakeups.send(target);
        });
    }

    /// The last send through `sender`, if any happened in this process.
    pub fn sender_activity(&self, sender: &str) -> Option<SendActivity> {
        lock(&self.activity).get(sender).cloned()
    }

    /// Remembers the client a sender's reconcile sees; true when it differs from the one seen
    /// before in this process (new spec or rotated Secret), so a health check is due at once.
    /// The first sighting after a start is not a change: the persisted lastHealthCheckTime
    /// decides then, so a restart does not re-check (and re-write) every sender.
    pub fn note_checked_client(&self, sender: &str, client: &Arc<dyn Provider>) -> bool {
        let mut map = lock(&self.checked_clients);
        let changed = map
            .get(sender)
            .is_some_and(|previous| !Arc::ptr_eq(previous, client));
        map.insert(sender.to_string(), client.clone());
        changed
    }
}

impl Context {
    /// Marks the start of shutdown (see `stopping`).
    pub fn begin_shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether shutdown began.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }
}
