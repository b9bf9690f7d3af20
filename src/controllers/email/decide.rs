//! What a reconcile of an Email does, decided from what it read, with no I/O.
//!
//! The rules of api.md in one place, in the order they apply:
//!
//! 1. The ledger speaks first for an Email that does not say Sent or Unknown itself (new,
//!    re-created by Argo CD Replace or a Flux prune and re-add, or edited mid-send): a Sent
//!    entry of the current content is recovered; under `Never` a Sent entry of any content
//!    means `ChangedAfterSend`, and a claim still in flight for other content is waited for; an
//!    Unknown entry stays Unknown until a person sets a new retry token.
//! 2. A dry run only previews. On an Email that is Sent (or Unknown) it writes the preview and
//!    keeps phase, message id and ledger; a sender problem does not stop a preview.
//! 3. Sent stays Sent: equal content is observed; changed content is `ChangedAfterSend` under
//!    `Never` and is sent once under `OnChange` (content that went out before is recovered).
//! 4. Unknown moves only on a new `kmailops.io/retry` token.
//! 5. `notAfter` passed: Expired. `sendAt` ahead: Scheduled.
//! 6. A problem (content, sender) fails the Email, naming the field and the fix.
//! 7. Otherwise: deliver through the first sender that can send now, with the token in effect;
//!    a delivery the ledger does not know yet first asks every sender of the chain that can
//!    be searched whether the message is already out (a cluster rebuilt from Git, maybe
//!    after a fail-over in the old one).
//!
//! Before a send that may repeat one the provider already has, [`before_send`] decides from
//! what the provider's look-up said: recover the message id, send, or wait and say why.
//!
//! What happens to the one ledger entry a delivery uses (claim, attempts, failover, a claim
//! whose process died) is the delivery's own state machine (`act`), driven by that entry.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{EmailPhase, EmailStatus, ResendPolicy};
use crate::ledger::EntryState;
use crate::problem::{Problem, reasons};

/// What the Email itself says (spec, annotations, status).
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub dry_run: bool,
    pub status: &'a EmailStatus,
    /// The `kmailops.io/retry` annotation, if set and not empty.
    pub requested_token: Option<&'a str>,
    pub resend_policy: ResendPolicy,
    pub not_after: Option<Timestamp>,
    pub send_at: Option<Timestamp>,
    /// The `kmailops.io/retry` annotation of the sender the Email's last attempt went
    /// through, as `namespace/name=token`.
    pub sender_retry: Option<String>,
    /// Since when the status has said the Email waits for an unhealthy sender
    /// (`Retrying`, reason `SenderUnhealthy`); `None` when it does not say so.
    pub waiting_for_sender_since: Option<Timestamp>,
}

/// What resolving and rendering produced.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// Why there is no message at all (template, attachments, addresses); `None` when there is.
    pub content: Option<Problem>,
    /// The delivery hash through each sender of the chain, in chain order. Empty when no sender
    /// could be resolved.
    pub hashes: Vec<String>,
    /// The position in the chain of the first sender that can send now (credentials loaded,
    /// client built), or why none can.
    pub sender: Result<usize, Problem>,
    /// How long an Email waits for its sender to turn healthy again before it fails: the
    /// chosen sender's `retry.maxDuration`.
    pub sender_wait: Duration,
    /// The delivery hash through the sender that can send now (the one `sender` names).
    pub ready_hash: Option<String>,
    /// What that sender's provider can be asked about messages it has (and whether its
    /// `lookup` is switched on).
    pub lookup: Lookup,
    /// The same for every sender of the chain, in chain order (`Off` where the message can
    /// not go through it): a first send asks every one that can be searched.
    pub lookups: Vec<Lookup>,
}

/// What a sender's provider can tell before a send, with the sender's `lookup` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Nothing (SES, SendGrid, MailerSend, SMTP, or `lookup.disabled`): the ledger only.
    Off,
    /// The provider drops a repeat of the same delivery key for this long (Resend). It tells
    /// nothing about a message that went out through another sender.
    Deduplicates(Duration),
    /// Searchable by the delivery key; absence counts only `settling` after a hand-over
    /// (zero for Postmark, `lookup.settlingTime` for Mailgun). `settle_first`: before a first
    /// send too, absence counts only `settling` after the first look-up
    /// (`lookup.settleFirstSends`).
    Search {
        settling: Duration,
        settle_first: bool,
    },
}

impl Lookup {
    /// The sender's look-up, from what its provider can tell and its `lookup` settings.
    pub fn of(
        recall: crate::provider::Recall,
        spec: &crate::api::sender_config::LookupSpec,
    ) -> Self {
        use crate::provider::Recall;
        match recall {
            _ if spec.disabled => Lookup::Off,
            Recall::Nothing => Lookup::Off,
            Recall::Deduplicates(window) => Lookup::Deduplicates(window),
            Recall::Searchable { settles: false } => Lookup::Search {
                settling: Duration::ZERO,
                settle_first: false,
            },
            Recall::Searchable { settles: true } => Lookup::Search {
                settling: spec.settling_time(),
                settle_first: spec.settle_first_sends,
            },
        }
    }

    /// Whether an outcome that may have been accepted can be settled without a person.
    pub fn resolves_unknown(&self) -> bool {
        !matches!(self, Lookup::Off)
    }

    /// Whether the provider is searched for the delivery key before a first send.
    pub fn searched(&self) -> bool {
        matches!(self, Lookup::Search { .. })
    }

    /// How long a first send waits after the first look-up found nothing.
    pub fn first_send_settling(&self) -> Duration {
        match self {
            Lookup::Search {
                settling,
                settle_first: true,
            } => *settling,
            _ => Duration::ZERO,
        }
    }
}

/// Where a send stands when the provider may already have the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// The first send of a delivery the ledger does not know (a new Email, or one applied
    /// again to a cluster rebuilt from Git). `waiting_until`: the Email already waits for a
    /// provider's record to settle before this first send, until then (its status says so;
    /// see [`awaiting_record_until`]).
    FirstSend { waiting_until: Option<Timestamp> },
    /// A resend after an answer that may have meant "accepted" (a 5xx, a timeout after the
    /// hand-over, an operator that stopped mid-call), made at `handed_over`.
    AfterAmbiguous { handed_over: Timestamp },
}

impl Moment {
    /// A first send that is not waiting for a record.
    pub const FIRST: Moment = Moment::FirstSend {
        waiting_until: None,
    };
}

/// One sender of the Email's chain, as a send that may repeat an earlier message sees it:
/// what its provider can tell, and what its look-up said (`None` before asking).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    /// `namespace/name`, for messages.
    pub sender: String,
    pub lookup: Lookup,
    pub answer: Option<crate::provider::LookupAnswer>,
}

impl Asked {
    pub fn new(sender: impl Into<String>, lookup: Lookup) -> Self {
        Asked {
            sender: sender.into(),
            lookup,
            answer: None,
        }
    }
}

/// What to do before a send, given what the providers said (see [`before_send`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeforeSend {
    /// Send (nothing to ask, or no provider has it).
    Send,
    /// Ask first: every sender of the chain that is searched and has no answer yet.
    LookUp,
    /// The sender at `position` of the chain has it: Sent under this id, reason
    /// `RecoveredFromProvider`, no send.
    Recovered { position: usize, message_id: String },
    /// No provider shows it yet, but a record is not complete before `until`: wait
    /// (`Retrying`, reason `AwaitingProviderRecord`), then ask again.
    AwaitRecord { until: Timestamp },
    /// A provider could not be asked: wait (`Retrying`, reason `LookupFailed`), never send
    /// blind.
    LookupFailed { why: String },
    /// Nobody can tell whether the message went out: `Unknown` until a person decides.
    StayUnknown,
}

fn after(at: Timestamp, d: Duration) -> Timestamp {
    at.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// Decides whether a send through the sender at `sending` of the Email's `chain` may go out,
/// from what each sender's provider can tell, where the send stands (`moment`), and what
/// their look-ups said.
///
/// - A first send asks every sender of the chain that can be searched (Postmark, Mailgun):
///   the earlier message may have gone out through any of them (a fail-over in a cluster
///   that was rebuilt since). Found in any is Sent through that one; a look-up that failed in
///   any never turns into a send. Resend's key only deduplicates on its own account, so a
///   Resend sender covers sends through itself only, and needs no asking.
/// - Absent is trusted at once for a first send, unless a searched sender settles first
///   sends (`lookup.settleFirstSends`): then only once its settling time has passed since
///   the first look-up, and after asking again.
/// - After an ambiguous answer only the sender that was handed the message is asked, and
///   its absence counts after the settling time (Mailgun's events arrive late). Resend drops
///   a repeat within its window, so a resend inside it needs no look-up; outside it nobody
///   can tell.
pub fn before_send(chain: &[Asked], sending: usize, moment: Moment, now: Timestamp) -> BeforeSend {
    use crate::provider::LookupAnswer;
    match moment {
        Moment::FirstSend { waiting_until } => {
            let searched: Vec<(usize, &Asked)> = chain
                .iter()
                .enumerate()
                .filter(|(_, a)| a.lookup.searched())
                .collect();
            if searched.is_empty() {
                return BeforeSend::Send;
            }
            let settling = searched
                .iter()
                .map(|(_, a)| a.lookup.first_send_settling())
                .max()
                .unwrap_or_default();
            // Already told to wait: nothing is asked before then.
            let until = |since: Timestamp| {
                let full = after(since, settling);
                waiting_until.map_or(full, |w| w.min(full))
            };
            if !settling.is_zero() && until(now) > now && waiting_until.is_some() {
                return BeforeSend::AwaitRecord { until: until(now) };
            }
            if searched.iter().any(|(_, a)| a.answer.is_none()) {
                return BeforeSend::LookUp;
            }
            for (position, a) in &searched {
                if let Some(LookupAnswer::Found { message_id }) = &a.answer {
                    return BeforeSend::Recovered {
                        position: *position,
                        message_id: message_id.clone(),
                    };
                }
            }
            for (_, a) in &searched {
                if let Some(LookupAnswer::Failed(why)) = &a.answer {
                    return BeforeSend::LookupFailed {
                        why: format!("EmailSenderConfig {}: {why}", a.sender),
                    };
                }
            }
            if settling.is_zero() || until(now) <= now {
                BeforeSend::Send
            } else {
                BeforeSend::AwaitRecord { until: until(now) }
            }
        }
        Moment::AfterAmbiguous { handed_over } => {
            let Some(asked) = chain.get(sending) else {
                return BeforeSend::StayUnknown;
            };
            match &asked.lookup {
                Lookup::Off => BeforeSend::StayUnknown,
                Lookup::Deduplicates(window) => {
                    if now < after(handed_over, *window) {
                        BeforeSend::Send
                    } else {
                        BeforeSend::StayUnknown
                    }
                }
                Lookup::Search { settling, .. } => match &asked.answer {
                    None => BeforeSend::LookUp,
                    Some(LookupAnswer::Found { message_id }) => BeforeSend::Recovered {
                        position: sending,
                        message_id: message_id.clone(),
                    },
                    Some(LookupAnswer::Failed(why)) => {
                        BeforeSend::LookupFailed { why: why.clone() }
                    }
                    Some(LookupAnswer::Absent) => {
                        // A record complete at once (Postmark) is trusted at once, whatever
                        // the clock says of the hand-over.
                        let until = after(handed_over, *settling);
                        if settling.is_zero() || now >= until {
                            BeforeSend::Send
                        } else {
                            BeforeSend::AwaitRecord { until }
                        }
                    }
                },
            }
        }
    }
}

/// Until when the Email's status says its first send of `hash` waits for a provider's record
/// (`Retrying`, reason `AwaitingProviderRecord`, `nextAttemptTime`), if it says so.
pub fn awaiting_record_until(status: &EmailStatus, hash: &str) -> Option<Timestamp> {
    if status.phase != Some(EmailPhase::Retrying) || status.delivery_hash.as_deref() != Some(hash) {
        return None;
    }
    crate::conditions::find(&status.conditions, crate::conditions::types::READY).filter(|c| {
        c.reason == crate::controllers::email::status::reasons::AWAITING_PROVIDER_RECORD
    })?;
    status.next_attempt_time.as_ref().map(|t| t.0)
}

/// One ledger entry of the Email's name, as a decision sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub name: String,
    pub hash: String,
    pub token: Option<String>,
    pub state: EntryState,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing to write now; look again after this long.
    Wait(Duration),
    /// Write the preview. `keep_phase`: the Email is Sent or Unknown and stays so; otherwise it
    /// becomes Previewed. A sender problem is named beside the preview.
    Preview {
        keep_phase: bool,
        sender_problem: Option<Problem>,
        /// A Sent Email whose content differs from what was sent: under `Never` the status says
        /// `ChangedAfterSend` now (removing the annotation changes no generation); under
        /// `OnChange` the generation stays unobserved, so the send follows the annotation's
        /// removal.
        changed: bool,
    },
    /// Sent with this content: observe the generation, nothing else.
    ObserveSent,
    /// Sent with other content under `Never`: stays Sent, says so. `entry` is the ledger entry
    /// to take the delivery from when the status does not show it (a re-created Email).
    ChangedAfterSend {
        entry: Option<String>,
    },
    /// A Sent entry of this content: the Email is Sent.
    Recover {
        entry: String,
    },
    /// An Unknown entry: the Email is Unknown.
    MirrorUnknown {
        entry: String,
    },
    /// A claim the delivery would not follow itself (other content under `Never`, or this
    /// content through another sender) whose process is gone (the claim lapsed): that send may
    /// have gone out, so the entry is marked Unknown and the Email with it; nothing more is
    /// sent without a person's token.
    SettleLapsed {
        entry: String,
    },
    /// Unknown, and nobody asked for another attempt: observe the generation only.
    StayUnknown,
    /// The delivery failed, and the ledger entry says why: the status keeps that reason
    /// (a sender problem found since does not overwrite it).
    MirrorFailed {
        entry: String,
    },
    /// Every sender that could send is unhealthy: wait (`Retrying`, `SenderUnhealthy`) until
    /// one recovers or `until` passes.
    AwaitSender {
        problem: Problem,
        until: Timestamp,
    },
    Expired,
    Scheduled(Timestamp),
    Fail(Problem),
    /// Deliver through the sender at `position` of the chain, under `token`. `look_up`: the
    /// ledger does not know this delivery and a sender of the chain can be searched, so ask
    /// them first ([`before_send`] with [`Moment::FirstSend`]).
    Deliver {
        position: usize,
        token: Option<String>,
        look_up: bool,
    },
    /// The delivery's ledger entry `entry` is Unknown and the sender at `position` can settle
    /// it: ask the provider ([`before_send`] with [`Moment::AfterAmbiguous`]).
    Resolve {
        position: usize,
        entry: String,
        token: Option<String>,
    },
}

/// How long to wait for a claim in flight elsewhere before looking again (its outcome write
/// usually wakes the Email sooner).
pub const IN_FLIGHT_RECHECK: Duration = Duration::from_secs(2);

/// Joins the Email's own token and a sender's in the token of a retry the sender asked for.
pub const SENDER_TOKEN: &str = "+sender:";

/// The part of a token the Email's own annotation gave.
fn email_part(token: &str) -> &str {
    token.split(SENDER_TOKEN).next().unwrap_or(token)
}

/// The part of a token a sender's annotation gave (`namespace/name=token`), if any.
pub fn sender_part(token: &str) -> Option<&str> {
    token.split_once(SENDER_TOKEN).map(|(_, s)| s)
}

/// The retry token a delivery of this Email uses now. A new `kmailops.io/retry` value takes
/// effect only when the Email rests in Failed or Unknown (or has no status), so a token never
/// starts a second delivery beside one that is under way or done. The Email's own token comes
/// first; a new token on the sender of its last attempt retries it when it rests after a
/// failure another attempt may cure (Unknown, RetriesExhausted), once per sender token.
pub fn token_in_effect(facts: &Facts<'_>) -> Option<String> {
    let handled = facts.status.last_handled_retry.as_deref();
    match facts.status.phase {
        None | Some(EmailPhase::Failed) | Some(EmailPhase::Unknown) => {
            let own = facts.requested_token;
            let handled_own = handled.map(email_part).filter(|t| !t.is_empty());
            if own.is_some() && own != handled_own {
                return own.map(str::to_string);
            }
            if let Some(s) = sender_retry_due(facts) {
                return Some(format!("{}{SENDER_TOKEN}{s}", own.unwrap_or_default()));
            }
            if own == handled_own {
                handled.map(str::to_string)
            } else {
                own.map(str::to_string)
            }
        }
        _ => handled.map(str::to_string),
    }
}

/// A sender token not yet acted on for this Email, when the Email rests where a retry helps.
fn sender_retry_due<'f>(facts: &'f Facts<'_>) -> Option<&'f str> {
    let s = facts.sender_retry.as_deref()?;
    if facts.status.last_handled_sender_retry.as_deref() == Some(s) {
        return None;
    }
    let reason = crate::conditions::find(&facts.status.conditions, crate::conditions::types::READY)
        .map(|c| c.reason.as_str());
    let retryable = match facts.status.phase {
        Some(EmailPhase::Unknown) => true,
        Some(EmailPhase::Failed) => matches!(
            reason,
            Some(crate::ledger::reasons::RETRIES_EXHAUSTED)
                | Some(crate::ledger::reasons::OUTCOME_UNKNOWN)
        ),
        _ => false,
    };
    retryable.then_some(s)
}

/// Whether the decision reads the ledger entries of the Email's name (so they are listed only
/// then): not for a Sent Email, nor for an Unknown one that nobody asked to try again.
pub fn needs_ledger(facts: &Facts<'_>) -> bool {
    match facts.status.phase {
        Some(EmailPhase::Sent) => facts.resend_policy == ResendPolicy::OnChange,
        Some(EmailPhase::Unknown) => new_token(facts),
        _ => true,
    }
}

/// [`needs_ledger`], and for an Unknown Email also when its sender's provider can be asked:
/// the ledger entry is what it settles.
pub fn reads_ledger(facts: &Facts<'_>, ready: &Readiness) -> bool {
    needs_ledger(facts)
        || (facts.status.phase == Some(EmailPhase::Unknown)
            && !facts.dry_run
            && ready.lookup.resolves_unknown())
}

/// Whether the Email, when the send slots of its sender have no place in line left, waits
/// parked before anything is gathered: only an Email that has never been attempted and is
/// due now (new, Pending, Scheduled with `sendAt` passed, or Previewed with the dry run
/// taken off), which is nearly sure to end in a send. Rendering and building its message before
/// it has a place would be thrown away, and under a backlog of thousands that work is most
/// of the operator's. Anything else (a dry run, a retry, a scheduled Email, one past
/// `notAfter`, a status to settle) is gathered and decided at once.
pub fn waits_for_a_place_first(facts: &Facts<'_>, now: Timestamp) -> bool {
    !facts.dry_run
        && matches!(
            facts.status.phase,
            None | Some(EmailPhase::Pending)
                | Some(EmailPhase::Scheduled)
                | Some(EmailPhase::Previewed)
        )
        && facts.send_at.is_none_or(|t| t <= now)
        && facts.not_after.is_none_or(|t| t > now)
}

/// A token set that the Email has not acted on yet.
fn new_token(facts: &Facts<'_>) -> bool {
    let token = token_in_effect(facts);
    token.is_some() && token != facts.status.last_handled_retry
}

pub fn decide(facts: &Facts<'_>, ready: &Readiness, ledger: &[Entry], now: Timestamp) -> Decision {
    let phase = facts.status.phase;
    let never = facts.resend_policy == ResendPolicy::Never;
    let token = token_in_effect(facts);
    let fresh_token = new_token(facts);
    let own_state = matches!(phase, Some(EmailPhase::Sent) | Some(EmailPhase::Unknown));

    // 1. The ledger, for an Email whose status does not tell, and before a token sends an
    //    Unknown Email's content again (it may have been sent under another token).
    if phase != Some(EmailPhase::Sent)
        && reads_ledger(facts, ready)
        && let Some(d) = from_ledger(facts, ready, ledger, never, &token, fresh_token, now)
    {
        return d;
    }

    // 2. A dry run previews, and changes nothing else.
    if facts.dry_run {
        if let Some(problem) = &ready.content {
            return if own_state {
                keep_own_state(facts, ready)
            } else {
                Decision::Fail(problem.clone())
            };
        }
        let changed = phase == Some(EmailPhase::Sent)
            && !facts
                .status
                .delivery_hash
                .as_ref()
                .is_some_and(|h| ready.hashes.contains(h));
        return Decision::Preview {
            keep_phase: own_state,
            sender_problem: ready.sender.as_ref().err().cloned(),
            changed,
        };
    }

    match phase {
        // 3. Sent stays Sent.
        Some(EmailPhase::Sent) => {
            let sent_hash = facts.status.delivery_hash.as_deref();
            if sent_hash.is_some_and(|h| ready.hashes.iter().any(|x| x == h)) {
                return Decision::ObserveSent;
            }
            if never {
                return if ready.hashes.is_empty() && ready.content.is_none() {
                    // No sender resolves, so the content cannot be compared; under Never
                    // nothing would be sent either way.
                    Decision::ObserveSent
                } else {
                    Decision::ChangedAfterSend { entry: None }
                };
            }
            // OnChange: the new content, once, unless it went out before (A -> B -> A).
            if let Some(e) = ledger
                .iter()
                .find(|e| e.state == EntryState::Sent && ready.hashes.contains(&e.hash))
            {
                return Decision::Recover {
                    entry: e.name.clone(),
                };
            }
        }
        // 4. Unknown moves only on a new token.
        Some(EmailPhase::Unknown) if !fresh_token => return Decision::StayUnknown,
        _ => {}
    }

    // 5. Time.
    if facts.not_after.is_some_and(|t| t <= now) {
        return Decision::Expired;
    }
    if let Some(at) = facts.send_at.filter(|t| *t > now) {
        return Decision::Scheduled(at);
    }

    // 6. Problems.
    if let Some(problem) = &ready.content {
        return Decision::Fail(problem.clone());
    }
    match &ready.sender {
        Err(problem) if problem.reason == reasons::SENDER_UNHEALTHY => {
            let since = facts.waiting_for_sender_since.unwrap_or(now);
            let until = since
                .checked_add(jiff::SignedDuration::try_from(ready.sender_wait).unwrap_or_default())
                .unwrap_or(Timestamp::MAX);
            if until > now {
                Decision::AwaitSender {
                    problem: problem.clone(),
                    until,
                }
            } else {
                Decision::Fail(Problem::new(
                    reasons::SENDER_UNAVAILABLE,
                    format!(
                        "{} (waited {} for it to recover: retry.maxDuration)",
                        problem.message,
                        humantime::format_duration(ready.sender_wait)
                    ),
                ))
            }
        }
        Err(problem) => {
            // A delivery of this content and token that failed keeps the reason it failed
            // with: the sender turning unhealthy after RetriesExhausted is no new failure.
            let failed = ledger.iter().find(|e| {
                e.state == EntryState::Failed && ready.hashes.contains(&e.hash) && e.token == token
            });
            match failed {
                Some(e) if phase == Some(EmailPhase::Failed) => Decision::MirrorFailed {
                    entry: e.name.clone(),
                },
                _ => Decision::Fail(problem.clone()),
            }
        }
        // 7. Deliver; a delivery the ledger does not know first asks every sender of the
        //    chain that can be searched (it may have gone out through any of them).
        Ok(position) => {
            let known = ledger
                .iter()
                .any(|e| Some(&e.hash) == ready.ready_hash.as_ref() && e.token == token);
            Decision::Deliver {
                position: *position,
                look_up: !known && ready.lookups.iter().any(Lookup::searched),
                token,
            }
        }
    }
}

/// A Sent or Unknown Email under a dry run whose content cannot be rendered: nothing to
/// preview, and nothing about what was sent changes.
fn keep_own_state(facts: &Facts<'_>, ready: &Readiness) -> Decision {
    match facts.status.phase {
        Some(EmailPhase::Unknown) => Decision::StayUnknown,
        _ if facts.resend_policy == ResendPolicy::Never => {
            Decision::ChangedAfterSend { entry: None }
        }
        _ => Decision::Fail(ready.content.clone().unwrap_or_else(|| {
            Problem::new(crate::problem::reasons::INVALID_SPEC, "nothing to render")
        })),
    }
}

fn from_ledger(
    facts: &Facts<'_>,
    ready: &Readiness,
    ledger: &[Entry],
    never: bool,
    token: &Option<String>,
    fresh_token: bool,
    now: Timestamp,
) -> Option<Decision> {
    let current = |e: &Entry| ready.hashes.contains(&e.hash);
    // A token the ledger already carries was acted on, if not by this object then by the one
    // it replaced (status is lost with a re-create; the ledger is not).
    let fresh_token = fresh_token
        && !ledger
            .iter()
            .any(|e| e.token.is_some() && e.token == *token);
    let sent = |e: &&Entry| e.state == EntryState::Sent;
    if let Some(e) = ledger.iter().filter(sent).find(|e| current(e)) {
        return Some(Decision::Recover {
            entry: e.name.clone(),
        });
    }
    if never && let Some(e) = ledger.iter().find(sent) {
        return Some(Decision::ChangedAfterSend {
            entry: Some(e.name.clone()),
        });
    }
    // A claim in flight that the delivery would not follow itself: for other content (the
    // Email was edited, or deleted and re-created, during a send), or for this content through
    // another sender (the chain moved on, to a fallback, while the call was out). Under Never
    // any such claim decides; under OnChange one of the current content and token does. Wait
    // for it while its claim is live; once it lapsed (its process died mid-call) it may have
    // been delivered, so it becomes Unknown. A claim without an expiry counts as lapsed, as
    // the delivery itself counts it.
    let own_hash = ready
        .sender
        .as_ref()
        .ok()
        .and_then(|&p| ready.hashes.get(p));
    let own = |e: &Entry| Some(&e.hash) == own_hash && e.token == *token;
    let elsewhere = |e: &&Entry| {
        matches!(e.state, EntryState::InFlight { .. })
            && !own(e)
            && (never || (current(e) && e.token == *token))
    };
    let lapsed = |e: &&Entry| match &e.state {
        EntryState::InFlight { expires, .. } => expires.is_none_or(|x| x <= now),
        _ => false,
    };
    if ledger.iter().filter(elsewhere).any(|e| !lapsed(&e)) {
        return Some(Decision::Wait(IN_FLIGHT_RECHECK));
    }
    if let Some(e) = ledger.iter().filter(elsewhere).find(lapsed) {
        return Some(Decision::SettleLapsed {
            entry: e.name.clone(),
        });
    }
    // Unknown may have been delivered: it moves only when a person sets a new token. Under
    // Never that holds for any content of this name; under OnChange for the current content.
    // Where the sender that can send now went through it and its provider can be asked,
    // the provider settles it instead (not in a dry run, which never sends).
    if !fresh_token
        && let Some(e) = ledger
            .iter()
            .filter(|e| e.state == EntryState::Unknown)
            .find(|e| never || (current(e) && e.token == *token))
    {
        if let Ok(position) = ready.sender
            && !facts.dry_run
            && ready.lookup.resolves_unknown()
            && ready.ready_hash.as_ref() == Some(&e.hash)
            && e.token == *token
        {
            return Some(Decision::Resolve {
                position,
                entry: e.name.clone(),
                token: token.clone(),
            });
        }
        return Some(Decision::MirrorUnknown {
            entry: e.name.clone(),
        });
    }
    None
}

#[cfg(test)]
mod tests;
