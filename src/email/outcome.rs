//! Outcomes into the Email's status (and Events): sent, failed, mirrored from the ledger,
//! and the resting states that need no send.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::api::{
    DeliveryPhase, EmailDelivery, EmailDeliveryStatus, EmailPhase, EmailStatus, ResendPolicy,
};
use crate::provider::{ErrorClass, SendError, SendReceipt};

use super::problem::Problem;
use super::status::{self, reasons};
use super::{DRY_RUN_ANNOTATION, PROBLEM_RECHECK, Prepared, Reconcile, preview};

impl Reconcile<'_> {
    /// Status fields every delivery outcome shares.
    pub(super) fn delivery_status(&self, p: &Prepared, token: Option<&str>) -> EmailStatus {
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

    /// The Email's status for a delivery whose ledger entry has ended without a send: its
    /// attempts and its error, as the entry says.
    fn status_after(
        &self,
        p: &Prepared,
        entry: &EmailDelivery,
        token: Option<&str>,
    ) -> EmailStatus {
        let recorded = entry.status.as_ref();
        EmailStatus {
            attempts: recorded.and_then(|s| s.attempts),
            error: recorded.and_then(|s| s.error.clone()),
            ..self.delivery_status(p, token)
        }
    }

    pub(super) async fn sent(
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

    pub(super) async fn send_failed(
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

    pub(super) async fn mirror_sent(
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

    pub(super) async fn mirror_failed(
        &self,
        p: &Prepared,
        entry: &EmailDelivery,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let mut status = self.status_after(p, entry, token);
        let message = format!(
            "{}; change the Email, or set the annotation kmailops.io/retry to a new value to try again",
            status.error.as_deref().unwrap_or("the delivery failed")
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

    pub(super) async fn mirror_unknown(
        &self,
        p: &Prepared,
        entry: &EmailDelivery,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let mut status = self.status_after(p, entry, token);
        let message = status
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
    pub(super) async fn observe_sent(&self) -> Result<Action, kube::Error> {
        let mut status = self.status.clone();
        let reason = status::current_reason(self.email).unwrap_or_else(|| "Sent".into());
        let message = crate::conditions::find(&status.conditions, crate::conditions::types::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        status::settle(self.email, &mut status, EmailPhase::Sent, &reason, &message);
        status::write(self.ctx, self.email, &status).await?;
        Ok(Action::await_change())
    }

    pub(super) fn changed_message(&self) -> String {
        "the spec changed after the Email was sent; resendPolicy is Never, so the new content is not sent. Create a new Email to send it, or set resendPolicy: OnChange".to_string()
    }

    pub(super) async fn changed_after_send(&self) -> Result<Action, kube::Error> {
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

    pub(super) async fn previewed(&self, p: &Prepared) -> Result<Action, kube::Error> {
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

    pub(super) async fn expired(&self, p: &Prepared) -> Result<Action, kube::Error> {
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

    pub(super) async fn scheduled(
        &self,
        p: &Prepared,
        send_at: &Time,
    ) -> Result<Action, kube::Error> {
        let mut status = self.delivery_status(p, self.status.last_handled_retry.as_deref());
        // Whole seconds, as a Time is written: with the sub-second part of `sendAt` the
        // status would never equal the one read back, and every reconcile would write it again.
        status.next_attempt_time = Some(Time(
            Timestamp::from_second(send_at.0.as_second()).unwrap_or(send_at.0),
        ));
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
    pub(super) async fn rate_limited(
        &self,
        p: &Prepared,
        wait: Duration,
    ) -> Result<Action, kube::Error> {
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
    pub(super) async fn fail_unless_sent(&self, problem: Problem) -> Result<Action, kube::Error> {
        if self.status.phase == Some(EmailPhase::Sent)
            && self.email.spec.resend_policy == ResendPolicy::Never
        {
            return self.changed_after_send().await;
        }
        self.fail(problem).await
    }

    pub(super) async fn fail(&self, problem: Problem) -> Result<Action, kube::Error> {
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
