//! The ledger step: recover a re-created Email, find or claim the EmailDelivery of the
//! current content, follow an existing one, and fail over along the sender chain.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use kube::runtime::reflector::ObjectRef;

use crate::api::{EmailDelivery, EmailPhase, ResendPolicy};

use super::ledger::{self, Claim, EntryState};
use super::status::{self, reasons};
use super::{Plan, Prepared, Reconcile};

impl Reconcile<'_> {
    /// An Email without status is new, or was deleted and created again (Argo CD Replace,
    /// Flux force, prune and re-add): the ledger decides, read from the API server itself
    /// whenever the cache knows an entry of this Email's name.
    pub(super) async fn recover_from_ledger(
        &self,
        plan: &Plan,
        p: &Prepared,
    ) -> Result<Option<Action>, kube::Error> {
        // Nearly every Email that gets here is new and has no entry at all. The cache shows
        // every entry but those made in the last moments (the watch's lag), so when it shows
        // none for this name the list is skipped: a label-selector list costs the API server
        // time in proportion to all entries of the namespace, once per new Email (measured with
        // benches/e2e: 25 ms of API server CPU each at 10,000 entries). A re-created Email still
        // finds its old entries in the cache and is decided by the list; the claim's atomic
        // create guards against sending the same content twice either way.
        let ns = self.namespace.as_str();
        if !self.ctx.stores.ledger.has_entries_for(ns, &self.name) {
            return Ok(None);
        }
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

    pub(super) async fn deliver(&self, plan: &Plan, p: Prepared) -> Result<Action, kube::Error> {
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
    pub(super) async fn fail_over(
        &self,
        plan: &Plan,
        p: &Prepared,
    ) -> Option<Result<Action, kube::Error>> {
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
    pub(super) async fn claim_blocked(&self, p: &Prepared) -> Option<Result<Action, kube::Error>> {
        if self.ctx.is_stopping() {
            return Some(Ok(Action::requeue(Duration::from_secs(5))));
        }
        match self.take_send_token(p) {
            Ok(()) => None,
            Err(wait) => Some(self.rate_limited(p, wait).await),
        }
    }

    pub(super) fn take_send_token(&self, p: &Prepared) -> Result<(), Duration> {
        self.ctx
            .rate_limits
            .try_acquire(&p.sender.key, p.sender.config.spec.rate_limit.as_ref())
    }

    /// Acts on an existing ledger entry.
    pub(super) async fn follow_entry(
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
}
