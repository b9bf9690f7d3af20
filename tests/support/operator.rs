//! Running the operator in-process for tests, and the manifests most tests need.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use tokio::sync::oneshot;

use kmailops::api::{Email, EmailDelivery, EmailPhase};
use kmailops::context::Settings;
use kmailops::leader::{LeaderElection, run_as_leader};
use kmailops::runtime::{RunConfig, run};

use super::TestEnv;
use super::mock_mailersend::MockMailerSend;

pub const WAIT: Duration = Duration::from_secs(30);

/// A local address nothing listens on, for the operator's metrics endpoint.
pub fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running controller, scoped to one namespace; stops when dropped or on `stop()`.
pub struct Operator {
    /// The instance id, as recorded in ledger claims.
    pub identity: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Operator {
    pub fn start(client: Client, ns: &str) -> Self {
        Self::start_with(client, ns, Settings::default())
    }

    pub fn start_with(client: Client, ns: &str, settings: Settings) -> Self {
        Self::start_full(client, ns, settings, None)
    }

    /// With the metrics endpoint on `metrics_addr`.
    pub fn start_full(
        client: Client,
        ns: &str,
        settings: Settings,
        metrics_addr: Option<std::net::SocketAddr>,
    ) -> Self {
        Self::spawn(client, ns, settings, metrics_addr, None)
    }

    /// A replica with leader election on a Lease in `ns` (short lease times for tests).
    pub fn start_replica(client: Client, ns: &str) -> Self {
        let election = LeaderElection {
            namespace: ns.to_string(),
            lease_name: "kmailops-leader".into(),
            lease_duration_s: 4,
            renew_grace_s: 1,
        };
        let settings = Settings {
            sends: kmailops::send_slots::SlotLimits::from_total(4),
            ..Settings::default()
        };
        Self::spawn(client, ns, settings, None, Some(election))
    }

    fn spawn(
        client: Client,
        ns: &str,
        mut settings: Settings,
        metrics_addr: Option<std::net::SocketAddr>,
        election: Option<LeaderElection>,
    ) -> Self {
        // In this test process (not the `kmailops` binary) renders run in-process; the
        // worker processes are tested through the binary (tests/render_isolation.rs).
        kmailops::template::isolation::choose(kmailops::template::isolation::Isolation::InProcess);
        // A test may name the instance (to play the process that made a claim); otherwise
        // every start is a new process.
        if !settings.instance_id.starts_with("test-") {
            settings.instance_id = format!("test-{}", rand::random::<u32>());
        }
        let identity = settings.instance_id.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let config = RunConfig {
            settings,
            namespace: Some(ns.to_string()),
            metrics_addr,
        };
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            match election {
                Some(e) => run_as_leader(client, config, e, shutdown).await,
                None => run(client, config, shutdown).await,
            }
            .expect("controller runs");
        });
        Self {
            identity,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub async fn secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.data = Some(BTreeMap::from([(
        key.to_string(),
        ByteString(value.as_bytes().to_vec()),
    )]));
    api.create(&PostParams::default(), &s)
        .await
        .expect("create Secret");
}

pub fn sender_yaml(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata:
  name: {name}
spec:
  default: true
  sender:
    address: shop@example.com
    name: Example Shop
  mailersend:
    apiTokenSecretRef: {{name: mailersend-token, key: token}}
    baseUrl: {base_url}
  retry: {{maxAttempts: 4, initialBackoff: 1s, maxBackoff: 4s}}
{extra}
"#
    )
}

pub fn email_yaml(name: &str, subject: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata:
  name: {name}
spec:
  to: ["Ada Lovelace <ada@example.org>"]
  subject: "{subject}"
  text: "Hello Ada"
{extra}
"#
    )
}

/// The `spec.sendAt` line of an Email the API server accepts and our types reject: an offset
/// of +99:00 (jiff takes at most ±25 h). Such an Email is left out of the operator's cache.
pub const UNREADABLE_SEND_AT: &str = "  sendAt: \"2026-12-01T10:00:00+99:00\"";

/// Namespace, token Secret, mock server and a default sender config pointing at it.
/// Operator logs go through the test harness, so they show only for a failing test (or with
/// `--nocapture`). `RUST_LOG` filters them.
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

pub async fn setup(env: &TestEnv, prefix: &str) -> (String, MockMailerSend) {
    init_test_logging();
    let ns = env.unique_namespace(prefix).await;
    let mock = MockMailerSend::start().await;
    secret(
        &env.client(),
        &ns,
        "mailersend-token",
        "token",
        "test-token",
    )
    .await;
    env.apply_yaml(&ns, &sender_yaml("mailersend", &mock.base_url, ""))
        .await;
    (ns, mock)
}

pub fn phase_is(p: EmailPhase) -> impl Fn(&Email) -> bool {
    move |e: &Email| e.status.as_ref().and_then(|s| s.phase) == Some(p)
}

pub fn ready_reason(e: &Email) -> Option<String> {
    e.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.reason.clone())
}

pub fn condition(e: &Email, type_: &str) -> Option<(String, String)> {
    e.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

pub async fn deliveries(client: &Client, ns: &str) -> Vec<EmailDelivery> {
    Api::<EmailDelivery>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}
