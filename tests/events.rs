//! Events as `kubectl describe` shows them: one per distinct happening, a repeat folded into
//! the first one's series, published against the real API server.

mod support;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kmailops::events::{EventPublisher, Reporter};
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType};

fn regarding(ns: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("kmailops.io/v1alpha1".into()),
        kind: Some("Email".into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(format!("uid-of-{name}")),
        ..Default::default()
    }
}

fn event(type_: EventType, reason: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Deliver".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn a_repeated_event_is_one_event_with_a_series_and_other_events_stay_apart() {
    let env = support::TestEnv::get().await;
    let ns = env.unique_namespace("events").await;
    let publisher = EventPublisher::new(
        env.client(),
        Reporter {
            controller: "kmailops".into(),
            instance: "kmailops-test-0".into(),
        },
    );
    let retrying = event(
        EventType::Warning,
        "Retrying",
        "503 from the provider; retrying in 2s",
    );
    for _ in 0..3 {
        publisher
            .publish(&retrying, &regarding(&ns, "welcome"))
            .await
            .unwrap();
    }
    publisher
        .publish(
            &event(
                EventType::Normal,
                "Sent",
                "sent through shop/mailersend as m-1",
            ),
            &regarding(&ns, "welcome"),
        )
        .await
        .unwrap();
    // The same reason on another Email is its own Event.
    publisher
        .publish(&retrying, &regarding(&ns, "invoice"))
        .await
        .unwrap();

    let events: Api<K8sEvent> = Api::namespaced(env.client(), &ns);
    let mut listed = events.list(&ListParams::default()).await.unwrap().items;
    listed.sort_by_key(|e| {
        (
            e.regarding.as_ref().and_then(|r| r.name.clone()),
            e.reason.clone(),
        )
    });
    let summary: Vec<(String, String, String, Option<i32>)> = listed
        .iter()
        .map(|e| {
            (
                e.regarding
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.type_.clone().unwrap_or_default(),
                e.series.as_ref().map(|s| s.count),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("invoice".into(), "Retrying".into(), "Warning".into(), None),
            (
                "welcome".into(),
                "Retrying".into(),
                "Warning".into(),
                Some(3)
            ),
            ("welcome".into(), "Sent".into(), "Normal".into(), None),
        ]
    );
    let sent = &listed[2];
    assert_eq!(sent.reporting_controller.as_deref(), Some("kmailops"));
    assert_eq!(sent.reporting_instance.as_deref(), Some("kmailops-test-0"));
    assert_eq!(sent.action.as_deref(), Some("Deliver"));
    assert_eq!(
        sent.note.as_deref(),
        Some("sent through shop/mailersend as m-1")
    );
    assert!(
        sent.event_time.is_some(),
        "events.k8s.io requires eventTime"
    );
}

#[tokio::test]
async fn a_series_whose_event_was_deleted_starts_a_new_event() {
    let env = support::TestEnv::get().await;
    let ns = env.unique_namespace("events-gone").await;
    let publisher = EventPublisher::new(
        env.client(),
        Reporter {
            controller: "kmailops".into(),
            instance: "kmailops-test-0".into(),
        },
    );
    let ev = event(EventType::Warning, "Retrying", "timeout");
    publisher
        .publish(&ev, &regarding(&ns, "welcome"))
        .await
        .unwrap();
    // Events expire from etcd after an hour; here it goes at once.
    let events: Api<K8sEvent> = Api::namespaced(env.client(), &ns);
    events
        .delete_collection(&Default::default(), &ListParams::default())
        .await
        .unwrap();
    publisher
        .publish(&ev, &regarding(&ns, "welcome"))
        .await
        .expect("a repeat of a deleted Event is created anew, not an error");
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].series, None);
}
