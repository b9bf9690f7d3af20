//! The ledger's entries by Email name, filled from the EmailDelivery watch next to the cache.
//!
//! One question is asked of it: does an Email name have entries at all? A new Email, which has
//! none, then skips the ledger list (see `deliver::recover_from_ledger`). Asked of the cache,
//! that was a scan of every cached entry for every new Email (benches/e2e, perf); here it is
//! one hash lookup. Decisions about an entry itself are never made from here.

use std::collections::HashMap;
use std::sync::RwLock;

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::api::EmailDelivery;

/// (namespace, name): of an entry, or of an Email.
type Key = (String, String);

fn entry_key(entry: &EmailDelivery) -> Key {
    (entry.namespace().unwrap_or_default(), entry.name_any())
}

fn email_key(entry: &EmailDelivery) -> Key {
    (
        entry.namespace().unwrap_or_default(),
        entry.spec.email_name.clone(),
    )
}

/// See the module docs. Shared behind an `Arc`; every method takes `&self`.
#[derive(Default)]
pub struct LedgerIndex {
    state: RwLock<State>,
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Entry -> its Email, to tell a new entry from an update and to find the Email of a
    /// deleted one.
    entries: HashMap<Key, Key>,
    /// Email -> number of entries.
    per_email: HashMap<Key, u32>,
    /// The entries of a (re)list under way; they replace `entries` when it completes, so the
    /// index never shows a half-listed ledger.
    relisting: Option<HashMap<Key, Key>>,
    listed: bool,
}

impl State {
    fn insert(&mut self, entry: Key, email: Key) {
        if let Some(old) = self.entries.insert(entry, email.clone()) {
            // An update (the Email's name never changes: the spec is immutable).
            self.release(&old);
        }
        *self.per_email.entry(email).or_default() += 1;
    }

    fn remove(&mut self, entry: &Key) {
        if let Some(old) = self.entries.remove(entry) {
            self.release(&old);
        }
    }

    fn release(&mut self, email: &Key) {
        if let Some(n) = self.per_email.get_mut(email) {
            *n -= 1;
            if *n == 0 {
                self.per_email.remove(email);
            }
        }
    }

    fn replace_all(&mut self, entries: HashMap<Key, Key>) {
        self.per_email.clear();
        for email in entries.values() {
            *self.per_email.entry(email.clone()).or_default() += 1;
        }
        self.entries = entries;
    }
}

impl LedgerIndex {
    /// Takes one event of the EmailDelivery watch.
    pub fn apply(&self, event: &watcher::Event<EmailDelivery>) {
        let mut state = self.write();
        match event {
            watcher::Event::Apply(entry) => state.insert(entry_key(entry), email_key(entry)),
            watcher::Event::Delete(entry) => state.remove(&entry_key(entry)),
            watcher::Event::Init => state.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(entry) => {
                state
                    .relisting
                    .get_or_insert_default()
                    .insert(entry_key(entry), email_key(entry));
            }
            watcher::Event::InitDone => {
                let listed = state.relisting.take().unwrap_or_default();
                state.replace_all(listed);
                if !state.listed {
                    state.listed = true;
                    self.ready.notify_waiters();
                }
            }
        }
    }

    /// Whether any entry of the Email `namespace/email_name` is known.
    pub fn has_entries_for(&self, namespace: &str, email_name: &str) -> bool {
        self.read()
            .per_email
            .contains_key(&(namespace.to_string(), email_name.to_string()))
    }

    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the whole ledger has been listed.
    pub async fn wait_until_ready(&self) {
        loop {
            let notified = self.ready.notified();
            if self.read().listed {
                return;
            }
            notified.await;
        }
    }

    // Every change is one whole insert or removal, so a panicked holder left nothing half-done.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EmailDeliverySpec;

    fn entry(ns: &str, name: &str, email: &str) -> EmailDelivery {
        let mut d = EmailDelivery::new(
            name,
            EmailDeliverySpec {
                email_name: email.into(),
                email_uid: "uid".into(),
                delivery_hash: "0".repeat(64),
                sender_config: "shop/mailersend".into(),
                recipient_count: 1,
            },
        );
        d.metadata.namespace = Some(ns.into());
        d
    }

    #[tokio::test]
    async fn ready_after_the_first_list_with_what_it_listed() {
        let index = std::sync::Arc::new(LedgerIndex::default());
        let waiting = tokio::spawn({
            let index = index.clone();
            async move { index.wait_until_ready().await }
        });
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(entry("shop", "a-1", "a")));
        // Half-listed: nothing shows and nobody is told it is ready.
        assert!(!index.has_entries_for("shop", "a"));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        index.apply(&watcher::Event::InitDone);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("ready after InitDone")
            .unwrap();
        assert!(index.has_entries_for("shop", "a"));
        assert!(!index.has_entries_for("other", "a"));
        assert!(!index.has_entries_for("shop", "b"));
        // Already ready: returns at once.
        index.wait_until_ready().await;
    }

    #[test]
    fn an_email_has_entries_until_its_last_one_is_deleted() {
        let index = LedgerIndex::default();
        index.apply(&watcher::Event::Apply(entry("shop", "a-1", "a")));
        index.apply(&watcher::Event::Apply(entry("shop", "a-2", "a")));
        // A status update of an entry is not a second entry.
        index.apply(&watcher::Event::Apply(entry("shop", "a-2", "a")));
        assert_eq!(index.len(), 2);
        index.apply(&watcher::Event::Delete(entry("shop", "a-1", "a")));
        assert!(index.has_entries_for("shop", "a"));
        index.apply(&watcher::Event::Delete(entry("shop", "a-2", "a")));
        assert!(!index.has_entries_for("shop", "a"));
        assert!(index.is_empty());
        // A delete of something never seen changes nothing.
        index.apply(&watcher::Event::Delete(entry("shop", "zz", "z")));
        assert!(index.is_empty());
    }

    #[test]
    fn a_relist_replaces_everything() {
        let index = LedgerIndex::default();
        index.apply(&watcher::Event::Apply(entry("shop", "gone-1", "gone")));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(entry("shop", "kept-1", "kept")));
        // Until the relist completes, the old state answers.
        assert!(index.has_entries_for("shop", "gone"));
        assert!(!index.has_entries_for("shop", "kept"));
        index.apply(&watcher::Event::InitDone);
        assert!(!index.has_entries_for("shop", "gone"));
        assert!(index.has_entries_for("shop", "kept"));
        assert_eq!(index.len(), 1);
    }
}
