//! Publishes Kubernetes Events (`events.k8s.io/v1`) on kmailops objects.
//!
//! An Event that repeats (same object, type, reason and action) within [`SERIES_WINDOW`]
//! becomes a series on the first Event (`series.count`, `series.lastObservedTime`) instead of
//! a new object, as `kubectl describe` expects.
//!
//! kube's `Recorder` does the same, but keeps a full copy of every Event it published for six
//! minutes and scans that whole cache on each publish. Every delivered Email publishes one
//! `Sent` Event, so a burst of 5,000 Emails held 17.7 MB of Event copies (41% of the
//! operator's peak heap, benches/e2e under heaptrack) and the scans were 3% of its CPU. Here a
//! published Event costs an entry of a few dozen bytes until its window ends, and expiry
//! walks only the entries that are due.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{self as events_v1, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client};

/// How long a published Event can still grow into a series (kube's and client-go's value).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Who publishes: `reportingController` and `reportingInstance` of every Event.
#[derive(Clone, Debug)]
pub struct Reporter {
    pub controller: String,
    pub instance: String,
}

/// Publishes Events; cheap to share (`&self` everywhere).
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
    recent: Mutex<Recent>,
}

/// The Events published within the series window, as much as a repeat needs of them.
#[derive(Default)]
struct Recent {
    by_key: HashMap<u64, Published>,
    /// Keys in publishing order with the time of that publish; an entry is due when the last
    /// publish of its key is older than the window.
    order: VecDeque<(Instant, u64)>,
    hasher: std::collections::hash_map::RandomState,
}

struct Published {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

impl Recent {
    fn key(&self, ev: &Event, regarding: &ObjectReference) -> u64 {
        let type_ = match ev.type_ {
            EventType::Normal => 0u8,
            EventType::Warning => 1u8,
        };
        self.hasher.hash_one((
            type_,
            &ev.reason,
            &ev.action,
            &regarding.uid,
            &regarding.namespace,
            &regarding.name,
            &regarding.kind,
            ev.secondary
                .as_ref()
                .map(|s| (&s.uid, &s.namespace, &s.name)),
        ))
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if now.duration_since(at) < SERIES_WINDOW {
                break;
            }
            self.order.pop_front();
            // A key published again since has a later place in `order`: keep it until then.
            if self
                .by_key
                .get(&key)
                .is_some_and(|p| now.duration_since(p.last) >= SERIES_WINDOW)
            {
                self.by_key.remove(&key);
            }
        }
    }

    /// Notes a publish at `now`; when it repeats an Event of the window, the series to extend.
    fn note(
        &mut self,
        now: Instant,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> (u64, Option<Repeat>) {
        self.expire(now);
        let key = self.key(ev, regarding);
        self.order.push_back((now, key));
        let repeat = self.by_key.get_mut(&key).map(|p| {
            p.count += 1;
            p.last = now;
            Repeat {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                count: p.count,
            }
        });
        (key, repeat)
    }

    /// Remembers a newly created Event as the start of a possible series.
    fn remember(&mut self, key: u64, namespace: String, name: String, now: Instant) {
        self.by_key.insert(
            key,
            Published {
                namespace,
                name,
                count: 1,
                last: now,
            },
        );
    }
}

/// An Event to extend rather than create again.
struct Repeat {
    namespace: String,
    name: String,
    count: i32,
}

impl EventPublisher {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            recent: Mutex::default(),
        }
    }

    /// Publishes `ev` on the object `regarding` (in its namespace).
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Instant::now();
        // What to do is decided under the lock; the API call is made without it.
        let (key, repeat) = self.lock().note(now, ev, regarding);
        if let Some(Repeat {
            namespace,
            name,
            count,
        }) = repeat
        {
            match self.add_to_series(&namespace, &name, count).await {
                Ok(()) => return Ok(()),
                // Deleted meanwhile (Events have a short TTL in etcd): start anew below.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(ev, regarding);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let name = event.metadata.name.clone().unwrap_or_default();
        Api::<events_v1::Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.lock().remember(key, namespace, name, now);
        Ok(())
    }

    async fn add_to_series(
        &self,
        namespace: &str,
        name: &str,
        count: i32,
    ) -> Result<(), kube::Error> {
        let patch = serde_json::json!({
            "series": EventSeries {
                count,
                last_observed_time: MicroTime(jiff::Timestamp::now()),
            }
        });
        Api::<events_v1::Event>::namespaced(self.client.clone(), namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    fn new_event(&self, ev: &Event, regarding: &ObjectReference) -> events_v1::Event {
        let now = jiff::Timestamp::now();
        let object = regarding
            .name
            .as_deref()
            .unwrap_or(&self.reporter.controller);
        events_v1::Event {
            metadata: ObjectMeta {
                namespace: Some(
                    regarding
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                ),
                // The convention of kubectl and client-go: the object's name and a unique suffix.
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                ..Default::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone()),
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Entries are inserted and removed whole, so a panicked holder leaves nothing half-done.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("kmailops.io/v1alpha1".into()),
            kind: Some("Email".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn event(reason: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some("a note".into()),
            action: "Deliver".into(),
            secondary: None,
        }
    }

    /// A publish whose create succeeds; true when it extended a series instead.
    fn publish(recent: &mut Recent, at: Instant, ev: &Event, r: &ObjectReference) -> bool {
        let (key, repeat) = recent.note(at, ev, r);
        if repeat.is_none() {
            recent.remember(key, "shop".into(), "x".into(), at);
        }
        repeat.is_some()
    }

    #[test]
    fn a_repeat_within_the_window_is_a_series_and_other_events_are_not() {
        let mut recent = Recent::default();
        let t = Instant::now();
        assert!(!publish(
            &mut recent,
            t,
            &event("Retrying"),
            &reference("a")
        ));
        assert!(publish(
            &mut recent,
            t + Duration::from_secs(60),
            &event("Retrying"),
            &reference("a")
        ));
        assert!(!publish(&mut recent, t, &event("Sent"), &reference("a")));
        assert!(!publish(
            &mut recent,
            t,
            &event("Retrying"),
            &reference("b")
        ));
    }

    #[test]
    fn entries_expire_a_window_after_their_last_publish_only() {
        let mut recent = Recent::default();
        let t = Instant::now();
        let (ev, r) = (event("Retrying"), reference("a"));
        publish(&mut recent, t, &ev, &r);
        // Published again after 5 minutes: the first publish's expiry must not drop it.
        assert!(publish(&mut recent, t + Duration::from_secs(300), &ev, &r));
        assert!(publish(&mut recent, t + Duration::from_secs(400), &ev, &r));
        // A window after the last publish it is gone: a new Event, not a series.
        assert!(!publish(
            &mut recent,
            t + Duration::from_secs(400) + SERIES_WINDOW,
            &ev,
            &r
        ));
        // Nothing lingers: one entry, and only the live publishes are queued.
        assert_eq!(recent.by_key.len(), 1);
        assert_eq!(recent.order.len(), 1);
    }

    #[test]
    fn a_thousand_one_off_events_leave_nothing_after_the_window() {
        let mut recent = Recent::default();
        let t = Instant::now();
        for i in 0..1000 {
            publish(&mut recent, t, &event("Sent"), &reference(&format!("e{i}")));
        }
        assert_eq!(recent.by_key.len(), 1000);
        recent.expire(t + SERIES_WINDOW);
        assert!(recent.by_key.is_empty());
        assert!(recent.order.is_empty());
    }
}
