//! What only the Email controller keeps in memory: the send slots, the provider calls this
//! process has started, outcomes the API server did not take yet, and notes of its own status
//! writes that the cache has not shown yet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::api::EmailDeliveryStatus;
use crate::send_slots::{SendSlots, SlotLimits};

pub struct SendState {
    /// Limits provider calls in flight: in all, per sender, per namespace.
    pub slots: SendSlots,
    /// Ledger entry -> the attempt whose provider call this process started and whose outcome
    /// is not recorded yet. A claim of ours without a call here never reached the provider
    /// (e.g. the answer to our claim was lost), so we may still make that call.
    calls: Arc<Mutex<HashMap<String, Call>>>,
    /// Outcomes of finished sends the API server did not take yet (it was unreachable).
    unrecorded: Mutex<HashMap<String, EmailDeliveryStatus>>,
    /// Emails whose status this process wrote and whose write the cache has not shown yet:
    /// uid -> the resourceVersion the write was computed from (see [`SendState::is_stale`]).
    status_written_from: Mutex<HashMap<String, String>>,
    /// Delivery keys whose provider said "not there" when asked before their first send, so
    /// an Email held back by a rate limit or a busy slot is not asked about again; dropped
    /// when the delivery is claimed.
    absent: Mutex<HashSet<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Call {
    attempt: i32,
    running: bool,
}

/// Locks a mutex whose data stays consistent even if a holder panicked (single inserts and
/// removals), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks a provider call as no longer running when it ends, however it ends. The call stays
/// known (as finished) until its outcome is recorded ([`SendState::recorded`]).
pub struct CallGuard {
    calls: Arc<Mutex<HashMap<String, Call>>>,
    entry: String,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(call) = lock(&self.calls).get_mut(&self.entry) {
            call.running = false;
        }
    }
}

impl SendState {
    pub fn new(limits: SlotLimits) -> Self {
        Self {
            slots: SendSlots::new(limits),
            calls: Arc::default(),
            unrecorded: Mutex::default(),
            status_written_from: Mutex::default(),
            absent: Mutex::default(),
        }
    }

    /// Notes that the provider does not have the delivery `key` (asked before its first send).
    pub fn note_absent(&self, key: &str) {
        if !key.is_empty() {
            lock(&self.absent).insert(key.to_string());
        }
    }

    /// Whether the provider said it does not have `key` since this process started.
    pub fn known_absent(&self, key: &str) -> bool {
        !key.is_empty() && lock(&self.absent).contains(key)
    }

    /// The delivery `key` is claimed: the ledger speaks for it from now on.
    pub fn claimed(&self, key: &str) {
        lock(&self.absent).remove(key);
    }

    /// Notes that this process calls the provider for `attempt` of `entry`.
    pub fn start_call(&self, entry: &str, attempt: i32) -> CallGuard {
        lock(&self.calls).insert(
            entry.to_string(),
            Call {
                attempt,
                running: true,
            },
        );
        CallGuard {
            calls: self.calls.clone(),
            entry: entry.to_string(),
        }
    }

    /// Whether this process is calling the provider for `entry` right now.
    pub fn is_running(&self, entry: &str) -> bool {
        lock(&self.calls).get(entry).is_some_and(|c| c.running)
    }

    /// Whether this process started the provider call for `attempt` of `entry` (running, or
    /// finished with its outcome not recorded yet).
    pub fn called(&self, entry: &str, attempt: i32) -> bool {
        lock(&self.calls)
            .get(entry)
            .is_some_and(|c| c.attempt == attempt)
    }

    /// The outcome of `entry`'s call is in the ledger: nothing of it needs remembering.
    pub fn recorded(&self, entry: &str) {
        lock(&self.calls).remove(entry);
    }

    /// Keeps an outcome the API server did not accept, to be written by the next reconcile.
    pub fn keep_unrecorded(&self, entry: &str, outcome: EmailDeliveryStatus) {
        lock(&self.unrecorded).insert(entry.to_string(), outcome);
    }

    /// Takes a kept outcome of `entry`, if any.
    pub fn take_unrecorded(&self, entry: &str) -> Option<EmailDeliveryStatus> {
        lock(&self.unrecorded).remove(entry)
    }

    /// Notes that this process wrote the status of the object `uid`, computed from its version
    /// `from_version`.
    pub fn note_status_write(&self, uid: &str, from_version: &str) {
        lock(&self.status_written_from).insert(uid.to_string(), from_version.to_string());
    }

    /// Forgets the note of an Email that is gone.
    pub fn forget(&self, uid: &str) {
        lock(&self.status_written_from).remove(uid);
    }

    /// Whether `uid` at `version` is a version this process has already written a status over,
    /// i.e. the cache does not show that write yet. A reconcile triggered in that moment (a
    /// sender's status changed, a requeue) would otherwise act on the status from before its
    /// own write: repeat the ledger lookup and overwrite a fresh `Sent` with
    /// `RecoveredFromLedger`. The note is dropped once any other version is seen, so it lives
    /// only until the watch catches up.
    pub fn is_stale(&self, uid: &str, version: &str) -> bool {
        let mut written = lock(&self.status_written_from);
        match written.get(uid) {
            Some(from) if from == version => true,
            Some(_) => {
                written.remove(uid);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_known_while_running_and_after_until_its_outcome_is_recorded() {
        let state = SendState::new(SlotLimits::from_total(1));
        assert!(!state.called("e-1", 1));
        let guard = state.start_call("e-1", 1);
        assert!(state.is_running("e-1") && state.called("e-1", 1));
        assert!(!state.called("e-1", 2), "another attempt was not called");
        drop(guard);
        assert!(!state.is_running("e-1"));
        assert!(state.called("e-1", 1), "finished but not recorded");
        state.recorded("e-1");
        assert!(!state.called("e-1", 1));
    }

    #[test]
    fn a_status_note_lives_until_another_version_is_seen() {
        let state = SendState::new(SlotLimits::from_total(1));
        state.note_status_write("u", "5");
        assert!(state.is_stale("u", "5"));
        assert!(!state.is_stale("u", "6"));
        assert!(
            !state.is_stale("u", "5"),
            "dropped once the watch caught up"
        );
    }
}
