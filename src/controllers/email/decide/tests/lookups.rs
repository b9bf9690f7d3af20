//! Asking the provider before a send: the decision's new input (what the look-up said) and
//! outcomes, as a table; and as a property over sequences of sends, answers, outages, the
//! passing of time and clusters rebuilt from Git: never two messages for one delivery key.

use proptest::prelude::*;

use super::*;
use crate::provider::LookupAnswer;

const POSTMARK: Lookup = Lookup::Search {
    settling: Duration::ZERO,
    settle_first: false,
};
const MAILGUN: Lookup = Lookup::Search {
    settling: Duration::from_secs(30 * 60),
    settle_first: false,
};
/// Mailgun with `lookup.settleFirstSends: true`.
const MAILGUN_SETTLED: Lookup = Lookup::Search {
    settling: Duration::from_secs(30 * 60),
    settle_first: true,
};
const RESEND: Lookup = Lookup::Deduplicates(Duration::from_secs(24 * 3600));

fn found(id: &str) -> LookupAnswer {
    LookupAnswer::Found {
        message_id: id.into(),
    }
}

fn failed() -> LookupAnswer {
    LookupAnswer::Failed("Postmark's message search answered 503".into())
}

fn minutes_ago(m: i64) -> Timestamp {
    now() - jiff::SignedDuration::from_mins(m)
}

fn in_minutes(m: i64) -> Timestamp {
    now() + jiff::SignedDuration::from_mins(m)
}

fn searchable(hashes: &[&str], lookup: Lookup) -> Readiness {
    Readiness {
        lookup: lookup.clone(),
        lookups: hashes.iter().map(|_| lookup.clone()).collect(),
        ..ready(hashes)
    }
}

/// One sender of a chain: what it can tell, and what its look-up said.
type Sender = (Lookup, Option<LookupAnswer>);

/// The senders of a chain, `shop/a`, `shop/b`, ..., with what each can tell and said.
fn chain(senders: &[Sender]) -> Vec<Asked> {
    senders
        .iter()
        .zip('a'..)
        .map(|((lookup, answer), name)| Asked {
            sender: format!("shop/{name}"),
            lookup: lookup.clone(),
            answer: answer.clone(),
        })
        .collect()
}

#[test]
fn before_send_table() {
    use BeforeSend::*;
    let first = Moment::FIRST;
    let ambiguous = |m| Moment::AfterAmbiguous {
        handed_over: minutes_ago(m),
    };
    let recovered = || Recovered {
        position: 0,
        message_id: "pm-1".into(),
    };
    let absent = || Some(LookupAnswer::Absent);
    #[rustfmt::skip]
    let rows: Vec<(&str, Lookup, Moment, Option<LookupAnswer>, BeforeSend)> = vec![
        ("a provider that keeps nothing: a first send just goes out",
            Lookup::Off, first, None, Send),
        ("a provider that keeps nothing: a maybe-accepted send waits for a person",
            Lookup::Off, ambiguous(1), None, StayUnknown),
        ("Resend: a first send goes out, the key makes a repeat a no-op",
            RESEND, first, None, Send),
        ("Resend: a resend within 24 h needs no look-up",
            RESEND, ambiguous(23 * 60), None, Send),
        ("Resend: after 24 h nobody can tell",
            RESEND, ambiguous(25 * 60), None, StayUnknown),
        ("Postmark: a first send asks first",
            POSTMARK, first, None, LookUp),
        ("Postmark: found before a first send is recovered, not sent",
            POSTMARK, first, Some(found("pm-1")), recovered()),
        ("Postmark: absent before a first send is sent",
            POSTMARK, first, absent(), Send),
        ("Postmark: a failed look-up never turns into a send",
            POSTMARK, first, Some(failed()), LookupFailed { why: "EmailSenderConfig shop/a: Postmark's message search answered 503".into() }),
        ("Postmark: after a 500 it asks",
            POSTMARK, ambiguous(0), None, LookUp),
        ("Postmark: after a 500, found is Sent",
            POSTMARK, ambiguous(0), Some(found("pm-1")), recovered()),
        ("Postmark: after a 500, absent is sent again at once (no settling)",
            POSTMARK, ambiguous(0), absent(), Send),
        ("Postmark: also when the hand-over bound lies ahead of the clock",
            POSTMARK, ambiguous(-1), absent(), Send),
        ("Mailgun: after a timeout, found is Sent at once",
            MAILGUN, ambiguous(1), Some(found("pm-1")), recovered()),
        ("Mailgun: absent within the settling time waits until it passes",
            MAILGUN, ambiguous(10), absent(), AwaitRecord { until: minutes_ago(10) + jiff::SignedDuration::from_mins(30) }),
        ("Mailgun: absent after the settling time is sent again",
            MAILGUN, ambiguous(31), absent(), Send),
        ("Mailgun: absent exactly at the end of the settling time is sent again",
            MAILGUN, ambiguous(30), absent(), Send),
        ("Mailgun: a failed look-up waits, also after the settling time",
            MAILGUN, ambiguous(60), Some(failed()), LookupFailed { why: "Postmark's message search answered 503".into() }),
        ("Mailgun (settleFirstSends off, the default): a first send trusts absence at once",
            MAILGUN, first, absent(), Send),
        ("Mailgun, settleFirstSends: absent at the first look-up waits settlingTime from now",
            MAILGUN_SETTLED, first, absent(), AwaitRecord { until: in_minutes(30) }),
        ("Mailgun, settleFirstSends: found at the first look-up is recovered at once",
            MAILGUN_SETTLED, first, Some(found("pm-1")), recovered()),
        ("Mailgun, settleFirstSends: a failed first look-up waits as any failed look-up",
            MAILGUN_SETTLED, first, Some(failed()), LookupFailed { why: "EmailSenderConfig shop/a: Postmark's message search answered 503".into() }),
        ("Mailgun, settleFirstSends: while the status says it waits, nothing is asked",
            MAILGUN_SETTLED, Moment::FirstSend { waiting_until: Some(in_minutes(12)) }, None, AwaitRecord { until: in_minutes(12) }),
        ("Mailgun, settleFirstSends: once the wait is over it asks again",
            MAILGUN_SETTLED, Moment::FirstSend { waiting_until: Some(minutes_ago(1)) }, None, LookUp),
        ("Mailgun, settleFirstSends: absent when asked again after the wait is sent",
            MAILGUN_SETTLED, Moment::FirstSend { waiting_until: Some(minutes_ago(1)) }, absent(), Send),
        ("Mailgun, settleFirstSends: found when asked again after the wait is recovered",
            MAILGUN_SETTLED, Moment::FirstSend { waiting_until: Some(minutes_ago(1)) }, Some(found("pm-1")), recovered()),
        ("Mailgun, settleFirstSends: a settlingTime shortened during the wait shortens it",
            Lookup::Search { settling: Duration::from_secs(120), settle_first: true }, Moment::FirstSend { waiting_until: Some(in_minutes(20)) }, None, AwaitRecord { until: in_minutes(2) }),
        ("Postmark ignores settleFirstSends: its search is complete at once",
            Lookup::Search { settling: Duration::ZERO, settle_first: true }, first, absent(), Send),
        ("settleFirstSends does not hold a resend, which waits from its hand-over as before",
            MAILGUN_SETTLED, ambiguous(31), absent(), Send),
    ];
    for (name, lookup, moment, answer, expected) in rows {
        assert_eq!(
            before_send(&chain(&[(lookup, answer)]), 0, moment, now()),
            expected,
            "{name}"
        );
    }
}

#[test]
fn a_first_send_asks_every_sender_of_the_chain_that_can_be_searched() {
    use BeforeSend::*;
    let absent = || Some(LookupAnswer::Absent);
    #[rustfmt::skip]
    let rows: Vec<(&str, Vec<Sender>, usize, BeforeSend)> = vec![
        ("Postmark primary and Postmark fallback: both are asked before the primary sends",
            vec![(POSTMARK, None), (POSTMARK, None)], 0, LookUp),
        ("one answered, one not yet: ask",
            vec![(POSTMARK, absent()), (MAILGUN, None)], 0, LookUp),
        ("absent in every one: send",
            vec![(POSTMARK, absent()), (MAILGUN, absent())], 0, Send),
        ("found in the fallback (a fail-over in the old cluster): Sent through the fallback, nothing sent",
            vec![(POSTMARK, absent()), (POSTMARK, Some(found("pm-fb")))], 0, Recovered { position: 1, message_id: "pm-fb".into() }),
        ("found in the primary while the fallback sends now (the primary is out of the chain's lead)",
            vec![(MAILGUN, Some(found("<mg-1@x>"))), (POSTMARK, absent())], 1, Recovered { position: 0, message_id: "<mg-1@x>".into() }),
        ("found in one, the other's look-up failed: the message is out, so it is Sent",
            vec![(POSTMARK, Some(failed())), (MAILGUN, Some(found("<mg-1@x>")))], 0, Recovered { position: 1, message_id: "<mg-1@x>".into() }),
        ("absent in the sender that sends, failed in a fallback: wait, never send blind",
            vec![(POSTMARK, absent()), (POSTMARK, Some(failed()))], 0, LookupFailed { why: "EmailSenderConfig shop/b: Postmark's message search answered 503".into() }),
        ("a fallback with look-ups off (or ledger-only) is skipped",
            vec![(POSTMARK, absent()), (Lookup::Off, None)], 0, Send),
        ("a sender with look-ups off that sends now: its searchable fallback is still asked",
            vec![(Lookup::Off, None), (POSTMARK, None)], 0, LookUp),
        ("a Resend fallback is not asked: its key guards sends through itself only",
            vec![(POSTMARK, absent()), (RESEND, None)], 0, Send),
        ("a Resend primary sends after its Postmark fallback says absent (the key guards the primary)",
            vec![(RESEND, None), (POSTMARK, absent())], 0, Send),
        ("a Resend primary waits while its Postmark fallback can not be asked",
            vec![(RESEND, None), (POSTMARK, Some(failed()))], 0, LookupFailed { why: "EmailSenderConfig shop/b: Postmark's message search answered 503".into() }),
        ("settleFirstSends on a Mailgun fallback holds a send through a Postmark primary",
            vec![(POSTMARK, absent()), (MAILGUN_SETTLED, absent())], 0, AwaitRecord { until: in_minutes(30) }),
        ("settleFirstSends: the longest settling time of the chain counts",
            vec![(Lookup::Search { settling: Duration::from_secs(600), settle_first: true }, absent()), (MAILGUN_SETTLED, absent())], 0, AwaitRecord { until: in_minutes(30) }),
    ];
    for (name, senders, sending, expected) in rows {
        assert_eq!(
            before_send(&chain(&senders), sending, Moment::FIRST, now()),
            expected,
            "{name}"
        );
    }
}

#[test]
fn after_an_ambiguous_answer_only_the_sender_that_was_handed_the_message_counts() {
    // Its fallback's failed look-up or absence does not matter: the hand-over went to `a`.
    let senders = chain(&[
        (POSTMARK, Some(LookupAnswer::Absent)),
        (POSTMARK, Some(failed())),
    ]);
    let moment = Moment::AfterAmbiguous {
        handed_over: minutes_ago(1),
    };
    assert_eq!(before_send(&senders, 0, moment, now()), BeforeSend::Send);
    assert_eq!(
        before_send(&senders, 1, moment, now()),
        BeforeSend::LookupFailed {
            why: "Postmark's message search answered 503".into()
        }
    );
}

#[test]
fn the_status_tells_a_first_send_how_long_it_already_waits() {
    use crate::conditions::types::READY;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let condition = |reason: &str| Condition {
        type_: READY.into(),
        status: "False".into(),
        reason: reason.into(),
        message: String::new(),
        last_transition_time: Time(now()),
        observed_generation: None,
    };
    let waiting = EmailStatus {
        phase: Some(EmailPhase::Retrying),
        delivery_hash: Some("h1".into()),
        next_attempt_time: Some(Time(in_minutes(20))),
        conditions: vec![condition("AwaitingProviderRecord")],
        ..Default::default()
    };
    assert_eq!(awaiting_record_until(&waiting, "h1"), Some(in_minutes(20)));
    // Other content (edited meanwhile) starts its own wait.
    assert_eq!(awaiting_record_until(&waiting, "h2"), None);
    // A failed look-up in between: the wait starts again (longer, never shorter).
    let failed = EmailStatus {
        conditions: vec![condition("LookupFailed")],
        ..waiting.clone()
    };
    assert_eq!(awaiting_record_until(&failed, "h1"), None);
    let sent = EmailStatus {
        phase: Some(EmailPhase::Sent),
        ..waiting
    };
    assert_eq!(awaiting_record_until(&sent, "h1"), None);
}

#[test]
fn a_sender_that_switches_look_ups_off_is_ledger_only() {
    use crate::api::sender_config::LookupSpec;
    use crate::provider::Recall;
    let off = LookupSpec {
        disabled: true,
        ..LookupSpec::default()
    };
    let on = LookupSpec::default();
    let short = LookupSpec {
        settling_time: "2s".into(),
        ..LookupSpec::default()
    };
    let settle_first = LookupSpec {
        settle_first_sends: true,
        ..LookupSpec::default()
    };
    let mailgun = Recall::Searchable { settles: true };
    let postmark = Recall::Searchable { settles: false };
    assert_eq!(Lookup::of(postmark, &off), Lookup::Off);
    assert_eq!(Lookup::of(mailgun, &off), Lookup::Off);
    assert_eq!(
        Lookup::of(Recall::Deduplicates(RESEND_WINDOW), &off),
        Lookup::Off
    );
    assert_eq!(Lookup::of(postmark, &on), POSTMARK);
    assert_eq!(Lookup::of(mailgun, &on), MAILGUN);
    assert_eq!(
        Lookup::of(mailgun, &short),
        Lookup::Search {
            settling: Duration::from_secs(2),
            settle_first: false,
        }
    );
    assert_eq!(Lookup::of(mailgun, &settle_first), MAILGUN_SETTLED);
    // Postmark's search is complete at once: nothing to settle, first send or not.
    assert_eq!(
        Lookup::of(postmark, &settle_first).first_send_settling(),
        Duration::ZERO
    );
    // Off wins over settleFirstSends.
    let both = LookupSpec {
        disabled: true,
        ..settle_first.clone()
    };
    assert_eq!(Lookup::of(mailgun, &both), Lookup::Off);
    assert_eq!(Lookup::of(Recall::Nothing, &on), Lookup::Off);
}

const RESEND_WINDOW: Duration = Duration::from_secs(24 * 3600);

#[test]
fn a_delivery_the_ledger_does_not_know_asks_a_searchable_provider_first() {
    let s = status(None, None, None);
    let ask = Decision::Deliver {
        position: 0,
        token: None,
        look_up: true,
    };
    assert_eq!(
        decide(&facts(&s), &searchable(&["h1"], POSTMARK), &[], now()),
        ask
    );
    assert_eq!(
        decide(&facts(&s), &searchable(&["h1"], MAILGUN), &[], now()),
        ask
    );
    // Resend and the ledger-only providers send at once.
    assert_eq!(
        decide(&facts(&s), &searchable(&["h1"], RESEND), &[], now()),
        deliver(None)
    );
    assert_eq!(
        decide(&facts(&s), &ready(&["h1"]), &[], now()),
        deliver(None)
    );
    // An entry of this delivery exists (a retry after a transient error): the ledger speaks.
    let waiting = entry(
        "h1",
        None,
        EntryState::Waiting {
            attempts: 1,
            next_attempt: None,
        },
    );
    let retrying = status(Some(EmailPhase::Retrying), Some("h1"), None);
    assert_eq!(
        decide(
            &facts(&retrying),
            &searchable(&["h1"], POSTMARK),
            &[waiting],
            now()
        ),
        deliver(None)
    );
    // A new token is a new delivery: asked about before it goes out.
    let failed = status(Some(EmailPhase::Failed), Some("h1"), None);
    let f = Facts {
        requested_token: Some("t1"),
        ..facts(&failed)
    };
    let old = entry("h1", None, EntryState::Failed);
    assert_eq!(
        decide(&f, &searchable(&["h1"], POSTMARK), &[old], now()),
        Decision::Deliver {
            position: 0,
            token: Some("t1".into()),
            look_up: true
        }
    );
}

#[test]
fn an_unknown_delivery_is_settled_by_a_provider_that_can_be_asked_and_waits_otherwise() {
    let unknown_entry = entry("h1", None, EntryState::Unknown);
    let resolve = Decision::Resolve {
        position: 0,
        entry: unknown_entry.name.clone(),
        token: None,
    };
    // Right after the ambiguous answer (the status says Retrying while the provider is asked),
    // and an Email that rests in Unknown from before (or was re-created).
    for phase in [Some(EmailPhase::Retrying), Some(EmailPhase::Unknown), None] {
        let s = status(phase, Some("h1"), None);
        for lookup in [POSTMARK, MAILGUN, RESEND] {
            assert!(reads_ledger(
                &facts(&s),
                &searchable(&["h1"], lookup.clone())
            ));
            assert_eq!(
                decide(
                    &facts(&s),
                    &searchable(&["h1"], lookup),
                    std::slice::from_ref(&unknown_entry),
                    now()
                ),
                resolve,
                "{phase:?}"
            );
        }
    }
    // Ledger only: Unknown waits for a person, as before.
    let s = status(Some(EmailPhase::Unknown), Some("h1"), None);
    assert!(!reads_ledger(&facts(&s), &ready(&["h1"])));
    assert_eq!(
        decide(&facts(&s), &ready(&["h1"]), &[], now()),
        Decision::StayUnknown
    );
    // A dry run never asks (it never sends either).
    let f = Facts {
        dry_run: true,
        ..facts(&s)
    };
    assert!(!reads_ledger(&f, &searchable(&["h1"], POSTMARK)));
    // Through another sender than the one that can send now: only that one could tell.
    let fresh = status(None, None, None);
    assert_eq!(
        decide(
            &facts(&fresh),
            &searchable(&["h2"], POSTMARK),
            std::slice::from_ref(&entry("h1", None, EntryState::Unknown)),
            now()
        ),
        Decision::MirrorUnknown {
            entry: unknown_entry.name.clone()
        }
    );
}

#[test]
fn a_delivery_the_ledger_does_not_know_asks_when_any_sender_of_the_chain_can_be_searched() {
    let s = status(None, None, None);
    let ask = Decision::Deliver {
        position: 0,
        token: None,
        look_up: true,
    };
    // The sender that sends now keeps nothing (or has look-ups off), its fallback is Postmark.
    let fallback_searchable = Readiness {
        lookups: vec![Lookup::Off, POSTMARK],
        ..ready(&["h1", "h2"])
    };
    assert_eq!(decide(&facts(&s), &fallback_searchable, &[], now()), ask);
    // Resend first, Postmark after: the fallback is asked, Resend's key covers the primary.
    let resend_first = Readiness {
        lookup: RESEND,
        lookups: vec![RESEND, POSTMARK],
        ..ready(&["h1", "h2"])
    };
    assert_eq!(decide(&facts(&s), &resend_first, &[], now()), ask);
    // Nothing in the chain can be searched: no look-up.
    let none = Readiness {
        lookups: vec![RESEND, Lookup::Off],
        ..ready(&["h1", "h2"])
    };
    assert_eq!(decide(&facts(&s), &none, &[], now()), deliver(None));
}

// ---- the property -------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Step {
    /// A reconcile; a send in it is accepted, accepted with the answer lost (a 500 or a
    /// timeout after the hand-over), or refused before the hand-over (the sender's retries
    /// run out: the delivery fails over to the next sender of the chain, in the same
    /// reconcile and without asking again).
    Reconcile(Send),
    /// The look-up of the sender at this position of the chain is down (true) or back.
    Outage(usize, bool),
    /// Minutes pass.
    Wait(u8),
    /// The cluster is rebuilt from Git: no status, no ledger, and the chain starts again with
    /// its primary (healthy again). For a sender that does not settle first sends, only after
    /// its last hand-over had time to show in its record (the documented limit for Mailgun;
    /// for Resend, within its 24 hours); with `settleFirstSends`, at any time.
    Rebuild,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Send {
    Accepted,
    AcceptedAnswerLost,
    NotHandedOver,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop_oneof![
            Just(Send::Accepted),
            Just(Send::AcceptedAnswerLost),
            Just(Send::NotHandedOver)
        ]
        .prop_map(Step::Reconcile),
        1 => (0usize..3, any::<bool>()).prop_map(|(i, on)| Step::Outage(i, on)),
        2 => (1u8..40).prop_map(Step::Wait),
        1 => Just(Step::Rebuild),
    ]
}

/// One provider account of the chain and what it keeps of the delivery key it gets.
struct Account {
    lookup: Lookup,
    /// How long after acceptance its search shows a message (at most the settling time).
    visible_after: Duration,
    /// It accepted the message at this time (the first time; a repeat within Resend's
    /// window is answered, not sent).
    accepted_at: Option<Timestamp>,
    outage: bool,
    last_hand_over: Option<Timestamp>,
}

/// What one cluster's ledger says of the delivery through one sender.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Record {
    Sent,
    /// Handed over at this time, outcome unknown.
    Unknown(Timestamp),
    Failed,
}

/// One Email, its sender chain, the cluster's record of it, and the clock.
struct Model {
    chain: Vec<Account>,
    now: Timestamp,
    deliveries: usize,
    /// Per sender of the chain.
    ledger: Vec<Option<Record>>,
    /// The sender that sends now.
    sending: usize,
    /// The status says the first send waits for a record until then.
    waiting_until: Option<Timestamp>,
    /// The last send failed over in the same reconcile: the next sender sends at once.
    failed_over: bool,
}

fn after(at: Timestamp, d: Duration) -> Timestamp {
    at + jiff::SignedDuration::try_from(d).unwrap()
}

impl Model {
    fn answer(&self, i: usize) -> LookupAnswer {
        let a = &self.chain[i];
        if a.outage {
            return LookupAnswer::Failed("down".into());
        }
        match a.accepted_at {
            Some(at) if self.now >= after(at, a.visible_after) => found(&format!("id-{i}")),
            _ => LookupAnswer::Absent,
        }
    }

    fn asked(&self) -> Vec<Asked> {
        self.chain
            .iter()
            .enumerate()
            .map(|(i, a)| Asked::new(format!("shop/{i}"), a.lookup.clone()))
            .collect()
    }

    /// Every searched sender without an answer gets one (what the effects do on LookUp).
    fn ask(&self, asked: &mut [Asked]) {
        for (i, a) in asked.iter_mut().enumerate() {
            if a.lookup.searched() && a.answer.is_none() {
                a.answer = Some(self.answer(i));
            }
        }
    }

    fn hand_over(&mut self, send: Send) {
        let s = self.sending;
        self.waiting_until = None;
        self.failed_over = false;
        if send == Send::NotHandedOver {
            self.ledger[s] = Some(Record::Failed);
            if s + 1 < self.chain.len() {
                self.sending = s + 1;
                self.failed_over = true;
            }
            return;
        }
        let now = self.now;
        let a = &mut self.chain[s];
        a.last_hand_over = Some(now);
        let repeat_dropped = matches!(
            (&a.lookup, a.accepted_at),
            (Lookup::Deduplicates(w), Some(at)) if now < after(at, *w)
        );
        if !repeat_dropped {
            self.deliveries += 1;
            a.accepted_at.get_or_insert(now);
        }
        self.ledger[s] = Some(match send {
            Send::Accepted => Record::Sent,
            _ => Record::Unknown(now),
        });
    }

    fn reconcile(&mut self, send: Send) {
        if self.ledger.contains(&Some(Record::Sent)) {
            return;
        }
        let s = self.sending;
        if let Some(Record::Unknown(handed_over)) = self.ledger[s] {
            let moment = Moment::AfterAmbiguous { handed_over };
            let mut asked = vec![Asked::new("shop/x", self.chain[s].lookup.clone())];
            let mut next = before_send(&asked, 0, moment, self.now);
            if next == BeforeSend::LookUp {
                asked[0].answer = Some(self.answer(s));
                next = before_send(&asked, 0, moment, self.now);
            }
            match next {
                BeforeSend::Send => self.hand_over(send),
                BeforeSend::Recovered { .. } => self.ledger[s] = Some(Record::Sent),
                BeforeSend::LookUp => panic!("asked twice"),
                _ => {}
            }
            return;
        }
        // Unknown through another sender waits for a person; a failed last sender is Failed.
        if self
            .ledger
            .iter()
            .any(|r| matches!(r, Some(Record::Unknown(_))))
            || self.ledger[s].is_some()
        {
            return;
        }
        if self.failed_over {
            return self.hand_over(send);
        }
        let moment = Moment::FirstSend {
            waiting_until: self.waiting_until,
        };
        let mut asked = self.asked();
        let mut next = before_send(&asked, s, moment, self.now);
        if next == BeforeSend::LookUp {
            self.ask(&mut asked);
            next = before_send(&asked, s, moment, self.now);
        }
        match next {
            BeforeSend::Send => self.hand_over(send),
            BeforeSend::Recovered { position, .. } => {
                prop_assert_found(&self.chain[position]);
                self.ledger[position] = Some(Record::Sent);
            }
            BeforeSend::AwaitRecord { until } => self.waiting_until = Some(until),
            BeforeSend::LookupFailed { .. } => self.waiting_until = None,
            BeforeSend::LookUp => panic!("asked twice"),
            BeforeSend::StayUnknown => panic!("a first send is never Unknown"),
        }
    }

    /// Whether the documented limits allow a rebuild now.
    fn may_rebuild(&self) -> bool {
        self.chain
            .iter()
            .all(|a| match (&a.lookup, a.last_hand_over) {
                (_, None) => true,
                (
                    Lookup::Search {
                        settle_first: true, ..
                    },
                    _,
                ) => true,
                (Lookup::Search { settling, .. }, Some(at)) => self.now >= after(at, *settling),
                (Lookup::Deduplicates(w), Some(at)) => self.now < after(at, *w),
                // Ledger only: a rebuild forgets, nothing outside can tell.
                (Lookup::Off, Some(_)) => false,
            })
    }
}

/// A sender named as having the message has it.
fn prop_assert_found(a: &Account) {
    assert!(
        a.accepted_at.is_some(),
        "recovered from a sender that has nothing"
    );
}

fn never_two_messages(chain: Vec<(Lookup, Duration)>, steps: &[Step]) -> Result<(), TestCaseError> {
    let described = format!("{chain:?}");
    let n = chain.len();
    let mut m = Model {
        chain: chain
            .into_iter()
            .map(|(lookup, visible_after)| Account {
                lookup,
                visible_after,
                accepted_at: None,
                outage: false,
                last_hand_over: None,
            })
            .collect(),
        now: now(),
        deliveries: 0,
        ledger: vec![None; n],
        sending: 0,
        waiting_until: None,
        failed_over: false,
    };
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Reconcile(send) => m.reconcile(*send),
            Step::Outage(at, on) => {
                if let Some(a) = m.chain.get_mut(*at) {
                    a.outage = *on;
                }
            }
            Step::Wait(min) => m.now += jiff::SignedDuration::from_mins(i64::from(*min)),
            Step::Rebuild => {
                if m.may_rebuild() {
                    m.ledger = vec![None; n];
                    m.sending = 0;
                    m.waiting_until = None;
                    m.failed_over = false;
                }
            }
        }
        prop_assert!(
            m.deliveries <= 1,
            "step {i}: {} messages for one Email through its chain {described}: {steps:?}",
            m.deliveries
        );
    }
    Ok(())
}

/// A searchable sender of a chain: Postmark, or Mailgun whose events show up to its
/// settling time late, with or without `settleFirstSends`.
fn searchable_sender() -> impl Strategy<Value = (Lookup, Duration)> {
    prop_oneof![
        Just((POSTMARK, Duration::ZERO)),
        (0u64..=30, any::<bool>()).prop_map(|(late, settle_first)| (
            Lookup::Search {
                settling: Duration::from_secs(30 * 60),
                settle_first,
            },
            Duration::from_secs(late * 60)
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn postmark_never_delivers_one_key_twice(steps in prop::collection::vec(step(), 1..40)) {
        never_two_messages(vec![(POSTMARK, Duration::ZERO)], &steps)?;
    }

    #[test]
    fn mailgun_never_delivers_one_key_twice_with_events_up_to_the_settling_time_late(
        late in 0u64..=30,
        steps in prop::collection::vec(step(), 1..40),
    ) {
        never_two_messages(vec![(MAILGUN, Duration::from_secs(late * 60))], &steps)?;
    }

    #[test]
    fn mailgun_with_settle_first_sends_survives_a_rebuild_at_any_moment(
        late in 0u64..=30,
        steps in prop::collection::vec(step(), 1..40),
    ) {
        never_two_messages(vec![(MAILGUN_SETTLED, Duration::from_secs(late * 60))], &steps)?;
    }

    #[test]
    fn resend_never_delivers_one_key_twice(steps in prop::collection::vec(step(), 1..40)) {
        never_two_messages(vec![(RESEND, Duration::ZERO)], &steps)?;
    }

    #[test]
    fn ledger_only_providers_never_deliver_one_key_twice_while_the_ledger_lives(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        never_two_messages(vec![(Lookup::Off, Duration::ZERO)], &steps)?;
    }

    /// Fail-overs in one cluster, a rebuild that starts again with the primary: never two
    /// messages across the chain, whichever sender the first went out through.
    #[test]
    fn a_chain_of_searchable_senders_never_delivers_one_email_twice(
        chain in prop::collection::vec(searchable_sender(), 2..=3),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        never_two_messages(chain, &steps)?;
    }
}
