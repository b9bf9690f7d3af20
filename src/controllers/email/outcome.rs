//! The statuses a reconcile can arrive at, built without I/O: each function returns the
//! [`Update`] that `status::apply` writes (with its Event, published only when the state is
//! news to the reader).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::sender_config::RetrySpec;
use crate::api::{
    DeliveryPhase, EmailDeliveryStatus, EmailPhase, EmailPreview, EmailStatus, ResendPolicy,
};
use crate::conditions::{Desired, Status};
use crate::problem::Problem;
use crate::provider::{ErrorClass, SendError, SendReceipt};

use super::gather::Prepared;
use super::status::{Note, Update, current_reason, reasons, settle};
use super::{DRY_RUN_ANNOTATION, Reconcile};

/// Where a ledger entry's outcome came from, for the Email's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentVia {
    /// This Email's own delivery.
    Delivery,
    /// The ledger already held it (a new or re-created Email).
    Ledger,
    /// Sent with other content; `resendPolicy: Never`.
    ChangedAfterSend,
}

pub const CHANGED_MESSAGE: &str = "the spec changed after the Email was sent; resendPolicy is Never, so the new content is not sent. Create a new Email to send it, or set resendPolicy: OnChange";

impl Reconcile<'_> {
    fn update(
        &self,
        mut status: EmailStatus,
        phase: EmailPhase,
        reason: &str,
        message: &str,
        event: Option<Note>,
    ) -> Update {
        settle(self.email, &mut status, phase, reason, message, Vec::new());
        Update { status, event }
    }

    /// Whether the Ready reason is news (an Event is published only then).
    fn is_news(&self, reason: &str) -> bool {
        current_reason(self.email).as_deref() != Some(reason)
    }

    /// The sender token acted on with `token`, else the one acted on before.
    fn sender_retry_handled(&self, token: Option<&str>) -> Option<String> {
        token
            .and_then(super::decide::sender_part)
            .map(str::to_string)
            .or_else(|| self.status.last_handled_sender_retry.clone())
    }

    /// Status fields every delivery outcome shares.
    pub(super) fn delivery_status(&self, p: &Prepared, token: Option<&str>) -> EmailStatus {
        EmailStatus {
            delivery_hash: Some(p.message.delivery_hash.clone()),
            provider: Some(p.provider.kind()),
            sender_config: Some(p.sender.key.clone()),
            last_handled_retry: token.map(str::to_string),
            last_handled_sender_retry: self.sender_retry_handled(token),
            preview: None,
            next_attempt_time: None,
            error: None,
            ..self.status.clone()
        }
    }

    /// The status of a delivery the ledger knows, without a provider client (recovered from the
    /// ledger, or followed).
    fn entry_status(&self, entry: &LedgerOutcome<'_>, token: Option<&str>) -> EmailStatus {
        let es = entry.status;
        EmailStatus {
            delivery_hash: Some(entry.hash.to_string()),
            sender_config: Some(entry.sender.to_string()),
            provider: es.provider.or(self.status.provider),
            attempts: es.attempts,
            last_handled_retry: token.map(str::to_string),
            last_handled_sender_retry: self.sender_retry_handled(token),
            preview: None,
            next_attempt_time: None,
            error: None,
            ..self.status.clone()
        }
    }

    pub(super) fn sent(
        &self,
        mut status: EmailStatus,
        outcome: &EmailDeliveryStatus,
        receipt: &SendReceipt,
    ) -> Update {
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
        let note = Note::normal("Sent", message.clone());
        self.update(status, EmailPhase::Sent, "Sent", &message, Some(note))
    }

    pub(super) fn send_failed(
        &self,
        mut status: EmailStatus,
        outcome: &EmailDeliveryStatus,
        error: &SendError,
        retry: &RetrySpec,
    ) -> Update {
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
                        "attempt {}{} failed: {}; next attempt at {at} (transient errors are retried for retry.maxDuration, {}, after the first attempt)",
                        status.attempts.unwrap_or(1),
                        retry
                            .max_attempts
                            .map(|cap| format!(" of at most {cap}"))
                            .unwrap_or_default(),
                        error.message,
                        retry.max_duration
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
                // The ledger's reason, so the status, the metric and the entry agree: an
                // exhausted retry budget stays RetriesExhausted whatever the last error was.
                let reason = match outcome.reason.as_deref() {
                    Some(crate::ledger::reasons::AUTH_FAILED) => {
                        crate::ledger::reasons::AUTH_FAILED
                    }
                    Some(crate::ledger::reasons::RETRIES_EXHAUSTED) => reasons::RETRIES_EXHAUSTED,
                    Some(crate::ledger::reasons::PROVIDER_REJECTED) => reasons::PROVIDER_REJECTED,
                    _ if error.class == ErrorClass::Transient => reasons::RETRIES_EXHAUSTED,
                    _ => reasons::PROVIDER_REJECTED,
                };
                (
                    EmailPhase::Failed,
                    reason,
                    "Failed",
                    format!("{}: {}", reason, error.message),
                )
            }
        };
        let event = Note::warning(event_reason, note.clone());
        self.update(status, phase, reason, &note, Some(event))
    }

    /// The Email is Sent, as a ledger entry says.
    pub(super) fn mirror_sent(
        &self,
        entry: &LedgerOutcome<'_>,
        token: Option<&str>,
        via: SentVia,
    ) -> Update {
        let mut status = self.entry_status(entry, token);
        status.message_id = entry.status.message_id.clone();
        status.sent_time = entry.status.sent_time.clone();
        let id = entry.status.message_id.as_deref().unwrap_or("?");
        let (reason, message) = match via {
            SentVia::ChangedAfterSend => (reasons::CHANGED_AFTER_SEND, CHANGED_MESSAGE.to_string()),
            SentVia::Ledger => (
                reasons::RECOVERED_FROM_LEDGER,
                format!(
                    "already sent as {id} (recorded in EmailDelivery {}); not sent again",
                    entry.name
                ),
            ),
            SentVia::Delivery => ("Sent", format!("sent as {id}")),
        };
        let event = (via == SentVia::ChangedAfterSend && self.is_news(reason))
            .then(|| Note::warning(reason, message.clone()));
        self.update(status, EmailPhase::Sent, reason, &message, event)
    }

    pub(super) fn mirror_failed(&self, entry: &LedgerOutcome<'_>, token: Option<&str>) -> Update {
        let mut status = self.entry_status(entry, token);
        status.error = entry.status.error.clone();
        let message = format!(
            "{}; change the Email, or set the annotation kmailops.io/retry to a new value to try again",
            status.error.as_deref().unwrap_or("the delivery failed")
        );
        let reason = entry
            .status
            .reason
            .as_deref()
            .filter(|r| *r == reasons::RETRIES_EXHAUSTED)
            .unwrap_or(reasons::PROVIDER_REJECTED);
        self.update(status, EmailPhase::Failed, reason, &message, None)
    }

    pub(super) fn mirror_unknown(&self, entry: &LedgerOutcome<'_>, token: Option<&str>) -> Update {
        let mut status = self.entry_status(entry, token);
        status.error = entry.status.error.clone();
        let message = status
            .error
            .clone()
            .unwrap_or_else(|| "the outcome of the provider call is unknown".into());
        let event = self
            .is_news(reasons::OUTCOME_UNKNOWN)
            .then(|| Note::warning("OutcomeUnknown", message.clone()));
        self.update(
            status,
            EmailPhase::Unknown,
            reasons::OUTCOME_UNKNOWN,
            &message,
            event,
        )
    }

    // ---- what the provider said when asked --------------------------------------------

    /// The provider had the message (found by its delivery key): Sent, nothing sent now.
    pub(super) fn recovered_from_provider(
        &self,
        mut status: EmailStatus,
        message_id: &str,
    ) -> Update {
        status.message_id = Some(message_id.to_string());
        let message = format!(
            "{} already has this message as {message_id} (found by its delivery key); not sent again",
            status
                .provider
                .map(|p| p.to_string())
                .unwrap_or_else(|| "the provider".into()),
        );
        let event = Note::normal(reasons::RECOVERED_FROM_PROVIDER, message.clone());
        self.update(
            status,
            EmailPhase::Sent,
            reasons::RECOVERED_FROM_PROVIDER,
            &message,
            Some(event),
        )
    }

    /// The provider does not show the message yet, and its record is complete only at
    /// `until`: Retrying, nothing sent before then.
    pub(super) fn awaiting_provider_record(&self, status: EmailStatus, until: Timestamp) -> Update {
        let message = format!(
            "the provider may have accepted the message but does not show it yet; its record is complete at {until} (spec.lookup.settlingTime of the sender), so the Email asks again then and is sent only if the message is not there"
        );
        self.awaiting_record(status, until, message)
    }

    /// No sender of the chain shows the message before its first send, but `settling` (the
    /// senders with `spec.lookup.settleFirstSends`) trust that only at `until`: Retrying,
    /// nothing sent before then.
    pub(super) fn awaiting_first_send_record(
        &self,
        status: EmailStatus,
        until: Timestamp,
        settling: &[&str],
    ) -> Update {
        let message = format!(
            "no provider shows this message yet, but EmailSenderConfig {} sets spec.lookup.settleFirstSends: its record may lag a hand-over by up to spec.lookup.settlingTime (a message sent moments before a cluster was rebuilt), so the first send waits until {until}, asks again and goes out only if the message is not there",
            settling.join(", ")
        );
        self.awaiting_record(status, until, message)
    }

    /// Retrying with reason AwaitingProviderRecord until `until` (in whole seconds, as the
    /// status shows it), saying `message`; an Event only when the reason is new.
    fn awaiting_record(
        &self,
        mut status: EmailStatus,
        until: Timestamp,
        message: String,
    ) -> Update {
        status.next_attempt_time = Some(Time(
            Timestamp::from_second(until.as_second()).unwrap_or(until),
        ));
        let event = self
            .is_news(reasons::AWAITING_PROVIDER_RECORD)
            .then(|| Note::normal(reasons::AWAITING_PROVIDER_RECORD, message.clone()));
        self.update(
            status,
            EmailPhase::Retrying,
            reasons::AWAITING_PROVIDER_RECORD,
            &message,
            event,
        )
    }

    /// The provider, asked after an answer that may have meant "accepted", does not have the
    /// message: it goes out again at `at` (the sender's backoff).
    pub(super) fn resend_planned(&self, mut status: EmailStatus, at: Timestamp) -> Update {
        status.next_attempt_time = Some(Time(Timestamp::from_second(at.as_second()).unwrap_or(at)));
        let message = format!(
            "the provider does not have the message whose send had an ambiguous answer, so it was not delivered; next attempt at {at}"
        );
        let event = self
            .is_news(reasons::TRANSIENT_ERROR)
            .then(|| Note::warning("Retrying", message.clone()));
        self.update(
            status,
            EmailPhase::Retrying,
            reasons::TRANSIENT_ERROR,
            &message,
            event,
        )
    }

    /// The provider could not be asked: Retrying, never a blind send.
    pub(super) fn lookup_failed(
        &self,
        mut status: EmailStatus,
        why: &str,
        again: Timestamp,
    ) -> Update {
        status.error = Some(why.to_string());
        status.next_attempt_time = Some(Time(
            Timestamp::from_second(again.as_second()).unwrap_or(again),
        ));
        let message = format!(
            "could not ask the provider whether it already has this message ({why}); nothing is sent until it answers (asking again at {again}; set spec.lookup.disabled on that EmailSenderConfig to send without asking)"
        );
        let event = self
            .is_news(reasons::LOOKUP_FAILED)
            .then(|| Note::warning(reasons::LOOKUP_FAILED, message.clone()));
        self.update(
            status,
            EmailPhase::Retrying,
            reasons::LOOKUP_FAILED,
            &message,
            event,
        )
    }

    // ---- resting states without a send -------------------------------------------------

    /// Sent or Unknown with nothing new: observe the generation, keep reason and message.
    pub(super) fn observe(&self) -> Update {
        let status = self.status.clone();
        let phase = status.phase.unwrap_or(EmailPhase::Pending);
        let reason = current_reason(self.email).unwrap_or_else(|| phase.as_str().into());
        let message = crate::conditions::find(&status.conditions, crate::conditions::types::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        self.update(status, phase, &reason, &message, None)
    }

    pub(super) fn changed_after_send(&self) -> Update {
        let event = self
            .is_news(reasons::CHANGED_AFTER_SEND)
            .then(|| Note::warning(reasons::CHANGED_AFTER_SEND, CHANGED_MESSAGE));
        self.update(
            self.status.clone(),
            EmailPhase::Sent,
            reasons::CHANGED_AFTER_SEND,
            CHANGED_MESSAGE,
            event,
        )
    }

    /// A dry run. `keep_phase`: a Sent or Unknown Email only gains the preview; anything
    /// else becomes Previewed. A sender that cannot send now is named in `SenderReady`.
    /// `delivery`: the hash and sender of the message the preview shows, when a sender
    /// resolves (a previewed Email reports the hash a send would have).
    pub(super) fn previewed(
        &self,
        preview: EmailPreview,
        delivery: Option<(String, String)>,
        keep_phase: bool,
        changed: bool,
        sender_problem: Option<&Problem>,
    ) -> Update {
        let mut status = self.status.clone();
        status.preview = Some(preview.clone());
        let recipients = preview.to.len() + preview.cc.len() + preview.bcc.len();
        let through = preview.sender.as_deref().unwrap_or("no sender");
        let extra = vec![match sender_problem {
            None => Desired::new(
                super::status::SENDER_READY,
                Status::True,
                "Ready",
                format!("{through} can send"),
            ),
            Some(p) => Desired::new(
                super::status::SENDER_READY,
                Status::False,
                p.reason,
                &p.message,
            ),
        }];
        if keep_phase {
            let phase = status.phase.unwrap_or(EmailPhase::Sent);
            let never = self.email.spec.resend_policy == ResendPolicy::Never;
            if changed && never {
                let event = self
                    .is_news(reasons::CHANGED_AFTER_SEND)
                    .then(|| Note::warning(reasons::CHANGED_AFTER_SEND, CHANGED_MESSAGE));
                let (r, m) = (reasons::CHANGED_AFTER_SEND, CHANGED_MESSAGE);
                settle(self.email, &mut status, phase, r, m, extra);
                return Update { status, event };
            }
            let reason = current_reason(self.email).unwrap_or_else(|| phase.as_str().into());
            let message =
                crate::conditions::find(&status.conditions, crate::conditions::types::READY)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
            let observed = status.observed_generation;
            settle(self.email, &mut status, phase, &reason, &message, extra);
            if changed {
                // OnChange: the new content is sent once the annotation goes, which changes
                // no generation; left unobserved, the Email is looked at again then.
                status.observed_generation = observed;
            }
            return Update {
                status,
                event: None,
            };
        }
        status.next_attempt_time = None;
        status.error = None;
        if let Some((hash, sender)) = delivery {
            status.delivery_hash = Some(hash);
            status.sender_config = Some(sender);
        }
        let mut message = format!(
            "dry run: rendered for {recipients} recipient(s) through {through}; remove the annotation {DRY_RUN_ANNOTATION} to send"
        );
        if let Some(p) = sender_problem {
            message.push_str(&format!("; the sender can not send yet: {}", p.message));
        }
        let news = self.status.phase != Some(EmailPhase::Previewed)
            || self.status.preview.as_ref() != Some(&preview);
        let event = news.then(|| Note::normal("Previewed", message.clone()));
        settle(
            self.email,
            &mut status,
            EmailPhase::Previewed,
            "Previewed",
            &message,
            extra,
        );
        Update { status, event }
    }

    pub(super) fn expired(&self) -> Update {
        let not_after = self
            .email
            .spec
            .not_after
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let message =
            format!("notAfter ({not_after}) passed before the Email was sent; nothing was sent");
        let status = EmailStatus {
            next_attempt_time: None,
            preview: None,
            ..self.status.clone()
        };
        self.update(status, EmailPhase::Expired, "Expired", &message, None)
    }

    pub(super) fn scheduled(&self, send_at: Timestamp) -> Update {
        // Whole seconds, as a Time is written: with the sub-second part of `sendAt` the
        // status would never equal the one read back, and every reconcile would write it again.
        let status = EmailStatus {
            next_attempt_time: Some(Time(
                Timestamp::from_second(send_at.as_second()).unwrap_or(send_at),
            )),
            preview: None,
            ..self.status.clone()
        };
        let message = format!("scheduled for {send_at}");
        self.update(status, EmailPhase::Scheduled, "Scheduled", &message, None)
    }

    /// Waiting for a token of the sender's rate limit: Pending, never Failed.
    pub(super) fn rate_limited(&self, p: &Prepared, token: Option<&str>) -> Update {
        let status = self.delivery_status(p, token);
        let limit = p.sender.config.spec.rate_limit.as_ref();
        let message = format!(
            "waiting for a send slot of {} (rateLimit {}/min, burst {})",
            p.sender.key,
            limit.map(|l| l.per_minute).unwrap_or_default(),
            limit.and_then(|l| l.burst).unwrap_or(1)
        );
        self.update(
            status,
            EmailPhase::Pending,
            reasons::RATE_LIMITED,
            &message,
            None,
        )
    }

    /// Every sender that could send is unhealthy: the Email waits as Retrying until one
    /// recovers (the sender's status change wakes it) or `until` passes.
    pub(super) fn awaiting_sender(&self, problem: &Problem, until: Timestamp) -> Update {
        let status = EmailStatus {
            error: Some(problem.message.clone()),
            next_attempt_time: Some(Time(until)),
            ..self.status.clone()
        };
        let message = format!(
            "{}; waiting for it to recover until {until} (retry.maxDuration), then Failed",
            problem.message
        );
        let event = self
            .is_news(problem.reason)
            .then(|| Note::warning(problem.reason, message.clone()));
        self.update(
            status,
            EmailPhase::Retrying,
            problem.reason,
            &message,
            event,
        )
    }

    pub(super) fn fail(&self, problem: &Problem) -> Update {
        let status = EmailStatus {
            error: Some(problem.message.clone()),
            next_attempt_time: None,
            ..self.status.clone()
        };
        let event = self
            .is_news(problem.reason)
            .then(|| Note::warning(problem.reason, problem.message.clone()));
        self.update(
            status,
            EmailPhase::Failed,
            problem.reason,
            &problem.message,
            event,
        )
    }
}

/// What an Email's status takes from a ledger entry.
pub struct LedgerOutcome<'a> {
    pub name: &'a str,
    pub hash: &'a str,
    pub sender: &'a str,
    pub status: &'a EmailDeliveryStatus,
}

impl<'a> LedgerOutcome<'a> {
    pub fn of(entry: &'a crate::api::EmailDelivery, empty: &'a EmailDeliveryStatus) -> Self {
        Self {
            name: entry.metadata.name.as_deref().unwrap_or_default(),
            hash: &entry.spec.delivery_hash,
            sender: &entry.spec.sender_config,
            status: entry.status.as_ref().unwrap_or(empty),
        }
    }
}
