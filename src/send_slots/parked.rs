//! The parked deliveries, oldest first, kept by what they wait for.
//!
//! Whether a parked delivery may have a place depends only on its namespace and sender, so
//! the list is kept as one queue per sender within each namespace, in parking order. "The
//! oldest parked delivery that fits" is then the oldest front among the queues that fit: a
//! look at each queue's front, not a walk over every parked delivery, and a namespace at its
//! cap is passed over whole, however many senders its deliveries wait for. With one list,
//! every freed slot walked the whole backlog (two map look-ups per delivery), and parking and
//! unparking searched it by key: a tenant that queued 10,000 Emails made each send of every
//! tenant pay for all of them.

use std::collections::{HashMap, VecDeque};

/// A namespace's queues: sender -> its keys, oldest first. No queue is empty.
type Queues = HashMap<String, VecDeque<(u64, String)>>;

/// See the module docs.
#[derive(Default)]
pub(super) struct ParkedList {
    /// Parking order: each new key gets the next number, and keeps it while parked.
    next: u64,
    /// key -> (its number, namespace, sender).
    keys: HashMap<String, (u64, String, String)>,
    /// namespace -> its queues. No namespace without a queue.
    namespaces: HashMap<String, Queues>,
}

impl ParkedList {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Parks `key` at the back, unless it is parked already: then it keeps its turn, waiting
    /// now for `namespace` and `sender` (its Email may have moved to another sender).
    pub fn park(&mut self, namespace: &str, sender: &str, key: &str) {
        let seq = match self.keys.get(key) {
            Some((_, ns, s)) if ns == namespace && s == sender => return,
            Some((seq, _, _)) => {
                let seq = *seq;
                self.remove(key);
                seq
            }
            None => {
                self.next += 1;
                self.next - 1
            }
        };
        let queue = self
            .namespaces
            .entry(namespace.to_string())
            .or_default()
            .entry(sender.to_string())
            .or_default();
        // Its turn among the others of its queue, which are in parking order (a new key's
        // number is the highest, so it goes to the back).
        let at = queue.partition_point(|(s, _)| *s < seq);
        queue.insert(at, (seq, key.to_string()));
        self.keys.insert(
            key.to_string(),
            (seq, namespace.to_string(), sender.to_string()),
        );
    }

    /// Takes `key` off the list, if it is on it.
    pub fn remove(&mut self, key: &str) {
        let Some((seq, namespace, sender)) = self.keys.remove(key) else {
            return;
        };
        let Some(queues) = self.namespaces.get_mut(&namespace) else {
            return;
        };
        if let Some(queue) = queues.get_mut(&sender) {
            if let Ok(at) = queue.binary_search_by_key(&seq, |(s, _)| *s) {
                queue.remove(at);
            }
            if queue.is_empty() {
                queues.remove(&sender);
            }
        }
        if queues.is_empty() {
            self.namespaces.remove(&namespace);
        }
    }

    /// The oldest parked delivery whose namespace and sender `may_go` admits, as
    /// (namespace, sender, key); it leaves the list. `namespace_may_go` must be true of every
    /// namespace for which `may_go` is true of some sender; a namespace it refuses is passed
    /// over without looking at its queues.
    pub fn take_oldest(
        &mut self,
        namespace_may_go: impl Fn(&str) -> bool,
        may_go: impl Fn(&str, &str) -> bool,
    ) -> Option<(String, String, String)> {
        let (namespace, sender) = self
            .namespaces
            .iter()
            .filter(|(namespace, _)| namespace_may_go(namespace))
            .flat_map(|(namespace, queues)| {
                queues
                    .iter()
                    .filter(|(sender, _)| may_go(namespace, sender))
                    .filter_map(move |(sender, queue)| {
                        queue.front().map(|(seq, _)| (*seq, namespace, sender))
                    })
            })
            .min_by_key(|(seq, _, _)| *seq)
            .map(|(_, namespace, sender)| (namespace.clone(), sender.clone()))?;
        let queues = self.namespaces.get_mut(&namespace)?;
        let queue = queues.get_mut(&sender)?;
        let (_, key) = queue.pop_front()?;
        if queue.is_empty() {
            queues.remove(&sender);
            if queues.is_empty() {
                self.namespaces.remove(&namespace);
            }
        }
        self.keys.remove(&key);
        Some((namespace, sender, key))
    }

    /// Every parked delivery as (namespace, sender, key), in no particular order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.keys
            .iter()
            .map(|(key, (_, ns, sender))| (ns.as_str(), sender.as_str(), key.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The list as it was: one queue in parking order, searched from the front.
    #[derive(Default)]
    struct Reference(VecDeque<(String, String, String)>);

    impl Reference {
        fn park(&mut self, namespace: &str, sender: &str, key: &str) {
            match self.0.iter_mut().find(|p| p.2 == key) {
                Some(p) => {
                    p.0 = namespace.to_string();
                    p.1 = sender.to_string();
                }
                None => {
                    self.0
                        .push_back((namespace.to_string(), sender.to_string(), key.to_string()))
                }
            }
        }
        fn remove(&mut self, key: &str) {
            self.0.retain(|p| p.2 != key);
        }
        fn take_oldest(
            &mut self,
            may_go: impl Fn(&str, &str) -> bool,
        ) -> Option<(String, String, String)> {
            let at = self.0.iter().position(|p| may_go(&p.0, &p.1))?;
            self.0.remove(at)
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Park(u8, u8, u8),
        Remove(u8),
        /// Takes the oldest whose namespace is in the first set (bit n) and whose (namespace,
        /// sender) is in the second (bit n*3+s).
        Take(u8, u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, 0u8..3, 0u8..12).prop_map(|(n, s, k)| Op::Park(n, s, k)),
            1 => (0u8..12).prop_map(Op::Remove),
            2 => (any::<u8>(), any::<u16>()).prop_map(|(n, set)| Op::Take(n, set)),
        ]
    }

    proptest! {
        /// Over any sequence of parkings, moves, removals and take-outs, the list hands out
        /// exactly what one queue searched from the front would: the oldest that may go.
        #[test]
        fn it_hands_out_what_one_queue_in_parking_order_would(ops in prop::collection::vec(op(), 1..200)) {
            let (mut list, mut reference) = (ParkedList::default(), Reference::default());
            for op in ops {
                match op {
                    Op::Park(n, s, k) => {
                        let (ns, sender, key) = (format!("ns{n}"), format!("s{s}"), format!("k{k}"));
                        list.park(&ns, &sender, &key);
                        reference.park(&ns, &sender, &key);
                    }
                    Op::Remove(k) => {
                        list.remove(&format!("k{k}"));
                        reference.remove(&format!("k{k}"));
                    }
                    Op::Take(namespaces, set) => {
                        let namespace_may_go = |ns: &str| {
                            let n: u32 = ns[2..].parse().unwrap();
                            namespaces & (1 << n) != 0
                        };
                        let may_go = |ns: &str, sender: &str| {
                            let n: u32 = ns[2..].parse().unwrap();
                            let s: u32 = sender[1..].parse().unwrap();
                            namespace_may_go(ns) && set & (1 << (n * 3 + s)) != 0
                        };
                        prop_assert_eq!(
                            list.take_oldest(namespace_may_go, may_go),
                            reference.take_oldest(may_go)
                        );
                    }
                }
                prop_assert_eq!(list.len(), reference.0.len());
                let no_empty_queue = list
                    .namespaces
                    .values()
                    .all(|queues| !queues.is_empty() && queues.values().all(|q| !q.is_empty()));
                prop_assert!(no_empty_queue);
            }
        }
    }

    #[test]
    fn a_moved_key_keeps_its_turn_in_its_new_queue() {
        let mut list = ParkedList::default();
        list.park("a", "x", "k1");
        list.park("a", "y", "k2");
        list.park("a", "x", "k3");
        // k3 moves to y, behind k2 (parked before it), and k1 to y, ahead of both.
        list.park("a", "y", "k3");
        list.park("a", "y", "k1");
        let order: Vec<String> = std::iter::from_fn(|| list.take_oldest(|_| true, |_, _| true))
            .map(|(_, _, key)| key)
            .collect();
        assert_eq!(order, ["k1", "k2", "k3"]);
        assert_eq!(list.len(), 0);
        assert!(list.namespaces.is_empty());
    }
}
