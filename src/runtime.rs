//! Wires the Email controller: the watches that fill the caches, the triggers that bring an
//! Email back when something it depends on changes, and the ledger clean-up; and next to it
//! the EmailTemplate controller (src/template/controller.rs), which shares the template watch.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use crate::api::{Email, EmailSenderConfig, EmailStatus, EmailTemplate};
use crate::context::{Context, Settings, Stores};
use crate::controllers::email;
use crate::controllers::sender::{self as sender_controller, SeenByEmails};
use crate::controllers::template::{self as template_controller, TemplateWatch};
use crate::ledger::head::EntryHead;
use crate::ledger::index::LedgerIndex;
use crate::lookup::secret_cache::SecretCache;
use crate::metrics::Endpoints;
use crate::template::line::Renderer;
use crate::template::{self, Builtins};
use crate::tolerant::{self, Guarded};

/// Objects per page when the Emails and the ledger are listed (at start and after a watch
/// lapses). A page is held whole, with every object's managedFields, until the cache has
/// trimmed it; smaller pages than kube's 500 keep that peak low (at 10,000 Emails the restart,
/// which lists both kinds at once, was the operator's highest memory).
const LIST_PAGE_SIZE: u32 = 100;

/// What `kmailops run` configures.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub settings: Settings,
    /// Watch only this namespace; `None` watches all.
    pub namespace: Option<String>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `None` serves nothing.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Drops what no reconcile reads before an object enters a cache. Parsed managedFields are
/// most of a cached object's memory (about 7 of 10 KB of a Sent Email), and the operator never
/// looks at them: it writes by server-side apply.
fn strip<K: Resource>(object: &mut K) {
    // `None`, not an emptied Vec, which would keep its allocation.
    object.meta_mut().managed_fields = None;
}

/// An Email as the cache keeps it: [`strip`]ped, without labels, and without annotations other
/// than `kmailops.io/...` ones, which are all a reconcile reads of its metadata. In GitOps
/// repositories those others are often the largest part of an Email: a client-side `kubectl
/// apply` (Argo CD's default) stores a copy of the whole manifest in
/// `kubectl.kubernetes.io/last-applied-configuration`.
///
/// A settled Email (Sent or Expired for its generation; most Emails, most of the time) keeps
/// only what [`email::is_settled`] reads: every reconcile and every wake-up stops at that check,
/// and any change that could unsettle it (a new generation, a status written by someone else)
/// arrives through the watch as a whole object, which is trimmed again.
fn trim_email(email: &mut Email) {
    strip(email);
    let meta = &mut email.metadata;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with("kmailops.io/"));
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
    if email::is_settled(email) {
        let spec = &mut email.spec;
        spec.to = Vec::new();
        spec.cc = Vec::new();
        spec.bcc = Vec::new();
        spec.reply_to = None;
        spec.subject = None;
        spec.text = None;
        spec.html = None;
        spec.variables = None;
        spec.headers = Default::default();
        spec.tags = Vec::new();
        spec.attachments = Vec::new();
        if let Some(status) = email.status.as_mut() {
            *status = EmailStatus {
                phase: status.phase,
                observed_generation: status.observed_generation,
                // Only whether there is one: a dry run on a Sent Email is settled once its
                // preview is written (`email::is_settled`).
                preview: status.preview.as_ref().map(|_| Default::default()),
                ..Default::default()
            };
        }
    }
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the Email controller until `shutdown` resolves, as the only replica (no leader
/// election), serving `/metrics`, `/healthz` and `/readyz` on `config.metrics_addr`. In-flight
/// reconciles (and so sends) finish and record their outcome before this returns.
pub async fn run(
    client: Client,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let endpoints = Endpoints::default();
    let _server = match config.metrics_addr {
        Some(addr) => Some(crate::metrics::serve(addr, endpoints.clone()).await?),
        None => None,
    };
    endpoints.metrics.leader.set(1);
    let result = run_with(client, config, endpoints.clone(), shutdown).await;
    endpoints.metrics.leader.set(0);
    result
}

/// Runs the controllers until `shutdown` resolves, reporting through `endpoints` (served by
/// the caller, from the process start: see `leader::run_as_leader`). Not ready until the
/// caches are filled, and not ready again once shutdown begins.
pub async fn run_with(
    client: Client,
    config: RunConfig,
    endpoints: Endpoints,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let Endpoints {
        metrics,
        ready: readiness,
    } = endpoints;
    readiness.set(false, "leading: filling the caches");

    // Answers nested deeper than a parser takes are cut down to their metadata first.
    let client = tolerant::depth::DepthGuard::client(client);
    // Objects our types reject are left out of the caches and reported by one task.
    let (rejected_tx, rejected_rx) = mpsc::unbounded_channel::<tolerant::Rejected>();
    let (email_store, email_writer) = reflector::store::<Email>();
    let email_watch = reflector::reflector(
        email_writer,
        tolerant::typed(
            watcher(
                api::<Guarded<Email>>(&client, &config.namespace),
                watcher::Config::default()
                    .any_semantic()
                    .page_size(LIST_PAGE_SIZE),
            ),
            "Email",
            email_store.clone(),
            rejected_tx.clone(),
        )
        .modify(trim_email),
    )
    .applied_objects();
    let (trigger_tx, trigger_rx) = mpsc::unbounded_channel::<ObjectRef<Email>>();
    let (sender_tx, sender_rx) = mpsc::unbounded_channel::<ObjectRef<EmailSenderConfig>>();
    let mut tasks = tokio::task::JoinSet::new();

    let (senders, senders_writer) = reflector::store::<EmailSenderConfig>();
    let ledger = Arc::new(LedgerIndex::default());
    let (secrets_meta, secrets_writer) = reflector::store::<PartialObjectMeta<Secret>>();
    let secrets = Arc::new(SecretCache::new(
        client.clone(),
        secrets_meta.clone(),
        metrics.secret_data_bytes.clone(),
    ));
    let (templates, templates_writer) = reflector::store::<EmailTemplate>();
    let stores = Stores {
        senders: senders.clone(),
        ledger: ledger.clone(),
        secrets: secrets.clone(),
        templates: templates.clone(),
    };
    {
        let senders = senders.clone();
        metrics.senders_exist(move |key| {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            senders.get(&ObjectRef::new(name).within(ns)).is_some()
        });
    }
    let ctx = Context::new(
        client.clone(),
        config.settings.clone(),
        stores,
        metrics,
        sender_tx.clone(),
    );
    if let Some(dir) = &config.settings.templates_dir {
        let loaded = Builtins::load(dir)
            .with_context(|| format!("loading the built-in templates from {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), templates = loaded.len(), "loaded the built-in templates");
        ctx.builtin_templates.replace(loaded);
    }
    tasks.spawn(tolerant::report::run(ctx.clone(), rejected_rx));
    let (template_tx, template_rx) = mpsc::unbounded_channel::<ObjectRef<EmailTemplate>>();
    {
        // A render that found its namespace's render places taken is parked, and comes back
        // when one frees; one that is gone or has nothing left to render passes its turn on.
        let (emails, email_tx) = (email_store.clone(), trigger_tx.clone());
        let (templates, template_tx) = (templates.clone(), template_tx.clone());
        ctx.render_line
            .set_waker(Arc::new(move |namespace: &str, who: &Renderer| match who {
                Renderer::Email(name) => {
                    let key = ObjectRef::new(name).within(namespace);
                    let comes = emails.get(&key).is_some_and(|e| !email::is_at_rest(&e));
                    comes && email_tx.send(key).is_ok()
                }
                Renderer::Template(name) => {
                    let key = ObjectRef::new(name).within(namespace);
                    templates.get(&key).is_some() && template_tx.send(key).is_ok()
                }
            }));
    }
    let template_watch = Arc::new(TemplateWatch::new(templates.clone(), template_tx));

    // Each watch fills its cache and, on a change, wakes the Emails that may depend on it.
    {
        let stream = reflector::reflector(
            senders_writer,
            tolerant::typed(
                watcher(
                    api::<Guarded<EmailSenderConfig>>(&client, &config.namespace),
                    watcher::Config::default(),
                ),
                "EmailSenderConfig",
                senders.clone(),
                rejected_tx.clone(),
            )
            .modify(strip),
        );
        let (emails, tx, ctx) = (email_store.clone(), trigger_tx.clone(), ctx.clone());
        let (senders, sender_tx) = (senders.clone(), sender_tx.clone());
        let seen = std::sync::Mutex::new(HashMap::<String, SeenByEmails>::new());
        tasks.spawn(drive(
            stream,
            "EmailSenderConfig",
            move |sender: &EmailSenderConfig, deleted| {
                if !deleted {
                    let _ = sender_tx.send(ObjectRef::from_obj(sender));
                }
                let key = format!(
                    "{}/{}",
                    sender.namespace().unwrap_or_default(),
                    sender.name_any()
                );
                {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    let now = SeenByEmails::of(sender);
                    let unchanged = if deleted {
                        seen.remove(&key);
                        false
                    } else {
                        seen.insert(key.clone(), now.clone()).as_ref() == Some(&now)
                    };
                    if unchanged {
                        // Only its status moved on (a health check's time, a send): nothing
                        // an Email or another config reads of it.
                        return;
                    }
                }
                // Configs whose spec.fallback names this one: it appeared or went away.
                for other in sender_controller::senders_falling_back_to(&senders, sender) {
                    let _ = sender_tx.send(other);
                }
                if deleted {
                    ctx.providers.forget(&key);
                    ctx.rate_limits.forget(&key);
                    ctx.metrics.sender_deleted(&key);
                }
                // Which Emails a config affects depends on defaults and admission rules, so every
                // Email still waiting to be sent is looked at again (a cheap, read-only check).
                wake(&emails, &tx, |_| true);
            },
        ));
    }
    {
        // Metadata only: the data of the few Secrets senders and attachments name is read
        // when needed (`SecretCache`), so memory does not grow with the cluster's other Secrets.
        let stream = reflector::reflector(
            secrets_writer,
            watcher(
                api::<PartialObjectMeta<Secret>>(&client, &config.namespace),
                watcher::Config::default().page_size(LIST_PAGE_SIZE),
            )
            .modify(|meta| {
                meta.metadata.managed_fields = None;
                // Kept: labels (kmailops.io/attachable). Dropped: annotations, which for a
                // Secret applied with client-side kubectl hold a copy of all its data.
                meta.metadata.annotations = None;
            }),
        );
        let (emails, tx) = (email_store.clone(), trigger_tx.clone());
        let (senders, sender_tx) = (senders.clone(), sender_tx.clone());
        let cache = secrets.clone();
        tasks.spawn(drive(
            stream,
            "Secret",
            move |secret: &PartialObjectMeta<Secret>, _| {
                let ns = secret.namespace().unwrap_or_default();
                cache.forget(&ns, &secret.name_any());
                // A created, fixed or rotated Secret takes effect without a restart.
                for sender in
                    sender_controller::senders_using_secret(&senders, &ns, &secret.name_any())
                {
                    let _ = sender_tx.send(sender);
                }
                wake(&emails, &tx, |e| uses_namespace(e, &ns));
            },
        ));
    }
    {
        let stream = reflector::reflector(
            templates_writer,
            tolerant::typed(
                watcher(
                    api::<Guarded<EmailTemplate>>(&client, &config.namespace),
                    watcher::Config::default(),
                ),
                "EmailTemplate",
                templates.clone(),
                rejected_tx.clone(),
            ),
        );
        let (emails, tx, watch) = (
            email_store.clone(),
            trigger_tx.clone(),
            template_watch.clone(),
        );
        tasks.spawn(drive(
            stream,
            "EmailTemplate",
            move |t: &EmailTemplate, deleted| {
                if let Some(ns) = watch.on_event(t, deleted) {
                    wake(&emails, &tx, |e| {
                        template_controller::email_uses_templates_of(e, &ns)
                    });
                }
            },
        ));
    }
    if let Some(dir) = config.settings.templates_dir.clone() {
        let (emails, tx, watch) = (
            email_store.clone(),
            trigger_tx.clone(),
            template_watch.clone(),
        );
        tasks.spawn(template::builtins::watch(
            dir,
            ctx.builtin_templates.clone(),
            move || {
                watch.trigger_all();
                wake(&emails, &tx, |e| e.spec.template_ref.is_some());
            },
        ));
    }
    {
        // Kept only as the ledger index (see `ledger::index`): no cache of the entries, and
        // each entry read only as far as the index needs (`ledger::head`).
        let index = ledger.clone();
        let stream = watcher(
            api::<EntryHead>(&client, &config.namespace),
            watcher::Config::default().page_size(LIST_PAGE_SIZE),
        )
        .map_ok(move |event| {
            index.apply(&event);
            event
        });
        tasks.spawn(drive(stream, "EmailDelivery", |_: &EntryHead, _| {}));
    }

    let shutdown = shutdown.shared();
    let filled = async {
        wait_ready(&senders, "EmailSenderConfig").await?;
        tokio::time::timeout(WAIT_READY, ledger.wait_until_ready())
            .await
            .map_err(|_| not_listed("EmailDelivery"))?;
        wait_ready(secrets.meta(), "Secret").await?;
        wait_ready(&templates, "EmailTemplate").await?;
        anyhow::Ok(())
    };
    tokio::select! {
        filled = filled => filled?,
        () = shutdown.clone() => {
            // Stopped before anything was reconciled (e.g. while the API server was away):
            // nothing is under way, so nothing to finish.
            tracing::info!("shutting down before the caches were filled");
            readiness.set(false, "stopped");
            tasks.abort_all();
            return Ok(());
        }
    }
    template_watch.trigger_all();
    tracing::info!(namespace = config.namespace.as_deref().unwrap_or("<all>"), instance = %config.settings.instance_id, "caches ready; starting the controllers");
    readiness.set(true, "leading: caches filled, the controllers run");

    let (sender_stop_tx, sender_stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Every sender once at start; after that, the sender watch above asks for each change.
    for sender in senders.state() {
        let _ = sender_tx.send(ObjectRef::from_obj(&*sender));
    }
    // Triggered only through `sender_rx`: a watch of its own would list EmailSenderConfigs
    // typed, where one object our types reject fails the whole list.
    let sender_controller = Controller::for_stream(futures::stream::pending(), senders.clone())
        .reconcile_on(tokio_stream_from(sender_rx))
        .graceful_shutdown_on(async move {
            let _ = sender_stop_rx.await;
        })
        .run(
            sender_controller::reconcile,
            sender_error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "sender reconcile trigger error");
            }
        });
    tasks.spawn(sender_controller);

    tasks.spawn(crate::ledger::retention::sweep(
        client.clone(),
        email_store.clone(),
        ledger.clone(),
        config.settings.delivery_retention,
    ));

    let templates_controller = template_controller::run(
        ctx.clone(),
        tokio_stream_from(template_rx),
        shutdown.clone(),
    );
    let stopping = {
        let (ctx, readiness) = (ctx.clone(), readiness.clone());
        async move {
            shutdown.await;
            readiness.set(false, "stopping: finishing the sends under way");
            tracing::info!("shutting down: finishing the sends under way, starting no new ones");
            ctx.begin_shutdown();
        }
    };
    let email_ctx = email::EmailContext::new(ctx);
    {
        // A delivery that found no place in line for a send slot is parked, and comes back
        // when a place frees for it (not by polling: thousands of queued Emails would then
        // be reconciled again and again for nothing).
        let tx = trigger_tx.clone();
        let slots = email_ctx.sends.slots.clone();
        email_ctx.metrics.send_queue_from(move || slots.queue());
        email_ctx.sends.slots.set_waker(Arc::new(move |key: &str| {
            if let Some((namespace, name)) = key.split_once('/') {
                let _ = tx.send(ObjectRef::new(name).within(namespace));
            }
        }));
    }
    // Events of settled or deleted Emails reconcile nothing (see `email::needs_reconcile`).
    let email_events = {
        let ctx = email_ctx.clone();
        email_watch.try_filter(move |e| std::future::ready(email::needs_reconcile(e, &ctx.sends)))
    };
    let emails_controller = Controller::for_stream(email_events, email_store.clone())
        .with_config(ControllerConfig::default().concurrency(
            u16::try_from(config.settings.sends.total.saturating_mul(2)).unwrap_or(u16::MAX),
        ))
        .reconcile_on(tokio_stream_from(trigger_rx))
        .graceful_shutdown_on(stopping)
        .run(reconcile, error_policy, email_ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "reconcile trigger error");
            }
        });
    futures::join!(emails_controller, templates_controller);
    readiness.set(false, "stopped");
    let _ = sender_stop_tx.send(());
    tasks.abort_all();
    Ok(())
}

async fn reconcile(
    email: Arc<Email>,
    ctx: Arc<email::EmailContext>,
) -> Result<Action, email::Error> {
    let id = format!(
        "{}/{}",
        email.namespace().unwrap_or_default(),
        email.name_any()
    );
    let started = std::time::Instant::now();
    let result = email::reconcile(email, ctx.clone()).await;
    ctx.metrics.observe_reconcile("Email", started.elapsed());
    if let Err(err) = &result {
        ctx.metrics.reconcile_error("Email", err.metric_label());
        tracing::warn!(email = %id, error = %err, "reconcile failed; will retry");
    }
    result
}

fn sender_error_policy(
    _sender: Arc<EmailSenderConfig>,
    err: &sender_controller::Error,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(error = %err, "sender reconcile failed; will retry");
    Action::requeue(Duration::from_secs(10))
}

fn error_policy(_email: Arc<Email>, _err: &email::Error, _ctx: Arc<email::EmailContext>) -> Action {
    // API errors are usually brief (restarts, throttling): retry soon, spread out.
    let jitter = Duration::from_millis(rand::random::<u64>() % 5000);
    Action::requeue(Duration::from_secs(5) + jitter)
}

/// Whether an Email may read something from namespace `ns` (its own, or its sender's).
fn uses_namespace(email: &Email, ns: &str) -> bool {
    email.namespace().as_deref() == Some(ns)
        || email
            .spec
            .sender_config_ref
            .as_ref()
            .and_then(|r| r.namespace.as_deref())
            == Some(ns)
        || email
            .status
            .as_ref()
            .and_then(|s| s.sender_config.as_deref())
            .is_some_and(|s| s.starts_with(&format!("{ns}/")))
}

fn wake(
    emails: &Store<Email>,
    tx: &mpsc::UnboundedSender<ObjectRef<Email>>,
    filter: impl Fn(&Email) -> bool,
) {
    for email in emails.state() {
        if !email::is_settled(&email) && filter(&email) {
            // A closed channel means the controller is shutting down; nothing to wake then.
            let _ = tx.send(ObjectRef::from_obj(&*email));
        }
    }
}

/// Drives one watch: keeps its cache filled and calls `on_change` for every object that
/// changes after the initial list (`deleted` tells a deletion).
async fn drive<K, S>(stream: S, kind: &'static str, on_change: impl Fn(&K, bool) + Send + 'static)
where
    K: Resource + Clone + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let stream = stream.default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(obj)) => on_change(&obj, false),
            Ok(watcher::Event::Delete(obj)) => on_change(&obj, true),
            Ok(_) => {}
            Err(err) => tracing::warn!(kind, error = %err, "watch failed; retrying with backoff"),
        }
    }
}

/// How long the first list of each watched kind may take before `run` gives up.
const WAIT_READY: Duration = Duration::from_secs(60);

async fn wait_ready<K>(store: &Store<K>, kind: &str) -> anyhow::Result<()>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    tokio::time::timeout(WAIT_READY, crate::store_ready::listed(store))
        .await
        .map_err(|_| not_listed(kind))?
        .with_context(|| format!("the {kind} watch stopped"))?;
    Ok(())
}

fn not_listed(kind: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "listing {kind} objects did not succeed within {}s: are the kmailops CRDs installed (kmailops crds | kubectl apply -f -) and may this account list and watch {kind}?",
        WAIT_READY.as_secs()
    )
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_cache_keeps_the_kmailops_annotations_and_nothing_else_of_the_metadata_extras() {
        let mut email: Email = serde_json::from_value(serde_json::json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": "Email",
            "metadata": {
                "name": "welcome",
                "namespace": "shop",
                "labels": {"app.kubernetes.io/instance": "shop"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"a whole\":\"manifest\"}",
                    "kmailops.io/dry-run": "true",
                    "kmailops.io/retry": "2",
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {"to": ["a@example.org"], "subject": "s", "text": "t"},
        }))
        .unwrap();
        let spec = email.spec.clone();
        trim_email(&mut email);
        assert_eq!(
            email.annotations().keys().collect::<Vec<_>>(),
            [email::DRY_RUN_ANNOTATION, email::RETRY_ANNOTATION]
        );
        assert!(email.metadata.labels.is_none());
        assert!(email.metadata.managed_fields.is_none());
        assert_eq!(email.spec, spec);

        // Nothing of ours left: no empty map kept.
        let mut plain = email.clone();
        plain.metadata.annotations = Some(
            [(
                "argocd.argoproj.io/tracking-id".to_string(),
                "x".to_string(),
            )]
            .into(),
        );
        trim_email(&mut plain);
        assert!(plain.metadata.annotations.is_none());
    }

    #[test]
    fn a_settled_email_is_cached_with_only_what_says_it_is_settled() {
        let mut email: Email = serde_json::from_value(serde_json::json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": "Email",
            "metadata": {"name": "welcome", "namespace": "shop", "generation": 2},
            "spec": {
                "to": ["a@example.org"], "subject": "s", "text": "t",
                "templateRef": {"name": "order-shipped"},
                "variables": {"order": "10045"},
            },
            "status": {
                "phase": "Sent", "observedGeneration": 2, "messageId": "m-1",
                "deliveryHash": "0000000000000000000000000000000000000000000000000000000000000000",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Sent", "message": "sent",
                                "lastTransitionTime": "2026-11-21T10:00:00Z"}],
            },
        }))
        .unwrap();
        let unsettled = {
            let mut e = email.clone();
            e.metadata.generation = Some(3);
            e
        };
        trim_email(&mut email);
        assert!(email::is_settled(&email));
        assert!(email.spec.to.is_empty() && email.spec.variables.is_none());
        assert_eq!(email.status.as_ref().unwrap().message_id, None);
        assert!(email.status.as_ref().unwrap().conditions.is_empty());
        // The template reference stays: it is small, and wake-ups may filter on it.
        assert!(email.spec.template_ref.is_some());

        // A new generation is not settled: cached whole.
        let mut cached = unsettled.clone();
        trim_email(&mut cached);
        assert!(!email::is_settled(&cached));
        assert_eq!(cached.spec, unsettled.spec);
        assert_eq!(cached.status, unsettled.status);
    }
}
