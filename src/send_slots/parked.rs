//! The parked deliveries, oldest first, kept by what they wait for.
//!
//! Whether a parked delivery may have a place depends only on its namespace and sender, so
//! the list is kept as one queue per (namespace, sender) in parking order. "The oldest parked
//! delivery that fits" is then the oldest front among the queues that fit: a look at each
//! queue's front, not a walk over every parked delivery. With one list, every freed slot
//! walked the whole backlog (two map look-ups per delivery), and parking and unparking
//! searched it by key: a tenant that queued 10,000 Emails made each send of every tenant pay
//! for all of them.

use std::collections::{HashMap, VecDeque};

/// (namespace, sender).
type Class = (String, String);

/// See the module docs.
#[derive(Default)]
pub(super) struct ParkedList {
    /// Parking order: each new key gets the next number, and keeps it while parked.
    next: u64,
    /// key -> (its number, what it waits for).
    keys: HashMap<String, (u64, Class)>,
    /// (namespace, sender) -> its keys, oldest first. No queue is empty.
    queues: HashMap<Class, VecDeque<(u64, String)>>,
}

impl ParkedList {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Parks `key` at the back, unless it is parked already: then it keeps its turn, waiting
    /// now for `namespace` and `sender` (its Email may have moved to another sender).
    pub fn park(&mut self, namespace: &str, sender: &str, key: &str) {
        if let Some((seq, class)) = self.keys.get(key) {
            if class.0 == namespace && class.1 == sender {
                return;
            }
            let seq = *seq;
            self.remove(key);
            let class: Class = (namespace.to_string(), sender.to_string());
            let queue = self.queues.entry(class.clone()).or_default();
            // Its turn among the others of its new queue, which are in parking order.
            let at = queue.partition_point(|(s, _)| *s < seq);
            queue.insert(at, (seq, key.to_string()));
            self.keys.insert(key.to_string(), (seq, class));
            return;
        }
        let seq = self.next;
        self.next += 1;
        let class: Class = (namespace.to_string(), sender.to_string());
        self.queues
            .entry(class.clone())
            .or_default()
            .push_back((seq, key.to_string()));
        self.keys.insert(key.to_string(), (seq, class));
    }

    /// Takes `key` off the list, if it is on it.
    pub fn remove(&mut self, key: &str) {
        let Some((seq, class)) = self.keys.remove(key) else {
            return;
        };
        if let Some(queue) = self.queues.get_mut(&class) {
            if let Ok(at) = queue.binary_search_by_key(&seq, |(s, _)| *s) {
                queue.remove(at);
            }
            if queue.is_empty() {
                self.queues.remove(&class);
            }
        }
    }

    /// The oldest parked delivery whose namespace and sender `may_go` admits, as
    /// (namespace, sender, key); it leaves the list.
    pub fn take_oldest(
        &mut self,
        may_go: impl Fn(&str, &str) -> bool,
    ) -> Option<(String, String, String)> {
        let class = self
            .queues
            .iter()
            .filter(|((namespace, sender), _)| may_go(namespace, sender))
            .filter_map(|(class, queue)| queue.front().map(|(seq, _)| (*seq, class)))
            .min_by_key(|(seq, _)| *seq)
            .map(|(_, class)| class.clone())?;
        let queue = self.queues.get_mut(&class)?;
        let (_, key) = queue.pop_front()?;
        if queue.is_empty() {
            self.queues.remove(&class);
        }
        self.keys.remove(&key);
        Some((class.0, class.1, key))
    }

    /// Every parked delivery as (namespace, sender, key), in no particular order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.keys
            .iter()
            .map(|(key, (_, (ns, sender)))| (ns.as_str(), sender.as_str(), key.as_str()))
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
        /// Takes the oldest whose (namespace, sender) is in this set (bit n*3+s).
        Take(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, 0u8..3, 0u8..12).prop_map(|(n, s, k)| Op::Park(n, s, k)),
            1 => (0u8..12).prop_map(Op::Remove),
            2 => any::<u16>().prop_map(Op::Take),
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
                    Op::Take(set) => {
                        let may_go = |ns: &str, sender: &str| {
                            let n: u32 = ns[2..].parse().unwrap();
                            let s: u32 = sender[1..].parse().unwrap();
                            set & (1 << (n * 3 + s)) != 0
                        };
                        prop_assert_eq!(list.take_oldest(may_go), reference.take_oldest(may_go));
                    }
                }
                prop_assert_eq!(list.len(), reference.0.len());
                prop_assert!(list.queues.values().all(|q| !q.is_empty()));
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
        let order: Vec<String> = std::iter::from_fn(|| list.take_oldest(|_, _| true))
            .map(|(_, _, key)| key)
            .collect();
        assert_eq!(order, ["k1", "k2", "k3"]);
        assert_eq!(list.len(), 0);
        assert!(list.queues.is_empty());
    }
}
