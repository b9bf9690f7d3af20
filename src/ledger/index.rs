//! The ledger's entries, as the operator keeps them: for each entry only its Email's name and
//! the retention sweep's mark, filled from the EmailDelivery watch.
//!
//! Two questions are asked of it. Does an Email name have entries at all? A new Email, which
//! has none, then skips the ledger list (see `deliver::recover_from_ledger`); asked of a cache
//! of whole entries, that was a scan of every entry for every new Email (benches/e2e, perf).
//! And which entries does the retention sweep act on (`retention::sweep`)? Decisions about an
//! entry's delivery are never made from here: reconciles read the entries themselves from the
//! API server. So no copy of the entries is kept: at 10,000 sent Emails a cache of trimmed
//! entries held about 12 MiB, this index about a quarter of that.

use std::collections::HashMap;
use std::sync::RwLock;

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::ledger::head::EntryHead;

/// (namespace, name): of an entry, or of an Email.
type Key = (String, String);

/// What is kept of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Facts {
    /// `spec.emailName`, in the entry's namespace.
    email: String,
    /// The entry's `kmailops.io/orphaned-since` annotation, as written.
    orphaned_since: Option<Box<str>>,
}

fn entry_key(entry: &EntryHead) -> Key {
    (entry.namespace().unwrap_or_default(), entry.name_any())
}

fn facts(entry: &EntryHead) -> Facts {
    Facts {
        email: entry.email_name.clone(),
        orphaned_since: entry.orphaned_since().map(Into::into),
    }
}

/// One entry, as [`LedgerIndex::pick`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub email_name: &'a str,
    /// The `kmailops.io/orphaned-since` annotation, as written.
    pub orphaned_since: Option<&'a str>,
}

/// See the module docs. Shared behind an `Arc`; every method takes `&self`.
#[derive(Default)]
pub struct LedgerIndex {
    state: RwLock<State>,
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Facts>,
    /// Email -> number of entries.
    per_email: HashMap<Key, u32>,
    /// The entries of a (re)list under way; they replace `entries` when it completes, so the
    /// index never shows a half-listed ledger.
    relisting: Option<HashMap<Key, Facts>>,
    listed: bool,
}

impl State {
    fn insert(&mut self, entry: Key, facts: Facts) {
        let email = (entry.0.clone(), facts.email.clone());
        if let Some(old) = self.entries.insert(entry.clone(), facts) {
            // An update (the Email's name never changes: the spec is immutable).
            self.release(&(entry.0, old.email));
        }
        *self.per_email.entry(email).or_default() += 1;
    }

    fn remove(&mut self, entry: &Key) {
        if let Some(old) = self.entries.remove(entry) {
            self.release(&(entry.0.clone(), old.email));
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

    fn replace_all(&mut self, entries: HashMap<Key, Facts>) {
        self.per_email.clear();
        for ((namespace, _), facts) in &entries {
            *self
                .per_email
                .entry((namespace.clone(), facts.email.clone()))
                .or_default() += 1;
        }
        self.entries = entries;
    }
}

impl LedgerIndex {
    /// Takes one event of the EmailDelivery watch.
    pub fn apply(&self, event: &watcher::Event<EntryHead>) {
        let mut state = self.write();
        match event {
            watcher::Event::Apply(entry) => state.insert(entry_key(entry), facts(entry)),
            watcher::Event::Delete(entry) => state.remove(&entry_key(entry)),
            watcher::Event::Init => state.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(entry) => {
                state
                    .relisting
                    .get_or_insert_default()
                    .insert(entry_key(entry), facts(entry));
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

    /// Whether the entry `namespace/name` is known.
    pub fn has_entry(&self, namespace: &str, name: &str) -> bool {
        self.read()
            .entries
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// `(namespace, name, what)` of each entry for which `choose` says `Some(what)`, in no
    /// particular order. `choose` runs under the index's read lock (watch events wait), so it
    /// must be quick and take no lock that handling a watch event takes.
    pub fn pick<T>(&self, choose: impl Fn(EntryView<'_>) -> Option<T>) -> Vec<(String, String, T)> {
        let state = self.read();
        let mut chosen = Vec::new();
        for ((namespace, name), facts) in &state.entries {
            let view = EntryView {
                namespace,
                name,
                email_name: &facts.email,
                orphaned_since: facts.orphaned_since.as_deref(),
            };
            if let Some(what) = choose(view) {
                chosen.push((namespace.clone(), name.clone(), what));
            }
        }
        chosen
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
    use crate::ledger::retention::ORPHANED_SINCE;

    fn entry(ns: &str, name: &str, email: &str) -> EntryHead {
        EntryHead::new(ns, name, email)
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

    fn marked(mut d: EntryHead, since: &str) -> EntryHead {
        d.annotations_mut()
            .insert(ORPHANED_SINCE.into(), since.into());
        d
    }

    /// What `pick` shows: every entry, with its Email and mark as last seen.
    fn all(index: &LedgerIndex) -> Vec<(String, String, (String, Option<String>))> {
        let mut all = index.pick(|e| {
            Some((
                e.email_name.to_string(),
                e.orphaned_since.map(str::to_string),
            ))
        });
        all.sort();
        all
    }

    #[test]
    fn an_entry_is_known_by_name_with_its_email_and_its_latest_mark() {
        let index = LedgerIndex::default();
        index.apply(&watcher::Event::Apply(entry("shop", "a-1", "a")));
        assert!(index.has_entry("shop", "a-1"));
        assert!(!index.has_entry("other", "a-1"));
        assert!(!index.has_entry("shop", "a"));
        let t = "2026-11-21T10:00:00Z";
        index.apply(&watcher::Event::Apply(marked(entry("shop", "a-1", "a"), t)));
        assert_eq!(
            all(&index),
            [("shop".into(), "a-1".into(), ("a".into(), Some(t.into())))]
        );
        // The mark removed again (the Email came back).
        index.apply(&watcher::Event::Apply(entry("shop", "a-1", "a")));
        assert_eq!(
            all(&index),
            [("shop".into(), "a-1".into(), ("a".into(), None))]
        );
        index.apply(&watcher::Event::Delete(entry("shop", "a-1", "a")));
        assert!(!index.has_entry("shop", "a-1"));
        assert!(all(&index).is_empty());
    }

    #[test]
    fn pick_returns_only_what_it_chooses_and_a_relist_brings_the_new_marks() {
        let index = LedgerIndex::default();
        index.apply(&watcher::Event::Apply(entry("shop", "a-1", "a")));
        index.apply(&watcher::Event::Apply(entry("shop", "b-1", "b")));
        index.apply(&watcher::Event::Apply(entry("bar", "a-1", "a")));
        let mut shop = index.pick(|e| (e.namespace == "shop").then_some(e.email_name.len()));
        shop.sort();
        assert_eq!(
            shop,
            [
                ("shop".into(), "a-1".into(), 1),
                ("shop".into(), "b-1".into(), 1)
            ]
        );
        // A relist (after a watch gap) in which b-1 got marked and bar/a-1 was deleted.
        let t = "2026-11-21T10:00:00Z";
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(entry("shop", "a-1", "a")));
        index.apply(&watcher::Event::InitApply(marked(
            entry("shop", "b-1", "b"),
            t,
        )));
        index.apply(&watcher::Event::InitDone);
        assert_eq!(
            all(&index),
            [
                ("shop".into(), "a-1".into(), ("a".into(), None)),
                ("shop".into(), "b-1".into(), ("b".into(), Some(t.into())))
            ]
        );
        assert!(!index.has_entries_for("bar", "a"));
    }
}
