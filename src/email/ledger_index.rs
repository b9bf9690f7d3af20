//! What the operator keeps of the ledger in memory, filled from the EmailDelivery watch: per
//! entry, its Email's name and its orphaned-since mark, and per Email name, how many entries
//! it has.
//!
//! Two questions are asked of it: does an Email name have entries at all (a new Email, which
//! has none, then skips the ledger list; see `deliver::recover_from_ledger`), and which entries
//! are there to sweep. Decisions about an entry itself are never made from here but from the
//! API server. Whole cached EmailDelivery objects cost about 1.8 KB each (benches/e2e under
//! heaptrack) and the first question was a scan of all of them for every new Email; an entry
//! here is about a tenth of that and the question one hash lookup.

use std::collections::HashMap;
use std::sync::RwLock;

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::api::EmailDelivery;
use crate::controller::ORPHANED_SINCE;

/// One ledger entry, as far as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedEntry {
    pub namespace: String,
    pub name: String,
    pub email_name: String,
    /// The `kmailops.io/orphaned-since` annotation, as written.
    pub orphaned_since: Option<String>,
}

impl IndexedEntry {
    fn of(entry: &EmailDelivery) -> Self {
        Self {
            namespace: entry.namespace().unwrap_or_default(),
            name: entry.name_any(),
            email_name: entry.spec.email_name.clone(),
            orphaned_since: entry.annotations().get(ORPHANED_SINCE).cloned(),
        }
    }

    fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }

    fn email(&self) -> (String, String) {
        (self.namespace.clone(), self.email_name.clone())
    }
}

/// See the module docs. Shared behind an `Arc`; every method takes `&self`.
#[derive(Default)]
pub struct LedgerIndex {
    state: RwLock<State>,
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// (namespace, entry name) -> entry.
    entries: HashMap<(String, String), IndexedEntry>,
    /// (namespace, Email name) -> number of entries.
    per_email: HashMap<(String, String), u32>,
    /// The entries of a (re)list under way; they replace `entries` when it completes, so the
    /// index never shows a half-listed ledger.
    relisting: Option<HashMap<(String, String), IndexedEntry>>,
    listed: bool,
}

impl State {
    fn insert(&mut self, entry: IndexedEntry) {
        let email = entry.email();
        if let Some(old) = self.entries.insert(entry.key(), entry) {
            // An update (the Email's name never changes: the spec is immutable).
            self.release(&old.email());
        }
        *self.per_email.entry(email).or_default() += 1;
    }

    fn remove(&mut self, key: &(String, String)) {
        if let Some(old) = self.entries.remove(key) {
            self.release(&old.email());
        }
    }

    fn release(&mut self, email: &(String, String)) {
        if let Some(n) = self.per_email.get_mut(email) {
            *n -= 1;
            if *n == 0 {
                self.per_email.remove(email);
            }
        }
    }

    fn replace_all(&mut self, entries: HashMap<(String, String), IndexedEntry>) {
        self.per_email.clear();
        for entry in entries.values() {
            *self.per_email.entry(entry.email()).or_default() += 1;
        }
        self.entries = entries;
    }
}

impl LedgerIndex {
    /// Takes one event of the EmailDelivery watch.
    pub fn apply(&self, event: &watcher::Event<EmailDelivery>) {
        let mut state = self.write();
        match event {
            watcher::Event::Apply(entry) => state.insert(IndexedEntry::of(entry)),
            watcher::Event::Delete(entry) => state.remove(&IndexedEntry::of(entry).key()),
            watcher::Event::Init => state.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(entry) => {
                let entry = IndexedEntry::of(entry);
                state
                    .relisting
                    .get_or_insert_default()
                    .insert(entry.key(), entry);
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

    /// Every known entry, at this moment.
    pub fn entries(&self) -> Vec<IndexedEntry> {
        self.read().entries.values().cloned().collect()
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

    fn entry(ns: &str, name: &str, email: &str, orphaned: Option<&str>) -> EmailDelivery {
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
        if let Some(since) = orphaned {
            d.annotations_mut()
                .insert(ORPHANED_SINCE.into(), since.into());
        }
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
        index.apply(&watcher::Event::InitApply(entry("shop", "a-1", "a", None)));
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
        index.apply(&watcher::Event::Apply(entry("shop", "a-1", "a", None)));
        index.apply(&watcher::Event::Apply(entry("shop", "a-2", "a", None)));
        // A status update of an entry is not a second entry.
        index.apply(&watcher::Event::Apply(entry("shop", "a-2", "a", None)));
        assert_eq!(index.len(), 2);
        index.apply(&watcher::Event::Delete(entry("shop", "a-1", "a", None)));
        assert!(index.has_entries_for("shop", "a"));
        index.apply(&watcher::Event::Delete(entry("shop", "a-2", "a", None)));
        assert!(!index.has_entries_for("shop", "a"));
        assert!(index.is_empty());
        // A delete of something never seen changes nothing.
        index.apply(&watcher::Event::Delete(entry("shop", "zz", "z", None)));
        assert!(index.is_empty());
    }

    #[test]
    fn a_relist_replaces_everything_and_keeps_the_marks() {
        let index = LedgerIndex::default();
        index.apply(&watcher::Event::Apply(entry(
            "shop", "gone-1", "gone", None,
        )));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(entry(
            "shop",
            "kept-1",
            "kept",
            Some("2026-11-21T10:00:00Z"),
        )));
        // Until the relist completes, the old state answers.
        assert!(index.has_entries_for("shop", "gone"));
        index.apply(&watcher::Event::InitDone);
        assert!(!index.has_entries_for("shop", "gone"));
        assert_eq!(
            index.entries(),
            vec![IndexedEntry {
                namespace: "shop".into(),
                name: "kept-1".into(),
                email_name: "kept".into(),
                orphaned_since: Some("2026-11-21T10:00:00Z".into()),
            }]
        );
    }
}
