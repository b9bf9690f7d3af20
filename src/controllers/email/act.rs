//! Carries a decision out. Statuses go through `status::apply`; a delivery claims its ledger
//! entry, calls the provider, records the outcome in the entry and then in the Email, and moves
//! down the sender chain on auth errors and exhausted retries.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::api::{DeliveryPhase, EmailDelivery, EmailDeliveryStatus};
use crate::ledger::{self, Claim, EntryState};
use crate::metrics::{ProviderLabels, SenderLabels};
use crate::provider::{ErrorClass, SendError, SendReceipt};

use super::decide::Decision;
use super::gather::{Gathered, Prepared};
use super::outcome::{LedgerOutcome, SentVia};
use super::status::{self, Applied, Note, Update};
use super::{PROBLEM_RECHECK, Reconcile};
use crate::send_slots::{Reservation, SendPermit};

/// How long a delivery waits for a send slot before it gives the worker back. The number of
/// waiters is bounded by the slots (`send_slots`), so a stuck sender holds few workers; the
/// wait itself is long enough that a busy sender's next delivery is in line when a slot frees
/// (250 ms, with Emails coming back 2-5 s later, cost a fifth of the throughput).
pub(super) const SLOT_WAIT: Duration = Duration::from_secs(10);
/// When a delivery that got no slot comes back (plus up to three seconds, so many waiting
/// Emails do not all come back at once).
const SLOT_RETRY: Duration = Duration::from_secs(2);

/// What an entry whose provider call was cut off by the end of its process says.
const INTERRUPTED: &str = "the operator stopped while the provider call was in flight; the message may or may not have been delivered. Check the recipient's inbox or the provider's log, then set the annotation kmailops.io/retry to a new value to send once more";

/// [`SLOT_RETRY`] plus up to three seconds, so many waiting Emails do not all return at once.
pub(super) fn slot_retry() -> Duration {
    SLOT_RETRY + Duration::from_millis(rand::random::<u64>() % 3000)
}

/// When a parked delivery comes back if no freed place woke it first. Wake-ups are not lost:
/// each freed place wakes the next parked delivery and is kept for it, and a place kept for
/// one that does not come (deleted meanwhile) goes on after `send_slots::HOLD_FOR`. So this
/// is a last resort, and it is long: every parked Email came back each time it ran out, and
/// at 30 s a backlog of 10,000 Emails draining in nine minutes cost 8.7 reconciles per Email
/// instead of about 3.
pub(super) fn parked_fallback() -> Duration {
    Duration::from_secs(300) + Duration::from_millis(rand::random::<u64>() % 30_000)
}

impl Reconcile<'_> {
    pub(super) async fn act(
        &self,
        decision: Decision,
        g: &Gathered,
    ) -> Result<Action, kube::Error> {
        let token = super::decide::token_in_effect(&self.facts());
        match decision {
            Decision::Wait(after) => Ok(Action::requeue(after)),
            Decision::Preview {
                keep_phase,
                sender_problem,
                changed,
            } => {
                let Some(preview) = g.preview.clone() else {
                    return Ok(Action::requeue(PROBLEM_RECHECK));
                };
                let delivery = g.messages.iter().zip(&g.chain).find_map(|(m, s)| {
                    m.as_ref().map(|m| (m.delivery_hash.clone(), s.key.clone()))
                });
                let update = self.previewed(
                    preview,
                    delivery,
                    keep_phase,
                    changed,
                    sender_problem.as_ref(),
                );
                self.write(update).await?;
                Ok(Action::await_change())
            }
            Decision::MirrorFailed { entry } => {
                self.mirror_entry(&entry, token.as_deref(), SentVia::Delivery)
                    .await
            }
            Decision::AwaitSender { problem, until } => {
                if status::current_reason(self.email).as_deref() != Some(problem.reason) {
                    self.write(self.awaiting_sender(&problem, until)).await?;
                }
                let wait: Duration = (until - Timestamp::now()).try_into().unwrap_or_default();
                Ok(Action::requeue(wait + Duration::from_secs(1)))
            }
            Decision::ObserveSent | Decision::StayUnknown => {
                self.write(self.observe()).await?;
                Ok(Action::await_change())
            }
            Decision::ChangedAfterSend { entry: None } => {
                self.write(self.changed_after_send()).await?;
                Ok(Action::await_change())
            }
            Decision::ChangedAfterSend { entry: Some(name) } => {
                self.mirror_entry(&name, token.as_deref(), SentVia::ChangedAfterSend)
                    .await
            }
            Decision::Recover { entry } => {
                let via = if self.status.phase.is_none() {
                    SentVia::Ledger
                } else {
                    SentVia::Delivery
                };
                self.mirror_entry(&entry, token.as_deref(), via).await
            }
            Decision::MirrorUnknown { entry } => {
                self.mirror_entry(&entry, token.as_deref(), SentVia::Delivery)
                    .await
            }
            Decision::SettleLapsed { entry } => self.settle_lapsed(&entry, token.as_deref()).await,
            Decision::Expired => {
                self.write(self.expired()).await?;
                Ok(Action::await_change())
            }
            Decision::Scheduled(at) => {
                self.write(self.scheduled(at)).await?;
                let wait: Duration = (at - Timestamp::now()).try_into().unwrap_or_default();
                Ok(Action::requeue(wait + Duration::from_millis(50)))
            }
            Decision::Fail(problem) => {
                self.write(self.fail(&problem)).await?;
                Ok(Action::requeue(PROBLEM_RECHECK))
            }
            Decision::Deliver {
                position,
                token,
                look_up,
            } => {
                let Some(p) = g.ready.as_ref().filter(|p| p.position == position) else {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                };
                if look_up
                    && let Some(instead) =
                        self.ask_before_first_send(g, p, token.as_deref()).await?
                {
                    return Ok(instead);
                }
                self.deliver(g, p, token.as_deref()).await
            }
            Decision::Resolve {
                position,
                entry,
                token,
            } => {
                let Some(p) = g.ready.as_ref().filter(|p| p.position == position) else {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                };
                self.resolve(g, p, &entry, token.as_deref()).await
            }
        }
    }

    /// The one way this controller writes the Email's status (and its Event).
    pub(super) async fn write(&self, update: Update) -> Result<Applied, kube::Error> {
        status::apply(self.ctx, self.email, update).await
    }

    /// Mirrors the ledger entry `name` (read fresh: the list a decision saw is seconds old at
    /// most, but the status must show the entry as it is).
    async fn mirror_entry(
        &self,
        name: &str,
        token: Option<&str>,
        via: SentVia,
    ) -> Result<Action, kube::Error> {
        let Some(entry) = self.deliveries.get_opt(name).await? else {
            tracing::debug!(email = %self.id, entry = name, "ledger entry gone; looking again");
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        let empty = EmailDeliveryStatus::default();
        let outcome = LedgerOutcome::of(&entry, &empty);
        let update = match ledger::state(&entry) {
            EntryState::Sent => self.mirror_sent(&outcome, token, via),
            EntryState::Unknown => self.mirror_unknown(&outcome, token),
            EntryState::Failed => self.mirror_failed(&outcome, token),
            // It moved on since the decision: decide again.
            EntryState::InFlight { .. } | EntryState::Waiting { .. } => {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
        };
        self.write(update).await?;
        Ok(Action::await_change())
    }

    /// Marks the lapsed claim `name` (of other content) Unknown and mirrors it, unless the
    /// entry moved on since the decision (then the Email is decided again).
    async fn settle_lapsed(&self, name: &str, token: Option<&str>) -> Result<Action, kube::Error> {
        let Some(entry) = self.deliveries.get_opt(name).await? else {
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        let lapsed = matches!(
            ledger::state(&entry),
            EntryState::InFlight { expires, .. } if expires.is_none_or(|e| e <= Timestamp::now())
        );
        if !lapsed || !ledger::mark_unknown(&self.deliveries, &entry, INTERRUPTED).await? {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        tracing::info!(email = %self.id, entry = name, "a send of earlier content was interrupted; it may have been delivered, so it is Unknown");
        let fresh = self.deliveries.get(name).await?;
        let empty = EmailDeliveryStatus::default();
        let outcome = LedgerOutcome::of(&fresh, &empty);
        self.write(self.mirror_unknown(&outcome, token)).await?;
        Ok(Action::await_change())
    }

    async fn deliver(
        &self,
        g: &Gathered,
        p: &Prepared,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let hash = p.message.delivery_hash.as_str();
        let key = ledger::ledger_key(hash, token);
        let entry_name = ledger::entry_name(&self.name, &key);

        // An entry the watch has shown (a retry, a fail-over back, a restart) is read from the
        // API server; a new one is claimed by creating it, which also settles the case of an
        // entry made in the last moments, before the watch shows it.
        let existing = if self
            .ctx
            .stores
            .ledger
            .has_entry(&self.namespace, &entry_name)
        {
            self.deliveries.get_opt(&entry_name).await?.map(Arc::new)
        } else {
            None
        };
        let entry = match existing {
            Some(e) => e,
            None => {
                let reservation = match self.admit(p, token).await {
                    Ok(reservation) => reservation,
                    Err(instead) => return instead,
                };
                match self.claim_first(p, &key, token).await? {
                    Claim::Won(created) => {
                        return match self.slot_for_claim(p, reservation, &created).await? {
                            Ok(permit) => {
                                if let Some(key) = &p.message.delivery_key {
                                    self.ctx.sends.claimed(key);
                                }
                                self.attempt(g, p, &created, 1, token, permit).await
                            }
                            Err(instead) => Ok(instead),
                        };
                    }
                    Claim::Exists => match self.deliveries.get_opt(&entry_name).await? {
                        Some(e) => Arc::new(e),
                        // Created and deleted again in between: start over shortly.
                        None => return Ok(Action::requeue(Duration::from_secs(1))),
                    },
                }
            }
        };
        if entry.spec.email_name != self.name || entry.spec.delivery_hash != hash {
            // Names carry a hash of the whole Email name and of the content, so this is an
            // entry made by hand or by something else: never take its word for ours.
            tracing::warn!(email = %self.id, entry = %entry_name, "a ledger entry of this name belongs to another Email or content; not sending");
            let problem = crate::problem::Problem::new(
                crate::problem::reasons::INVALID_SPEC,
                format!(
                    "EmailDelivery {entry_name} exists but records another Email or content; delete it if it was created by hand"
                ),
            );
            self.write(self.fail(&problem)).await?;
            return Ok(Action::requeue(PROBLEM_RECHECK));
        }
        self.follow_entry(g, p, &entry, token).await
    }

    /// Creates the ledger entry of `p`'s delivery under `key`, claiming attempt 1 for this
    /// process (the atomic step of exactly-once).
    pub(super) async fn claim_first(
        &self,
        p: &Prepared,
        key: &str,
        token: Option<&str>,
    ) -> Result<Claim, kube::Error> {
        let new = ledger::NewEntry {
            namespace: &self.namespace,
            email_name: &self.name,
            email_uid: self.email.metadata.uid.as_deref().unwrap_or_default(),
            delivery_hash: &p.message.delivery_hash,
            key,
            sender_config: &p.sender.key,
            recipient_count: p.message.to.len() + p.message.cc.len() + p.message.bcc.len(),
            retry_token: token,
        };
        let settings = &self.ctx.settings;
        ledger::claim_new(
            &self.deliveries,
            new,
            &settings.instance_id,
            settings.claim_ttl,
        )
        .await
    }

    /// Moves on to the next sender of the chain after `p`, if there is one.
    async fn fail_over(
        &self,
        g: &Gathered,
        p: &Prepared,
        token: Option<&str>,
    ) -> Option<Result<Action, kube::Error>> {
        let next = self.prepare_from(g, p.position + 1).ok()?;
        tracing::info!(email = %self.id, from = %p.sender.key, to = %next.sender.key, "failing over to the next sender");
        status::event(
            self.ctx,
            self.email,
            Note::warning(
                "FailingOver",
                format!("{} failed; trying {}", p.sender.key, next.sender.key),
            ),
        )
        .await;
        Some(Box::pin(self.deliver(g, &next, token)).await)
    }

    /// What a new attempt needs before it is claimed: a process that is not stopping (else the
    /// successor claims it), `notAfter` still ahead, a place in line for a fair share of the
    /// send slots (else the Email comes back shortly, leaving the worker to other Emails), and
    /// room in the sender's rate limit (else the Email waits as Pending). The slot itself is
    /// waited for after the claim ([`Self::slot_for_claim`]), so no slot sits idle while the
    /// claim is written.
    async fn admit(
        &self,
        p: &Prepared,
        token: Option<&str>,
    ) -> Result<Reservation, Result<Action, kube::Error>> {
        if self.ctx.is_stopping() {
            return Err(Ok(Action::requeue(Duration::from_secs(5))));
        }
        match self.past_not_after().await {
            Ok(None) => {}
            Ok(Some(instead)) => return Err(Ok(instead)),
            Err(e) => return Err(Err(e)),
        }
        let Some(reservation) = self.reserve_or_park(p) else {
            return Err(Ok(Action::requeue(parked_fallback())));
        };
        let limit = p.sender.config.spec.rate_limit.as_ref();
        match self.ctx.rate_limits.try_acquire(&p.sender.key, limit) {
            Ok(()) => Ok(reservation),
            Err(wait) => {
                drop(reservation);
                let update = (status::current_reason(self.email).as_deref()
                    != Some(status::reasons::RATE_LIMITED))
                .then(|| self.rate_limited(p, token));
                Err(async {
                    if let Some(u) = update {
                        self.write(u).await?;
                    }
                    Ok(Action::requeue(wait + Duration::from_millis(10)))
                }
                .await)
            }
        }
    }

    /// A place in line for a send slot, or `None` with this Email parked: it is woken (a
    /// reconcile is queued) when a place frees for its sender and namespace.
    pub(super) fn reserve_or_park(&self, p: &Prepared) -> Option<Reservation> {
        let got = self
            .ctx
            .sends
            .slots
            .reserve_or_park(&self.namespace, &p.sender.key, &self.id);
        if got.is_none() {
            tracing::debug!(email = %self.id, sender = %p.sender.key, "no send slot or place in line free for this sender or namespace; parked until one frees");
        }
        got
    }

    /// `Expired` written when `notAfter` has passed (waiting in line or for a retry may have
    /// taken it past): what the reconcile does instead of sending.
    async fn past_not_after(&self) -> Result<Option<Action>, kube::Error> {
        if self.facts().not_after.is_none_or(|t| t > Timestamp::now()) {
            return Ok(None);
        }
        self.write(self.expired()).await?;
        Ok(Some(Action::await_change()))
    }

    /// The slot of a place in line, waited for at most [`SLOT_WAIT`]; `None` when none came
    /// in time or the process began stopping (before or meanwhile). A delivery still in line
    /// when stopping begins gives up at once, leaving the line: a stop waits only for the
    /// provider calls under way, never for a slot one of them holds, and starts no new call
    /// (the successor makes it).
    pub(super) async fn wait_in_line(&self, reservation: Reservation) -> Option<SendPermit> {
        if self.ctx.is_stopping() {
            return None;
        }
        tokio::select! {
            permit = reservation.wait(SLOT_WAIT) => permit.filter(|_| !self.ctx.is_stopping()),
            () = self.ctx.stopped() => None,
        }
    }

    /// The slot for attempt 1 of an entry this reconcile has just created (claimed). When none
    /// comes within [`SLOT_WAIT`], the process began stopping, or `notAfter` passed meanwhile,
    /// the unused claim is withdrawn (the entry deleted, unless it changed) so that nobody
    /// ever takes it for a send the operator was interrupted in, and the Email comes back
    /// later (or ends Expired).
    async fn slot_for_claim(
        &self,
        p: &Prepared,
        reservation: Reservation,
        created: &EmailDelivery,
    ) -> Result<Result<SendPermit, Action>, kube::Error> {
        let permit = self.wait_in_line(reservation).await;
        let expired = self
            .facts()
            .not_after
            .is_some_and(|t| t <= Timestamp::now());
        if let Some(permit) = permit
            && !expired
            && !self.ctx.is_stopping()
        {
            return Ok(Ok(permit));
        }
        tracing::debug!(email = %self.id, sender = %p.sender.key, expired, stopping = self.ctx.is_stopping(), "withdrawing an unused claim");
        if let Err(e) = ledger::withdraw_new(&self.deliveries, created).await {
            // The claim stays ours and unused: the next reconcile resumes it.
            tracing::warn!(email = %self.id, error = %e, "could not withdraw an unused claim; it is resumed later");
        }
        if expired {
            self.write(self.expired()).await?;
            return Ok(Err(Action::await_change()));
        }
        Ok(Err(Action::requeue(slot_retry())))
    }

    /// Acts on the ledger entry of this delivery.
    pub(super) async fn follow_entry(
        &self,
        g: &Gathered,
        p: &Prepared,
        entry: &EmailDelivery,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let entry_name = entry.name_any();
        if let Some(outcome) = self.ctx.sends.take_unrecorded(&entry_name) {
            // A send finished here but the API server refused the outcome then: record it now.
            if let Err(e) = ledger::record(&self.deliveries, &entry_name, &outcome).await {
                self.ctx.sends.keep_unrecorded(&entry_name, outcome);
                return Err(e);
            }
            self.ctx.sends.recorded(&entry_name);
            let fresh = self.deliveries.get(&entry_name).await?;
            return Box::pin(self.follow_entry(g, p, &fresh, token)).await;
        }
        let state = ledger::state(entry);
        tracing::debug!(email = %self.id, entry = %entry_name, ?state, "ledger entry");
        let empty = EmailDeliveryStatus::default();
        let outcome = LedgerOutcome::of(entry, &empty);
        match state {
            EntryState::Sent => {
                let via = if self.status.phase.is_none() {
                    SentVia::Ledger
                } else {
                    SentVia::Delivery
                };
                self.write(self.mirror_sent(&outcome, token, via)).await?;
                Ok(Action::await_change())
            }
            EntryState::Failed => {
                if ledger::fails_over(entry)
                    && let Some(result) = self.fail_over(g, p, token).await
                {
                    return result;
                }
                self.write(self.mirror_failed(&outcome, token)).await?;
                Ok(Action::await_change())
            }
            EntryState::Unknown => {
                self.write(self.mirror_unknown(&outcome, token)).await?;
                Ok(Action::await_change())
            }
            EntryState::InFlight {
                claimed_by,
                attempt,
                expires,
            } => {
                let settings = &self.ctx.settings;
                let ours = claimed_by == settings.instance_id;
                if self.ctx.sends.is_running(&entry_name) {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                if ours && !self.ctx.sends.called(&entry_name, attempt) {
                    return self
                        .resume_own_claim(g, p, &entry_name, attempt, token)
                        .await;
                }
                let lapsed = expires.is_none_or(|e| e <= Timestamp::now());
                if ours || lapsed {
                    // Nobody is calling the provider for this claim any more: the process died
                    // mid-call (or this one lost the task). The message may have gone out, so
                    // it is not sent again without a person asking (kmailops.io/retry).
                    if ledger::mark_unknown(&self.deliveries, entry, INTERRUPTED).await? {
                        let fresh = self.deliveries.get(&entry_name).await?;
                        let outcome = LedgerOutcome::of(&fresh, &empty);
                        self.write(self.mirror_unknown(&outcome, token)).await?;
                        Ok(Action::await_change())
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
                let reservation = match self.admit(p, token).await {
                    Ok(reservation) => reservation,
                    Err(instead) => return instead,
                };
                // A later attempt claims only once it has its slot: the entry holds the
                // delivery's history, so an unused claim could not simply be withdrawn.
                let Some(permit) = self.wait_in_line(reservation).await else {
                    return Ok(Action::requeue(slot_retry()));
                };
                if let Some(instead) = self.past_not_after().await? {
                    return Ok(instead);
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
                    self.attempt(g, p, entry, next_no, token, permit).await
                } else {
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
            }
        }
    }

    /// A claim of this process that no call of this process has used: the API server took the
    /// claim but its answer was lost (a timeout, a dropped connection), so the reconcile that
    /// made it never called the provider. The claim is ours to use. The entry is read again
    /// first: the cache may be behind an outcome this process recorded moments ago.
    async fn resume_own_claim(
        &self,
        g: &Gathered,
        p: &Prepared,
        entry_name: &str,
        attempt: i32,
        token: Option<&str>,
    ) -> Result<Action, kube::Error> {
        let Some(fresh) = self.deliveries.get_opt(entry_name).await? else {
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        let still_ours = matches!(
            ledger::state(&fresh),
            EntryState::InFlight { ref claimed_by, attempt: a, .. }
                if *claimed_by == self.ctx.settings.instance_id && a == attempt
        );
        if !still_ours {
            return Box::pin(self.follow_entry(g, p, &fresh, token)).await;
        }
        // The claim is already made, so only the slot is waited for (the rate limit was
        // checked before the claim), and attempt 1 withdraws its claim if it gets none.
        if attempt == 1 {
            let Some(reservation) = self.reserve_or_park(p) else {
                return Ok(Action::requeue(parked_fallback()));
            };
            return match self.slot_for_claim(p, reservation, &fresh).await? {
                Ok(permit) => {
                    tracing::info!(email = %self.id, entry = entry_name, attempt, "using a claim whose answer was lost or whose slot came late");
                    self.attempt(g, p, &fresh, attempt, token, permit).await
                }
                Err(instead) => Ok(instead),
            };
        }
        let place = self.ctx.sends.slots.reserve(&self.namespace, &p.sender.key);
        let permit = match place {
            Some(place) => self.wait_in_line(place).await,
            None => None,
        };
        let Some(permit) = permit else {
            if self.ctx.is_stopping() {
                // Never used: handed back, so the successor makes this attempt instead of
                // taking it for one the operator was interrupted in.
                if let Err(e) = ledger::withdraw_next(&self.deliveries, &fresh).await {
                    tracing::warn!(email = %self.id, entry = entry_name, error = %e, "could not withdraw an unused claim");
                }
            }
            return Ok(Action::requeue(slot_retry()));
        };
        tracing::info!(email = %self.id, entry = entry_name, attempt, "using a claim whose answer was lost");
        self.attempt(g, p, &fresh, attempt, token, permit).await
    }

    /// Calls the provider for a claimed attempt and records the outcome: first in the ledger,
    /// then in the Email's status. Auth errors and exhausted retries move on to the next
    /// sender of the chain when there is one.
    async fn attempt(
        &self,
        g: &Gathered,
        p: &Prepared,
        entry: &EmailDelivery,
        attempt: i32,
        token: Option<&str>,
        permit: SendPermit,
    ) -> Result<Action, kube::Error> {
        let entry_name = entry.name_any();
        let started = Time(Timestamp::now());
        // The entry is made when the first attempt is claimed: the retry budget runs from there.
        let first_attempt = entry
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(started.0, |t| t.0);
        let result = self.call_provider(p, &entry_name, attempt).await;
        let retry = &p.sender.config.spec.retry;
        // Planned once, so the budget check and the recorded next attempt name the same time.
        let planned = std::sync::OnceLock::new();
        let next_at = |e: &SendError| {
            *planned.get_or_init(|| {
                crate::backoff::next_attempt_at(
                    Timestamp::now(),
                    crate::backoff::delay(retry, attempt, e.retry_after),
                )
            })
        };
        // Recording the outcome needs no slot: the next send may start meanwhile.
        drop(permit);
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
                if e.class == ErrorClass::Transient
                    && !e.auth
                    && retry.allows_another(attempt, first_attempt, next_at(e)) =>
            {
                let now = Timestamp::now();
                let next = next_at(e);
                let wait: Duration = (next - now).try_into().unwrap_or_default();
                (
                    EmailDeliveryStatus {
                        phase: Some(DeliveryPhase::Sending),
                        reason: None,
                        error: Some(e.message.clone()),
                        next_attempt_time: Some(Time(next)),
                        // Retried on the provider's key: the first attempt that may be out.
                        attempt_in_doubt: base
                            .attempt_in_doubt
                            .or(e.may_be_accepted.then_some(attempt)),
                        ..base
                    },
                    Action::requeue(wait),
                )
            }
            Err(e) => {
                let in_doubt = base
                    .attempt_in_doubt
                    .or(e.may_be_accepted.then_some(attempt));
                let (phase, reason) = match e.class {
                    ErrorClass::Ambiguous => {
                        (DeliveryPhase::Unknown, ledger::reasons::OUTCOME_UNKNOWN)
                    }
                    // This attempt or an earlier one may have delivered it: the failure says
                    // nothing about that, so the outcome stays unknown (and no fallback sends).
                    _ if in_doubt.is_some() => {
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
                let error = match in_doubt {
                    Some(n) if e.class != ErrorClass::Ambiguous => format!(
                        "attempt {n} may have delivered the message (its answer was lost) and the attempts repeating it on the provider's idempotency key failed: {}; check the recipient's inbox or the provider's log, then set the annotation kmailops.io/retry to a new value to send once more",
                        e.message
                    ),
                    _ => e.message.clone(),
                };
                (
                    EmailDeliveryStatus {
                        phase: Some(phase),
                        reason: Some(reason.into()),
                        error: Some(error),
                        attempt_in_doubt: in_doubt,
                        next_attempt_time: None,
                        ..base
                    },
                    Action::await_change(),
                )
            }
        };
        self.observe_attempt(p, attempt, &result, &outcome);
        self.record_outcome(&entry_name, &outcome).await?;

        let fresh_entry = EmailDelivery {
            status: Some(outcome.clone()),
            ..entry.clone()
        };
        if ledger::fails_over(&fresh_entry)
            && let Some(next) = self.fail_over(g, p, token).await
        {
            return next;
        }
        // The provider may have accepted it, and can be asked: it settles the doubt now
        // (Postmark), once its record is complete (Mailgun), or a resend is a no-op (Resend).
        if outcome.phase == Some(DeliveryPhase::Unknown) && p.lookup().resolves_unknown() {
            return Box::pin(self.resolve(g, p, &entry_name, token)).await;
        }
        let mut status = self.delivery_status(p, token);
        status.attempts = Some(attempt);
        status.last_attempt_time = Some(started);
        let update = match result {
            Ok(receipt) => self.sent(status, &outcome, &receipt),
            Err(e) => self.send_failed(status, &outcome, &e, retry),
        };
        self.write(update).await?;
        Ok(action)
    }

    /// The provider call itself (its send slot is held by the caller), within a time limit
    /// shorter than the claim.
    async fn call_provider(
        &self,
        p: &Prepared,
        entry_name: &str,
        attempt: i32,
    ) -> Result<SendReceipt, SendError> {
        // Spaced by when calls are made, not only when Emails were admitted (see rate_limit).
        let pace = self
            .ctx
            .rate_limits
            .pace(&p.sender.key, p.sender.config.spec.rate_limit.as_ref());
        if !pace.is_zero() {
            tracing::debug!(email = %self.id, sender = %p.sender.key, ?pace, "provider call paced by the sender's rate limit");
            tokio::time::sleep(pace).await;
        }
        let _running = self.ctx.sends.start_call(entry_name, attempt);
        // The claim must outlive the call: a call that outlasts it is cut off and treated as
        // ambiguous, so no other reconcile can ever see a lapsed claim of a live call. The
        // pacing wait comes out of the same budget.
        let limit = self
            .ctx
            .settings
            .claim_ttl
            .mul_f64(0.8)
            .saturating_sub(pace);
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
                may_be_accepted: false,
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
    fn observe_attempt(
        &self,
        p: &Prepared,
        attempt: i32,
        result: &Result<SendReceipt, SendError>,
        outcome: &EmailDeliveryStatus,
    ) {
        match result {
            Ok(r) => {
                tracing::info!(email = %self.id, sender = %p.sender.key, attempt, message_id = %r.message_id, "sent");
                self.ctx
                    .metrics
                    .emails_sent
                    .get_or_create(&SenderLabels {
                        sender: p.sender.key.clone(),
                        provider: p.provider.kind().to_string(),
                    })
                    .inc();
                self.ctx.record_send(&p.sender.key, None);
            }
            Err(e) => {
                // Counted in emails_failed_total when the Email comes to rest (`status::apply`),
                // not per attempt: a retried or failed-over attempt is no failed Email.
                tracing::warn!(email = %self.id, sender = %p.sender.key, attempt, class = ?e.class, retry_after = ?e.retry_after, reason = ?outcome.reason, error = %e.message, "send failed");
                // A shared sender's status is read by its owners, not by the tenant whose
                // Email failed: the error (which may name a recipient) stays on the Email.
                let shown = if p.sender.namespace == self.namespace {
                    e.message.clone()
                } else {
                    format!(
                        "a send for an Email of another namespace failed ({}); its status has the details",
                        e.class
                    )
                };
                self.ctx.record_send(&p.sender.key, Some(shown));
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
                Ok(()) => {
                    self.ctx.sends.recorded(entry_name);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(email = %self.id, entry = entry_name, error = %e, "recording the delivery outcome failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
        self.ctx.sends.keep_unrecorded(entry_name, outcome.clone());
        ledger::record(&self.deliveries, entry_name, outcome).await?;
        self.ctx.sends.take_unrecorded(entry_name);
        self.ctx.sends.recorded(entry_name);
        Ok(())
    }
}
