//! Asking the provider before a send that may repeat one it already has, and carrying out
//! what [`decide::before_send`] makes of its answer: a recovered message id, a send, or a
//! wait that says why. Beside `act`, which calls it before a first send and for an Unknown
//! delivery.

use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;

use crate::api::{DeliveryPhase, EmailDeliveryStatus};
use crate::ledger::{self, Claim, EntryState};
use crate::metrics::LookupLabels;
use crate::provider::LookupAnswer;

use super::Reconcile;
use super::decide::{self, Asked, BeforeSend, Lookup, Moment};
use super::gather::{Gathered, Prepared};
use super::outcome::LedgerOutcome;
use super::status;

/// How long a look-up may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// When a failed look-up is tried again.
pub(super) const LOOKUP_RETRY: Duration = Duration::from_secs(30);

fn later(d: Duration) -> Timestamp {
    let now = Timestamp::now();
    now.checked_add(jiff::SignedDuration::try_from(d).unwrap_or_default())
        .unwrap_or(now)
}

fn until(at: Timestamp) -> Duration {
    (at - Timestamp::now()).try_into().unwrap_or_default()
}

impl Reconcile<'_> {
    /// One look-up of `p`'s message at its provider, counted by result; `Err` with when to
    /// come back when it could not be made. A look-up is a call to the tenant's provider like a
    /// send, so it takes a fair share of the slots the same way: a provider that hangs on
    /// look-ups holds no more of the operator than one that hangs on sends. With the line
    /// full the Email is parked and woken when a place frees (polling instead cost two thirds
    /// of the throughput against a searchable provider); with no slot in time or the process
    /// stopping it comes back later.
    async fn look_up(&self, p: &Prepared) -> Result<LookupAnswer, Action> {
        let Some(place) = self.reserve_or_park(p) else {
            return Err(Action::requeue(super::act::parked_fallback()));
        };
        let Some(slot) = self.wait_in_line(place).await else {
            return Err(Action::requeue(super::act::slot_retry()));
        };
        let answer = p.provider.look_up(&p.message, LOOKUP_TIMEOUT).await;
        if matches!(answer, LookupAnswer::Absent) {
            // The send follows: it keeps this slot rather than queue behind every Email
            // parked meanwhile.
            slot.keep_for(&self.id);
        }
        let result = match &answer {
            LookupAnswer::Found { .. } => "found",
            LookupAnswer::Absent => "absent",
            LookupAnswer::Failed(_) => "failed",
        };
        tracing::info!(email = %self.id, sender = %p.sender.key, result, "asked the provider whether it has the message");
        self.ctx
            .metrics
            .provider_lookups
            .get_or_create(&LookupLabels {
                provider: p.provider.kind().to_string(),
                result: result.into(),
            })
            .inc();
        Ok(answer)
    }

    /// Before the first send of a delivery the ledger does not know: `None` to go on and
    /// send through `p`, or what was done instead (recovered from a provider, or waiting
    /// because one could not be asked or its record has not settled). Every sender of the
    /// chain that can be searched is asked, each for its own message: the earlier message
    /// may have gone out through any of them (a fail-over in a cluster rebuilt since). A
    /// delivery this process found absent once is not asked about again (a rate limit or a
    /// busy slot may send it back here many times).
    pub(super) async fn ask_before_first_send(
        &self,
        g: &Gathered,
        p: &Prepared,
        token: Option<&str>,
    ) -> Result<Option<Action>, kube::Error> {
        let key = p.message.delivery_key.clone().unwrap_or_default();
        if self.ctx.sends.known_absent(&key) {
            return Ok(None);
        }
        let mut chain: Vec<Asked> = g
            .chain
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let lookup = g.readiness.lookups.get(i).cloned().unwrap_or(Lookup::Off);
                Asked::new(s.key.clone(), lookup)
            })
            .collect();
        let moment = Moment::FirstSend {
            waiting_until: decide::awaiting_record_until(&self.status, &p.message.delivery_hash),
        };
        let now = Timestamp::now();
        let mut next = decide::before_send(&chain, p.position, moment, now);
        // The other senders asked, ready (the one sending now is `p`).
        let mut others: Vec<Prepared> = Vec::new();
        if next == BeforeSend::LookUp {
            let mut asks: Vec<usize> = Vec::new();
            for (i, asked) in chain.iter_mut().enumerate() {
                if !asked.lookup.searched() || asked.answer.is_some() {
                    continue;
                }
                if i == p.position {
                    asks.push(i);
                    continue;
                }
                match self.prepare_at(g, i) {
                    Some(Ok(q)) => {
                        others.push(q);
                        asks.push(i);
                    }
                    // A sender that would have to be asked but can not be (its Secret is
                    // missing, its endpoint not allowed): a failed look-up, never a blind send.
                    Some(Err(problem)) => {
                        asked.answer = Some(LookupAnswer::Failed(format!(
                            "can not be asked: {}",
                            problem.message
                        )));
                    }
                    None => asked.lookup = Lookup::Off,
                }
            }
            let of = |i: usize| -> &Prepared {
                if i == p.position {
                    p
                } else {
                    others.iter().find(|q| q.position == i).unwrap_or(p)
                }
            };
            let answers =
                futures::future::join_all(asks.iter().map(|&i| self.look_up(of(i)))).await;
            for (i, answer) in asks.into_iter().zip(answers) {
                chain[i].answer = Some(match answer {
                    Ok(answer) => answer,
                    Err(come_back) => return Ok(Some(come_back)),
                });
            }
            next = decide::before_send(&chain, p.position, moment, now);
        }
        match next {
            BeforeSend::Send => {
                self.ctx.sends.note_absent(&key);
                Ok(None)
            }
            BeforeSend::Recovered {
                position,
                message_id,
            } => {
                let through = if position == p.position {
                    p
                } else {
                    match others.iter().find(|q| q.position == position) {
                        Some(q) => q,
                        None => return Ok(Some(Action::requeue(Duration::from_secs(1)))),
                    }
                };
                self.recover_first_send(through, token, &message_id)
                    .await
                    .map(Some)
            }
            BeforeSend::LookupFailed { why } => {
                let again = later(LOOKUP_RETRY);
                let status = self.delivery_status(p, token);
                self.write(self.lookup_failed(status, &why, again)).await?;
                Ok(Some(Action::requeue(LOOKUP_RETRY)))
            }
            BeforeSend::AwaitRecord { until: at } => {
                let settling: Vec<&str> = chain
                    .iter()
                    .filter(|a| !a.lookup.first_send_settling().is_zero())
                    .map(|a| a.sender.as_str())
                    .collect();
                let status = self.delivery_status(p, token);
                self.write(self.awaiting_first_send_record(status, at, &settling))
                    .await?;
                Ok(Some(Action::requeue(until(at) + Duration::from_secs(1))))
            }
            // Not answers to a first send; never a send without one.
            BeforeSend::LookUp | BeforeSend::StayUnknown => Ok(Some(Action::requeue(LOOKUP_RETRY))),
        }
    }

    /// The provider has a message this cluster never recorded (it was rebuilt from Git, or
    /// lost its ledger): the ledger gets the entry, Sent, so this Email and any that replace
    /// it recover from the ledger; then the Email is Sent.
    async fn recover_first_send(
        &self,
        p: &Prepared,
        token: Option<&str>,
        message_id: &str,
    ) -> Result<Action, kube::Error> {
        let hash = p.message.delivery_hash.as_str();
        let key = ledger::ledger_key(hash, token);
        let created = match self.claim_first(p, &key, token).await? {
            Claim::Won(created) => created,
            // Someone else made the entry meanwhile: decide again from it.
            Claim::Exists => return Ok(Action::requeue(Duration::from_secs(1))),
        };
        let outcome = EmailDeliveryStatus {
            observed_generation: created.metadata.generation,
            phase: Some(DeliveryPhase::Sent),
            reason: Some(ledger::reasons::RECOVERED_FROM_PROVIDER.into()),
            message_id: Some(message_id.to_string()),
            provider: Some(p.provider.kind()),
            attempts: Some(0),
            ..EmailDeliveryStatus::default()
        };
        // The claim made for this record is never a call: if the record is lost, the claim
        // lapses into Unknown and the provider is asked again.
        ledger::record(
            &self.deliveries,
            &ledger::entry_name(&self.name, &key),
            &outcome,
        )
        .await?;
        let status = self.delivery_status(p, token);
        self.write(self.recovered_from_provider(status, message_id))
            .await?;
        Ok(Action::await_change())
    }

    /// An Unknown delivery (`entry_name`) through `p`'s sender, whose provider can be asked:
    /// Sent if it has the message, sent again once its record is complete and it does not,
    /// Retrying while it can not be asked, Unknown where nobody can tell.
    pub(super) async fn resolve(
        &self,
        g: &Gathered,
        p: &Prepared,
        entry_name: &str,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let Some(entry) = self.deliveries.get_opt(entry_name).await? else {
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        if ledger::state(&entry) != EntryState::Unknown {
            return self.follow_entry(g, p, &entry, token).await;
        }
        let empty = EmailDeliveryStatus::default();
        if entry.spec.sender_config != p.sender.key {
            // Handed to another sender than the one that can send now: only that one knows.
            let outcome = LedgerOutcome::of(&entry, &empty);
            self.write(self.mirror_unknown(&outcome, token)).await?;
            return Ok(Action::await_change());
        }
        // Already told to wait for the provider's record: a reconcile meanwhile (a sender's
        // status, a resync) does not ask again before then.
        if let Some(next) = self.status.next_attempt_time.as_ref().map(|t| t.0)
            && next > Timestamp::now()
            && status::current_reason(self.email).as_deref()
                == Some(status::reasons::AWAITING_PROVIDER_RECORD)
        {
            return Ok(Action::requeue(until(next) + Duration::from_secs(1)));
        }
        let handed_over = ledger::handed_over_by(&entry)
            .or(self.status.last_attempt_time.as_ref().map(|t| t.0))
            .unwrap_or_else(Timestamp::now);
        // Only the sender that was handed the message can have it.
        let moment = Moment::AfterAmbiguous { handed_over };
        let mut asked = [Asked::new(p.sender.key.clone(), p.lookup())];
        let now = Timestamp::now();
        let mut next = decide::before_send(&asked, 0, moment, now);
        if next == BeforeSend::LookUp {
            match self.look_up(p).await {
                Ok(answer) => asked[0].answer = Some(answer),
                Err(come_back) => return Ok(come_back),
            }
            next = decide::before_send(&asked, 0, moment, now);
        }
        let mut status = self.delivery_status(p, token);
        status.attempts = entry.status.as_ref().and_then(|s| s.attempts);
        match next {
            BeforeSend::Recovered { message_id, .. } => {
                if !ledger::mark_recovered(&self.deliveries, &entry, &message_id).await? {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                self.ctx.sends.recorded(entry_name);
                self.write(self.recovered_from_provider(status, &message_id))
                    .await?;
                Ok(Action::await_change())
            }
            BeforeSend::Send => {
                // Not there: another attempt, within the sender's retry budget and after its
                // backoff counted from the hand-over, so a provider that keeps answering 5xx
                // is not called in a tight loop.
                let retry = &p.sender.config.spec.retry;
                let attempts = status.attempts.unwrap_or(1);
                let next = crate::backoff::next_attempt_at(
                    handed_over,
                    crate::backoff::delay(retry, attempts, None),
                );
                let first = entry
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(handed_over, |t| t.0);
                if !retry.allows_another(attempts, first, next) {
                    let outcome = LedgerOutcome::of(&entry, &empty);
                    self.write(self.mirror_unknown(&outcome, token)).await?;
                    return Ok(Action::await_change());
                }
                tracing::info!(email = %self.id, entry = entry_name, %next, "the provider does not have the message whose outcome was unknown; sending it again");
                // Sent again only because the provider drops a repeat (Resend's key): the
                // attempt in doubt may be out, which the entry must remember.
                let in_doubt = matches!(p.lookup(), Lookup::Deduplicates(_));
                if !ledger::reopen(&self.deliveries, &entry, Some(next), in_doubt).await? {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                if next > Timestamp::now() {
                    self.write(self.resend_planned(status, next)).await?;
                    return Ok(Action::requeue(until(next) + Duration::from_millis(50)));
                }
                let fresh = self.deliveries.get(entry_name).await?;
                self.follow_entry(g, p, &fresh, token).await
            }
            BeforeSend::AwaitRecord { until: at } => {
                self.write(self.awaiting_provider_record(status, at))
                    .await?;
                Ok(Action::requeue(until(at) + Duration::from_secs(1)))
            }
            BeforeSend::LookupFailed { why } => {
                let again = later(LOOKUP_RETRY);
                self.write(self.lookup_failed(status, &why, again)).await?;
                Ok(Action::requeue(LOOKUP_RETRY))
            }
            BeforeSend::StayUnknown | BeforeSend::LookUp => {
                let outcome = LedgerOutcome::of(&entry, &empty);
                self.write(self.mirror_unknown(&outcome, token)).await?;
                Ok(Action::await_change())
            }
        }
    }
}
