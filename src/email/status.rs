//! The last step of the pipeline: the Email's status and Events.
//!
//! Status is written by server-side apply from a typed value, and only when it differs from
//! what the object already says, so a reconcile that changes nothing costs no API write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};

use crate::api::{Email, EmailPhase, EmailStatus};
use crate::conditions::{self, Desired, Status, types};
use crate::context::{Context, FIELD_MANAGER};

/// Reasons of the Email's conditions beyond the phase names.
pub mod reasons {
    pub const RECOVERED_FROM_LEDGER: &str = "RecoveredFromLedger";
    pub const CHANGED_AFTER_SEND: &str = "ChangedAfterSend";
    pub const OUTCOME_UNKNOWN: &str = "OutcomeUnknown";
    pub const WAITING_FOR_CLAIM: &str = "InFlightElsewhere";
    pub const PROVIDER_REJECTED: &str = "ProviderRejected";
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    pub const TRANSIENT_ERROR: &str = "TransientError";
    pub const RATE_LIMITED: &str = "RateLimited";
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
pub fn settle(
    email: &Email,
    status: &mut EmailStatus,
    phase: EmailPhase,
    reason: &str,
    message: &str,
) {
    let previous = email
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = email.metadata.generation;
    status.phase = Some(phase);
    status.observed_generation = generation;
    status.conditions = conditions::merge(
        &previous,
        conditions_for(phase, reason, message),
        generation,
        &Time(jiff::Timestamp::now()),
    );
}

/// Writes `desired` when it differs from the Email's current status. Returns whether it wrote.
pub async fn write(
    ctx: &Context,
    email: &Email,
    desired: &EmailStatus,
) -> Result<bool, kube::Error> {
    if email.status.as_ref() == Some(desired) {
        return Ok(false);
    }
    let ns = email.namespace().unwrap_or_default();
    let api: Api<Email> = Api::namespaced(ctx.client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "Email",
        "status": desired,
    });
    let written = api
        .patch_status(
            &email.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    // Only a write that made a new version leaves the cache behind: one the server found to
    // change nothing keeps the version, and no watch event would ever bring a newer one.
    let from = &email.metadata.resource_version;
    if let (Some(uid), Some(from)) = (&email.metadata.uid, from)
        && written.metadata.resource_version.as_ref() != Some(from)
    {
        ctx.note_status_write(uid, from);
    }
    Ok(true)
}

/// Publishes an Event on the Email. Events are best effort: a failure is logged, never fatal,
/// because the status already tells the story.
pub async fn event(ctx: &Context, email: &Email, warning: bool, reason: &str, note: String) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(conditions::truncate(&note, 1024)),
        action: "Deliver".to_string(),
        secondary: None,
    };
    if let Err(err) = ctx.events.publish(&ev, &email.object_ref(&())).await {
        tracing::warn!(
            email = %format!("{}/{}", email.namespace().unwrap_or_default(), email.name_any()),
            error = %err,
            "could not publish Event {reason}"
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
