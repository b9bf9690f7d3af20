//! Waiting for a cache's first list, from any number of tasks.
//!
//! kube's `Store::wait_until_ready` keeps readiness in a oneshot channel with room for one
//! waker: of several tasks waiting on the same store, only the one that polled last is woken.
//! The Email controller waits on the Email cache itself, so the ledger's retention sweep, which
//! waited on it too, slept for ever and never swept. [`listed`] renews its wait often enough
//! that a lost wake-up costs at most [`RECHECK`].

use std::time::Duration;

use kube::runtime::reflector::{Lookup, Store, store::WriterDropped};

/// How often a wait is renewed.
pub const RECHECK: Duration = Duration::from_millis(250);

/// Resolves once `store` has been listed whole; fails when its watch ended before that.
pub async fn listed<K>(store: &Store<K>) -> Result<(), WriterDropped>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(done) = tokio::time::timeout(RECHECK, store.wait_until_ready()).await {
            return done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::{reflector, watcher};

    #[tokio::test]
    async fn every_waiter_learns_that_the_store_is_listed() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { listed(&store).await })
            })
            .collect();
        // Let every waiter register before the list completes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        let mut listed_object = ConfigMap::default();
        listed_object.metadata.name = Some("a".into());
        writer.apply_watcher_event(&watcher::Event::InitApply(listed_object));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for waiter in waiters {
            tokio::time::timeout(RECHECK * 8, waiter)
                .await
                .expect("a waiter was never told")
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_watch_that_ends_before_its_list_is_an_error() {
        let (store, writer) = reflector::store::<ConfigMap>();
        drop(writer);
        assert!(listed(&store).await.is_err());
    }
}
