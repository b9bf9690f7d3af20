//! The one writer of an Email's status and its Events.
//!
//! Everything a reconcile wants to say ends here as an [`Update`]: the status it computed
//! (see `outcome`), the phase with its reason and message, and the Event to publish. The status
//! is written only when it differs from what the object says (a reconcile that changes nothing
//! costs no API write), and only onto the object it was computed from: the write carries the
//! Email's uid as a precondition, so an outcome of a deleted Email never lands on a new one of
//! the same name (Argo CD Replace, a Flux prune and re-add during a send).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};

use crate::api::{Email, EmailPhase, EmailStatus, FIELD_MANAGER};
use crate::conditions::{self, Desired, Status, types};

use super::EmailContext;

/// Reasons of the Email's conditions beyond the phase names.
pub mod reasons {
    pub const RECOVERED_FROM_LEDGER: &str = "RecoveredFromLedger";
    /// The provider, asked by the delivery key, had the message: Sent, not sent again.
    pub const RECOVERED_FROM_PROVIDER: &str = "RecoveredFromProvider";
    /// The provider may have the message but its record is not complete yet (Mailgun's
    /// events): the Email waits before it asks again and resends only if it is not there.
    pub const AWAITING_PROVIDER_RECORD: &str = "AwaitingProviderRecord";
    /// The provider could not be asked whether it has the message: nothing is sent until it
    /// answers.
    pub const LOOKUP_FAILED: &str = "LookupFailed";
    pub const CHANGED_AFTER_SEND: &str = "ChangedAfterSend";
    pub const OUTCOME_UNKNOWN: &str = "OutcomeUnknown";
    pub const PROVIDER_REJECTED: &str = "ProviderRejected";
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    pub const TRANSIENT_ERROR: &str = "TransientError";
    pub const RATE_LIMITED: &str = "RateLimited";
}

/// Condition beside a dry run's preview: whether the sender could send now, or why not.
pub const SENDER_READY: &str = "SenderReady";

/// An Event to publish on the Email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub text: String,
}

impl Note {
    pub fn normal(reason: &str, text: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason: reason.to_string(),
            text: text.into(),
        }
    }

    pub fn warning(reason: &str, text: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason: reason.to_string(),
            text: text.into(),
        }
    }
}

/// A status to write and the Event that goes with it.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// Complete: phase, conditions and observedGeneration included.
    pub status: EmailStatus,
    pub event: Option<Note>,
}

/// The conditions for a phase: kstatus reads `Ready` for resting states, `Reconciling` while
/// work is under way, and `Stalled` when it will not progress without a change.
pub fn conditions_for(phase: EmailPhase, reason: &str, message: &str) -> Vec<Desired> {
    let (ready, reconciling, stalled) = match phase {
        EmailPhase::Sent | EmailPhase::Previewed | EmailPhase::Scheduled | EmailPhase::Expired => {
            (Status::True, Status::False, Status::False)
        }
        EmailPhase::Pending | EmailPhase::Sending | EmailPhase::Retrying => {
            (Status::False, Status::True, Status::False)
        }
        EmailPhase::Failed | EmailPhase::Unknown => (Status::False, Status::False, Status::True),
    };
    vec![
        Desired::new(types::READY, ready, reason, message),
        Desired::new(types::RECONCILING, reconciling, reason, message),
        Desired::new(types::STALLED, stalled, reason, message),
    ]
}

/// Sets phase, conditions and observedGeneration on `status` (other fields are the caller's).
/// `extra` conditions (e.g. `SenderReady` beside a preview) are set too; a type of `extra`'s
/// kind that is not given again is removed.
pub fn settle(
    email: &Email,
    status: &mut EmailStatus,
    phase: EmailPhase,
    reason: &str,
    message: &str,
    extra: Vec<Desired>,
) {
    let mut previous = email
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if !extra.iter().any(|d| d.type_ == SENDER_READY) {
        previous.retain(|c| c.type_ != SENDER_READY);
    }
    let generation = email.metadata.generation;
    status.phase = Some(phase);
    status.observed_generation = generation;
    let mut desired = conditions_for(phase, reason, message);
    desired.extend(extra);
    status.conditions = conditions::merge(
        &previous,
        desired,
        generation,
        &Time(jiff::Timestamp::now()),
    );
}

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The status was already so: nothing written.
    Unchanged,
    Written,
    /// The Email was deleted (and maybe created again under its name) since it was read:
    /// nothing written, nothing published.
    Gone,
}

/// Writes `update.status` when it differs from the Email's, and publishes its Event. A write
/// that brings the Email to rest in Failed or Unknown is counted in
/// `kmailops_emails_failed_total` here, and only here: every failure, whatever found it
/// (a missing Secret, a template error, a provider's answer, a lapsed claim after a crash),
/// ends in this write.
pub async fn apply(
    ctx: &EmailContext,
    email: &Email,
    update: Update,
) -> Result<Applied, kube::Error> {
    let applied = write(ctx, email, &update.status).await?;
    if applied == Applied::Written
        && let Some(reason) = failure_to_count(email.status.as_ref(), &update.status)
    {
        let provider = update.status.provider.map(|p| p.as_str());
        ctx.metrics
            .email_failed(update.status.sender_config.as_deref(), provider, reason);
    }
    if applied != Applied::Gone
        && let Some(note) = update.event
    {
        event(ctx, email, note).await;
    }
    Ok(applied)
}

/// The reason to count when `after` replaces `before`: `after` rests in Failed or Unknown and
/// is a new resting state, not a rewrite of the one the Email showed (an observed generation,
/// a preview beside it, a restart of the operator). New means another phase or reason, or
/// another delivery: new content (delivery hash) or a new `kmailops.io/retry` token that
/// ended the same way as the last one.
pub fn failure_to_count<'a>(
    before: Option<&EmailStatus>,
    after: &'a EmailStatus,
) -> Option<&'a str> {
    if !matches!(after.phase, Some(EmailPhase::Failed | EmailPhase::Unknown)) {
        return None;
    }
    let reason = ready_reason(after).unwrap_or_else(|| {
        after
            .phase
            .map(EmailPhase::as_str)
            .unwrap_or(reasons::OUTCOME_UNKNOWN)
    });
    let Some(before) = before else {
        return Some(reason);
    };
    let same = before.phase == after.phase
        && ready_reason(before) == Some(reason)
        && before.delivery_hash == after.delivery_hash
        && before.last_handled_retry == after.last_handled_retry;
    (!same).then_some(reason)
}

fn ready_reason(status: &EmailStatus) -> Option<&str> {
    conditions::find(&status.conditions, types::READY).map(|c| c.reason.as_str())
}

async fn write(
    ctx: &EmailContext,
    email: &Email,
    desired: &EmailStatus,
) -> Result<Applied, kube::Error> {
    if email.status.as_ref() == Some(desired) {
        return Ok(Applied::Unchanged);
    }
    let ns = email.namespace().unwrap_or_default();
    let api: Api<Email> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(patch) = status_patch(email.metadata.uid.as_deref(), desired) else {
        return Ok(Applied::Unchanged);
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let written = match api
        .patch_status(&email.name_any(), &params, &Patch::<()>::Json(patch))
        .await
    {
        Ok(w) => w,
        Err(kube::Error::Api(s)) if s.code == 404 || (s.code == 422 && is_test_failure(&s)) => {
            tracing::info!(email = %format!("{ns}/{}", email.name_any()), "the Email was deleted or replaced while it was reconciled; its status is left to the new object");
            return Ok(Applied::Gone);
        }
        Err(e) => return Err(e),
    };
    // Only a write that made a new version leaves the cache behind: one the server found to
    // change nothing keeps the version, and no watch event would ever bring a newer one.
    let from = &email.metadata.resource_version;
    if let (Some(uid), Some(from)) = (&email.metadata.uid, from)
        && written.metadata.resource_version.as_ref() != Some(from)
    {
        ctx.sends.note_status_write(uid, from);
    }
    Ok(Applied::Written)
}

/// The status write: a JSON patch whose first operation tests the uid. The API server applies
/// it to the object as stored, so it fails (422) when the name now belongs to another object.
/// `None` only if the status does not serialize, which our own types always do.
pub fn status_patch(uid: Option<&str>, desired: &EmailStatus) -> Option<json_patch::Patch> {
    let mut ops = Vec::new();
    if let Some(uid) = uid {
        ops.push(serde_json::json!({"op": "test", "path": "/metadata/uid", "value": uid}));
    }
    ops.push(serde_json::json!({"op": "add", "path": "/status", "value": desired}));
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

fn is_test_failure(s: &kube::core::Status) -> bool {
    // The API server words a failed `test` operation "the server rejected our request due to
    // an error in our request" with the test's message in the details; any 422 on a patch we
    // built ourselves that is not about the status schema is the uid test.
    !s.message.contains("status.")
}

/// Publishes an Event on the Email. Events are best effort: a failure is logged, never fatal,
/// because the status already tells the story.
pub async fn event(ctx: &EmailContext, email: &Email, note: Note) {
    let ev = Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.clone(),
        note: Some(conditions::truncate(&note.text, 1024)),
        action: "Deliver".to_string(),
        secondary: None,
    };
    if let Err(err) = ctx.events.publish(&ev, &email.object_ref(&())).await {
        tracing::warn!(
            email = %format!("{}/{}", email.namespace().unwrap_or_default(), email.name_any()),
            error = %err,
            "could not publish Event {}", note.reason
        );
    }
}

/// The current reason of the Ready condition, to publish an Event only on a change.
pub fn current_reason(email: &Email) -> Option<String> {
    email
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, types::READY))
        .map(|c| c.reason.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: EmailPhase, reason: &str) -> EmailStatus {
        let email: Email = serde_json::from_value(serde_json::json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": "Email",
            "metadata": {"name": "e", "namespace": "shop", "generation": 1},
            "spec": {"to": ["a@example.org"], "text": "t"},
        }))
        .unwrap();
        let mut status = EmailStatus::default();
        settle(&email, &mut status, phase, reason, "m", Vec::new());
        status
    }

    #[test]
    fn a_failure_is_counted_when_the_email_comes_to_rest_in_it_and_not_on_a_rewrite() {
        let failed = status(EmailPhase::Failed, "SecretNotFound");
        assert_eq!(failure_to_count(None, &failed), Some("SecretNotFound"));
        let pending = status(EmailPhase::Pending, "Pending");
        assert_eq!(
            failure_to_count(Some(&pending), &failed),
            Some("SecretNotFound")
        );
        // The same failure written again (a new generation observed, a restart).
        let mut again = failed.clone();
        again.observed_generation = Some(7);
        assert_eq!(failure_to_count(Some(&failed), &again), None);
        // Another reason is another failure.
        let other = status(EmailPhase::Failed, "TemplateError");
        assert_eq!(
            failure_to_count(Some(&failed), &other),
            Some("TemplateError")
        );
        // Unknown after Failed, and a retry token that ended the same way.
        let unknown = status(EmailPhase::Unknown, reasons::OUTCOME_UNKNOWN);
        assert_eq!(
            failure_to_count(Some(&failed), &unknown),
            Some(reasons::OUTCOME_UNKNOWN)
        );
        let mut retried = unknown.clone();
        retried.last_handled_retry = Some("2".into());
        assert_eq!(
            failure_to_count(Some(&unknown), &retried),
            Some(reasons::OUTCOME_UNKNOWN)
        );
        // Resting states that are not failures are never counted.
        let sent = status(EmailPhase::Sent, "Sent");
        assert_eq!(failure_to_count(Some(&failed), &sent), None);
        let retrying = status(EmailPhase::Retrying, reasons::TRANSIENT_ERROR);
        assert_eq!(failure_to_count(None, &retrying), None);
    }
}
