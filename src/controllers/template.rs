//! The EmailTemplate controller: renders each template with its `previewVariables` and
//! reports the outcome in status (`Ready`, `preview`, `error`), so authors see the result
//! of a change without sending anything.
//!
//! It shares the EmailTemplate watch (and cache) with the Email controller: the watch in
//! `crate::runtime` hands every change to [`TemplateWatch`], which triggers the
//! reconciles here. A template is rendered again when it changes, when another template of
//! its namespace changes (it may include that one), and when the built-ins are reloaded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::api::FIELD_MANAGER;
use crate::api::{Email, EmailTemplate, EmailTemplateSpec, EmailTemplateStatus, Preview};
use crate::conditions::{self, Desired, Status, types};
use crate::context::Context;
use crate::template::error::{RenderError, reasons as render_reasons};
use crate::template::library::Library;
use crate::template::line::Renderer;
use crate::template::names::Part;
use crate::template::render::render;

/// Reason of `Ready=True`.
pub const RENDERED: &str = "Rendered";

/// A failure of the reconcile itself (the API server), retried by the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reconciling EmailTemplate {object}: {source}")]
    Kube {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("EmailTemplate {0} has no namespace")]
    NotNamespaced(String),
}

impl Error {
    /// Label for the `reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubeApi",
            Error::NotNamespaced(_) => "NotNamespaced",
        }
    }
}

/// Runs the EmailTemplate controller until `shutdown` resolves. `triggers` name the
/// templates to render again (see [`TemplateWatch`]); objects are read from
/// `ctx.stores.templates`, which the shared watch fills.
pub async fn run(
    ctx: Arc<Context>,
    triggers: impl Stream<Item = ObjectRef<EmailTemplate>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // The watch belongs to crate::runtime (one watch per kind); every trigger arrives
    // through `reconcile_on`, so the controller's own input stream stays empty.
    let no_watch = futures::stream::pending::<Result<EmailTemplate, watcher::Error>>();
    Controller::for_stream(no_watch, ctx.stores.templates.clone())
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "EmailTemplate reconcile trigger error");
            }
        })
        .await;
}

async fn reconcile(template: Arc<EmailTemplate>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&template, &ctx).await;
    ctx.metrics
        .observe_reconcile("EmailTemplate", started.elapsed());
    if let Err(err) = &result {
        ctx.metrics
            .reconcile_error("EmailTemplate", err.metric_label());
    }
    result
}

async fn reconcile_inner(template: &EmailTemplate, ctx: &Context) -> Result<Action, Error> {
    let name = template.name_any();
    let Some(namespace) = template.namespace() else {
        return Err(Error::NotNamespaced(name));
    };
    let library = Library::new(
        namespace.clone(),
        Arc::new(ctx.stores.templates.clone()),
        ctx.builtin_templates.current(),
    );
    let spec = template.spec.clone();
    let what = format!("EmailTemplate {namespace}/{name}");
    let template_name = name.clone();
    let ticket = match ctx
        .render_line
        .enter(&namespace, Renderer::Template(name.clone()))
    {
        Ok(ticket) => ticket,
        // Woken when a render of the namespace ends.
        Err(parked) => return Ok(Action::requeue(parked.come_back_after())),
    };
    let result =
        crate::template::sandbox::run(what, move || preview(&library, &template_name, &spec))
            .await
            .and_then(|r| r);
    drop(ticket);
    let desired = desired_status(template, &result, &Time(jiff::Timestamp::now()));
    let object = format!("{namespace}/{name}");
    if template.status.as_ref() != Some(&desired) {
        write_status(ctx, template, &namespace, &desired)
            .await
            .map_err(|source| Error::Kube {
                object: object.clone(),
                source,
            })?;
        if let Err(err) = &result
            && ready_reason(template.status.as_ref()) != Some(err.reason)
        {
            tracing::info!(template = %object, error = %err, "EmailTemplate does not render");
            event(ctx, template, err).await;
        }
    }
    Ok(Action::await_change())
}

fn error_policy(_t: Arc<EmailTemplate>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "EmailTemplate reconcile failed; will retry");
    // API errors are usually brief (restarts, throttling): retry soon, spread out.
    let jitter = Duration::from_millis(rand::random::<u64>() % 5000);
    Action::requeue(Duration::from_secs(5) + jitter)
}

/// Renders every part with `previewVariables` (plus declared defaults), as status shows it:
/// bodies cut to the same bound as an Email's preview.
pub fn preview(
    library: &Library,
    name: &str,
    spec: &EmailTemplateSpec,
) -> Result<Preview, RenderError> {
    let content = render(
        library,
        name,
        spec,
        spec.preview_variables.as_ref(),
        &Part::ALL,
    )
    .map_err(|e| {
        if e.reason == render_reasons::MISSING_VARIABLES {
            e.with_hint("add sample values to spec.previewVariables")
        } else {
            e
        }
    })?;
    let cut = |s: String| conditions::truncate(&s, crate::message::preview::MAX_BODY_BYTES);
    Ok(Preview {
        subject: Some(content.subject).filter(|s| !s.is_empty()),
        text: content.text.map(cut),
        html: content.html.map(cut),
    })
}

/// The status for a render outcome. Conditions keep their transition time unless their
/// status flips, so an unchanged outcome yields an equal status and no write.
pub fn desired_status(
    template: &EmailTemplate,
    result: &Result<Preview, RenderError>,
    now: &Time,
) -> EmailTemplateStatus {
    let previous = template
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = template.metadata.generation;
    let (preview, error, desired) = match result {
        Ok(p) => {
            let message = "renders with previewVariables; see status.preview";
            (
                Some(p.clone()),
                None,
                vec![
                    Desired::new(types::READY, Status::True, RENDERED, message),
                    Desired::new(types::RECONCILING, Status::False, RENDERED, message),
                    Desired::new(types::STALLED, Status::False, RENDERED, message),
                ],
            )
        }
        Err(e) => (
            None,
            Some(e.detail.clone()),
            vec![
                Desired::new(types::READY, Status::False, e.reason, &e.message),
                Desired::new(types::RECONCILING, Status::False, e.reason, &e.message),
                // It will not render without a change to the template (or what it includes).
                Desired::new(types::STALLED, Status::True, e.reason, &e.message),
            ],
        ),
    };
    EmailTemplateStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous, desired, generation, now),
        preview,
        error,
    }
}

fn ready_reason(status: Option<&EmailTemplateStatus>) -> Option<&str> {
    status
        .and_then(|s| conditions::find(&s.conditions, types::READY))
        .map(|c| c.reason.as_str())
}

async fn write_status(
    ctx: &Context,
    template: &EmailTemplate,
    namespace: &str,
    desired: &EmailTemplateStatus,
) -> Result<(), kube::Error> {
    let api: Api<EmailTemplate> = Api::namespaced(ctx.client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "EmailTemplate",
        "status": desired,
    });
    api.patch_status(
        &template.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// A Warning Event when a template starts failing; best effort, the status tells it too.
async fn event(ctx: &Context, template: &EmailTemplate, err: &RenderError) {
    let ev = Event {
        type_: EventType::Warning,
        reason: err.reason.to_string(),
        note: Some(conditions::truncate(&err.message, 1024)),
        action: "Render".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.events.publish(&ev, &template.object_ref(&())).await {
        tracing::warn!(template = %template.name_any(), error = %e, "could not publish Event {}", err.reason);
    }
}

/// Whether `email` renders a template from namespace `ns`.
pub fn email_uses_templates_of(email: &Email, ns: &str) -> bool {
    email.spec.template_ref.as_ref().is_some_and(|r| {
        r.namespace
            .as_deref()
            .or(email.metadata.namespace.as_deref())
            == Some(ns)
    })
}

/// Turns EmailTemplate watch events into reconciles: the changed template itself, and on a
/// spec change every other template of its namespace (which may include it). Status-only
/// updates (this controller's own writes) do not fan out, so one edit costs one render per
/// template of the namespace, not a cascade.
pub struct TemplateWatch {
    store: Store<EmailTemplate>,
    triggers: UnboundedSender<ObjectRef<EmailTemplate>>,
    /// Last seen generation per template, to tell spec changes from status updates.
    generations: Mutex<HashMap<ObjectRef<EmailTemplate>, Option<i64>>>,
}

impl TemplateWatch {
    pub fn new(
        store: Store<EmailTemplate>,
        triggers: UnboundedSender<ObjectRef<EmailTemplate>>,
    ) -> Self {
        Self {
            store,
            triggers,
            generations: Mutex::default(),
        }
    }

    /// Handles one watch event. Returns the namespace whose templates changed (so the
    /// caller can wake the Emails that render them), or `None` for a status-only update.
    ///
    /// The template itself is rendered again when its spec changed or its status does not
    /// describe its spec (none yet, or somebody else's write); not for the echo of this
    /// controller's own status write, nor for a relist. A template that renders for its
    /// whole budget would otherwise be rendered a second time by the echo of its failure.
    pub fn on_event(&self, template: &EmailTemplate, deleted: bool) -> Option<String> {
        let key = ObjectRef::from_obj(template);
        let ns = template.namespace().unwrap_or_default();
        let changed = {
            // The map holds plain values; a panic elsewhere can not leave it half-written.
            let mut seen = self.generations.lock().unwrap_or_else(|p| p.into_inner());
            if deleted {
                seen.remove(&key);
                true
            } else {
                seen.insert(key.clone(), template.metadata.generation)
                    != Some(template.metadata.generation)
            }
        };
        let described = template
            .status
            .as_ref()
            .is_some_and(|s| s.observed_generation == template.metadata.generation);
        if !deleted && (changed || !described) {
            self.trigger(key.clone());
        }
        if !changed {
            return None;
        }
        for other in self.store.state() {
            let other_ref = ObjectRef::from_obj(&*other);
            if other.namespace().as_deref() == Some(&ns) && other_ref != key {
                self.trigger(other_ref);
            }
        }
        Some(ns)
    }

    /// Renders every template again (at start, and after the built-ins were reloaded).
    pub fn trigger_all(&self) {
        let all = self.store.state();
        {
            let mut seen = self.generations.lock().unwrap_or_else(|p| p.into_inner());
            for t in &all {
                seen.insert(ObjectRef::from_obj(&**t), t.metadata.generation);
            }
        }
        for t in all {
            self.trigger(ObjectRef::from_obj(&*t));
        }
    }

    fn trigger(&self, key: ObjectRef<EmailTemplate>) {
        // A closed channel means the controller is shutting down; nothing to render then.
        let _ = self.triggers.send(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event as WatchEvent;

    fn template(ns: &str, name: &str, generation: i64, observed: Option<i64>) -> EmailTemplate {
        let status = observed.map(|g| serde_json::json!({"observedGeneration": g}));
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": "EmailTemplate",
            "metadata": {"name": name, "namespace": ns, "generation": generation},
            "spec": {"subject": "s", "text": "t"},
            "status": status,
        }))
        .unwrap()
    }

    /// What one watch event triggers, after the watch has seen `seen` (in order).
    fn triggered_by(
        seen: &[EmailTemplate],
        event: &EmailTemplate,
        deleted: bool,
    ) -> (Vec<String>, Option<String>) {
        let (store, mut writer) = reflector::store::<EmailTemplate>();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = TemplateWatch::new(store, tx);
        for t in seen {
            writer.apply_watcher_event(&WatchEvent::Apply(t.clone()));
            watch.on_event(t, false);
        }
        while rx.try_recv().is_ok() {}
        writer.apply_watcher_event(&WatchEvent::Apply(event.clone()));
        let woken = watch.on_event(event, deleted);
        let mut rendered = Vec::new();
        while let Ok(r) = rx.try_recv() {
            rendered.push(format!("{}/{}", r.namespace.unwrap_or_default(), r.name));
        }
        rendered.sort();
        (rendered, woken)
    }

    #[test]
    fn a_template_is_rendered_again_for_a_change_of_what_it_renders_not_for_its_own_status() {
        let others = [
            template("a", "base", 1, Some(1)),
            template("b", "far", 1, Some(1)),
        ];
        let seen = |t: EmailTemplate| [others.as_slice(), &[t]].concat();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = Some("a".to_string());
        #[rustfmt::skip]
        let cases = [
            ("created",                           others.to_vec(),                             template("a", "mail", 1, None),    false, s(&["a/base", "a/mail"]), a.clone()),
            ("the echo of our status write",      seen(template("a", "mail", 1, None)),        template("a", "mail", 1, Some(1)), false, s(&[]),                 None),
            ("a relist, nothing changed",         seen(template("a", "mail", 1, Some(1))),     template("a", "mail", 1, Some(1)), false, s(&[]),                 None),
            ("its spec changed",                  seen(template("a", "mail", 1, Some(1))),     template("a", "mail", 2, Some(1)), false, s(&["a/base", "a/mail"]), a.clone()),
            ("its status was wiped",              seen(template("a", "mail", 1, Some(1))),     template("a", "mail", 1, None),    false, s(&["a/mail"]),         None),
            ("its status describes an older spec", seen(template("a", "mail", 2, Some(1))),    template("a", "mail", 2, Some(1)), false, s(&["a/mail"]),         None),
            ("deleted",                           seen(template("a", "mail", 1, Some(1))),     template("a", "mail", 1, Some(1)), true,  s(&["a/base"]),         a.clone()),
        ];
        for (case, seen, event, deleted, rendered, woken) in cases {
            assert_eq!(
                triggered_by(&seen, &event, deleted),
                (rendered, woken),
                "{case}"
            );
        }
    }
}
