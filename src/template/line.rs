//! Who may render now: each namespace gets at most [`PER_NAMESPACE`] of the render slots.
//!
//! Renders share a few slots process-wide ([`MAX_CONCURRENT_RENDERS`]), and a tenant decides
//! how long each of its renders takes (up to the wall-clock budget). Without a share per
//! namespace, a tenant that creates slow Emails faster than they fail fills the slots' queue,
//! and every other namespace's templated Email waits behind all of them; worse, each waiting
//! reconcile holds one of the Email controller's workers, so with enough of them no Email of
//! any tenant is reconciled at all.
//!
//! So a namespace renders at most [`PER_NAMESPACE`] at once, which also bounds how many of
//! its renders wait for a slot: another namespace's render waits for at most a couple of
//! renders per busy namespace. A render that finds its namespace's places taken is parked
//! instead of waiting: its reconcile ends and gives its worker back, and the first render of
//! its namespace to end wakes it, oldest first (through the [`Waker`] the runtime sets). One
//! that will not come back (deleted, or with nothing left to render) is passed over at its
//! turn, so the wake-up goes to the next. A woken render is not kept a place: one arriving
//! meanwhile may take it, and the woken one parks again.
//!
//! [`MAX_CONCURRENT_RENDERS`]: super::limits::MAX_CONCURRENT_RENDERS

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::limits::MAX_CONCURRENT_RENDERS;

/// Renders one namespace may run at once: half of the slots, so one busy namespace always
/// leaves the other half to the rest.
pub const PER_NAMESPACE: usize = MAX_CONCURRENT_RENDERS.div_ceil(2);

/// Why a renderer got no place: its namespace's places are taken, and it is parked.
#[derive(Debug)]
pub struct Parked {
    /// Renderers of the namespace parked now, this one included.
    pub waiting: usize,
}

impl Parked {
    /// When it comes back if no freed place woke it first. A wake-up can be spent without a
    /// render (the woken Email met an API error, or parked for a send slot first), and then
    /// this is what brings it back: after a few seconds when few wait, later the more wait
    /// ahead of it (a namespace with thousands of parked templates must not keep the operator
    /// busy with their comebacks), plus up to a fifth more so they do not all come at once.
    pub fn come_back_after(&self) -> Duration {
        let base = Duration::from_secs(5)
            .saturating_add(Duration::from_secs(2).saturating_mul(self.waiting.min(150) as u32));
        let spread = rand::random::<u64>() % (base.as_millis() as u64 / 5 + 1);
        base + Duration::from_millis(spread)
    }
}

/// What waits to render, by name within its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Renderer {
    Email(String),
    Template(String),
}

/// Asks a parked renderer (in the given namespace) to come back; returns whether it will.
pub type Waker = Arc<dyn Fn(&str, &Renderer) -> bool + Send + Sync>;

pub struct RenderLine {
    per_namespace: usize,
    lines: Mutex<HashMap<String, Line>>,
    waker: OnceLock<Waker>,
}

/// One namespace's renders.
#[derive(Default)]
struct Line {
    rendering: usize,
    /// Parked, oldest first; an entry no longer in `waiting` is skipped.
    parked: VecDeque<Renderer>,
    waiting: HashSet<Renderer>,
}

/// A namespace's place to render, given back when dropped.
pub struct Ticket {
    line: Arc<RenderLine>,
    namespace: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.line.leave(&self.namespace);
    }
}

impl RenderLine {
    pub fn new(per_namespace: usize) -> Arc<Self> {
        Arc::new(Self {
            per_namespace: per_namespace.max(1),
            lines: Mutex::default(),
            waker: OnceLock::new(),
        })
    }

    /// Sets how parked renderers are woken; once (a later call changes nothing).
    pub fn set_waker(&self, waker: Waker) {
        let _ = self.waker.set(waker);
    }

    /// A place to render for `who`; or `who` is parked, and woken when a place of its
    /// namespace frees.
    pub fn enter(self: &Arc<Self>, namespace: &str, who: Renderer) -> Result<Ticket, Parked> {
        let mut lines = self.lock();
        let line = lines.entry(namespace.to_string()).or_default();
        if line.rendering < self.per_namespace {
            line.rendering += 1;
            line.waiting.remove(&who);
            return Ok(Ticket {
                line: self.clone(),
                namespace: namespace.to_string(),
            });
        }
        if line.waiting.insert(who.clone()) {
            line.parked.push_back(who);
        }
        Err(Parked {
            waiting: line.waiting.len(),
        })
    }

    /// Renders running and renderers parked in `namespace`.
    pub fn load(&self, namespace: &str) -> (usize, usize) {
        self.lock()
            .get(namespace)
            .map_or((0, 0), |l| (l.rendering, l.waiting.len()))
    }

    fn leave(&self, namespace: &str) {
        let mut freed = true;
        loop {
            let next = {
                let mut lines = self.lock();
                let Some(line) = lines.get_mut(namespace) else {
                    return;
                };
                if std::mem::take(&mut freed) {
                    line.rendering = line.rendering.saturating_sub(1);
                }
                let next = std::iter::from_fn(|| line.parked.pop_front())
                    .find(|who| line.waiting.remove(who));
                if next.is_none() && line.rendering == 0 {
                    lines.remove(namespace);
                }
                next
            };
            let Some(who) = next else { return };
            // Called without the lock: the waker reads the caches and queues a reconcile.
            match self.waker.get() {
                Some(wake) if !wake(namespace, &who) => continue,
                _ => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Line>> {
        // Plain counters and queues; a panic elsewhere cannot leave them half-written.
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn email(n: &str) -> Renderer {
        Renderer::Email(n.to_string())
    }

    /// A line whose waker records who it woke; those named in `gone` will not come back.
    fn line_with(gone: &[&str]) -> (Arc<RenderLine>, Arc<Mutex<Vec<String>>>) {
        let line = RenderLine::new(2);
        let woken = Arc::new(Mutex::new(Vec::new()));
        let (record, gone): (_, HashSet<String>) =
            (woken.clone(), gone.iter().map(|s| s.to_string()).collect());
        line.set_waker(Arc::new(move |ns: &str, who: &Renderer| {
            let name = match who {
                Renderer::Email(n) | Renderer::Template(n) => n.clone(),
            };
            record.lock().unwrap().push(format!("{ns}/{name}"));
            !gone.contains(&name)
        }));
        (line, woken)
    }

    #[test]
    fn a_busy_namespace_leaves_the_other_places_to_the_rest() {
        let (line, woken) = line_with(&[]);
        let a1 = line.enter("hostile", email("a1")).unwrap();
        let _a2 = line.enter("hostile", email("a2")).unwrap();
        assert!(line.enter("hostile", email("a3")).is_err());
        assert!(line.enter("hostile", email("a4")).is_err());
        assert!(line.enter("hostile", email("a3")).is_err(), "parked twice");
        assert_eq!(line.load("hostile"), (2, 2));
        // Another namespace renders at once.
        let b = line.enter("victim", email("b"));
        assert!(b.is_ok());
        drop(b);
        assert_eq!(
            line.load("victim"),
            (0, 0),
            "an idle namespace is forgotten"
        );
        // A freed place wakes the oldest parked renderer of that namespace, once.
        drop(a1);
        assert_eq!(*woken.lock().unwrap(), vec!["hostile/a3"]);
        assert_eq!(line.load("hostile"), (1, 1));
        let _a3 = line.enter("hostile", email("a3")).unwrap();
        assert!(line.enter("hostile", email("a5")).is_err());
    }

    #[test]
    fn a_parked_renderer_that_will_not_come_back_passes_its_turn_on() {
        let (line, woken) = line_with(&["deleted"]);
        let first = line.enter("ns", email("first")).unwrap();
        let _second = line.enter("ns", email("second")).unwrap();
        assert!(line.enter("ns", email("deleted")).is_err());
        assert!(line.enter("ns", email("next")).is_err());
        drop(first);
        assert_eq!(*woken.lock().unwrap(), vec!["ns/deleted", "ns/next"]);
        assert_eq!(line.load("ns"), (1, 0));
    }

    #[test]
    fn a_parked_renderer_that_came_back_on_its_own_is_not_woken_again() {
        let (line, woken) = line_with(&[]);
        let first = line.enter("ns", email("first")).unwrap();
        let second = line.enter("ns", email("second")).unwrap();
        assert!(line.enter("ns", email("early")).is_err());
        assert!(line.enter("ns", email("late")).is_err());
        drop(first);
        // "early" was woken; "late" comes back by its own requeue and finds the place.
        let _late = line.enter("ns", email("late")).unwrap();
        drop(second);
        assert_eq!(*woken.lock().unwrap(), vec!["ns/early"]);
    }

    #[test]
    fn a_parked_renderer_comes_back_later_the_more_wait_ahead_of_it() {
        let after = |waiting| Parked { waiting }.come_back_after();
        for (waiting, at_least, at_most) in [
            (1, 7, 9),
            (10, 25, 30),
            (150, 305, 366),
            (100_000, 305, 366),
        ] {
            let t = after(waiting);
            assert!(
                t >= Duration::from_secs(at_least) && t <= Duration::from_secs(at_most),
                "{waiting} waiting: {t:?}"
            );
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Renderer `who` of namespace `ns` asks for a place.
        Enter { ns: u8, who: u8 },
        /// The `i`-th held ticket (modulo) is given back.
        Leave(usize),
        /// The oldest woken renderer comes back.
        ComeBack,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, 0u8..6).prop_map(|(ns, who)| Op::Enter { ns, who }),
            (0usize..8).prop_map(Op::Leave),
            Just(Op::ComeBack),
        ]
    }

    proptest! {
        /// Over any sequence: no namespace renders more than its share, a renderer is never
        /// parked twice, and once every renderer that was woken has come back and finished,
        /// nobody is left parked (no wake-up is lost).
        #[test]
        fn no_namespace_exceeds_its_share_and_no_wake_up_is_lost(ops in proptest::collection::vec(op(), 1..120)) {
            let line = RenderLine::new(2);
            let woken = Arc::new(Mutex::new(VecDeque::new()));
            let record = woken.clone();
            line.set_waker(Arc::new(move |ns: &str, who: &Renderer| {
                record.lock().unwrap().push_back((ns.to_string(), who.clone()));
                true
            }));
            let mut held: Vec<Ticket> = Vec::new();
            let enter = |held: &mut Vec<Ticket>, ns: String, who: Renderer| {
                if let Ok(t) = line.enter(&ns, who) {
                    held.push(t);
                }
            };
            for op in ops {
                match op {
                    Op::Enter { ns, who } => {
                        enter(&mut held, format!("ns{ns}"), Renderer::Email(format!("e{who}")))
                    }
                    Op::Leave(i) if !held.is_empty() => {
                        let i = i % held.len();
                        held.remove(i);
                    }
                    Op::Leave(_) => {}
                    Op::ComeBack => {
                        let next = woken.lock().unwrap().pop_front();
                        if let Some((ns, who)) = next {
                            enter(&mut held, ns, who);
                        }
                    }
                }
                for ns in ["ns0", "ns1", "ns2"] {
                    let (rendering, waiting) = line.load(ns);
                    prop_assert!(rendering <= 2, "{ns} renders {rendering}");
                    prop_assert!(waiting <= 6, "{ns} has {waiting} parked");
                }
            }
            // Everything held finishes; everyone woken comes back and finishes, until quiet.
            held.clear();
            loop {
                let next = woken.lock().unwrap().pop_front();
                let Some((ns, who)) = next else { break };
                let ticket = line.enter(&ns, who);
                drop(ticket);
            }
            for ns in ["ns0", "ns1", "ns2"] {
                prop_assert_eq!(line.load(ns), (0, 0), "{} left parked", ns);
            }
        }
    }
}
