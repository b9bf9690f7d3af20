//! The Email reconciler: gather -> decide -> act.
//!
//! - `gather` reads what the Email depends on (the sender chain, content, attachments, the
//!   message through each sender, which sender can send now, the ledger entries of its name).
//!   It needs no credentials for anything but the "can send now" answer, so a preview works
//!   before a sender is set up.
//! - [`decide`] turns that into one [`decide::Decision`], with no I/O; it holds every rule of
//!   api.md about phases, dry runs, resend policies, the ledger, tokens and time.
//! - `act` carries the decision out: a status (written only by [`status`]), or a delivery
//!   (claim the ledger entry, call the provider, record the outcome, fail over).
//!
//! A problem found while gathering ends in a `Failed` status naming the field and the fix; the
//! watches bring the Email back when the cause changes.

mod act;
mod ask;
pub mod decide;
mod gather;
pub mod outcome;
pub mod state;
pub mod status;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use crate::api::{Email, EmailDelivery, EmailPhase, EmailStatus};
use crate::context::Context;
use crate::template::line::Renderer;

pub use state::SendState;

/// `kmailops.io/dry-run: "true"`: render and resolve everything, send nothing.
pub const DRY_RUN_ANNOTATION: &str = "kmailops.io/dry-run";
/// `kmailops.io/retry: "<new token>"`: one more attempt after Failed or Unknown. On an
/// EmailSenderConfig: one more attempt for every Email whose last attempt went through it and
/// that rests in Unknown or RetriesExhausted.
pub const RETRY_ANNOTATION: &str = "kmailops.io/retry";

/// How long an Email with a problem waits before it is looked at again even without a
/// change to anything watched (a ConfigMap attachment or namespace labels may have changed).
const PROBLEM_RECHECK: Duration = Duration::from_secs(300);

/// When an Email whose cached version predates our own status write is looked at again.
const STALE_RECHECK: Duration = Duration::from_secs(5);

/// What the Email controller works with: the shared context and the state only it owns.
pub struct EmailContext {
    pub shared: Arc<Context>,
    pub sends: SendState,
}

impl EmailContext {
    pub fn new(shared: Arc<Context>) -> Arc<Self> {
        let sends = SendState::new(shared.settings.sends);
        Arc::new(Self { shared, sends })
    }
}

impl Deref for EmailContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}

/// A failure of the reconcile itself (the API server), retried by the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reconciling Email {object}: {source}")]
    Kube {
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("Email {0} has no namespace")]
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

/// Sent (or Expired) for the current generation: nothing to do, no read, no write, and no
/// change to anything else the Email depends on can alter that. The first thing a reconcile
/// checks; the Email cache keeps only what this reads of a settled Email
/// (`runtime::trim_email`). A dry run asked of a Sent Email that has no preview yet is not
/// settled: the preview is still to be written.
pub fn is_settled(email: &Email) -> bool {
    let status = email.status.as_ref();
    status.and_then(|s| s.observed_generation) == email.metadata.generation
        && matches!(
            status.and_then(|s| s.phase),
            Some(EmailPhase::Sent) | Some(EmailPhase::Expired)
        )
        && !(is_dry_run(email) && status.is_some_and(|s| s.preview.is_none()))
}

/// Being deleted, or settled: a reconcile leaves it alone at once.
pub fn is_at_rest(email: &Email) -> bool {
    email.metadata.deletion_timestamp.is_some() || is_settled(email)
}

/// Whether a watch event of `email` needs a reconcile. One of an Email being deleted or
/// settled ([`is_settled`]) needs none: its reconcile would only drop the note of our own
/// status write (the cache now shows a newer version) and give back a send-slot place kept
/// for it, so both are done here and the controller is not asked. That spares the reconcile
/// of the echo of the write that settled an Email (one in three of an Email sent at its first
/// attempt), and at start one per settled Email listed. Reconciles asked for otherwise (a
/// woken parked Email, a requeue, a changed sender) are not filtered.
pub fn needs_reconcile(email: &Email, sends: &SendState) -> bool {
    if !is_at_rest(email) {
        return true;
    }
    let meta = &email.metadata;
    if let (Some(uid), Some(version)) = (&meta.uid, &meta.resource_version) {
        // Dropped unless this is the very version a write of ours was computed from.
        sends.is_stale(uid, version);
    }
    if let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) {
        sends
            .slots
            .forget(&format!("{namespace}/{name}"), tokio::time::Instant::now());
    }
    false
}

/// Since when the status has said Retrying for want of a healthy sender: the Ready
/// condition's transition into that reason.
fn waiting_for_sender_since(status: &EmailStatus) -> Option<jiff::Timestamp> {
    if status.phase != Some(EmailPhase::Retrying) {
        return None;
    }
    crate::conditions::find(&status.conditions, crate::conditions::types::READY)
        .filter(|c| c.reason == crate::problem::reasons::SENDER_UNHEALTHY)
        .map(|c| c.last_transition_time.0)
}

/// Whether the Email asks for a dry run.
pub fn is_dry_run(email: &Email) -> bool {
    email
        .annotations()
        .get(DRY_RUN_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Reconciles one Email.
pub async fn reconcile(email: Arc<Email>, ctx: Arc<EmailContext>) -> Result<Action, Error> {
    let name = email.name_any();
    let Some(namespace) = email.namespace() else {
        return Err(Error::NotNamespaced(name));
    };
    // A place kept for this Email since before now and not taken by this reconcile goes on
    // to the next waiting Email when it ends.
    let started = tokio::time::Instant::now();
    let run = Reconcile {
        email: &email,
        ctx: &ctx,
        id: format!("{namespace}/{name}"),
        deliveries: Api::namespaced(ctx.client.clone(), &namespace),
        namespace,
        name,
        status: email.status.clone().unwrap_or_default(),
    };
    let result = run.run().await;
    ctx.sends.slots.forget(&run.id, started);
    result.map_err(|source| Error::Kube {
        object: run.id.clone(),
        source,
    })
}

struct Reconcile<'a> {
    email: &'a Email,
    ctx: &'a EmailContext,
    namespace: String,
    name: String,
    /// `namespace/name`, for logs.
    id: String,
    deliveries: Api<EmailDelivery>,
    /// The status as read; the starting point of every status this reconcile writes.
    status: EmailStatus,
}

impl Reconcile<'_> {
    async fn run(&self) -> Result<Action, kube::Error> {
        // Asked first, also of an Email about to be left alone: the answer drops the note of
        // our status write once the cache shows a newer version, and an Email that our write
        // settled is reconciled next (and last) exactly when that version arrives.
        let stale = self.is_stale();
        if is_at_rest(self.email) {
            return Ok(Action::await_change());
        }
        if stale {
            // Our own status write is on its way through the watch, which reconciles again;
            // the requeue only covers a watch that never delivers it.
            return Ok(Action::requeue(STALE_RECHECK));
        }
        let facts = self.facts();
        let resolved = self.sender_chain().await?;
        if decide::waits_for_a_place_first(&facts, jiff::Timestamp::now())
            && let Some(sender) = resolved.first_key()
            && self
                .ctx
                .sends
                .slots
                .park_unless_room(&self.namespace, sender, &self.id)
        {
            tracing::debug!(email = %self.id, sender, "no place in line for this sender or namespace; parked before rendering");
            return Ok(Action::requeue(act::parked_fallback()));
        }
        // Only a template is rendered; that takes one of the namespace's render places.
        let ticket = match self.email.spec.template_ref {
            None => None,
            Some(_) => {
                let who = Renderer::Email(self.name.clone());
                match self.ctx.render_line.enter(&self.namespace, who) {
                    Ok(ticket) => Some(ticket),
                    Err(parked) => {
                        tracing::debug!(email = %self.id, "the namespace's render places are taken; parked");
                        return Ok(Action::requeue(parked.come_back_after()));
                    }
                }
            }
        };
        let gathered = self.gather(resolved, ticket).await?;
        let ledger = self.ledger_entries(&gathered.readiness).await?;
        let decision = decide::decide(&facts, &gathered.readiness, &ledger, jiff::Timestamp::now());
        tracing::debug!(email = %self.id, ?decision, "decided");
        self.act(decision, &gathered).await
    }

    /// This version was already acted on by a status write of this process (see
    /// [`SendState::is_stale`]).
    fn is_stale(&self) -> bool {
        let meta = &self.email.metadata;
        match (&meta.uid, &meta.resource_version) {
            (Some(uid), Some(version)) => self.ctx.sends.is_stale(uid, version),
            _ => false,
        }
    }

    /// The retry annotation of the sender the last attempt went through.
    fn sender_retry(&self) -> Option<String> {
        let key = self.status.sender_config.as_deref()?;
        let (ns, name) = key.split_once('/')?;
        let sender = crate::lookup::Senders::sender(&self.ctx.stores.senders, ns, name)?;
        let token = sender.annotations().get(RETRY_ANNOTATION)?;
        (!token.is_empty()).then(|| format!("{key}={token}"))
    }

    fn facts(&self) -> decide::Facts<'_> {
        let spec = &self.email.spec;
        decide::Facts {
            dry_run: is_dry_run(self.email),
            status: &self.status,
            requested_token: self
                .email
                .annotations()
                .get(RETRY_ANNOTATION)
                .map(String::as_str)
                .filter(|t| !t.is_empty()),
            resend_policy: spec.resend_policy,
            not_after: spec.not_after.as_ref().map(|t| t.0),
            send_at: spec.send_at.as_ref().map(|t| t.0),
            waiting_for_sender_since: waiting_for_sender_since(&self.status),
            sender_retry: self.sender_retry(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::send_slots::SlotLimits;

    fn email(status: serde_json::Value, annotations: serde_json::Value) -> Email {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": "Email",
            "metadata": {"name": "welcome", "namespace": "shop", "uid": "u-1",
                         "resourceVersion": "6", "generation": 2, "annotations": annotations},
            "spec": {"to": ["a@example.org"], "subject": "s", "text": "t"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn only_events_of_emails_with_something_left_to_do_are_reconciled() {
        use serde_json::json;
        let at =
            |phase: &str, observed: i64| json!({"phase": phase, "observedGeneration": observed});
        let dry = json!({DRY_RUN_ANNOTATION: "true"});
        let with_preview =
            json!({"phase": "Sent", "observedGeneration": 2, "preview": {"subject": "s"}});
        // (case, status, annotations, being deleted, reconciled)
        #[rustfmt::skip]
        let cases = [
            ("Sent, this generation",                      at("Sent", 2),           json!({}),    false, false),
            ("Expired, this generation",                   at("Expired", 2),        json!({}),    false, false),
            ("Sent, an older generation",                  at("Sent", 1),           json!({}),    false, true),
            ("no status yet",                              serde_json::Value::Null, json!({}),    false, true),
            ("Pending",                                    at("Pending", 2),        json!({}),    false, true),
            ("Failed",                                     at("Failed", 2),         json!({}),    false, true),
            ("Retrying",                                   at("Retrying", 2),       json!({}),    false, true),
            ("a dry run of a Sent Email, no preview yet",  at("Sent", 2),           dry.clone(),  false, true),
            ("a dry run of a Sent Email with its preview", with_preview,            dry,          false, false),
            ("Pending, being deleted",                     at("Pending", 2),        json!({}),    true,  false),
        ];
        for (case, status, annotations, deleting, expected) in cases {
            let mut email = email(status, annotations);
            if deleting {
                email.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        jiff::Timestamp::UNIX_EPOCH,
                    ));
            }
            let sends = SendState::new(SlotLimits::from_total(2));
            assert_eq!(needs_reconcile(&email, &sends), expected, "{case}");
        }
    }

    #[test]
    fn a_settled_event_drops_the_note_of_our_write_as_its_reconcile_did() {
        let sends = SendState::new(SlotLimits::from_total(2));
        let sent = email(
            serde_json::json!({"phase": "Sent", "observedGeneration": 2}),
            serde_json::json!({}),
        );
        // Our write went over version 5; the event shows version 6, which has it.
        sends.note_status_write("u-1", "5");
        assert!(!needs_reconcile(&sent, &sends));
        assert!(!sends.is_stale("u-1", "5"), "the note is gone");

        // An event of the very version a write was computed from keeps its note: the cache
        // is behind that write.
        sends.note_status_write("u-1", "6");
        assert!(!needs_reconcile(&sent, &sends));
        assert!(sends.is_stale("u-1", "6"));

        // An Email with work left is reconciled, and the reconcile looks at the note itself.
        sends.note_status_write("u-1", "6");
        let pending = email(
            serde_json::json!({"phase": "Pending", "observedGeneration": 2}),
            serde_json::json!({}),
        );
        assert!(needs_reconcile(&pending, &sends));
        assert!(sends.is_stale("u-1", "6"), "left to the reconcile");
    }

    #[tokio::test]
    async fn a_place_kept_for_an_email_that_turns_out_settled_goes_on_at_once() {
        let sends = SendState::new(SlotLimits {
            total: 1,
            per_sender: 1,
            per_namespace: 1,
        });
        let woken = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = woken.clone();
        sends.slots.set_waker(Arc::new(move |key: &str| {
            log.lock().unwrap().push(key.into())
        }));
        let busy = sends
            .slots
            .acquire("shop", "shop/x", Duration::ZERO)
            .await
            .unwrap();
        let line = sends.slots.reserve("shop", "shop/x").unwrap();
        for key in ["shop/welcome", "shop/next"] {
            assert!(sends.slots.reserve_or_park("shop", "shop/x", key).is_none());
        }
        drop(busy);
        let _sending = line.wait(Duration::ZERO).await.unwrap();
        assert_eq!(*woken.lock().unwrap(), ["shop/welcome"]);
        // Meanwhile shop/welcome was sent by someone else: its Sent status arrives first.
        let sent = email(
            serde_json::json!({"phase": "Sent", "observedGeneration": 2}),
            serde_json::json!({}),
        );
        assert!(!needs_reconcile(&sent, &sends));
        assert_eq!(
            *woken.lock().unwrap(),
            ["shop/welcome", "shop/next"],
            "the place went on without waiting for the hold to run out"
        );
        assert!(
            sends
                .slots
                .reserve_or_park("shop", "shop/x", "shop/next")
                .is_some()
        );
    }
}
