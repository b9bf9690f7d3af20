//! Asking the provider before a send: the decision's new input (what the look-up said) and
//! outcomes, as a table; and as a property over sequences of sends, answers, outages, the
//! passing of time and clusters rebuilt from Git: never two messages for one delivery key.

use proptest::prelude::*;

use super::*;
use crate::provider::LookupAnswer;

const POSTMARK: Lookup = Lookup::Search {
    settling: Duration::ZERO,
};
const MAILGUN: Lookup = Lookup::Search {
    settling: Duration::from_secs(30 * 60),
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

fn searchable(hashes: &[&str], lookup: Lookup) -> Readiness {
    Readiness {
        lookup,
        ..ready(hashes)
    }
}

#[test]
fn before_send_table() {
    use BeforeSend::*;
    let first = Moment::FirstSend;
    let ambiguous = |m| Moment::AfterAmbiguous {
        handed_over: minutes_ago(m),
    };
    let recovered = || Recovered {
        message_id: "pm-1".into(),
    };
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
            POSTMARK, first, Some(LookupAnswer::Absent), Send),
        ("Postmark: a failed look-up never turns into a send",
            POSTMARK, first, Some(failed()), LookupFailed { why: "Postmark's message search answered 503".into() }),
        ("Postmark: after a 500 it asks",
            POSTMARK, ambiguous(0), None, LookUp),
        ("Postmark: after a 500, found is Sent",
            POSTMARK, ambiguous(0), Some(found("pm-1")), recovered()),
        ("Postmark: after a 500, absent is sent again at once (no settling)",
            POSTMARK, ambiguous(0), Some(LookupAnswer::Absent), Send),
        ("Postmark: also when the hand-over bound lies ahead of the clock",
            POSTMARK, ambiguous(-1), Some(LookupAnswer::Absent), Send),
        ("Mailgun: after a timeout, found is Sent at once",
            MAILGUN, ambiguous(1), Some(found("pm-1")), recovered()),
        ("Mailgun: absent within the settling time waits until it passes",
            MAILGUN, ambiguous(10), Some(LookupAnswer::Absent), AwaitRecord { until: minutes_ago(10) + jiff::SignedDuration::from_mins(30) }),
        ("Mailgun: absent after the settling time is sent again",
            MAILGUN, ambiguous(31), Some(LookupAnswer::Absent), Send),
        ("Mailgun: absent exactly at the end of the settling time is sent again",
            MAILGUN, ambiguous(30), Some(LookupAnswer::Absent), Send),
        ("Mailgun: a failed look-up waits, also after the settling time",
            MAILGUN, ambiguous(60), Some(failed()), LookupFailed { why: "Postmark's message search answered 503".into() }),
        ("Mailgun: a first send trusts absence (no hand-over of it is known)",
            MAILGUN, first, Some(LookupAnswer::Absent), Send),
    ];
    for (name, lookup, moment, answer, expected) in rows {
        assert_eq!(
            before_send(&lookup, moment, answer.as_ref(), now()),
            expected,
            "{name}"
        );
    }
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
            settling: Duration::from_secs(2)
        }
    );
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

// ---- the property -------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Step {
    /// A reconcile; a send in it is accepted, accepted with the answer lost (a 500 or a
    /// timeout after the hand-over), or refused before the hand-over.
    Reconcile(Send),
    /// The provider's look-up is down (true) or back (false).
    Outage(bool),
    /// Minutes pass.
    Wait(u8),
    /// The cluster is rebuilt from Git: no status, no ledger. Only after the last hand-over
    /// had time to show in the provider's record (the documented limit for Mailgun; for
    /// Resend, within its 24 hours).
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
        1 => any::<bool>().prop_map(Step::Outage),
        2 => (1u8..40).prop_map(Step::Wait),
        1 => Just(Step::Rebuild),
    ]
}

/// One delivery key, one provider, the cluster's record of it, and the clock.
struct Model {
    lookup: Lookup,
    /// How long after acceptance the provider's search shows a message (at most the
    /// settling time).
    visible_after: Duration,
    now: Timestamp,
    /// The provider accepted the message at this time (the first time; a repeat within
    /// Resend's window is answered, not sent).
    accepted_at: Option<Timestamp>,
    deliveries: usize,
    outage: bool,
    /// The cluster's ledger entry: None, Unknown (handed over at), or Sent.
    entry: Option<Result<(), Timestamp>>,
    last_hand_over: Option<Timestamp>,
}

impl Model {
    fn answer(&self) -> LookupAnswer {
        if self.outage {
            return LookupAnswer::Failed("down".into());
        }
        match self.accepted_at {
            Some(at)
                if self.now >= at + jiff::SignedDuration::try_from(self.visible_after).unwrap() =>
            {
                found("id")
            }
            _ => LookupAnswer::Absent,
        }
    }

    fn hand_over(&mut self, send: Send) {
        if send == Send::NotHandedOver {
            return;
        }
        self.last_hand_over = Some(self.now);
        let repeat_dropped = matches!(
            (&self.lookup, self.accepted_at),
            (Lookup::Deduplicates(w), Some(at)) if self.now < at + jiff::SignedDuration::try_from(*w).unwrap()
        );
        if !repeat_dropped {
            self.deliveries += 1;
            self.accepted_at.get_or_insert(self.now);
        }
        self.entry = Some(match send {
            Send::Accepted => Ok(()),
            _ => Err(self.now),
        });
    }

    fn reconcile(&mut self, send: Send) {
        let moment = match self.entry {
            Some(Ok(())) => return,
            Some(Err(handed_over)) => Moment::AfterAmbiguous { handed_over },
            None => Moment::FirstSend,
        };
        let mut next = before_send(&self.lookup, moment, None, self.now);
        if next == BeforeSend::LookUp {
            let answer = self.answer();
            next = before_send(&self.lookup, moment, Some(&answer), self.now);
        }
        match next {
            BeforeSend::Send => self.hand_over(send),
            BeforeSend::Recovered { .. } => self.entry = Some(Ok(())),
            BeforeSend::LookUp => panic!("asked twice"),
            BeforeSend::AwaitRecord { .. }
            | BeforeSend::LookupFailed { .. }
            | BeforeSend::StayUnknown => {}
        }
    }
}

fn never_two_messages(
    lookup: Lookup,
    visible_after: Duration,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut m = Model {
        lookup: lookup.clone(),
        visible_after,
        now: now(),
        accepted_at: None,
        deliveries: 0,
        outage: false,
        entry: None,
        last_hand_over: None,
    };
    let settled = |m: &Model| match (&m.lookup, m.last_hand_over) {
        (_, None) => true,
        (Lookup::Search { settling }, Some(at)) => {
            m.now >= at + jiff::SignedDuration::try_from(*settling).unwrap()
        }
        (Lookup::Deduplicates(w), Some(at)) => {
            m.now < at + jiff::SignedDuration::try_from(*w).unwrap()
        }
        // Ledger only: a rebuild forgets, nothing outside can tell.
        (Lookup::Off, Some(_)) => false,
    };
    for (i, s) in steps.iter().enumerate() {
        match s {
            Step::Reconcile(send) => m.reconcile(*send),
            Step::Outage(on) => m.outage = *on,
            Step::Wait(min) => m.now += jiff::SignedDuration::from_mins(i64::from(*min)),
            Step::Rebuild => {
                if settled(&m) {
                    m.entry = None;
                }
            }
        }
        prop_assert!(
            m.deliveries <= 1,
            "step {i}: {} messages for one delivery key ({lookup:?}, visible after {visible_after:?}): {steps:?}",
            m.deliveries
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn postmark_never_delivers_one_key_twice(steps in prop::collection::vec(step(), 1..40)) {
        never_two_messages(POSTMARK, Duration::ZERO, &steps)?;
    }

    #[test]
    fn mailgun_never_delivers_one_key_twice_with_events_up_to_the_settling_time_late(
        late in 0u64..=30,
        steps in prop::collection::vec(step(), 1..40),
    ) {
        never_two_messages(MAILGUN, Duration::from_secs(late * 60), &steps)?;
    }

    #[test]
    fn resend_never_delivers_one_key_twice(steps in prop::collection::vec(step(), 1..40)) {
        never_two_messages(RESEND, Duration::ZERO, &steps)?;
    }

    #[test]
    fn ledger_only_providers_never_deliver_one_key_twice_while_the_ledger_lives(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        never_two_messages(Lookup::Off, Duration::ZERO, &steps)?;
    }
}
