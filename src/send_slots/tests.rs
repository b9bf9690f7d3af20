use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const NOW: Duration = Duration::ZERO;
const SOON: Duration = Duration::from_millis(200);

fn slots(total: usize, per_sender: usize, per_namespace: usize) -> SendSlots {
    SendSlots::new(SlotLimits {
        total,
        per_sender,
        per_namespace,
    })
}

#[tokio::test]
async fn a_stuck_sender_holds_at_most_its_own_cap_and_others_go_at_once() {
    let s = slots(8, 2, 4);
    let a1 = s.acquire("team-a", "team-a/smtp", NOW).await;
    let a2 = s.acquire("team-a", "team-a/smtp", NOW).await;
    assert!(a1.is_some() && a2.is_some());
    assert!(
        s.acquire("team-a", "team-a/smtp", NOW).await.is_none(),
        "a third call through the same sender waits"
    );
    assert!(
        s.acquire("team-a", "team-a/other", NOW).await.is_some(),
        "the namespace's other sender is not held up by the first"
    );
    assert!(s.acquire("team-b", "team-b/api", NOW).await.is_some());
}

#[tokio::test]
async fn a_namespace_holds_at_most_its_cap_however_many_senders_it_makes() {
    let s = slots(8, 8, 3);
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            s.acquire("hostile", &format!("hostile/s{i}"), NOW)
                .await
                .unwrap(),
        );
    }
    assert!(s.acquire("hostile", "hostile/s9", NOW).await.is_none());
    assert!(s.acquire("quiet", "quiet/api", NOW).await.is_some());
    drop(held);
    assert_eq!(s.in_use(), 0);
}

#[tokio::test]
async fn freed_slots_go_to_waiting_namespaces_in_turn() {
    let s = slots(3, 3, 3);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(s.acquire("other", "other/api", NOW).await.unwrap());
    }
    // Two Emails of one namespace queue up, then one of another namespace.
    let mut busy = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        busy.push(tokio::spawn(async move {
            s.acquire("busy", "shared/api", Duration::from_secs(5))
                .await
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let quiet = {
        let s = s.clone();
        tokio::spawn(async move {
            s.acquire("quiet", "shared/api", Duration::from_secs(5))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // As many waiters as slots: a fourth comes back later instead of waiting.
    assert!(s.acquire("late", "late/api", SOON).await.is_none());
    held.pop();
    // "busy" was first in turn: its oldest waiter is served.
    let first = busy.remove(0).await.unwrap().expect("busy served first");
    assert_eq!(first.namespace, "busy");
    held.pop();
    // Now "quiet" is served, ahead of busy's second waiter.
    let second = quiet
        .await
        .unwrap()
        .expect("quiet served before busy's second");
    assert_eq!(second.namespace, "quiet");
    held.pop();
    let third = busy.remove(0).await.unwrap().expect("the last is served");
    drop((first, second, third));
    assert_eq!(s.in_use(), 0);
}

#[tokio::test]
async fn a_waiter_that_times_out_leaves_the_queue_and_no_slot_is_lost() {
    let s = slots(1, 1, 1);
    let held = s.acquire("a", "a/x", NOW).await.unwrap();
    assert!(s.acquire("b", "b/x", SOON).await.is_none());
    drop(held);
    assert_eq!(s.in_use(), 0, "nobody waits: the slot is free");
    assert!(s.acquire("c", "c/x", NOW).await.is_some());
}

#[tokio::test]
async fn a_cancelled_waiter_does_not_swallow_the_slot() {
    let s = slots(1, 1, 1);
    let held = s.acquire("a", "a/x", NOW).await.unwrap();
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move { s.acquire("b", "b/x", Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    waiting.abort();
    let _ = waiting.await;
    drop(held);
    assert_eq!(s.in_use(), 0);
    assert!(s.acquire("c", "c/x", NOW).await.is_some());
}

#[tokio::test]
async fn a_place_in_line_is_served_in_turn_and_a_dropped_one_gives_its_turn_on() {
    let s = slots(1, 1, 1);
    let held = s.acquire("a", "a/x", NOW).await.unwrap();
    // In line while its claim is written (no slot is held meanwhile).
    let first = s.reserve("b", "b/x").expect("room in line");
    assert!(
        s.reserve("c", "c/x").is_none(),
        "the line is as long as the slots"
    );
    assert_eq!(s.in_use(), 1);
    // The first gives up before waiting (its claim failed): its place goes to the next one.
    drop(first);
    let second = s.reserve("c", "c/x").expect("room in line again");
    drop(held);
    let permit = second.wait(SOON).await.expect("served once the slot frees");
    assert_eq!(s.in_use(), 1);
    drop(permit);
    assert_eq!(s.in_use(), 0);
    assert!(s.reserve("d", "d/x").is_some());
}

#[tokio::test]
async fn a_place_granted_while_its_owner_was_away_is_given_back_when_dropped() {
    let s = slots(1, 1, 1);
    let held = s.acquire("a", "a/x", NOW).await.unwrap();
    let in_line = s.reserve("b", "b/x").unwrap();
    drop(held);
    // Granted to the place in line, which nobody waited on yet.
    assert_eq!(s.in_use(), 1);
    drop(in_line);
    assert_eq!(s.in_use(), 0, "the unreceived slot is given back");
    assert!(s.acquire("c", "c/x", NOW).await.is_some());
}

/// The keys woken so far, in order.
fn record_wakes(s: &SendSlots) -> Arc<Mutex<Vec<String>>> {
    let woken = Arc::new(Mutex::new(Vec::new()));
    let log = woken.clone();
    s.set_waker(Arc::new(move |key: &str| {
        log.lock().unwrap().push(key.to_string())
    }));
    woken
}

#[tokio::test]
async fn a_refused_delivery_is_parked_once_and_woken_when_a_place_frees_for_it() {
    let s = slots(1, 1, 1);
    let woken = record_wakes(&s);
    let held = s.acquire("a", "a/x", NOW).await.unwrap();
    let in_line = s.reserve_or_park("a", "a/x", "a/first").unwrap();
    // Refused twice (the Email was reconciled again meanwhile): parked once.
    assert!(s.reserve_or_park("a", "a/x", "a/second").is_none());
    assert!(s.reserve_or_park("a", "a/x", "a/second").is_none());
    assert_eq!(s.parked(), 1);
    assert!(woken.lock().unwrap().is_empty(), "nothing freed yet");
    // The slot goes to the one in line, whose place in line frees: the parked one is woken.
    drop(held);
    assert_eq!(*woken.lock().unwrap(), ["a/second"]);
    assert_eq!(s.parked(), 0);
    let permit = in_line.wait(SOON).await.unwrap();
    assert!(s.reserve_or_park("a", "a/x", "a/second").is_some());
    drop(permit);
}

#[tokio::test]
async fn one_freed_place_wakes_one_parked_delivery_that_fits_it() {
    let s = slots(2, 1, 2);
    let woken = record_wakes(&s);
    let stuck = s.acquire("a", "a/stuck", NOW).await.unwrap();
    let busy = s.acquire("b", "b/x", NOW).await.unwrap();
    let _stuck_line = s.reserve("a", "a/stuck").unwrap();
    let _busy_line = s.reserve("b", "b/x").unwrap();
    // The line is full in all: everyone else is parked, oldest first.
    for key in ["a/1", "a/2"] {
        assert!(s.reserve_or_park("a", "a/stuck", key).is_none());
    }
    for key in ["b/1", "b/2"] {
        assert!(s.reserve_or_park("b", "b/x", key).is_none());
    }
    assert_eq!(s.parked(), 4);
    // b's slot frees: its waiter takes it, one place in line frees. a's parked deliveries
    // are older, but their sender's line is still full: the first of b is woken, and only it.
    drop(busy);
    assert_eq!(*woken.lock().unwrap(), ["b/1"]);
    assert_eq!(s.parked(), 3);
    drop(stuck);
}

#[tokio::test]
async fn a_place_freed_for_a_woken_delivery_is_kept_for_it_against_newcomers() {
    let s = slots(1, 1, 1);
    let woken = record_wakes(&s);
    let busy = s.acquire("a", "a/x", NOW).await.unwrap();
    let line = s.reserve("a", "a/x").unwrap();
    assert!(s.reserve_or_park("a", "a/x", "a/old").is_none());
    drop(busy);
    assert_eq!(*woken.lock().unwrap(), ["a/old"]);
    // Before the woken Email is reconciled, a new one comes: the place is not free for it.
    assert!(s.reserve_or_park("a", "a/x", "a/new").is_none());
    assert!(s.park_unless_room("a", "a/x", "a/newer"));
    assert_eq!(s.parked(), 2, "both newcomers wait behind the woken one");
    // The woken one is not parked before gathering, and its place is there.
    assert!(!s.park_unless_room("a", "a/x", "a/old"));
    let old = s.reserve_or_park("a", "a/x", "a/old");
    assert!(matches!(old, Some(Reservation::Queued(_))));
    assert_eq!(s.kept(), 0);
    drop(line);
    drop(old);
    // Each freed place went on to the newcomers, oldest first.
    assert_eq!(*woken.lock().unwrap(), ["a/old", "a/new", "a/newer"]);
}

#[tokio::test]
async fn a_kept_place_in_line_becomes_the_slot_that_frees_before_anyone_parked_is_woken() {
    let s = slots(1, 1, 1);
    let woken = record_wakes(&s);
    let first = s.acquire("a", "a/x", NOW).await.unwrap();
    let second = s.reserve("a", "a/x").unwrap();
    for key in ["a/third", "a/fourth"] {
        assert!(s.reserve_or_park("a", "a/x", key).is_none());
    }
    drop(first);
    let second = second.wait(SOON).await.unwrap();
    assert_eq!(
        *woken.lock().unwrap(),
        ["a/third"],
        "a place in line kept for it"
    );
    // The second is sent before the third's reconcile got to its place: the slot goes to the
    // third, and the fourth, parked after it, gets only the place in line that left.
    drop(second);
    assert_eq!(*woken.lock().unwrap(), ["a/third", "a/fourth"]);
    let fourth = s.reserve_or_park("a", "a/x", "a/fourth");
    assert!(matches!(fourth, Some(Reservation::Queued(_))));
    let third = s.reserve_or_park("a", "a/x", "a/third");
    assert!(matches!(third, Some(Reservation::Granted(_))));
}

#[tokio::test(start_paused = true)]
async fn a_kept_place_nobody_comes_for_goes_on_after_the_hold() {
    let s = slots(1, 1, 1);
    let woken = record_wakes(&s);
    let busy = s.acquire("a", "a/x", NOW).await.unwrap();
    let _line = s.reserve("a", "a/x").unwrap();
    for key in ["a/deleted", "a/next"] {
        assert!(s.reserve_or_park("a", "a/x", key).is_none());
    }
    drop(busy);
    assert_eq!(*woken.lock().unwrap(), ["a/deleted"]);
    tokio::time::advance(HOLD_FOR - Duration::from_millis(1)).await;
    assert!(s.park_unless_room("a", "a/x", "a/newcomer"));
    assert_eq!(*woken.lock().unwrap(), ["a/deleted"], "still kept");
    tokio::time::advance(Duration::from_millis(1)).await;
    // The next one to ask finds the hold expired: the place goes to the oldest parked.
    assert!(s.park_unless_room("a", "a/x", "a/newcomer"));
    assert_eq!(*woken.lock().unwrap(), ["a/deleted", "a/next"]);
    assert!(s.reserve_or_park("a", "a/x", "a/next").is_some());
}

#[tokio::test]
async fn a_reconcile_that_ends_without_its_kept_place_gives_it_on_at_once() {
    let s = slots(1, 1, 1);
    let woken = record_wakes(&s);
    let busy = s.acquire("a", "a/x", NOW).await.unwrap();
    let _line = s.reserve("a", "a/x").unwrap();
    for key in ["a/1", "a/2", "a/3"] {
        assert!(s.reserve_or_park("a", "a/x", key).is_none());
    }
    drop(busy);
    // a/1 is reconciled (it was woken before this reconcile started) and decides not to send.
    let started = Instant::now();
    s.forget("a/1", started);
    assert_eq!(*woken.lock().unwrap(), ["a/1", "a/2"]);
    // A place kept while a reconcile of a/2 was already running is not its to forget: the
    // wake-up that follows is what takes it.
    let before = Instant::now() - Duration::from_millis(1);
    s.forget("a/2", before);
    assert_eq!(s.kept(), 1);
    assert_eq!(*woken.lock().unwrap(), ["a/1", "a/2"]);
    assert!(s.reserve_or_park("a", "a/x", "a/2").is_some());
}

#[tokio::test]
async fn a_slot_kept_after_a_look_up_is_the_send_s_and_nobody_else_s() {
    let s = slots(1, 1, 1);
    let woken = record_wakes(&s);
    let lookup = s.acquire("a", "a/x", NOW).await.unwrap();
    let other = s.reserve_or_park("a", "a/x", "a/other").unwrap();
    assert!(s.reserve_or_park("a", "a/x", "a/late").is_none());
    lookup.keep_for("a/asked");
    assert!(
        woken.lock().unwrap().is_empty(),
        "the slot was not given back"
    );
    assert!(
        matches!(other, Reservation::Queued(_)),
        "nor given to the one in line"
    );
    let send = s.reserve_or_park("a", "a/x", "a/asked");
    assert!(matches!(send, Some(Reservation::Granted(_))));
    drop(send);
    let permit = other
        .wait(SOON)
        .await
        .expect("the slot goes on after the send");
    assert_eq!(*woken.lock().unwrap(), ["a/late"]);
    drop(permit);
    let late = s.reserve_or_park("a", "a/x", "a/late");
    assert!(late.is_some());
    assert!(
        s.acquire("b", "b/y", NOW).await.is_none(),
        "one slot, a/late's"
    );
}

#[tokio::test]
async fn a_slot_kept_and_never_used_is_given_back_when_the_reconcile_ends() {
    let s = slots(1, 1, 1);
    let _woken = record_wakes(&s);
    let lookup = s.acquire("a", "a/x", NOW).await.unwrap();
    // The look-up found the message: no send follows.
    let started = Instant::now();
    lookup.keep_for("a/found");
    assert_eq!(s.in_use(), 1);
    s.forget("a/found", started);
    assert_eq!(s.in_use(), 0);
    assert!(s.acquire("b", "b/y", NOW).await.is_some());
}

#[test]
fn default_caps_leave_room_for_others() {
    let l = SlotLimits::from_total(16);
    assert_eq!((l.total, l.per_sender, l.per_namespace), (16, 8, 12));
    let one = SlotLimits::from_total(1);
    assert_eq!((one.total, one.per_sender, one.per_namespace), (1, 1, 1));
}

#[derive(Clone, Debug)]
enum Step {
    /// Namespace and sender index: try for a slot, waiting briefly.
    Acquire(u8, u8),
    /// Give back the held permit at this index (modulo the number held).
    Release(usize),
    /// Namespace and sender index: take a place in line (as a delivery does before its claim).
    Reserve(u8, u8),
    /// Wait briefly on the place in line at this index; a slot received is held.
    Wait(usize),
    /// Drop the place in line at this index unused (its claim failed).
    Leave(usize),
    /// Namespace, sender index and delivery key: reserve, or park when there is no place.
    Park(u8, u8, u8),
    /// Namespace, sender index and delivery key: park before gathering if there is no place.
    ParkFirst(u8, u8, u8),
    /// The reconcile of this delivery key ends.
    Forget(u8),
    /// Keep the held permit at this index for this delivery key (a look-up found nothing).
    Keep(usize, u8),
    /// Time passes beyond the hold.
    Later,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..3, 0u8..3).prop_map(|(n, s)| Step::Acquire(n, s)),
        any::<usize>().prop_map(Step::Release),
        (0u8..3, 0u8..3).prop_map(|(n, s)| Step::Reserve(n, s)),
        any::<usize>().prop_map(Step::Wait),
        any::<usize>().prop_map(Step::Leave),
        (0u8..3, 0u8..3, 0u8..6).prop_map(|(n, s, k)| Step::Park(n, s, k)),
        (0u8..3, 0u8..3, 0u8..6).prop_map(|(n, s, k)| Step::ParkFirst(n, s, k)),
        (0u8..6).prop_map(Step::Forget),
        (any::<usize>(), 0u8..6).prop_map(|(i, k)| Step::Keep(i, k)),
        Just(Step::Later),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Over any sequence of takes, places in line, waits, parkings, kept places and gives
    /// back, no cap is ever exceeded, every slot taken or kept is given back, nobody waits
    /// while a slot they fit is free, and nobody stays parked while a place they fit is free.
    #[test]
    fn caps_hold_and_slots_are_never_lost(steps in prop::collection::vec(step(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let limits = SlotLimits { total: 4, per_sender: 2, per_namespace: 3 };
            let s = SendSlots::new(limits);
            let woken = record_wakes(&s);
            let key = |k: u8| format!("ns{}/e{k}", k % 3);
            let mut held: Vec<SendPermit> = Vec::new();
            let mut in_line: Vec<Reservation> = Vec::new();
            for st in steps {
                match st {
                    Step::Acquire(n, x) => {
                        let ns = format!("ns{n}");
                        let sender = format!("ns{n}/s{x}");
                        let fits = {
                            let state = lock(&s.state);
                            state.fits(&limits, &ns, &sender)
                        };
                        let got = s.acquire(&ns, &sender, Duration::from_millis(1)).await;
                        prop_assert_eq!(got.is_some(), fits, "a slot is given exactly when it fits");
                        held.extend(got);
                    }
                    Step::Release(i) => {
                        if !held.is_empty() {
                            let i = i % held.len();
                            held.swap_remove(i);
                        }
                    }
                    Step::Reserve(n, x) => {
                        in_line.extend(s.reserve(&format!("ns{n}"), &format!("ns{n}/s{x}")));
                    }
                    Step::Wait(i) => {
                        if !in_line.is_empty() {
                            let r = in_line.swap_remove(i % in_line.len());
                            held.extend(r.wait(Duration::from_millis(1)).await);
                        }
                    }
                    Step::Leave(i) => {
                        if !in_line.is_empty() {
                            in_line.swap_remove(i % in_line.len());
                        }
                    }
                    Step::Park(n, x, k) => {
                        let (ns, sender) = (format!("ns{n}"), format!("ns{n}/s{x}"));
                        in_line.extend(s.reserve_or_park(&ns, &sender, &key(k)));
                    }
                    Step::ParkFirst(n, x, k) => {
                        let (ns, sender) = (format!("ns{n}"), format!("ns{n}/s{x}"));
                        s.park_unless_room(&ns, &sender, &key(k));
                    }
                    Step::Forget(k) => s.forget(&key(k), Instant::now()),
                    Step::Keep(i, k) => {
                        if !held.is_empty() {
                            let i = i % held.len();
                            held.swap_remove(i).keep_for(&key(k));
                        }
                    }
                    Step::Later => tokio::time::advance(HOLD_FOR).await,
                }
                let state = lock(&s.state);
                let kept_slots = state.held.iter().filter(|h| h.slot).count();
                let kept_places = state.held.len() - kept_slots;
                // Slots are held by permits, by places granted at once, by places in line
                // served since (their slot waits in the channel), and kept for a delivery:
                // never more than that.
                prop_assert!(state.in_use >= held.len() + kept_slots);
                prop_assert!(state.in_use <= held.len() + in_line.len() + kept_slots);
                prop_assert!(state.in_use <= limits.total);
                prop_assert!(state.by_sender.values().all(|n| *n <= limits.per_sender));
                prop_assert!(state.by_namespace.values().all(|n| *n <= limits.per_namespace));
                prop_assert!(state.waiting_total <= limits.total);
                let queued: usize = state.waiting.values().map(|q| q.len()).sum();
                prop_assert_eq!(queued + kept_places, state.waiting_total);
                // Nobody waits for a slot that is free and fits them.
                for (ns, queue) in &state.waiting {
                    for w in queue {
                        prop_assert!(!state.fits(&limits, ns, &w.sender));
                    }
                }
                // Nobody stays parked while a place they fit is free, and a delivery with a
                // place kept for it is not parked.
                for (namespace, sender, key) in state.parked.iter() {
                    prop_assert!(!state.fits(&limits, namespace, sender));
                    prop_assert!(!state.may_wait(&limits, namespace, sender));
                    prop_assert!(!state.held.iter().any(|h| h.key == key && !h.own));
                }
                // A place in line kept for a woken delivery is not left in line while a slot
                // that fits it is free.
                for h in state.held.iter().filter(|h| !h.slot) {
                    prop_assert!(!state.fits(&limits, &h.namespace, &h.sender));
                }
            }
            held.clear();
            in_line.clear();
            // Every kept place is given back once its holder's reconcile ends, or expires.
            for k in 0..6 {
                s.forget(&key(k), Instant::now());
            }
            prop_assert_eq!(s.kept(), 0);
            // The parked deliveries woken meanwhile end their reconciles too.
            loop {
                let keys: Vec<String> = std::mem::take(&mut *woken.lock().unwrap());
                if keys.is_empty() {
                    break;
                }
                for k in keys {
                    s.forget(&k, Instant::now());
                }
            }
            prop_assert_eq!(s.kept(), 0);
            prop_assert_eq!(s.in_use(), 0);
            let state = lock(&s.state);
            prop_assert!(state.waiting.is_empty() && state.turn.is_empty());
            prop_assert_eq!(state.waiting_total, 0);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn the_queue_reports_sends_in_flight_in_line_and_parked_and_empties_when_they_end() {
    let s = slots(2, 1, 2);
    s.set_waker(Arc::new(|_: &str| {}));
    let empty = crate::metrics::SendQueue::default();
    assert_eq!(s.queue(), empty);
    let sending = s.acquire("shop", "shop/api", NOW).await.unwrap();
    let in_line = s.reserve("shop", "shop/api").unwrap();
    assert!(s.reserve_or_park("shop", "shop/api", "shop/c").is_none());
    assert_eq!(
        s.queue(),
        crate::metrics::SendQueue {
            sending: 1,
            waiting: 1,
            parked: 1,
        }
    );
    // The freed place in line is kept for the parked Email, which is woken.
    drop(in_line);
    assert_eq!(
        s.queue(),
        crate::metrics::SendQueue {
            sending: 1,
            waiting: 1,
            parked: 0,
        }
    );
    drop(sending);
    // Its reconcile ends without a send: nothing is left.
    s.forget("shop/c", Instant::now());
    assert_eq!(s.queue(), empty);
}
