//! Watches that tolerate objects our types reject.
//!
//! The API server accepts values the typed model cannot hold (a `sendAt` with a `+99:00`
//! offset, a number where a string belongs in a field the schema leaves open). A typed list
//! fails whole on one such object: no Email in the cluster would be processed after a restart,
//! and a cache that never fills stops the operator. So each kind is watched through
//! [`Guarded`], which parses every object on its own; [`typed`] turns that stream back
//! into typed events, leaving the rejected objects out of the cache (and dropping a version that
//! was valid before), and hands each rejected object to [`report`], which names the field and
//! the fix in its status and an Event. Nothing of the object's content reaches the logs.

pub mod depth;
mod guarded;
pub mod report;

pub use guarded::{Guarded, Unreadable};

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

/// An object our types rejected: which one, so that [`report`] can read it and say why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

/// Typed events from a guarded watch. `cache` is the store the typed events fill (read to
/// drop the last valid version of an object that turned invalid); rejected objects go to
/// `rejected`.
pub fn typed<K, S>(
    stream: S,
    kind: &'static str,
    cache: Store<K>,
    rejected: mpsc::UnboundedSender<Rejected>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<Guarded<K>>, watcher::Error>> + Send,
{
    stream.filter_map(move |event| {
        let out = event
            .map(|e| convert(e, kind, &cache, &rejected))
            .transpose();
        std::future::ready(out)
    })
}

/// One event; `None` when nothing typed is left of it.
fn convert<K>(
    event: watcher::Event<Guarded<K>>,
    kind: &'static str,
    cache: &Store<K>,
    rejected: &mpsc::UnboundedSender<Rejected>,
) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug,
{
    // The last valid version of a rejected object, as the cache holds it: removed, so the
    // operator never acts on a spec the user has since replaced.
    let previous = |guard: &Guarded<K>| {
        let meta = guard.meta();
        let reference = ObjectRef::<K>::new(meta.name.as_deref().unwrap_or_default())
            .within(meta.namespace.as_deref().unwrap_or_default());
        cache.get(&reference).map(|k| (*k).clone())
    };
    let note = |guard: &Guarded<K>| {
        let meta = guard.meta();
        tracing::warn!(
            kind,
            object = %format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default()),
            "an object does not match the kmailops types; it is left out and its status says why"
        );
        // A closed channel only means the operator is shutting down.
        let _ = rejected.send(Rejected {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        });
    };
    match event {
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
        watcher::Event::InitApply(guard) => match guard.0 {
            Ok(k) => Some(watcher::Event::InitApply(k)),
            Err(_) => {
                // A (re)list rebuilds the cache from what it lists: leaving it out is enough.
                note(&guard);
                None
            }
        },
        watcher::Event::Apply(guard) => match guard.0 {
            Ok(k) => Some(watcher::Event::Apply(k)),
            Err(_) => {
                note(&guard);
                previous(&guard).map(watcher::Event::Delete)
            }
        },
        watcher::Event::Delete(guard) => match guard.0 {
            Ok(k) => Some(watcher::Event::Delete(k)),
            Err(_) => previous(&guard).map(watcher::Event::Delete),
        },
    }
}

/// The name of a kind's object, for messages: `Email shop/welcome`.
pub fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{} {}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Email;

    fn guard(json: serde_json::Value) -> Guarded<Email> {
        serde_json::from_value(json).expect("a guard always parses an object with metadata")
    }

    fn email(name: &str, send_at: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "kmailops.io/v1alpha1", "kind": "Email",
            "metadata": {"name": name, "namespace": "shop", "uid": "u-1"},
            "spec": {"to": ["a@example.org"], "subject": "s", "text": "t", "sendAt": send_at},
        })
    }

    #[test]
    fn a_rejected_object_is_reported_left_out_of_a_list_and_its_valid_version_dropped() {
        let (store, mut writer) = kube::runtime::reflector::store::<Email>();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let good = guard(email("welcome", "2026-12-01T10:00:00Z"));
        let bad = guard(email("welcome", "2026-12-01T10:00:00+99:00"));
        assert!(good.0.is_ok() && bad.0.is_err());

        // In a list, the bad one is simply absent; the good one passes.
        assert!(matches!(
            convert(
                watcher::Event::InitApply(good.clone()),
                "Email",
                &store,
                &tx
            ),
            Some(watcher::Event::InitApply(_))
        ));
        assert!(convert(watcher::Event::InitApply(bad.clone()), "Email", &store, &tx).is_none());
        assert_eq!(rx.try_recv().unwrap().name, "welcome");

        // A valid object in the cache that turns invalid is removed from it.
        writer.apply_watcher_event(&watcher::Event::Apply(good.0.clone().unwrap()));
        let out = convert(watcher::Event::Apply(bad), "Email", &store, &tx);
        assert!(matches!(out, Some(watcher::Event::Delete(e)) if e.name_any() == "welcome"));
        assert_eq!(
            rx.try_recv().unwrap(),
            Rejected {
                kind: "Email",
                namespace: "shop".into(),
                name: "welcome".into()
            }
        );
    }
}
