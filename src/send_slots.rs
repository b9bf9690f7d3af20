//! Who may call a provider now: a fair share of the send slots.
//!
//! All tenants share one process, so one tenant's stuck provider (an SMTP server that accepts
//! connections and never answers) must not hold every slot. Three caps apply at once: the
//! process's total, a cap per sender, and a cap per namespace. Slots freed while others wait
//! go to the waiting namespaces in turn (round robin), so a namespace with one Email is served
//! as soon as a slot frees, however many Emails another namespace has queued.
//!
//! Waiting is bounded twice: in time (a reconcile that gets no slot within its wait gives the
//! controller's worker back and comes again later) and in number (as many waiters per sender,
//! per namespace and in all as there are slots). A delivery that finds the line full is
//! parked: it holds no worker, and the first place that frees for it wakes it (one place, one
//! wake-up). So waiting Emails never keep other Emails from being reconciled, a busy sender
//! always has the next delivery waiting when a slot frees, and a backlog of thousands costs no
//! reconciles while it waits.
//!
//! The place that woke a parked delivery is kept for it until it comes back for it (or for
//! [`HOLD_FOR`] at most): a delivery that arrived later can not take it meanwhile. Without
//! that, new Emails overtook the parked ones, and a woken delivery that lost the race was
//! parked again at the back, so under a backlog an Email was reconciled several times before
//! it was sent and the oldest waited longest.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use parked::ParkedList;

/// How long a place freed for a woken parked delivery is kept for it. Its reconcile is queued
/// at once and normally starts within milliseconds; a delivery whose Email was deleted
/// meanwhile never comes, and then the place goes on to the next after this long.
pub const HOLD_FOR: Duration = Duration::from_secs(5);

/// The three caps. Each is at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLimits {
    pub total: usize,
    pub per_sender: usize,
    pub per_namespace: usize,
}

impl SlotLimits {
    /// Caps derived from the total when none are given: a sender may use half of the slots
    /// and a namespace three quarters. A stuck sender then leaves half the slots to the rest,
    /// and a cluster with one busy sender still sends through eight of the default sixteen
    /// (a quarter throttled such a cluster below what the API server could take).
    pub fn from_total(total: usize) -> Self {
        let total = total.max(1);
        SlotLimits {
            total,
            per_sender: total.div_ceil(2),
            per_namespace: (total * 3).div_ceil(4),
        }
    }

    fn normalized(self) -> Self {
        SlotLimits {
            total: self.total.max(1),
            per_sender: self.per_sender.clamp(1, self.total.max(1)),
            per_namespace: self.per_namespace.clamp(1, self.total.max(1)),
        }
    }
}

#[derive(Clone)]
pub struct SendSlots {
    limits: SlotLimits,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    in_use: usize,
    by_sender: HashMap<String, usize>,
    by_namespace: HashMap<String, usize>,
    /// Waiters per namespace, oldest first.
    waiting: HashMap<String, VecDeque<Waiter>>,
    /// Namespaces with waiters, in the order they are served next.
    turn: VecDeque<String>,
    /// Waiters per sender and per namespace, and in all: each bounded by the same cap as the
    /// slots, so waiting Emails of one stuck sender or namespace hold few of the controller's
    /// workers (the rest come back later instead of waiting).
    waiting_by_sender: HashMap<String, usize>,
    waiting_by_namespace: HashMap<String, usize>,
    waiting_total: usize,
    next_ticket: u64,
    /// Deliveries that found no place in line, oldest first, by the key their owner gave
    /// ([`SendSlots::reserve_or_park`]); each freed place wakes the first that fits.
    parked: ParkedList,
    /// Places kept for woken parked deliveries until they come back for them.
    held: Vec<Held>,
    /// Called with a parked key when a place frees for it (outside the lock).
    waker: Option<Waker>,
}

/// A place kept for a woken delivery: a slot (counted in `in_use` and the caps) or a place
/// in line (counted among the waiters), so nobody else fits into it.
struct Held {
    key: String,
    namespace: String,
    sender: String,
    slot: bool,
    since: Instant,
    /// Kept by the delivery itself for its next call ([`SendPermit::keep_for`]), not for a
    /// wake-up.
    own: bool,
}

/// Keys to wake, once the lock is released.
type Wakes = Vec<(Waker, String)>;

fn wake(wakes: Wakes) {
    for (waker, key) in wakes {
        waker(&key);
    }
}

/// Wakes a parked delivery's owner (the Email controller queues a reconcile of that Email).
pub type Waker = Arc<dyn Fn(&str) + Send + Sync>;

struct Waiter {
    ticket: u64,
    sender: String,
    grant: oneshot::Sender<SendPermit>,
}

/// One slot, given back when dropped.
pub struct SendPermit {
    state: Arc<Mutex<State>>,
    limits: SlotLimits,
    namespace: String,
    sender: String,
    /// False while the permit travels to a waiter that may be gone: then it is given back
    /// by the dispatcher itself, which already holds the lock.
    armed: bool,
}

impl std::fmt::Debug for SendPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendPermit")
            .field("namespace", &self.namespace)
            .field("sender", &self.sender)
            .finish()
    }
}

/// A place in line (see [`SendSlots::reserve`]). Dropped unused, it leaves the line (and gives
/// back a slot granted meanwhile).
#[derive(Debug)]
pub enum Reservation {
    /// A slot was free: no wait.
    Granted(SendPermit),
    /// Among the waiters.
    Queued(InLine),
}

/// A waiter's place in line.
pub struct InLine {
    state: Arc<Mutex<State>>,
    limits: SlotLimits,
    namespace: String,
    sender: String,
    ticket: u64,
    /// `None` once the wait is over; a permit granted but never received is dropped with it
    /// and so given back.
    rx: Option<oneshot::Receiver<SendPermit>>,
}

impl std::fmt::Debug for InLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InLine")
            .field("namespace", &self.namespace)
            .field("sender", &self.sender)
            .finish()
    }
}

impl Reservation {
    /// The slot, waiting at most `wait` for it; `None` when none came in time.
    pub async fn wait(self, wait: Duration) -> Option<SendPermit> {
        let mut line = match self {
            Reservation::Granted(permit) => return Some(permit),
            Reservation::Queued(line) => line,
        };
        // The receiver stays in `line` while waiting, so a wait that is cancelled (its
        // reconcile dropped) still leaves the line when `line` is dropped.
        let answer = tokio::time::timeout(wait, line.rx.as_mut()?).await;
        match answer {
            Ok(Ok(permit)) => {
                line.rx = None;
                Some(permit)
            }
            Ok(Err(_)) => {
                line.rx = None;
                None
            }
            Err(_) => {
                line.leave();
                // Granted between the timeout and the lock: use it rather than waste it.
                line.rx.take().and_then(|mut rx| rx.try_recv().ok())
            }
        }
    }
}

impl InLine {
    /// Leaves the line if still in it.
    fn leave(&self) {
        let mut state = lock(&self.state);
        let mut removed = false;
        if let Some(queue) = state.waiting.get_mut(&self.namespace) {
            let before = queue.len();
            queue.retain(|w| w.ticket != self.ticket);
            removed = queue.len() < before;
            if queue.is_empty() {
                state.waiting.remove(&self.namespace);
                state.turn.retain(|n| *n != self.namespace);
            }
        }
        let wakes = if removed {
            state.count_waiter(&self.namespace, &self.sender, -1);
            state.fill(&self.limits, &self.state)
        } else {
            Vec::new()
        };
        drop(state);
        wake(wakes);
    }
}

impl Drop for InLine {
    fn drop(&mut self) {
        if self.rx.is_some() {
            // Never waited on (the claim failed, say): leave the line. A permit granted
            // meanwhile is dropped with the receiver, after the lock is released, and so given
            // back to the next waiter.
            self.leave();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every change under the lock is a few counter updates that cannot panic halfway.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn fits(&self, limits: &SlotLimits, namespace: &str, sender: &str) -> bool {
        self.slot_room_in(limits, namespace)
            && self.by_sender.get(sender).copied().unwrap_or(0) < limits.per_sender
    }

    /// Whether another waiter of `namespace` and `sender` may queue.
    fn may_wait(&self, limits: &SlotLimits, namespace: &str, sender: &str) -> bool {
        self.line_room_in(limits, namespace)
            && self.waiting_by_sender.get(sender).copied().unwrap_or(0) < limits.per_sender
    }

    /// Whether a delivery of `namespace` could get a slot or a place in line through a sender
    /// with room: false when the namespace or the process is at its caps for both.
    fn namespace_has_room(&self, limits: &SlotLimits, namespace: &str) -> bool {
        self.slot_room_in(limits, namespace) || self.line_room_in(limits, namespace)
    }

    /// The process's and `namespace`'s caps on slots both have room.
    fn slot_room_in(&self, limits: &SlotLimits, namespace: &str) -> bool {
        self.in_use < limits.total
            && self.by_namespace.get(namespace).copied().unwrap_or(0) < limits.per_namespace
    }

    /// The process's and `namespace`'s caps on places in line both have room.
    fn line_room_in(&self, limits: &SlotLimits, namespace: &str) -> bool {
        self.waiting_total < limits.total
            && self
                .waiting_by_namespace
                .get(namespace)
                .copied()
                .unwrap_or(0)
                < limits.per_namespace
    }

    fn count_waiter(&mut self, namespace: &str, sender: &str, delta: isize) {
        self.waiting_total = self.waiting_total.saturating_add_signed(delta);
        for (map, key) in [
            (&mut self.waiting_by_sender, sender),
            (&mut self.waiting_by_namespace, namespace),
        ] {
            let n = map.entry(key.to_string()).or_default();
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    fn take(&mut self, namespace: &str, sender: &str) {
        self.in_use += 1;
        *self.by_sender.entry(sender.to_string()).or_default() += 1;
        *self.by_namespace.entry(namespace.to_string()).or_default() += 1;
    }

    fn give_back(&mut self, namespace: &str, sender: &str) {
        self.in_use = self.in_use.saturating_sub(1);
        for (map, key) in [
            (&mut self.by_sender, sender),
            (&mut self.by_namespace, namespace),
        ] {
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }

    /// Hands free slots to waiters, one namespace after the other. Keeps the invariant the
    /// fast path of [`SendSlots::acquire`] relies on: no waiter fits once this returns.
    fn dispatch(&mut self, limits: &SlotLimits, shared: &Arc<Mutex<State>>) {
        while self.in_use < limits.total {
            let Some((namespace, waiter)) = self.next_waiter(limits) else {
                break;
            };
            self.count_waiter(&namespace, &waiter.sender, -1);
            self.take(&namespace, &waiter.sender);
            let permit = SendPermit {
                state: shared.clone(),
                limits: *limits,
                namespace,
                sender: waiter.sender,
                armed: true,
            };
            if let Err(mut unclaimed) = waiter.grant.send(permit) {
                // The waiter went away (its reconcile was cancelled): take the slot back here,
                // under the lock already held, and serve the next one.
                unclaimed.armed = false;
                self.give_back(&unclaimed.namespace, &unclaimed.sender);
            }
        }
    }

    /// Places have freed (slots, or places in line): slots go to the waiters first, then each
    /// parked delivery that now fits or may wait, oldest first, leaves the parked list with a
    /// place kept for it; their keys are returned so the caller wakes them once the lock is
    /// released. One place, one wake-up: no herd.
    fn fill(&mut self, limits: &SlotLimits, shared: &Arc<Mutex<State>>) -> Wakes {
        self.dispatch(limits, shared);
        // A place in line kept for a woken Email becomes a slot when one fits it, as a waiter's
        // would: it is ahead of everyone still parked.
        for index in 0..self.held.len() {
            let (slot, namespace, sender) = {
                let h = &self.held[index];
                (h.slot, h.namespace.clone(), h.sender.clone())
            };
            if !slot && self.fits(limits, &namespace, &sender) {
                self.count_waiter(&namespace, &sender, -1);
                self.take(&namespace, &sender);
                self.held[index].slot = true;
            }
        }
        let mut wakes = Vec::new();
        let Some(waker) = self.waker.clone() else {
            return wakes;
        };
        let now = Instant::now();
        // Out of the state while places are handed out, so that the test of each queue can
        // read the counters the hand-outs change.
        let mut parked = std::mem::take(&mut self.parked);
        while let Some((namespace, sender, key)) = parked.take_oldest(
            |namespace| self.namespace_has_room(limits, namespace),
            |namespace, sender| {
                self.fits(limits, namespace, sender) || self.may_wait(limits, namespace, sender)
            },
        ) {
            let slot = self.fits(limits, &namespace, &sender);
            if slot {
                self.take(&namespace, &sender);
            } else {
                self.count_waiter(&namespace, &sender, 1);
            }
            wakes.push((waker.clone(), key.clone()));
            self.held.push(Held {
                key,
                namespace,
                sender,
                slot,
                since: now,
                own: false,
            });
        }
        self.parked = parked;
        wakes
    }

    /// Gives back the place kept at `index`. The others keep their order, oldest first, which
    /// is the order in which [`Self::fill`] turns places in line into slots.
    fn release(&mut self, index: usize) {
        let held = self.held.remove(index);
        if held.slot {
            self.give_back(&held.namespace, &held.sender);
        } else {
            self.count_waiter(&held.namespace, &held.sender, -1);
        }
    }

    /// Gives back the places kept longer than [`HOLD_FOR`]; whether any was.
    fn expire(&mut self, now: Instant) -> bool {
        let before = self.held.len();
        while let Some(index) = self
            .held
            .iter()
            .position(|h| now.duration_since(h.since) >= HOLD_FOR)
        {
            self.release(index);
        }
        self.held.len() < before
    }

    fn unpark(&mut self, key: &str) {
        self.parked.remove(key);
    }

    /// The next waiter to serve: from the first namespace in turn that has room, its oldest
    /// waiter whose sender has room. A namespace served goes to the back of the turn.
    fn next_waiter(&mut self, limits: &SlotLimits) -> Option<(String, Waiter)> {
        for _ in 0..self.turn.len() {
            let namespace = self.turn.pop_front()?;
            let ns_room =
                self.by_namespace.get(&namespace).copied().unwrap_or(0) < limits.per_namespace;
            let by_sender = &self.by_sender;
            let index = self
                .waiting
                .get(&namespace)
                .filter(|_| ns_room)
                .and_then(|q| {
                    q.iter().position(|w| {
                        by_sender.get(&w.sender).copied().unwrap_or(0) < limits.per_sender
                    })
                });
            let Some(index) = index else {
                self.turn.push_back(namespace);
                continue;
            };
            let queue = self.waiting.get_mut(&namespace)?;
            let waiter = queue.remove(index)?;
            if queue.is_empty() {
                self.waiting.remove(&namespace);
            } else {
                self.turn.push_back(namespace.clone());
            }
            return Some((namespace, waiter));
        }
        None
    }
}

impl SendSlots {
    pub fn new(limits: SlotLimits) -> Self {
        SendSlots {
            limits: limits.normalized(),
            state: Arc::default(),
        }
    }

    pub fn limits(&self) -> SlotLimits {
        self.limits
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        lock(&self.state).in_use
    }

    /// A slot for a send of `namespace` through `sender`, waiting at most `wait`; `None` when
    /// none came in time (the caller comes back later).
    pub async fn acquire(
        &self,
        namespace: &str,
        sender: &str,
        wait: Duration,
    ) -> Option<SendPermit> {
        self.reserve(namespace, sender)?.wait(wait).await
    }

    /// A place in line for a send of `namespace` through `sender`, taken at once: a slot when
    /// one fits, else a place among the waiters; `None` when the waiters are full too (the
    /// caller comes back later). The delivery makes its ledger claim while in line and then
    /// [waits](Reservation::wait) for the slot, so a slot is never held across that API write.
    pub fn reserve(&self, namespace: &str, sender: &str) -> Option<Reservation> {
        let mut state = lock(&self.state);
        self.reserve_locked(&mut state, namespace, sender)
    }

    /// [`Self::reserve`], and when there is no place, `key` is parked: the waker set with
    /// [`Self::set_waker`] is called with it as soon as a place that fits it frees, so the
    /// delivery comes back exactly then instead of polling. A key is parked once however often
    /// it is refused, and leaves the parked list when it gets a place.
    ///
    /// A place kept for `key` since it was woken is what it gets now (see [`HOLD_FOR`]).
    pub fn reserve_or_park(&self, namespace: &str, sender: &str, key: &str) -> Option<Reservation> {
        let mut state = lock(&self.state);
        let mut freed = state.expire(Instant::now());
        if let Some(index) = state.held.iter().position(|h| h.key == key) {
            state.release(index);
            freed = true;
        }
        let got = self.reserve_locked(&mut state, namespace, sender);
        if got.is_some() {
            state.unpark(key);
        } else {
            park(&mut state, namespace, sender, key);
        }
        // A kept place not taken (the delivery came back for another sender) or one that
        // expired goes on to the next.
        let wakes = if freed {
            state.fill(&self.limits, &self.state)
        } else {
            Vec::new()
        };
        drop(state);
        wake(wakes);
        got
    }

    /// Whether a delivery of `namespace` through `sender` would be parked now, and if so,
    /// parks `key` at once: asked before the work a send needs (rendering, building the
    /// message), so a backlog of thousands is not rendered while it waits. `false` when a
    /// place is free or kept for `key`; the delivery then reserves it with
    /// [`Self::reserve_or_park`] once it is ready.
    pub fn park_unless_room(&self, namespace: &str, sender: &str, key: &str) -> bool {
        let mut state = lock(&self.state);
        let wakes = if state.expire(Instant::now()) {
            state.fill(&self.limits, &self.state)
        } else {
            Vec::new()
        };
        let room = state.held.iter().any(|h| h.key == key)
            || state.fits(&self.limits, namespace, sender)
            || state.may_wait(&self.limits, namespace, sender);
        if !room {
            park(&mut state, namespace, sender, key);
        }
        drop(state);
        wake(wakes);
        !room
    }

    /// Gives back a place kept for `key` since before `started` that it did not take: its
    /// reconcile (started after the wake-up) ended without a send, so the place goes on to the
    /// next parked delivery at once instead of after [`HOLD_FOR`]. A place kept since
    /// `started` is left alone: it was freed while this reconcile ran and its wake-up is
    /// still to come.
    /// Slots the delivery kept for itself ([`SendPermit::keep_for`]) are given back too.
    pub fn forget(&self, key: &str, started: Instant) {
        let mut state = lock(&self.state);
        let mut freed = false;
        while let Some(index) = state
            .held
            .iter()
            .position(|h| h.key == key && (h.own || h.since <= started))
        {
            state.release(index);
            freed = true;
        }
        if !freed {
            return;
        }
        let wakes = state.fill(&self.limits, &self.state);
        drop(state);
        wake(wakes);
    }

    /// Who is told when a parked delivery may come back (see [`Self::reserve_or_park`]).
    pub fn set_waker(&self, waker: Waker) {
        lock(&self.state).waker = Some(waker);
    }

    /// Deliveries parked now.
    pub fn parked(&self) -> usize {
        lock(&self.state).parked.len()
    }

    /// Slots taken, places in line taken and deliveries parked, read at one moment. A place
    /// kept for a woken delivery counts as what it is (a slot or a place in line).
    pub fn queue(&self) -> crate::metrics::SendQueue {
        let state = lock(&self.state);
        crate::metrics::SendQueue {
            sending: state.in_use,
            waiting: state.waiting_total,
            parked: state.parked.len(),
        }
    }

    /// Places kept now for woken deliveries that have not come back yet.
    pub fn kept(&self) -> usize {
        lock(&self.state).held.len()
    }

    fn reserve_locked(
        &self,
        state: &mut State,
        namespace: &str,
        sender: &str,
    ) -> Option<Reservation> {
        if state.fits(&self.limits, namespace, sender) {
            state.take(namespace, sender);
            return Some(Reservation::Granted(self.permit(namespace, sender)));
        }
        if !state.may_wait(&self.limits, namespace, sender) {
            return None;
        }
        state.count_waiter(namespace, sender, 1);
        let (tx, rx) = oneshot::channel();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        if !state.waiting.contains_key(namespace) {
            state.turn.push_back(namespace.to_string());
        }
        state
            .waiting
            .entry(namespace.to_string())
            .or_default()
            .push_back(Waiter {
                ticket,
                sender: sender.to_string(),
                grant: tx,
            });
        Some(Reservation::Queued(InLine {
            state: self.state.clone(),
            limits: self.limits,
            namespace: namespace.to_string(),
            sender: sender.to_string(),
            ticket,
            rx: Some(rx),
        }))
    }

    fn permit(&self, namespace: &str, sender: &str) -> SendPermit {
        SendPermit {
            state: self.state.clone(),
            limits: self.limits,
            namespace: namespace.to_string(),
            sender: sender.to_string(),
            armed: true,
        }
    }
}

impl SendPermit {
    /// Keeps this slot for the next call of the same delivery (`key`, as given to
    /// [`SendSlots::reserve_or_park`]) instead of giving it back: a look-up that found
    /// nothing is followed by the send, which would otherwise queue behind every delivery
    /// parked meanwhile. Given back when that call reserves it, when the reconcile ends
    /// ([`SendSlots::forget`]), or after [`HOLD_FOR`].
    pub fn keep_for(mut self, key: &str) {
        self.armed = false;
        let mut state = lock(&self.state);
        state.held.push(Held {
            key: key.to_string(),
            namespace: std::mem::take(&mut self.namespace),
            sender: std::mem::take(&mut self.sender),
            slot: true,
            since: Instant::now(),
            own: true,
        });
    }
}

impl Drop for SendPermit {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = lock(&self.state);
        state.give_back(&self.namespace, &self.sender);
        state.expire(Instant::now());
        let wakes = state.fill(&self.limits, &self.state);
        drop(state);
        wake(wakes);
    }
}

/// Parks `key` at the back of the parked list, unless it is parked already; then it keeps its
/// turn, waiting now for the sender it asked for last (its Email may have moved to another).
fn park(state: &mut State, namespace: &str, sender: &str, key: &str) {
    state.parked.park(namespace, sender, key);
}

mod parked;
#[cfg(test)]
mod tests;
