//! What every reconcile shares: the API client, the caches the watches fill, the provider
//! clients, the limits, and the Event publisher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{EmailSenderConfig, EmailTemplate};
use crate::endpoints::AllowedEndpoints;
use crate::events::{EventPublisher, Reporter};
use crate::ledger::index::LedgerIndex;
use crate::lookup::secret_cache::SecretCache;
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::provider::clients::ProviderCache;
use crate::rate_limit::RateLimiters;
use crate::send_slots::SlotLimits;
use crate::template::SharedBuiltins;

pub use crate::api::FIELD_MANAGER;

/// Settings of one operator process.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Provider calls allowed at once: in all, per sender and per namespace.
    pub sends: SlotLimits,
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
    /// Namespaces whose `default: true` senders may serve Emails of other namespaces.
    pub shared_sender_namespaces: Vec<String>,
    /// Hosts senders may name in `baseUrl`, `endpoint`, `smtp.host`, `tokenUrl` (empty:
    /// any).
    pub allowed_endpoints: AllowedEndpoints,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sends: SlotLimits::from_total(16),
            claim_ttl: Duration::from_secs(120),
            delivery_retention: Duration::from_secs(720 * 3600),
            instance_id: default_instance_id(),
            templates_dir: None,
            shared_sender_namespaces: shared_sender_namespaces_default(),
            allowed_endpoints: AllowedEndpoints::default(),
        }
    }
}

/// `KMAILOPS_SHARED_SENDER_NAMESPACES` (comma-separated), else the operator's own namespace
/// (`POD_NAMESPACE`, else `kmailops-system`). The offline commands use it too, so they choose
/// senders as the operator does.
pub fn shared_sender_namespaces_default() -> Vec<String> {
    match std::env::var("KMAILOPS_SHARED_SENDER_NAMESPACES") {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Err(_) => vec![std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "kmailops-system".into())],
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
    /// The ledger's entries by Email name, and what the retention sweep reads of them.
    pub ledger: Arc<LedgerIndex>,
    /// Every Secret's metadata; the data of those something names, read on demand.
    pub secrets: Arc<SecretCache>,
    pub templates: Store<EmailTemplate>,
}

/// What the three controllers share. What only one of them keeps lives with it (the Email
/// controller's send state in `controllers::email::state`).
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub stores: Stores,
    pub events: EventPublisher,
    pub providers: ProviderCache,
    /// The templates folder's files, swapped whole when the folder changes.
    pub builtin_templates: SharedBuiltins,
    /// Each namespace's share of the render slots.
    pub render_line: Arc<crate::template::line::RenderLine>,
    pub metrics: Metrics,
    pub rate_limits: RateLimiters,
    /// The last send through each sender, shown in its status.
    activity: Arc<Mutex<HashMap<String, SendActivity>>>,
    /// The client each sender's last health check used, to check again when it changes.
    checked_clients: Mutex<HashMap<String, Arc<dyn Provider>>>,
    /// Set once shutdown began: no new provider call is claimed after it, so a stopping
    /// replica only finishes the calls already under way and hands the rest to its successor.
    stopping: std::sync::atomic::AtomicBool,
    /// Tells those waiting (for a send slot, in line) that shutdown began, so they give up
    /// at once instead of at the end of their wait.
    stop_signal: tokio::sync::watch::Sender<bool>,
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
            render_line: crate::template::line::RenderLine::new(
                crate::template::line::PER_NAMESPACE,
            ),
            metrics,
            rate_limits: RateLimiters::default(),
            activity: Arc::default(),
            checked_clients: Mutex::default(),
            sender_wakeups,
            stopping: Default::default(),
            stop_signal: tokio::sync::watch::Sender::new(false),
            client,
            settings,
            stores,
        })
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
        self.stop_signal.send_replace(true);
    }

    /// Resolves once shutdown began (at once if it already has). A wait that should end with
    /// the process (a place in line for a send slot) races this.
    pub async fn stopped(&self) {
        let mut rx = self.stop_signal.subscribe();
        // The sender lives as long as `self`, so this only ends when the value turns true.
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Whether shutdown began.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }
}
