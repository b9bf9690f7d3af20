//! The Email reconciler, as a pipeline:
//!
//! resolve the senders (the chosen one and its usable fallbacks) -> load inputs (attachments,
//! content: literal, or rendered from the EmailTemplate) -> per sender: credentials, client,
//! build and hash the message -> consult the ledger -> take a rate-limit token -> claim ->
//! send -> record the outcome (EmailDelivery, then the Email's status). Auth errors and
//! exhausted retries move on to the next sender.
//!
//! This file holds the order of the steps (`Reconcile::run`); the steps live in their own
//! modules: `prepare` (no side effects), `deliver` (the ledger), `attempt` (the provider call)
//! and `outcome` (the Email's status). A [`problem::Problem`] found before the claim ends the
//! reconcile with a `Failed` status naming the field and the fix, and the watches bring the
//! Email back when the cause changes.

pub mod attachments;
mod attempt;
pub mod backoff;
pub mod content;
mod deliver;
pub mod ledger;
pub mod ledger_index;
mod outcome;
mod prepare;
pub mod preview;
pub mod problem;
pub mod resolve;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use crate::api::{Email, EmailDelivery, EmailPhase, EmailStatus, ResendPolicy};
use crate::context::Context;
use crate::message::{AttachmentData, OutgoingMessage, RenderedContent};
use crate::provider::Provider;

use resolve::ResolvedSender;

/// `kmailops.io/dry-run: "true"`: render and resolve everything, send nothing.
pub const DRY_RUN_ANNOTATION: &str = "kmailops.io/dry-run";
/// `kmailops.io/retry: "<new token>"`: one more attempt after Failed or Unknown.
pub const RETRY_ANNOTATION: &str = "kmailops.io/retry";

/// How long an Email with a [`problem::Problem`] waits before it is looked at again even without a
/// change to anything watched (a ConfigMap attachment or namespace labels may have changed).
const PROBLEM_RECHECK: Duration = Duration::from_secs(300);

/// When an Email whose cached version predates our own status write is looked at again.
const STALE_RECHECK: Duration = Duration::from_secs(5);

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
/// checks; the Email cache keeps only these fields of a settled Email (`controller::trim_email`).
pub fn is_settled(email: &Email) -> bool {
    let status = email.status.as_ref();
    status.and_then(|s| s.observed_generation) == email.metadata.generation
        && matches!(
            status.and_then(|s| s.phase),
            Some(EmailPhase::Sent) | Some(EmailPhase::Expired)
        )
}

/// Reconciles one Email.
pub async fn reconcile(email: Arc<Email>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = email.name_any();
    let Some(namespace) = email.namespace() else {
        return Err(Error::NotNamespaced(name));
    };
    let run = Reconcile {
        email: &email,
        ctx: &ctx,
        id: format!("{namespace}/{name}"),
        deliveries: Api::namespaced(ctx.client.clone(), &namespace),
        namespace,
        name,
        status: email.status.clone().unwrap_or_default(),
    };
    run.run().await.map_err(|source| Error::Kube {
        object: run.id.clone(),
        source,
    })
}

struct Reconcile<'a> {
    email: &'a Email,
    ctx: &'a Context,
    namespace: String,
    name: String,
    id: String,
    deliveries: Api<EmailDelivery>,
    /// The status as read; the starting point of every status this reconcile writes.
    status: EmailStatus,
}

/// What the sender-independent steps produce: the senders to try and the message inputs.
struct Plan {
    chain: Vec<ResolvedSender>,
    content: RenderedContent,
    attachments: Vec<AttachmentData>,
}

/// One sender of the chain, ready to send.
struct Prepared {
    /// Position in `Plan::chain`.
    position: usize,
    sender: ResolvedSender,
    provider: Arc<dyn Provider>,
    message: OutgoingMessage,
}

impl Reconcile<'_> {
    async fn run(&self) -> Result<Action, kube::Error> {
        // Asked first, also of an Email about to be left alone: the answer drops the note of
        // our status write once the cache shows a newer version, and an Email that our write
        // settled is reconciled next (and last) exactly when that version arrives.
        let stale = self.is_stale();
        if self.email.metadata.deletion_timestamp.is_some() || self.is_settled() {
            return Ok(Action::await_change());
        }
        if stale {
            // Our own status write is on its way through the watch, which reconciles again;
            // the requeue only covers a watch that never delivers it.
            return Ok(Action::requeue(STALE_RECHECK));
        }
        let plan = match self.plan().await? {
            Ok(p) => p,
            Err(problem) => return self.fail_unless_sent(problem).await,
        };
        // Judge a Sent status against the sender it went out through, which may be a fallback.
        let sent_through = self
            .status
            .sender_config
            .as_deref()
            .and_then(|k| plan.chain.iter().position(|c| c.key == k))
            .filter(|_| self.status.phase == Some(EmailPhase::Sent))
            .unwrap_or(0);
        let prepared = match self.prepare_from(&plan, sent_through) {
            Ok(p) => p,
            Err(problem) => return self.fail_unless_sent(problem).await,
        };
        if self.is_dry_run() {
            return self.previewed(&prepared).await;
        }
        if self.status.phase == Some(EmailPhase::Sent) {
            if self.status.delivery_hash.as_deref() == Some(prepared.message.delivery_hash.as_str())
            {
                return self.observe_sent().await;
            }
            if self.email.spec.resend_policy == ResendPolicy::Never {
                return self.changed_after_send().await;
            }
        }
        let now = Timestamp::now();
        if let Some(not_after) = &self.email.spec.not_after
            && not_after.0 <= now
        {
            return self.expired(&prepared).await;
        }
        if let Some(send_at) = &self.email.spec.send_at
            && send_at.0 > now
        {
            return self.scheduled(&prepared, send_at).await;
        }
        let prepared = if prepared.position == 0 {
            prepared
        } else {
            match self.prepare_from(&plan, 0) {
                Ok(p) => p,
                Err(problem) => return self.fail(problem).await,
            }
        };
        if self.status.phase.is_none()
            && let Some(action) = self.recover_from_ledger(&plan, &prepared).await?
        {
            return Ok(action);
        }
        self.deliver(&plan, prepared).await
    }

    /// This version was already acted on by a status write of this process (see
    /// [`Context::is_stale`]).
    fn is_stale(&self) -> bool {
        let meta = &self.email.metadata;
        match (&meta.uid, &meta.resource_version) {
            (Some(uid), Some(version)) => self.ctx.is_stale(uid, version),
            _ => false,
        }
    }

    fn is_settled(&self) -> bool {
        is_settled(self.email)
    }

    fn is_dry_run(&self) -> bool {
        self.email
            .annotations()
            .get(DRY_RUN_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The retry token the current delivery uses. A new `kmailops.io/retry` value takes effect
    /// only when the Email rests in Failed or Unknown (or has no status yet), so a token never
    /// starts a second delivery beside one that is still retrying.
    fn retry_token(&self) -> Option<String> {
        let requested = self
            .email
            .annotations()
            .get(RETRY_ANNOTATION)
            .filter(|t| !t.is_empty())
            .cloned();
        match self.status.phase {
            None | Some(EmailPhase::Failed) | Some(EmailPhase::Unknown) => requested,
            _ => self.status.last_handled_retry.clone(),
        }
    }
}
