//! The decision as a table (each row a sentence), and as a property over random sequences of
//! what GitOps, people, providers and restarts do to an Email.

use proptest::prelude::*;

use super::*;
use crate::ledger::reasons as reasons_ledger;
use crate::problem::reasons;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    at("2026-11-29T12:00:00Z")
}

fn status(phase: Option<EmailPhase>, hash: Option<&str>, handled: Option<&str>) -> EmailStatus {
    EmailStatus {
        phase,
        delivery_hash: hash.map(str::to_string),
        last_handled_retry: handled.map(str::to_string),
        ..Default::default()
    }
}

fn facts<'a>(status: &'a EmailStatus) -> Facts<'a> {
    Facts {
        dry_run: false,
        status,
        requested_token: None,
        resend_policy: ResendPolicy::Never,
        not_after: None,
        send_at: None,
        waiting_for_sender_since: None,
        sender_retry: None,
    }
}

fn ready(hashes: &[&str]) -> Readiness {
    Readiness {
        content: None,
        hashes: hashes.iter().map(|h| h.to_string()).collect(),
        sender: Ok(0),
        sender_wait: Duration::from_secs(1800),
        ready_hash: hashes.first().map(|h| h.to_string()),
        lookup: Lookup::Off,
        lookups: hashes.iter().map(|_| Lookup::Off).collect(),
    }
}

fn entry(hash: &str, token: Option<&str>, state: EntryState) -> Entry {
    Entry {
        name: format!("e-{hash}-{}", token.unwrap_or("")),
        hash: hash.into(),
        token: token.map(str::to_string),
        state,
    }
}

fn in_flight(expires: &str) -> EntryState {
    EntryState::InFlight {
        claimed_by: "other".into(),
        attempt: 1,
        expires: Some(at(expires)),
    }
}

fn deliver(token: Option<&str>) -> Decision {
    Decision::Deliver {
        position: 0,
        token: token.map(str::to_string),
        look_up: false,
    }
}

fn secret_missing() -> Problem {
    Problem::new("SecretNotFound", "Secret shop/token does not exist")
}

#[test]
fn a_new_email_without_ledger_entries_is_delivered() {
    let s = status(None, None, None);
    assert_eq!(
        decide(&facts(&s), &ready(&["h1"]), &[], now()),
        deliver(None)
    );
}

#[test]
fn a_dry_run_on_a_sent_email_writes_the_preview_and_keeps_it_sent() {
    let s = status(Some(EmailPhase::Sent), Some("h1"), None);
    let f = Facts {
        dry_run: true,
        ..facts(&s)
    };
    // Edited in the same commit: the new content is previewed, nothing else changes.
    assert_eq!(
        decide(&f, &ready(&["h2"]), &[], now()),
        Decision::Preview {
            keep_phase: true,
            sender_problem: None,
            changed: true
        }
    );
}

#[test]
fn removing_the_dry_run_after_an_edit_of_a_sent_email_sends_nothing_under_never() {
    let s = status(Some(EmailPhase::Sent), Some("h1"), None);
    assert_eq!(
        decide(&facts(&s), &ready(&["h2"]), &[], now()),
        Decision::ChangedAfterSend { entry: None }
    );
}

#[test]
fn removing_the_dry_run_after_an_edit_sends_the_new_content_under_on_change() {
    let s = status(Some(EmailPhase::Sent), Some("h1"), None);
    let f = Facts {
        resend_policy: ResendPolicy::OnChange,
        ..facts(&s)
    };
    assert_eq!(decide(&f, &ready(&["h2"]), &[], now()), deliver(None));
}

#[test]
fn a_sent_email_with_equal_content_is_only_observed() {
    let s = status(Some(EmailPhase::Sent), Some("h1"), None);
    assert_eq!(
        decide(&facts(&s), &ready(&["h1"]), &[], now()),
        Decision::ObserveSent
    );
    // Sent through the fallback: still equal.
    assert_eq!(
        decide(&facts(&s), &ready(&["h0", "h1"]), &[], now()),
        Decision::ObserveSent
    );
}

#[test]
fn an_unknown_email_stays_unknown_when_its_sender_turns_unhealthy_or_its_template_changes() {
    let s = status(Some(EmailPhase::Unknown), Some("h1"), None);
    // The chain now starts at the fallback (another hash), or the template changed.
    for hashes in [&["hf"][..], &["h2"][..]] {
        assert_eq!(
            decide(&facts(&s), &ready(hashes), &[], now()),
            Decision::StayUnknown,
            "{hashes:?}"
        );
    }
}

#[test]
fn an_unknown_email_is_tried_again_once_per_new_token() {
    let s = status(Some(EmailPhase::Unknown), Some("h1"), Some("t1"));
    let asked = |t| Facts {
        requested_token: Some(t),
        ..facts(&s)
    };
    assert_eq!(
        decide(&asked("t1"), &ready(&["h1"]), &[], now()),
        Decision::StayUnknown,
        "a token already acted on"
    );
    assert_eq!(
        decide(&asked("t2"), &ready(&["h1"]), &[], now()),
        deliver(Some("t2"))
    );
}

#[test]
fn a_re_created_email_whose_content_was_sent_is_recovered_from_the_ledger() {
    let s = status(None, None, None);
    let ledger = [entry("h1", None, EntryState::Sent)];
    assert_eq!(
        decide(&facts(&s), &ready(&["h1"]), &ledger, now()),
        Decision::Recover {
            entry: ledger[0].name.clone()
        }
    );
}

#[test]
fn a_re_created_email_with_other_content_is_changed_after_send_under_never_and_sent_under_on_change()
 {
    let s = status(None, None, None);
    let ledger = [entry("h1", None, EntryState::Sent)];
    assert_eq!(
        decide(&facts(&s), &ready(&["h2"]), &ledger, now()),
        Decision::ChangedAfterSend {
            entry: Some(ledger[0].name.clone())
        }
    );
    let f = Facts {
        resend_policy: ResendPolicy::OnChange,
        ..facts(&s)
    };
    assert_eq!(decide(&f, &ready(&["h2"]), &ledger, now()), deliver(None));
}

#[test]
fn a_re_created_email_waits_for_a_send_of_other_content_still_in_flight_under_never() {
    let s = status(None, None, None);
    let ledger = [entry("h1", None, in_flight("2026-11-29T12:01:00Z"))];
    assert_eq!(
        decide(&facts(&s), &ready(&["h2"]), &ledger, now()),
        Decision::Wait(IN_FLIGHT_RECHECK)
    );
    // Its own content in flight is the delivery's to follow.
    assert_eq!(
        decide(&facts(&s), &ready(&["h1"]), &ledger, now()),
        deliver(None)
    );
    // A lapsed claim of other content: its process died mid-call, so that content may be out.
    // Under Never it becomes Unknown, and the new content is not sent.
    let lapsed = [entry("h1", None, in_flight("2026-11-29T11:00:00Z"))];
    assert_eq!(
        decide(&facts(&s), &ready(&["h2"]), &lapsed, now()),
        Decision::SettleLapsed {
            entry: lapsed[0].name.clone()
        }
    );
    // So is a claim that names no expiry (the delivery itself counts it as lapsed).
    let no_expiry = [entry(
        "h1",
        None,
        EntryState::InFlight {
            claimed_by: "other".into(),
            attempt: 1,
            expires: None,
        },
    )];
    assert_eq!(
        decide(&facts(&s), &ready(&["h2"]), &no_expiry, now()),
        Decision::SettleLapsed {
            entry: no_expiry[0].name.clone()
        }
    );
    // A live claim elsewhere beside a lapsed one: wait for the live one first.
    let both = [
        entry("h1", None, in_flight("2026-11-29T11:00:00Z")),
        entry("h3", None, in_flight("2026-11-29T12:01:00Z")),
    ];
    assert_eq!(
        decide(&facts(&s), &ready(&["h2"]), &both, now()),
        Decision::Wait(IN_FLIGHT_RECHECK)
    );
    // Under OnChange, other content's fate does not hold the new content back.
    let f = Facts {
        resend_policy: ResendPolicy::OnChange,
        ..facts(&s)
    };
    assert_eq!(decide(&f, &ready(&["h2"]), &lapsed, now()), deliver(None));
}

#[test]
fn a_claim_of_this_content_through_another_sender_is_waited_for_or_settled_first() {
    // The call went out through the primary ("h1"); the chain now starts at the fallback
    // ("h2"), and the gathered hashes hold the primary's too.
    let s = status(None, None, None);
    let through_fallback = Readiness {
        sender: Ok(0),
        ..ready(&["h2", "h1"])
    };
    for policy in [ResendPolicy::Never, ResendPolicy::OnChange] {
        let f = Facts {
            resend_policy: policy,
            ..facts(&s)
        };
        let live = [entry("h1", None, in_flight("2026-11-29T12:01:00Z"))];
        assert_eq!(
            decide(&f, &through_fallback, &live, now()),
            Decision::Wait(IN_FLIGHT_RECHECK),
            "{policy:?}"
        );
        let lapsed = [entry("h1", None, in_flight("2026-11-29T11:00:00Z"))];
        assert_eq!(
            decide(&f, &through_fallback, &lapsed, now()),
            Decision::SettleLapsed {
                entry: lapsed[0].name.clone()
            },
            "{policy:?}"
        );
    }
}

#[test]
fn a_re_created_email_whose_delivery_is_unknown_stays_unknown_until_a_new_token() {
    let s = status(None, None, None);
    let ledger = [entry("h1", None, EntryState::Unknown)];
    assert_eq!(
        decide(&facts(&s), &ready(&["h1"]), &ledger, now()),
        Decision::MirrorUnknown {
            entry: ledger[0].name.clone()
        }
    );
    // Under Never also after an edit.
    assert_eq!(
        decide(&facts(&s), &ready(&["h2"]), &ledger, now()),
        Decision::MirrorUnknown {
            entry: ledger[0].name.clone()
        }
    );
    let f = Facts {
        requested_token: Some("t1"),
        ..facts(&s)
    };
    assert_eq!(
        decide(&f, &ready(&["h1"]), &ledger, now()),
        deliver(Some("t1"))
    );
}

#[test]
fn a_preview_needs_no_working_sender_and_names_its_problem() {
    let s = status(None, None, None);
    let f = Facts {
        dry_run: true,
        ..facts(&s)
    };
    let r = Readiness {
        sender: Err(secret_missing()),
        ..ready(&["h1"])
    };
    assert_eq!(
        decide(&f, &r, &[], now()),
        Decision::Preview {
            keep_phase: false,
            sender_problem: Some(secret_missing()),
            changed: false
        }
    );
    // Without the dry run the same problem fails the Email.
    assert_eq!(
        decide(&facts(&s), &r, &[], now()),
        Decision::Fail(secret_missing())
    );
}

fn resting(phase: EmailPhase, reason: &str, handled: Option<&str>) -> EmailStatus {
    let mut s = status(Some(phase), Some("h1"), handled);
    s.sender_config = Some("mail/smtp".into());
    s.conditions = vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "Ready".into(),
        status: "False".into(),
        reason: reason.into(),
        message: String::new(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()),
        observed_generation: None,
    }];
    s
}

#[test]
fn a_retry_token_on_the_sender_retries_its_unknown_and_exhausted_emails_once() {
    let r = ready(&["h1"]);
    fn via(s: &EmailStatus) -> Facts<'_> {
        Facts {
            sender_retry: Some("mail/smtp=t1".into()),
            ..facts(s)
        }
    }
    let composite = Some("+sender:mail/smtp=t1");
    for (phase, reason) in [
        (EmailPhase::Unknown, reasons_ledger::OUTCOME_UNKNOWN),
        (EmailPhase::Failed, reasons_ledger::RETRIES_EXHAUSTED),
    ] {
        let s = resting(phase, reason, None);
        assert_eq!(
            decide(&via(&s), &r, &[], now()),
            deliver(composite),
            "{phase:?}"
        );
        // Acted on once: the same sender token does nothing more.
        let mut done = resting(phase, reason, composite);
        done.last_handled_sender_retry = Some("mail/smtp=t1".into());
        let d = decide(&via(&done), &r, &[], now());
        assert!(
            !matches!(d, Decision::Deliver { ref token, .. } if token.as_deref() != composite),
            "{phase:?}: {d:?}"
        );
        if phase == EmailPhase::Unknown {
            assert_eq!(d, Decision::StayUnknown);
        }
    }
    // A rejection is no failure another attempt cures: the sender's token leaves it alone.
    let rejected = resting(EmailPhase::Failed, reasons_ledger::PROVIDER_REJECTED, None);
    assert_eq!(decide(&via(&rejected), &r, &[], now()), deliver(None));
    // The Email's own token joins the sender's, and a new own token comes first.
    let own = resting(
        EmailPhase::Unknown,
        reasons_ledger::OUTCOME_UNKNOWN,
        Some("e1"),
    );
    let both = Facts {
        requested_token: Some("e1"),
        ..via(&own)
    };
    assert_eq!(
        decide(&both, &r, &[], now()),
        deliver(Some("e1+sender:mail/smtp=t1"))
    );
    let newer = Facts {
        requested_token: Some("e2"),
        ..via(&own)
    };
    assert_eq!(decide(&newer, &r, &[], now()), deliver(Some("e2")));
}

fn unhealthy() -> Problem {
    Problem::new(
        reasons::SENDER_UNHEALTHY,
        "no usable EmailSenderConfig: shop/smtp (unhealthy)",
    )
}

#[test]
fn an_unhealthy_sender_without_fallback_keeps_the_email_retrying_within_max_duration() {
    let s = status(None, None, None);
    let r = Readiness {
        sender: Err(unhealthy()),
        ..ready(&["h1"])
    };
    // First seen: the wait starts now.
    assert_eq!(
        decide(&facts(&s), &r, &[], now()),
        Decision::AwaitSender {
            problem: unhealthy(),
            until: at("2026-11-29T12:30:00Z")
        }
    );
    // Waiting since 11:45: until 12:15.
    let waiting = status(Some(EmailPhase::Retrying), None, None);
    let since = Facts {
        waiting_for_sender_since: Some(at("2026-11-29T11:45:00Z")),
        ..facts(&waiting)
    };
    assert_eq!(
        decide(&since, &r, &[], now()),
        Decision::AwaitSender {
            problem: unhealthy(),
            until: at("2026-11-29T12:15:00Z")
        }
    );
    // Waited out: Failed, saying how long it waited.
    let long_ago = Facts {
        waiting_for_sender_since: Some(at("2026-11-29T11:00:00Z")),
        ..facts(&waiting)
    };
    match decide(&long_ago, &r, &[], now()) {
        Decision::Fail(p) => {
            assert_eq!(p.reason, reasons::SENDER_UNAVAILABLE);
            assert!(p.message.contains("maxDuration"), "{p:?}");
        }
        other => panic!("{other:?}"),
    }
    // A disabled or missing sender does not recover by itself: Failed at once.
    let gone = Readiness {
        sender: Err(Problem::new(reasons::SENDER_UNAVAILABLE, "disabled")),
        ..ready(&["h1"])
    };
    assert!(matches!(
        decide(&facts(&s), &gone, &[], now()),
        Decision::Fail(_)
    ));
}

#[test]
fn a_failed_delivery_keeps_its_reason_when_the_sender_goes_bad_afterwards() {
    let failed = status(Some(EmailPhase::Failed), Some("h1"), None);
    let r = Readiness {
        sender: Err(Problem::new(reasons::SENDER_UNAVAILABLE, "disabled")),
        ..ready(&["h1"])
    };
    let exhausted = entry("h1", None, EntryState::Failed);
    assert_eq!(
        decide(&facts(&failed), &r, std::slice::from_ref(&exhausted), now()),
        Decision::MirrorFailed {
            entry: exhausted.name.clone()
        }
    );
    // Other content, or a new token, is a new delivery: the sender problem is its answer.
    let other = entry("h0", None, EntryState::Failed);
    assert!(matches!(
        decide(&facts(&failed), &r, &[other], now()),
        Decision::Fail(_)
    ));
    let asked = Facts {
        requested_token: Some("again"),
        ..facts(&failed)
    };
    assert!(matches!(
        decide(&asked, &r, &[exhausted], now()),
        Decision::Fail(_)
    ));
}

#[test]
fn a_dry_run_of_content_that_does_not_render_fails_unless_the_email_was_sent() {
    let broken = Readiness {
        content: Some(Problem::new(reasons::TEMPLATE_ERROR, "undefined variable")),
        hashes: vec![],
        sender: Ok(0),
        sender_wait: Duration::from_secs(1800),
        ready_hash: None,
        lookup: Lookup::Off,
        lookups: vec![],
    };
    let fresh = status(None, None, None);
    let f = Facts {
        dry_run: true,
        ..facts(&fresh)
    };
    assert!(matches!(decide(&f, &broken, &[], now()), Decision::Fail(_)));
    let sent = status(Some(EmailPhase::Sent), Some("h1"), None);
    let f = Facts {
        dry_run: true,
        ..facts(&sent)
    };
    assert_eq!(
        decide(&f, &broken, &[], now()),
        Decision::ChangedAfterSend { entry: None }
    );
}

#[test]
fn time_expires_and_schedules_only_what_was_not_sent() {
    let s = status(None, None, None);
    let expired = Facts {
        not_after: Some(at("2026-11-29T11:00:00Z")),
        ..facts(&s)
    };
    assert_eq!(
        decide(&expired, &ready(&["h1"]), &[], now()),
        Decision::Expired
    );
    let later = at("2026-11-30T09:00:00Z");
    let scheduled = Facts {
        send_at: Some(later),
        ..facts(&s)
    };
    assert_eq!(
        decide(&scheduled, &ready(&["h1"]), &[], now()),
        Decision::Scheduled(later)
    );
    // A re-created Email past notAfter whose content went out is Sent, not Expired.
    let ledger = [entry("h1", None, EntryState::Sent)];
    assert!(matches!(
        decide(&expired, &ready(&["h1"]), &ledger, now()),
        Decision::Recover { .. }
    ));
}

#[test]
fn a_token_on_an_email_under_way_or_sent_is_not_acted_on() {
    for phase in [EmailPhase::Retrying, EmailPhase::Sent, EmailPhase::Pending] {
        let s = status(Some(phase), Some("h1"), None);
        let f = Facts {
            requested_token: Some("t1"),
            ..facts(&s)
        };
        assert_eq!(token_in_effect(&f), None, "{phase:?}");
    }
}

// ---- the property ----------------------------------------------------------------------

/// What can happen to one Email between two reconciles.
#[derive(Clone, Debug)]
enum Event {
    /// A commit changes the content (0..3) or only labels (content stays).
    Edit(u8),
    DryRun(bool),
    /// `kmailops.io/retry` set to this value.
    Token(u8),
    /// Deleted and created again (Argo CD Replace, Flux prune and re-add).
    Recreate,
    /// The primary sender turns healthy or unhealthy (then the chain starts at the fallback).
    PrimaryHealthy(bool),
    /// A reconcile; a provider call in it answers so.
    Reconcile(Answer),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Accepted,
    /// 5xx before hand-over: nothing delivered, retried.
    Transient,
    /// Timeout after hand-over: maybe delivered.
    Ambiguous,
    /// The process died during the call: maybe delivered, and the entry's claim lapses with
    /// nobody left to record an outcome.
    Crash,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u8..3).prop_map(Event::Edit),
        any::<bool>().prop_map(Event::DryRun),
        (0u8..3).prop_map(Event::Token),
        Just(Event::Recreate),
        any::<bool>().prop_map(Event::PrimaryHealthy),
        prop_oneof![
            Just(Answer::Accepted),
            Just(Answer::Transient),
            Just(Answer::Ambiguous),
            Just(Answer::Crash)
        ]
        .prop_map(Event::Reconcile),
        Just(Event::Reconcile(Answer::Accepted)),
    ]
}

/// The world around the decision, as `act` and the ledger change it.
#[derive(Debug)]
struct World {
    policy: ResendPolicy,
    content: u8,
    dry_run: bool,
    token: Option<String>,
    primary_healthy: bool,
    status: EmailStatus,
    ledger: Vec<Entry>,
    /// Provider calls that may have delivered, by (hash, token).
    maybe_delivered: Vec<(String, Option<String>)>,
    accepted: Vec<String>,
    /// Index in `maybe_delivered` of the first accepted call.
    first_accepted: Option<usize>,
}

impl World {
    fn hashes(&self) -> Vec<String> {
        let mut senders = vec!["fallback"];
        if self.primary_healthy {
            senders.insert(0, "primary");
        }
        // Gathering also hashes the content through senders the Email may have gone out
        // through before (the status's, the ledger's), after the chain.
        if !self.primary_healthy {
            senders.push("primary");
        }
        senders
            .iter()
            .map(|s| format!("{}-{s}", self.content))
            .collect()
    }

    fn reconcile(&mut self, answer: Answer) -> Decision {
        let hashes = self.hashes();
        let ready = Readiness {
            content: None,
            hashes: hashes.clone(),
            sender: Ok(0),
            sender_wait: Duration::from_secs(1800),
            ready_hash: hashes.first().cloned(),
            lookup: Lookup::Off,
            lookups: hashes.iter().map(|_| Lookup::Off).collect(),
        };
        let f = Facts {
            dry_run: self.dry_run,
            status: &self.status,
            requested_token: self.token.as_deref(),
            resend_policy: self.policy,
            not_after: None,
            send_at: None,
            waiting_for_sender_since: None,
            sender_retry: None,
        };
        let d = decide(&f, &ready, &self.ledger, now());
        match &d {
            Decision::Wait(_) | Decision::ObserveSent | Decision::StayUnknown => {}
            Decision::Expired
            | Decision::Scheduled(_)
            | Decision::Fail(_)
            | Decision::AwaitSender { .. }
            | Decision::MirrorFailed { .. }
            | Decision::Resolve { .. } => {
                unreachable!("no time, no problems, no look-ups in this world: {d:?}")
            }
            Decision::Preview { keep_phase, .. } => {
                self.status.preview = Some(Default::default());
                if !keep_phase {
                    self.status.phase = Some(EmailPhase::Previewed);
                }
            }
            Decision::ChangedAfterSend { entry } => {
                if let Some(name) = entry {
                    self.mirror(name);
                }
                self.status.phase = Some(EmailPhase::Sent);
            }
            Decision::Recover { entry } | Decision::MirrorUnknown { entry } => self.mirror(entry),
            Decision::SettleLapsed { entry } => {
                let name = entry.clone();
                self.mark_unknown(&name);
                self.mirror(&name);
            }
            Decision::Deliver {
                position, token, ..
            } => {
                let hash = hashes[*position].clone();
                self.deliver(hash, token.clone(), answer);
            }
        }
        d
    }

    /// As the ledger does for a lapsed claim.
    fn mark_unknown(&mut self, name: &str) {
        if let Some(e) = self.ledger.iter_mut().find(|e| e.name == name) {
            e.state = EntryState::Unknown;
        }
    }

    fn mirror(&mut self, name: &str) {
        let e = self.ledger.iter().find(|e| e.name == name).unwrap().clone();
        self.status.phase = Some(match e.state {
            EntryState::Sent => EmailPhase::Sent,
            EntryState::Unknown => EmailPhase::Unknown,
            _ => EmailPhase::Failed,
        });
        self.status.delivery_hash = Some(e.hash.clone());
        self.status.message_id = (e.state == EntryState::Sent).then(|| e.name.clone());
    }

    /// `act`: follow or claim the entry of (hash, token), call the provider when it may.
    fn deliver(&mut self, hash: String, token: Option<String>, answer: Answer) {
        let name = format!("{hash}/{}", token.as_deref().unwrap_or(""));
        self.status.last_handled_retry = token.clone();
        self.status.delivery_hash = Some(hash.clone());
        let existing = self.ledger.iter().position(|e| e.name == name);
        let call = match existing.map(|i| self.ledger[i].state.clone()) {
            None => true,
            Some(EntryState::Waiting { .. }) => true,
            Some(EntryState::Sent) => {
                self.mirror(&name);
                false
            }
            Some(EntryState::Unknown) | Some(EntryState::Failed) => {
                self.mirror(&name);
                false
            }
            // Every claim in this world is one a crash left behind, lapsed: the delivery
            // marks it Unknown (`act::follow_entry`).
            Some(EntryState::InFlight { .. }) => {
                self.mark_unknown(&name);
                self.mirror(&name);
                false
            }
        };
        if !call {
            return;
        }
        let state = match answer {
            Answer::Accepted => EntryState::Sent,
            Answer::Ambiguous => EntryState::Unknown,
            Answer::Transient => EntryState::Waiting {
                attempts: 1,
                next_attempt: None,
            },
            Answer::Crash => EntryState::InFlight {
                claimed_by: "a process that died".into(),
                attempt: 1,
                expires: Some(at("2026-11-29T11:00:00Z")),
            },
        };
        if answer == Answer::Crash {
            // Claimed and handed over, then nothing: no outcome, no status write.
            self.maybe_delivered.push((hash.clone(), token.clone()));
            match existing {
                Some(i) => self.ledger[i].state = state,
                None => self.ledger.push(Entry {
                    name,
                    hash,
                    token,
                    state,
                }),
            }
            return;
        }
        if answer != Answer::Transient {
            self.maybe_delivered.push((hash.clone(), token.clone()));
        }
        if answer == Answer::Accepted {
            self.first_accepted
                .get_or_insert(self.maybe_delivered.len() - 1);
            self.accepted.push(hash.clone());
        }
        match existing {
            Some(i) => self.ledger[i].state = state,
            None => self.ledger.push(Entry {
                name: name.clone(),
                hash,
                token,
                state,
            }),
        }
        self.status.phase = Some(match answer {
            Answer::Accepted => EmailPhase::Sent,
            Answer::Ambiguous | Answer::Crash => EmailPhase::Unknown,
            Answer::Transient => EmailPhase::Retrying,
        });
        self.status.message_id = (answer == Answer::Accepted).then(|| name.clone());
    }
}

fn run(policy: ResendPolicy, events: &[Event]) -> Result<(), TestCaseError> {
    let mut w = World {
        policy,
        content: 0,
        dry_run: false,
        token: None,
        primary_healthy: true,
        status: EmailStatus::default(),
        ledger: Vec::new(),
        maybe_delivered: Vec::new(),
        accepted: Vec::new(),
        first_accepted: None,
    };
    for (step, ev) in events.iter().enumerate() {
        let before = w.status.clone();
        let handled = w.status.last_handled_retry.clone();
        match ev {
            Event::Edit(c) => w.content = *c,
            Event::DryRun(on) => w.dry_run = *on,
            Event::Token(t) => w.token = Some(format!("t{t}")),
            Event::Recreate => w.status = EmailStatus::default(),
            Event::PrimaryHealthy(h) => w.primary_healthy = *h,
            Event::Reconcile(answer) => {
                let d = w.reconcile(*answer);
                let fresh_token = w.token.is_some() && w.token != handled;
                // Unknown moves only on a new token.
                if before.phase == Some(EmailPhase::Unknown) {
                    prop_assert!(
                        w.status.phase == Some(EmailPhase::Unknown) || fresh_token,
                        "step {step}: Unknown left without a token: {d:?} -> {:?}",
                        w.status.phase
                    );
                }
                // A dry run never changes a Sent Email's phase or message id.
                if w.dry_run && before.phase == Some(EmailPhase::Sent) {
                    prop_assert_eq!(w.status.phase, Some(EmailPhase::Sent), "step {}", step);
                    prop_assert_eq!(&w.status.message_id, &before.message_id, "step {}", step);
                }
            }
        }
        match policy {
            // At most one message per Email name: after an accepted send, no call at all;
            // a call that may have delivered is repeated only under a new token.
            ResendPolicy::Never => {
                if let Some(i) = w.first_accepted {
                    prop_assert_eq!(
                        w.maybe_delivered.len(),
                        i + 1,
                        "step {}: a call after the accepted one: {:?}",
                        step,
                        &w.maybe_delivered
                    );
                }
                let mut tokens: Vec<_> = w.maybe_delivered.iter().map(|(_, t)| t).collect();
                let n = tokens.len();
                tokens.sort();
                tokens.dedup();
                prop_assert_eq!(
                    tokens.len(),
                    n,
                    "step {}: two maybe-deliveries under one token",
                    step
                );
            }
            // At most one accepted message per content.
            ResendPolicy::OnChange => {
                // The content, whichever sender it went through.
                let mut accepted: Vec<&str> = w
                    .accepted
                    .iter()
                    .map(|h| h.split('-').next().unwrap_or_default())
                    .collect();
                accepted.sort();
                let n = accepted.len();
                accepted.dedup();
                prop_assert_eq!(accepted.len(), n, "step {}: content sent twice", step);
            }
        }
    }
    Ok(())
}

mod lookups;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn under_never_an_email_name_gets_at_most_one_message(events in prop::collection::vec(event(), 1..40)) {
        run(ResendPolicy::Never, &events)?;
    }

    #[test]
    fn under_on_change_each_content_is_sent_at_most_once(events in prop::collection::vec(event(), 1..40)) {
        run(ResendPolicy::OnChange, &events)?;
    }
}

/// (row, phase, dry run, sendAt, notAfter, waits first)
type PlaceRow = (
    &'static str,
    Option<EmailPhase>,
    bool,
    Option<Timestamp>,
    Option<Timestamp>,
    bool,
);

/// Which Emails wait parked before anything is gathered when their sender has no place in
/// line: only those nearly sure to send now. Anything else is gathered at once, so a preview,
/// a scheduled Email, an expired one or a retry is never held up behind a backlog.
#[test]
fn only_a_never_attempted_email_due_now_waits_for_a_place_before_gathering() {
    let before = at("2026-11-29T11:00:00Z");
    let later = at("2026-11-29T13:00:00Z");
    let rows: &[PlaceRow] = &[
        // (row, phase, dry run, sendAt, notAfter, waits first)
        ("a new Email", None, false, None, None, true),
        (
            "a Pending Email (rate limited, say)",
            Some(EmailPhase::Pending),
            false,
            None,
            None,
            true,
        ),
        (
            "a new Email whose sendAt has passed",
            None,
            false,
            Some(before),
            Some(later),
            true,
        ),
        ("a dry run", None, true, None, None, false),
        ("a scheduled Email", None, false, Some(later), None, false),
        (
            "an Email past notAfter",
            None,
            false,
            None,
            Some(before),
            false,
        ),
        (
            "notAfter exactly now",
            None,
            false,
            None,
            Some(now()),
            false,
        ),
        (
            "a retry",
            Some(EmailPhase::Retrying),
            false,
            None,
            None,
            false,
        ),
        (
            "a Sending Email (a claim to resume)",
            Some(EmailPhase::Sending),
            false,
            None,
            None,
            false,
        ),
        (
            "an Unknown Email",
            Some(EmailPhase::Unknown),
            false,
            None,
            None,
            false,
        ),
        (
            "a Failed Email",
            Some(EmailPhase::Failed),
            false,
            None,
            None,
            false,
        ),
        (
            "a Scheduled Email now due (a burst at 9:00)",
            Some(EmailPhase::Scheduled),
            false,
            Some(before),
            None,
            true,
        ),
        (
            "a Scheduled Email not yet due",
            Some(EmailPhase::Scheduled),
            false,
            Some(later),
            None,
            false,
        ),
        (
            "a Previewed Email, dry run taken off",
            Some(EmailPhase::Previewed),
            false,
            None,
            None,
            true,
        ),
        (
            "a Previewed Email, still a dry run",
            Some(EmailPhase::Previewed),
            true,
            None,
            None,
            false,
        ),
    ];
    for (row, phase, dry_run, send_at, not_after, expected) in rows {
        let s = status(*phase, None, None);
        let f = Facts {
            dry_run: *dry_run,
            send_at: *send_at,
            not_after: *not_after,
            ..facts(&s)
        };
        assert_eq!(waits_for_a_place_first(&f, now()), *expected, "{row}");
    }
}
