//! Prometheus metrics (prefix `kmailops_`) and the HTTP endpoints `/metrics`, `/healthz`
//! and `/readyz`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SenderLabels {
    pub sender: String,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub sender: String,
    pub provider: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfiguredLabels {
    pub sender: String,
    pub provider: String,
    /// `enabled` or `disabled`.
    pub status: String,
}

/// The `sender` and `provider` label of a failure that happened before a sender (or its
/// provider) was resolved.
pub const NONE: &str = "none";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub provider: String,
    /// `found`, `absent` or `failed`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthCheckLabels {
    pub sender: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SenderOnly {
    pub sender: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub reason: String,
}

fn seconds_histogram() -> Histogram {
    // 5 ms .. ~40 s: provider calls and reconciles both fall in this range.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every metric api.md promises. Cheap to clone (all handles are shared).
#[derive(Clone)]
pub struct Metrics {
    pub emails_sent: Family<SenderLabels, Counter>,
    pub emails_failed: Family<FailureLabels, Counter>,
    pub send_duration: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    /// Look-ups of a message at its provider before a send (see docs/exactly-once.md).
    pub provider_lookups: Family<LookupLabels, Counter>,
    pub health_checks: Family<HealthCheckLabels, Counter>,
    pub health_check_duration: Family<SenderOnly, Histogram, fn() -> Histogram>,
    sender_status: Family<SenderOnly, Gauge>,
    pub reconcile_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// 1 while this process leads (runs the controllers), 0 on a standby.
    pub leader: Gauge,
    /// Bytes of Secret data held (only Secrets that senders and attachments name).
    pub secret_data_bytes: Gauge,
    sender_configured: Family<ConfiguredLabels, Gauge>,
    /// The series of `sender_configured` each sender has now, so a change of provider or of
    /// `disabled` replaces it instead of leaving the old one at 1.
    configured: Arc<Mutex<HashMap<String, ConfiguredLabels>>>,
    /// The senders that have a `sender_status` series.
    with_status: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Whether a sender (`namespace/name`) still exists, asked before each scrape. A
    /// deletion removes the sender's series at once (`sender_deleted`), but a reconcile
    /// already running when the delete arrives records them again afterwards, and a watch
    /// that relists after a gap never sees the delete at all; the scrape drops both.
    sender_exists: Arc<Mutex<Option<SenderExists>>>,
    /// Sends by where they are now (`sending`, `waiting`, `parked`), read at each scrape.
    send_queue: Family<QueueLabels, Gauge>,
    send_queue_source: Arc<Mutex<Option<SendQueueSource>>>,
    registry: Arc<Registry>,
}

type SenderExists = Arc<dyn Fn(&str) -> bool + Send + Sync>;
type SendQueueSource = Arc<dyn Fn() -> SendQueue + Send + Sync>;

/// Where the sends of this process are, for `kmailops_send_queue`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendQueue {
    /// Send slots taken: provider calls running, or kept for the Email about to make one.
    pub sending: usize,
    /// Places in line taken: Emails claiming their delivery or waiting for a slot.
    pub waiting: usize,
    /// Emails that found no place in line, woken in turn as places free.
    pub parked: usize,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub state: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let emails_sent = Family::<SenderLabels, Counter>::default();
        let emails_failed = Family::<FailureLabels, Counter>::default();
        let send_duration = Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let provider_lookups = Family::<LookupLabels, Counter>::default();
        let health_checks = Family::<HealthCheckLabels, Counter>::default();
        let health_check_duration =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let sender_status = Family::<SenderOnly, Gauge>::default();
        let reconcile_duration =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let leader = Gauge::default();
        let secret_data_bytes = Gauge::default();
        let sender_configured = Family::<ConfiguredLabels, Gauge>::default();
        let send_queue = Family::<QueueLabels, Gauge>::default();

        let mut r = Registry::with_prefix("kmailops");
        r.register(
            "emails_sent",
            "Emails a provider accepted",
            emails_sent.clone(),
        );
        r.register(
            "emails_failed",
            "Emails that ended Failed or Unknown, by reason",
            emails_failed.clone(),
        );
        r.register(
            "send_duration_seconds",
            "Duration of provider send calls",
            send_duration.clone(),
        );
        r.register(
            "provider_lookups",
            "Look-ups of a message at its provider before a send, by provider and result (found, absent, failed)",
            provider_lookups.clone(),
        );
        r.register(
            "sender_health_checks",
            "Sender health checks, by result",
            health_checks.clone(),
        );
        r.register(
            "sender_health_check_duration_seconds",
            "Duration of sender health checks",
            health_check_duration.clone(),
        );
        r.register(
            "sender_status",
            "1 healthy, 0 unhealthy, -1 disabled",
            sender_status.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of reconciles, by kind",
            reconcile_duration.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconciles that failed (and were retried), by kind and reason",
            reconcile_errors.clone(),
        );
        r.register(
            "send_queue",
            "Sends by state: sending (slots taken), waiting (places in line taken), parked (no place in line yet)",
            send_queue.clone(),
        );
        r.register(
            "leader",
            "1 on the replica that leads (runs the controllers), 0 on a standby",
            leader.clone(),
        );
        r.register(
            "secret_data_bytes",
            "Bytes of Secret data held in memory: only Secrets that senders and attachments name",
            secret_data_bytes.clone(),
        );
        r.register(
            "sender_configured",
            "1 per existing EmailSenderConfig, by provider and status (enabled or disabled)",
            sender_configured.clone(),
        );
        // Error series exist from the start at 0, so alerts on rate() work before the first error.
        for kind in ["Email", "EmailSenderConfig", "EmailTemplate"] {
            reconcile_errors
                .get_or_create(&ErrorLabels {
                    kind: kind.into(),
                    reason: "KubeApi".into(),
                })
                .get();
        }
        Self {
            emails_sent,
            emails_failed,
            send_duration,
            provider_lookups,
            health_checks,
            health_check_duration,
            sender_status,
            reconcile_duration,
            reconcile_errors,
            leader,
            secret_data_bytes,
            sender_configured,
            configured: Arc::default(),
            sender_exists: Arc::default(),
            send_queue,
            send_queue_source: Arc::default(),
            with_status: Arc::default(),
            registry: Arc::new(r),
        }
    }

    /// Tells the scrape how to know whether a sender still exists (the leader's cache of
    /// EmailSenderConfigs); replaced on each term of leadership.
    pub fn senders_exist(&self, exists: impl Fn(&str) -> bool + Send + Sync + 'static) {
        *self.sender_exists.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(exists));
    }

    /// Tells the scrape where to read `kmailops_send_queue` (the leader's send slots).
    pub fn send_queue_from(&self, source: impl Fn() -> SendQueue + Send + Sync + 'static) {
        *self
            .send_queue_source
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(source));
    }

    fn read_send_queue(&self) {
        let source = self
            .send_queue_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let queue = source.map(|read| read()).unwrap_or_default();
        for (state, n) in [
            ("sending", queue.sending),
            ("waiting", queue.waiting),
            ("parked", queue.parked),
        ] {
            self.send_queue
                .get_or_create(&QueueLabels { state })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Removes the series of senders that no longer exist.
    fn drop_deleted_senders(&self) {
        let Some(exists) = self
            .sender_exists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let mut gone: Vec<String> = self
            .configured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .filter(|key| !exists(key))
            .cloned()
            .collect();
        gone.extend(
            self.with_status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|key| !exists(key))
                .cloned(),
        );
        for key in gone {
            self.sender_deleted(&key);
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        self.drop_deleted_senders();
        self.read_send_queue();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn observe_reconcile(&self, kind: &str, took: Duration) {
        self.reconcile_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    /// Counts an Email that came to rest in Failed or Unknown. `sender` and `provider` are
    /// [`NONE`] when the failure came before either was resolved.
    pub fn email_failed(&self, sender: Option<&str>, provider: Option<&str>, reason: &str) {
        self.emails_failed
            .get_or_create(&FailureLabels {
                sender: sender.unwrap_or(NONE).to_string(),
                provider: provider.unwrap_or(NONE).to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records that the sender `key` (`namespace/name`) exists with this provider and state.
    pub fn sender_configured(&self, key: &str, provider: Option<&str>, disabled: bool) {
        let labels = ConfiguredLabels {
            sender: key.to_string(),
            provider: provider.unwrap_or(NONE).to_string(),
            status: if disabled { "disabled" } else { "enabled" }.to_string(),
        };
        let mut configured = self.configured.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = configured.insert(key.to_string(), labels.clone())
            && old != labels
        {
            self.sender_configured.remove(&old);
        }
        self.sender_configured.get_or_create(&labels).set(1);
    }

    /// The `sender_status` gauge of the sender `key` (1 healthy, 0 unhealthy, -1 disabled).
    pub fn sender_status(&self, key: &str) -> Gauge {
        let mut with_status = self.with_status.lock().unwrap_or_else(|p| p.into_inner());
        with_status.insert(key.to_string());
        self.sender_status.get_or_create_owned(&SenderOnly {
            sender: key.to_string(),
        })
    }

    /// The sender `key` was deleted: its series go (`sender_configured`, `sender_status`).
    pub fn sender_deleted(&self, key: &str) {
        let mut configured = self.configured.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = configured.remove(key) {
            self.sender_configured.remove(&old);
        }
        let mut with_status = self.with_status.lock().unwrap_or_else(|p| p.into_inner());
        with_status.remove(key);
        self.sender_status.remove(&SenderOnly {
            sender: key.to_string(),
        });
    }

    pub fn reconcile_error(&self, kind: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

/// Whether this replica is ready, and why (or why not), for `/readyz`. A standby is ready:
/// it can take over. The leader is ready once its caches are filled; a replica that stops is
/// not.
#[derive(Clone, Default)]
pub struct Readiness(Arc<ReadyState>);

#[derive(Default)]
struct ReadyState {
    ready: AtomicBool,
    why: Mutex<&'static str>,
}

impl Readiness {
    pub fn set(&self, ready: bool, why: &'static str) {
        *self.0.why.lock().unwrap_or_else(|p| p.into_inner()) = why;
        self.0.ready.store(ready, Ordering::Relaxed);
    }
    pub fn get(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed)
    }
    fn why(&self) -> &'static str {
        let why = *self.0.why.lock().unwrap_or_else(|p| p.into_inner());
        if why.is_empty() { "starting" } else { why }
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("ready", &self.get())
            .field("why", &self.why())
            .finish()
    }
}

/// What `/metrics`, `/healthz` and `/readyz` report: one per process, made at its start and
/// shared by the leader election and the controllers.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    pub metrics: Metrics,
    pub ready: Readiness,
}

/// The endpoint server; stops when dropped.
pub struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` there until the returned
/// [`Server`] is dropped. Binding fails at once (a taken port is a configuration error the
/// pod's probes would otherwise only report as a restart loop).
pub async fn serve(addr: SocketAddr, endpoints: Endpoints) -> anyhow::Result<Server> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(endpoints);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics address {addr}: {e}"))?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(Server(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    })))
}

async fn metrics_text(State(e): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        e.metrics.encode(),
    )
}

async fn readyz(State(e): State<Endpoints>) -> impl IntoResponse {
    let code = if e.ready.get() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, e.ready.why())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series_of(text: &str, sender: &str) -> Vec<String> {
        text.lines()
            .filter(|l| {
                (l.starts_with("kmailops_sender_configured{")
                    || l.starts_with("kmailops_sender_status{"))
                    && l.contains(&format!("sender=\"{sender}\""))
            })
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_reconcile_that_ends_after_its_sender_was_deleted_leaves_no_series_at_the_next_scrape() {
        let metrics = Metrics::new();
        let alive = Arc::new(Mutex::new(vec!["shop/main", "shop/spare"]));
        let a = alive.clone();
        metrics.senders_exist(move |key| a.lock().unwrap().contains(&key));
        for key in ["shop/main", "shop/spare"] {
            metrics.sender_configured(key, Some("MailerSend"), false);
            metrics.sender_status(key).set(1);
        }
        assert_eq!(series_of(&metrics.encode(), "shop/spare").len(), 2);

        // The delete arrives while a reconcile of the spare runs; the reconcile then ends.
        alive.lock().unwrap().retain(|k| *k != "shop/spare");
        metrics.sender_deleted("shop/spare");
        metrics.sender_configured("shop/spare", Some("MailerSend"), true);
        metrics.sender_status("shop/spare").set(-1);

        let text = metrics.encode();
        assert_eq!(
            series_of(&text, "shop/spare"),
            Vec::<String>::new(),
            "{text}"
        );
        assert_eq!(series_of(&text, "shop/main").len(), 2, "{text}");
    }

    #[test]
    fn a_sender_deleted_while_the_watch_was_away_loses_its_series_at_the_next_scrape() {
        let metrics = Metrics::new();
        let alive = Arc::new(Mutex::new(vec!["shop/main"]));
        let a = alive.clone();
        metrics.senders_exist(move |key| a.lock().unwrap().contains(&key));
        metrics.sender_configured("shop/main", Some("Mailgun"), false);
        metrics.sender_status("shop/main").set(0);
        assert_eq!(series_of(&metrics.encode(), "shop/main").len(), 2);

        // No delete event: the relisted cache simply no longer has it.
        alive.lock().unwrap().clear();
        let text = metrics.encode();
        assert_eq!(
            series_of(&text, "shop/main"),
            Vec::<String>::new(),
            "{text}"
        );
    }

    #[test]
    fn the_send_queue_is_read_at_each_scrape_and_is_zero_before_anything_is_sending() {
        let metrics = Metrics::new();
        let line = |text: &str, state: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("kmailops_send_queue{{state=\"{state}\"}}")))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        let text = metrics.encode();
        for state in ["sending", "waiting", "parked"] {
            assert_eq!(line(&text, state).as_deref(), Some("0"), "{text}");
        }
        let now = Arc::new(Mutex::new(SendQueue {
            sending: 16,
            waiting: 16,
            parked: 4000,
        }));
        let n = now.clone();
        metrics.send_queue_from(move || *n.lock().unwrap());
        let text = metrics.encode();
        assert_eq!(line(&text, "parked").as_deref(), Some("4000"), "{text}");
        assert_eq!(line(&text, "sending").as_deref(), Some("16"), "{text}");
        *now.lock().unwrap() = SendQueue::default();
        assert_eq!(line(&metrics.encode(), "parked").as_deref(), Some("0"));
    }
}
