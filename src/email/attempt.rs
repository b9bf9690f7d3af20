//! One provider call for a claimed attempt, and its outcome in the ledger.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::api::{DeliveryPhase, EmailDelivery, EmailDeliveryStatus};
use crate::metrics::{FailureLabels, ProviderLabels, SenderLabels};
use crate::provider::{ErrorClass, SendError, SendReceipt};

use super::{Plan, Prepared, Reconcile, backoff, ledger};

impl Reconcile<'_> {
    /// Calls the provider for a claimed attempt and records the outcome: first in the ledger,
    /// then in the Email's status. Auth errors and exhausted retries move on to the next
    /// sender of the chain when there is one.
    pub(super) async fn attempt(
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
    pub(super) async fn call_provider(
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
    pub(super) fn observe(
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
    pub(super) async fn record_outcome(
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
}
