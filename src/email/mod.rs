//! The Email reconciler, as a pipeline:
//!
//! resolve the senders (the chosen one and its usable fallbacks) -> load inputs (attachments,
//! content: literal, or rendered from the EmailTemplate) -> per sender: credentials, client,
//! build and hash the message -> consult the ledger -> take a rate-limit token -> claim ->
//! send -> record the outcome (EmailDelivery, then the Email's status). Auth errors and
//! exhausted retries move on to the next sender.
//!
//! Each step lives in its own module. Steps before the claim have no side effects; a
//! [`Problem`] found there ends the reconcile with a `Failed` status naming the field and the
//! fix, and the watches bring the Email back when the cause changes.

pub mod attachments;
pub mod backoff;
pub mod content;
pub mod ledger;
pub mod preview;
pub mod problem;
pub mod resolve;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::api::{
    DeliveryPhase, Email, EmailDelivery, EmailDeliveryStatus, EmailPhase, EmailStatus, ResendPolicy,
};
use crate::context::Context;
use crate::message::{AttachmentData, OutgoingMessage, RenderedContent, build_message};
use crate::metrics::{FailureLabels, ProviderLabels, SenderLabels};
use crate::provider::{ErrorClass, Provider, SendError, SendReceipt};
use crate::sender::credentials;

use ledger::{Claim, EntryState};
use problem::{Problem, reasons as problem_reasons};
use resolve::ResolvedSender;
use status::reasons;

/// `kmailops.io/dry-run: "true"`: render and resolve everything, send nothing.
pub const DRY_RUN_ANNOTATION: &str = "kmailops.io/dry-run";
/// `kmailops.io/retry: "<new token>"`: one more attempt after Failed or Unknown.
pub const RETRY_ANNOTATION: &str = "kmailops.io/retry";

/// How long an Email with a [`Problem`] waits before it is looked at again even without a
/// change to anything watched (a ConfigMap attachment or namespace labels may have changed).
const PROBLEM_RECHECK: Duration = Duration::from_secs(300);

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
        if self.email.metadata.deletion_timestamp.is_some() || self.is_settled() {
            return Ok(Action::await_change());
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

    /// Sent (or Expired) for the current generation: nothing to do, no read, no write.
    fn is_settled(&self) -> bool {
        self.status.observed_generation == self.email.metadata.generation
            && matches!(
                self.status.phase,
                Some(EmailPhase::Sent) | Some(EmailPhase::Expired)
            )
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

    // ---- steps without side effects --------------------------------------------------

    /// The senders and the message inputs; no side effects.
    async fn plan(&self) -> Result<Result<Plan, Problem>, kube::Error> {
        let stores = &self.ctx.stores;
        let labels = if resolve::needs_namespace_labels(&stores.senders, &self.namespace)
            || content::needs_namespace_labels(&self.email.spec, &self.namespace, &stores.templates)
        {
            self.namespace_labels().await?
        } else {
            None
        };
        let chain = match resolve::resolve(
            &self.namespace,
            self.email.spec.sender_config_ref.as_ref(),
            &stores.senders,
            &labels,
        ) {
            Ok(c) => c,
            Err(p) => return Ok(Err(p)),
        };
        let attachments = match attachments::load(
            &self.namespace,
            &self.email.spec.attachments,
            &stores.secrets,
            &self.ctx.client,
        )
        .await?
        {
            Ok(a) => a,
            Err(p) => return Ok(Err(p)),
        };
        let content = match content::render_for_email(
            &self.email.spec,
            &self.namespace,
            &stores.templates,
            &self.ctx.builtin_templates,
            &labels,
        ) {
            Ok(c) => c,
            Err(p) => return Ok(Err(p)),
        };
        Ok(Ok(Plan {
            chain,
            content,
            attachments,
        }))
    }

    /// The message as `sender` would send it.
    fn message_for(
        &self,
        plan: &Plan,
        sender: &ResolvedSender,
    ) -> Result<OutgoingMessage, Problem> {
        build_message(
            &self.email.spec,
            &sender.config.spec,
            &sender.key,
            plan.content.clone(),
            plan.attachments.clone(),
        )
        .map_err(|e| Problem::new(problem_reasons::INVALID_SPEC, e.to_string()))
    }

    /// The first sender from `start` on whose credentials and client are in order. A sender
    /// with a missing Secret is passed over when a later one can send; with none left, its
    /// problem is the answer.
    fn prepare_from(&self, plan: &Plan, start: usize) -> Result<Prepared, Problem> {
        let mut first_problem = None;
        for (position, sender) in plan.chain.iter().enumerate().skip(start) {
            let message = self.message_for(plan, sender)?;
            let client = credentials::load(
                &sender.config.spec,
                &sender.namespace,
                &self.ctx.stores.secrets,
            )
            .map_err(|e| Problem::new(e.reason(), e.to_string()))
            .and_then(|loaded| {
                self.ctx
                    .providers
                    .get(&sender.key, &sender.config.spec, loaded)
                    .map_err(|e| {
                        Problem::new(
                            problem_reasons::SENDER_INVALID,
                            format!("EmailSenderConfig {}: {e}", sender.key),
                        )
                    })
            });
            match client {
                Ok(provider) => {
                    return Ok(Prepared {
                        position,
                        sender: sender.clone(),
                        provider,
                        message,
                    });
                }
                Err(p) => {
                    first_problem.get_or_insert(p);
                }
            }
        }
        Err(first_problem.unwrap_or_else(|| {
            Problem::new(
                problem_reasons::SENDER_UNAVAILABLE,
                "every sender of this Email failed: see the EmailDeliveries of this Email",
            )
        }))
    }

    async fn namespace_labels(&self) -> Result<resolve::NamespaceLabels, kube::Error> {
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        match api.get_opt(&self.namespace).await {
            Ok(ns) => Ok(ns.and_then(|n| n.metadata.labels)),
            // Without read access to namespaces a selector simply admits nothing.
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ---- the ledger --------------------------------------------------------------------

    /// An Email without status is new, or was deleted and created again (Argo CD Replace,
    /// Flux force, prune and re-add): the ledger, read from the API server itself, decides.
    async fn recover_from_ledger(
        &self,
        plan: &Plan,
        p: &Prepared,
    ) -> Result<Option<Action>, kube::Error> {
        let entries = ledger::list_for_email(&self.deliveries, &self.name).await?;
        if entries.is_empty() {
            return Ok(None);
        }
        let hashes: Vec<String> = plan
            .chain
            .iter()
            .filter_map(|s| self.message_for(plan, s).ok())
            .map(|m| m.delivery_hash)
            .collect();
        let token = self.retry_token();
        let Some(sent) = ledger::best_sent(&entries, &hashes) else {
            return Ok(None);
        };
        if hashes.contains(&sent.spec.delivery_hash) {
            return self
                .mirror_sent(p, sent, token.as_deref(), reasons::RECOVERED_FROM_LEDGER)
                .await
                .map(Some);
        }
        if self.email.spec.resend_policy == ResendPolicy::Never {
            return self
                .mirror_sent(p, sent, token.as_deref(), reasons::CHANGED_AFTER_SEND)
                .await
                .map(Some);
        }
        Ok(None)
    }

    async fn deliver(&self, plan: &Plan, p: Prepared) -> Result<Action, kube::Error> {
        let p = &p;
        let hash = p.message.delivery_hash.as_str();
        let token = self.retry_token();
        let key = ledger::ledger_key(hash, token.as_deref());
        let entry_name = ledger::entry_name(&self.name, &key);

        let cached = self
            .ctx
            .stores
            .deliveries
            .get(&ObjectRef::new(&entry_name).within(&self.namespace));
        let entry = match cached {
            Some(e) => e,
            None => {
                if let Some(blocked) = self.claim_blocked(p).await {
                    return blocked;
                }
                let new = ledger::NewEntry {
                    namespace: &self.namespace,
                    email_name: &self.name,
                    email_uid: self.email.metadata.uid.as_deref().unwrap_or_default(),
                    delivery_hash: hash,
                    key: &key,
                    sender_config: &p.sender.key,
                    recipient_count: p.message.to.len() + p.message.cc.len() + p.message.bcc.len(),
                    retry_token: token.as_deref(),
                };
                let settings = &self.ctx.settings;
                match ledger::claim_new(
                    &self.deliveries,
                    new,
                    &settings.instance_id,
                    settings.claim_ttl,
                )
                .await?
                {
                    Claim::Won(created) => {
                        return self.attempt(plan, p, &created, 1, token.as_deref()).await;
                    }
                    Claim::Exists => match self.deliveries.get_opt(&entry_name).await? {
                        Some(e) => Arc::new(e),
                        // Created and deleted again in between: start over shortly.
                        None => return Ok(Action::requeue(Duration::from_secs(1))),
                    },
                }
            }
        };
        self.follow_entry(plan, p, &entry, token.as_deref()).await
    }

    /// Moves on to the next sender of the chain after `p`, if there is one.
    async fn fail_over(&self, plan: &Plan, p: &Prepared) -> Option<Result<Action, kube::Error>> {
        let next = self.prepare_from(plan, p.position + 1).ok()?;
        tracing::info!(email = %self.id, from = %p.sender.key, to = %next.sender.key, "failing over to the next sender");
        status::event(
            self.ctx,
            self.email,
            true,
            "FailingOver",
            format!("{} failed; trying {}", p.sender.key, next.sender.key),
        )
        .await;
        Some(Box::pin(self.deliver(plan, next)).await)
    }

    /// What stops a new attempt from being claimed now, if anything: shutdown (the successor
    /// will claim it) or the sender's rate limit (the Email waits as Pending).
    async fn claim_blocked(&self, p: &Prepared) -> Option<Result<Action, kube::Error>> {
        if self.ctx.is_stopping() {
            return Some(Ok(Action::requeue(Duration::from_secs(5))));
        }
        match self.take_send_token(p) {
            Ok(()) => None,
            Err(wait) => Some(self.rate_limited(p, wait).await),
        }
    }

    fn take_send_token(&self, p: &Prepared) -> Result<(), Duration> {
        self.ctx
            .rate_limits
            .try_acquire(&p.sender.key, p.sender.config.spec.rate_limit.as_ref())
    }

    /// Acts on an existing ledger entry.
    async fn follow_entry(
        &self,
        plan: &Plan,
        p: &Prepared,
        entry: &EmailDelivery,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let entry_name = entry.name_any();
        if let Some(outcome) = self.ctx.take_unrecorded(&entry_name) {
            // A send finished here but the API server refused the outcome then: record it now.
            if let Err(e) = ledger::record(&self.deliveries, &entry_name, &outcome).await {
                self.ctx.keep_unrecorded(&entry_name, outcome);
                return Err(e);
            }
            let fresh = self.deliveries.get(&entry_name).await?;
            return Box::pin(self.follow_entry(plan, p, &fresh, token)).await;
        }
        let state = ledger::state(entry);
        tracing::debug!(email = %self.id, entry = %entry_name, ?state, "ledger entry");
        match state {
            EntryState::Sent => {
                let reason = if self.status.phase.is_none() {
                    reasons::RECOVERED_FROM_LEDGER
                } else {
                    EmailPhase::Sent.as_str()
                };
                self.mirror_sent(p, entry, token, reason).await
            }
            EntryState::Failed => {
                if ledger::fails_over(entry)
                    && let Some(result) = self.fail_over(plan, p).await
                {
                    return result;
                }
                self.mirror_failed(p, entry, token).await
            }
            EntryState::Unknown => self.mirror_unknown(p, entry, token).await,
            EntryState::InFlight {
                claimed_by,
                expires,
                ..
            } => {
                let settings = &self.ctx.settings;
                let running_here = self.ctx.is_in_flight(&entry_name);
                let ours = claimed_by == settings.instance_id;
                let lapsed = expires.is_none_or(|e| e <= Timestamp::now());
                if running_here {
                    Ok(Action::requeue(Duration::from_secs(1)))
                } else if ours || lapsed {
                    // Nobody is calling the provider for this claim any more: the process died
                    // mid-call (or this one lost the task). The message may have gone out, so
                    // it is not sent again without a person asking (kmailops.io/retry).
                    let message = "the operator stopped while the provider call was in flight; the message may or may not have been delivered. Check the recipient's inbox or the provider's log, then set the annotation kmailops.io/retry to a new value to send once more";
                    if ledger::mark_unknown(&self.deliveries, entry, message).await? {
                        let fresh = self.deliveries.get(&entry_name).await?;
                        self.mirror_unknown(p, &fresh, token).await
                    } else {
                        Ok(Action::requeue(Duration::from_secs(1)))
                    }
                } else {
                    // Another replica holds a live claim: look again when it lapses (its
                    // status write on the Email will usually wake us sooner).
                    let wait = expires
                        .and_then(|e| (e - Timestamp::now()).try_into().ok())
                        .unwrap_or(settings.claim_ttl);
                    Ok(Action::requeue(wait + Duration::from_secs(1)))
                }
            }
            EntryState::Waiting {
                attempts,
                next_attempt,
            } => {
                let now = Timestamp::now();
                if let Some(next) = next_attempt
                    && next > now
                {
                    let wait: Duration = (next - now).try_into().unwrap_or_default();
                    return Ok(Action::requeue(wait));
                }
                if let Some(blocked) = self.claim_blocked(p).await {
                    return blocked;
                }
                let settings = &self.ctx.settings;
                let next_no = attempts + 1;
                if ledger::claim_next(
                    &self.deliveries,
                    entry,
                    next_no,
                    &settings.instance_id,
                    settings.claim_ttl,
                )
                .await?
                {
                    self.attempt(plan, p, entry, next_no, token).await
                } else {
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
    }

    // ---- the provider call -------------------------------------------------------------

    /// Calls the provider for a claimed attempt and records the outcome: first in the ledger,
    /// then in the Email's status. Auth errors and exhausted retries move on to the next
    /// sender of the chain when there is one.
    async fn attempt(
        &self,
        plan: &Plan,
        p: &Prepared,
        entry: &EmailDelivery,
        attempt: i32,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let entry_name = entry.name_any();
        let started = Time(Timestamp::now());
        let result = self.call_provider(p, &entry_name).await;
        let retry = &p.sender.config.spec.retry;
        let base = EmailDeliveryStatus {
            observed_generation: entry.metadata.generation,
            provider: Some(p.provider.kind()),
            attempts: Some(attempt),
            ..entry.status.clone().unwrap_or_default()
        };
        let (outcome, action) = match &result {
            Ok(receipt) => (
                EmailDeliveryStatus {
                    phase: Some(DeliveryPhase::Sent),
                    reason: Some(ledger::reasons::SENT.into()),
                    message_id: Some(receipt.message_id.clone()),
                    sent_time: Some(Time(Timestamp::now())),
                    error: None,
                    next_attempt_time: None,
                    ..base
                },
                Action::await_change(),
            ),
            Err(e)
                if e.class == ErrorClass::Transient && !e.auth && attempt < retry.max_attempts =>
            {
                let now = Timestamp::now();
                let next =
                    backoff::next_attempt_at(now, backoff::delay(retry, attempt, e.retry_after));
                let wait: Duration = (next - now).try_into().unwrap_or_default();
                (
                    EmailDeliveryStatus {
                        phase: Some(DeliveryPhase::Sending),
                        reason: None,
                        error: Some(e.message.clone()),
                        next_attempt_time: Some(Time(next)),
                        ..base
                    },
                    Action::requeue(wait),
                )
            }
            Err(e) => {
                let (phase, reason) = match e.class {
                    ErrorClass::Ambiguous => {
                        (DeliveryPhase::Unknown, ledger::reasons::OUTCOME_UNKNOWN)
                    }
                    _ if e.auth => (DeliveryPhase::Failed, ledger::reasons::AUTH_FAILED),
                    ErrorClass::Transient => {
                        (DeliveryPhase::Failed, ledger::reasons::RETRIES_EXHAUSTED)
                    }
                    ErrorClass::Permanent => {
                        (DeliveryPhase::Failed, ledger::reasons::PROVIDER_REJECTED)
                    }
                };
                (
                    EmailDeliveryStatus {
                        phase: Some(phase),
                        reason: Some(reason.into()),
                        error: Some(e.message.clone()),
                        next_attempt_time: None,
                        ..base
                    },
                    Action::await_change(),
                )
            }
        };
        self.observe(p, attempt, &result, &outcome);
        self.record_outcome(&entry_name, &outcome).await?;

        let fresh_entry = EmailDelivery {
            status: Some(outcome.clone()),
            ..entry.clone()
        };
        if ledger::fails_over(&fresh_entry)
            && let Some(next) = self.fail_over(plan, p).await
        {
            return next;
        }
        let mut status = self.delivery_status(p, token);
        status.attempts = Some(attempt);
        status.last_attempt_time = Some(started);
        match result {
            Ok(receipt) => self.sent(status, &outcome, &receipt).await?,
            Err(e) => {
                self.send_failed(status, &outcome, &e, retry.max_attempts)
                    .await?
            }
        }
        Ok(action)
    }

    /// The provider call itself, within the send slots and a time limit shorter than the claim.
    async fn call_provider(
        &self,
        p: &Prepared,
        entry_name: &str,
    ) -> Result<SendReceipt, SendError> {
        let _permit = self.ctx.send_slots.acquire().await;
        let _running = self.ctx.mark_in_flight(entry_name);
        // The claim must outlive the call: a call that outlasts it is cut off and treated as
        // ambiguous, so no other reconcile can ever see a lapsed claim of a live call.
        let limit = self.ctx.settings.claim_ttl.mul_f64(0.8);
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(limit, p.provider.send(&p.message)).await {
            Ok(r) => r,
            Err(_) => Err(SendError {
                class: ErrorClass::Ambiguous,
                auth: false,
                message: format!(
                    "no answer from {} within {}s after the message was handed over",
                    p.provider.kind(),
                    limit.as_secs()
                ),
                retry_after: None,
                status: None,
            }),
        };
        self.ctx
            .metrics
            .send_duration
            .get_or_create(&ProviderLabels {
                provider: p.provider.kind().to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Logs, metrics and the sender's last-send record for one attempt.
    fn observe(
        &self,
        p: &Prepared,
        attempt: i32,
        result: &Result<SendReceipt, SendError>,
        outcome: &EmailDeliveryStatus,
    ) {
        let metrics = &self.ctx.metrics;
        let provider = p.provider.kind().to_string();
        match result {
            Ok(r) => {
                tracing::info!(email = %self.id, sender = %p.sender.key, attempt, message_id = %r.message_id, "sent");
                metrics
                    .emails_sent
                    .get_or_create(&SenderLabels {
                        sender: p.sender.key.clone(),
                        provider,
                    })
                    .inc();
                self.ctx.record_send(&p.sender.key, None);
            }
            Err(e) => {
                tracing::warn!(email = %self.id, sender = %p.sender.key, attempt, class = ?e.class, retry_after = ?e.retry_after, error = %e.message, "send failed");
                if let Some(reason) = &outcome.reason {
                    metrics
                        .emails_failed
                        .get_or_create(&FailureLabels {
                            sender: p.sender.key.clone(),
                            provider,
                            reason: reason.clone(),
                        })
                        .inc();
                }
                self.ctx.record_send(&p.sender.key, Some(e.message.clone()));
            }
        }
    }

    /// Records a ledger outcome, retrying briefly; if the API server stays away, the outcome
    /// is kept in memory and written by the next reconcile, so a sent message is never
    /// mistaken for an interrupted one.
    async fn record_outcome(
        &self,
        entry_name: &str,
        outcome: &EmailDeliveryStatus,
    ) -> Result<(), kube::Error> {
        let mut wait = Duration::from_millis(200);
        for _ in 0..5 {
            match ledger::record(&self.deliveries, entry_name, outcome).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(email = %self.id, entry = entry_name, error = %e, "recording the delivery outcome failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        self.ctx.keep_unrecorded(entry_name, outcome.clone());
        ledger::record(&self.deliveries, entry_name, outcome).await
    }

    // ---- outcomes into the Email's status ------------------------------------------------

    /// Status fields every delivery outcome shares.
    fn delivery_status(&self, p: &Prepared, token: Option<&str>) -> EmailStatus {
        EmailStatus {
            delivery_hash: Some(p.message.delivery_hash.clone()),
            provider: Some(p.provider.kind()),
            sender_config: Some(p.sender.key.clone()),
            last_handled_retry: token.map(str::to_string),
            preview: None,
            next_attempt_time: None,
            error: None,
            ..self.status.clone()
        }
    }

    async fn sent(
        &self,
        mut status: EmailStatus,
        outcome: &EmailDeliveryStatus,
        receipt: &SendReceipt,
    ) -> Result<(), kube::Error> {
        status.message_id = outcome.message_id.clone();
        status.sent_time = outcome.sent_time.clone();
        let mut message = format!(
            "sent through {} as {}",
            status.sender_config.as_deref().unwrap_or_default(),
            receipt.message_id
        );
        if !receipt.warnings.is_empty() {
            message.push_str(&format!(
                "; provider warnings: {}",
                receipt.warnings.join("; ")
            ));
        }
        status::settle(self.email, &mut status, EmailPhase::Sent, "Sent", &message);
        status::write(self.ctx, self.email, &status).await?;
        status::event(self.ctx, self.email, false, "Sent", message).await;
        Ok(())
    }

    async fn send_failed(
        &self,
        mut status: EmailStatus,
        outcome: &EmailDeliveryStatus,
        error: &SendError,
        max_attempts: i32,
    ) -> Result<(), kube::Error> {
        status.error = Some(error.message.clone());
        let (phase, reason, event_reason, note) = match outcome.phase {
            Some(DeliveryPhase::Sending) => {
                status.next_attempt_time = outcome.next_attempt_time.clone();
                let at = status
                    .next_attempt_time
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default();
                (
                    EmailPhase::Retrying,
                    reasons::TRANSIENT_ERROR,
                    "Retrying",
                    format!(
                        "attempt {} of {max_attempts} failed: {}; next attempt at {at}",
                        status.attempts.unwrap_or(1),
                        error.message
                    ),
                )
            }
            Some(DeliveryPhase::Unknown) => (
                EmailPhase::Unknown,
                reasons::OUTCOME_UNKNOWN,
                "OutcomeUnknown",
                format!(
                    "{}; the message may have been delivered, so it is not resent automatically: set the annotation kmailops.io/retry to a new value to send once more",
                    error.message
                ),
            ),
            _ => {
                let reason = if error.class == ErrorClass::Transient {
                    reasons::RETRIES_EXHAUSTED
                } else {
                    reasons::PROVIDER_REJECTED
                };
                (
                    EmailPhase::Failed,
                    reason,
                    "Failed",
                    format!("{}: {}", reason, error.message),
                )
            }
        };
        status::settle(self.email, &mut status, phase, reason, &note);
        status::write(self.ctx, self.email, &status).await?;
        status::event(self.ctx, self.email, true, event_reason, note).await;
        Ok(())
    }

    async fn mirror_sent(
        &self,
        p: &Prepared,
        entry: &EmailDelivery,
        token: Option<&str>,
        reason: &str,
    ) -> Result<Action, kube::Error> {
        let es = entry.status.clone().unwrap_or_default();
        let mut status = self.delivery_status(p, token);
        status.delivery_hash = Some(entry.spec.delivery_hash.clone());
        status.sender_config = Some(entry.spec.sender_config.clone());
        status.message_id = es.message_id.clone();
        status.sent_time = es.sent_time.clone();
        status.attempts = es.attempts;
        status.provider = es.provider.or(status.provider);
        let message = match reason {
            reasons::CHANGED_AFTER_SEND => self.changed_message(),
            reasons::RECOVERED_FROM_LEDGER => format!(
                "already sent as {} (recorded in EmailDelivery {}); not sent again",
                es.message_id.as_deref().unwrap_or("?"),
                entry.name_any()
            ),
            _ => format!("sent as {}", es.message_id.as_deref().unwrap_or("?")),
        };
        status::settle(self.email, &mut status, EmailPhase::Sent, reason, &message);
        let changed_reason = status::current_reason(self.email).as_deref() != Some(reason);
        status::write(self.ctx, self.email, &status).await?;
        if changed_reason && reason == reasons::CHANGED_AFTER_SEND {
            status::event(self.ctx, self.email, true, reason, message).await;
        }
        Ok(Action::await_change())
    }

    async fn mirror_failed(
        &self,
        p: &Prepared,
        entry: &EmailDelivery,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let es = entry.status.clone().unwrap_or_default();
        let mut status = self.delivery_status(p, token);
        status.attempts = es.attempts;
        status.error = es.error.clone();
        let message = format!(
            "{}; change the Email, or set the annotation kmailops.io/retry to a new value to try again",
            es.error.as_deref().unwrap_or("the delivery failed")
        );
        status::settle(
            self.email,
            &mut status,
            EmailPhase::Failed,
            reasons::PROVIDER_REJECTED,
            &message,
        );
        status::write(self.ctx, self.email, &status).await?;
        Ok(Action::await_change())
    }

    async fn mirror_unknown(
        &self,
        p: &Prepared,
        entry: &EmailDelivery,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let es = entry.status.clone().unwrap_or_default();
        let mut status = self.delivery_status(p, token);
        status.attempts = es.attempts;
        status.error = es.error.clone();
        let message = es
            .error
            .clone()
            .unwrap_or_else(|| "the outcome of the provider call is unknown".into());
        let announce =
            status::current_reason(self.email).as_deref() != Some(reasons::OUTCOME_UNKNOWN);
        status::settle(
            self.email,
            &mut status,
            EmailPhase::Unknown,
            reasons::OUTCOME_UNKNOWN,
            &message,
        );
        status::write(self.ctx, self.email, &status).await?;
        if announce {
            status::event(self.ctx, self.email, true, "OutcomeUnknown", message).await;
        }
        Ok(Action::await_change())
    }

    // ---- resting states without a send -------------------------------------------------

    /// Sent, same content, new generation (e.g. a label-only... or a no-op edit): observe it.
    async fn observe_sent(&self) -> Result<Action, kube::Error> {
        let mut status = self.status.clone();
        let reason = status::current_reason(self.email).unwrap_or_else(|| "Sent".into());
        let message = crate::conditions::find(&status.conditions, crate::conditions::types::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        status::settle(self.email, &mut status, EmailPhase::Sent, &reason, &message);
        status::write(self.ctx, self.email, &status).await?;
        Ok(Action::await_change())
    }

    fn changed_message(&self) -> String {
        "the spec changed after the Email was sent; resendPolicy is Never, so the new content is not sent. Create a new Email to send it, or set resendPolicy: OnChange".to_string()
    }

    async fn changed_after_send(&self) -> Result<Action, kube::Error> {
        let mut status = self.status.clone();
        let message = self.changed_message();
        let announce =
            status::current_reason(self.email).as_deref() != Some(reasons::CHANGED_AFTER_SEND);
        status::settle(
            self.email,
            &mut status,
            EmailPhase::Sent,
            reasons::CHANGED_AFTER_SEND,
            &message,
        );
        status::write(self.ctx, self.email, &status).await?;
        if announce {
            status::event(
                self.ctx,
                self.email,
                true,
                reasons::CHANGED_AFTER_SEND,
                message,
            )
            .await;
        }
        Ok(Action::await_change())
    }

    async fn previewed(&self, p: &Prepared) -> Result<Action, kube::Error> {
        let mut status = self.delivery_status(p, self.status.last_handled_retry.as_deref());
        status.preview = Some(preview::of(&p.message));
        let message = format!(
            "dry run: rendered for {} recipient(s) through {}; remove the annotation {DRY_RUN_ANNOTATION} to send",
            p.message.to.len() + p.message.cc.len() + p.message.bcc.len(),
            p.sender.key
        );
        let announce = self.status.phase != Some(EmailPhase::Previewed)
            || self.status.delivery_hash != status.delivery_hash;
        status::settle(
            self.email,
            &mut status,
            EmailPhase::Previewed,
            "Previewed",
            &message,
        );
        status::write(self.ctx, self.email, &status).await?;
        if announce {
            status::event(self.ctx, self.email, false, "Previewed", message).await;
        }
        Ok(Action::await_change())
    }

    async fn expired(&self, p: &Prepared) -> Result<Action, kube::Error> {
        let mut status = self.delivery_status(p, self.status.last_handled_retry.as_deref());
        let not_after = self
            .email
            .spec
            .not_after
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let message =
            format!("notAfter ({not_after}) passed before the Email was sent; nothing was sent");
        status::settle(
            self.email,
            &mut status,
            EmailPhase::Expired,
            "Expired",
            &message,
        );
        status::write(self.ctx, self.email, &status).await?;
        Ok(Action::await_change())
    }

    async fn scheduled(&self, p: &Prepared, send_at: &Time) -> Result<Action, kube::Error> {
        let mut status = self.delivery_status(p, self.status.last_handled_retry.as_deref());
        status.next_attempt_time = Some(send_at.clone());
        let message = format!("scheduled for {}", send_at.0);
        status::settle(
            self.email,
            &mut status,
            EmailPhase::Scheduled,
            "Scheduled",
            &message,
        );
        status::write(self.ctx, self.email, &status).await?;
        let wait: Duration = (send_at.0 - Timestamp::now())
            .try_into()
            .unwrap_or_default();
        Ok(Action::requeue(wait + Duration::from_millis(50)))
    }

    /// Waiting for a token of the sender's rate limit: Pending, never Failed.
    async fn rate_limited(&self, p: &Prepared, wait: Duration) -> Result<Action, kube::Error> {
        if status::current_reason(self.email).as_deref() != Some(reasons::RATE_LIMITED) {
            let mut status = self.delivery_status(p, self.retry_token().as_deref());
            let limit = p.sender.config.spec.rate_limit.as_ref();
            let message = format!(
                "waiting for a send slot of {} (rateLimit {}/min, burst {})",
                p.sender.key,
                limit.map(|l| l.per_minute).unwrap_or_default(),
                limit.and_then(|l| l.burst).unwrap_or(1)
            );
            status::settle(
                self.email,
                &mut status,
                EmailPhase::Pending,
                reasons::RATE_LIMITED,
                &message,
            );
            status::write(self.ctx, self.email, &status).await?;
        }
        Ok(Action::requeue(wait + Duration::from_millis(10)))
    }

    /// A problem with a spec that was already sent under `resendPolicy: Never` is not a
    /// failure: the new spec would not be sent anyway, so the Email stays Sent.
    async fn fail_unless_sent(&self, problem: Problem) -> Result<Action, kube::Error> {
        if self.status.phase == Some(EmailPhase::Sent)
            && self.email.spec.resend_policy == ResendPolicy::Never
        {
            return self.changed_after_send().await;
        }
        self.fail(problem).await
    }

    async fn fail(&self, problem: Problem) -> Result<Action, kube::Error> {
        let mut status = EmailStatus {
            error: Some(problem.message.clone()),
            next_attempt_time: None,
            ..self.status.clone()
        };
        let announce = status::current_reason(self.email).as_deref() != Some(problem.reason);
        status::settle(
            self.email,
            &mut status,
            EmailPhase::Failed,
            problem.reason,
            &problem.message,
        );
        status::write(self.ctx, self.email, &status).await?;
        if announce {
            status::event(self.ctx, self.email, true, problem.reason, problem.message).await;
        }
        Ok(Action::requeue(PROBLEM_RECHECK))
    }
}
