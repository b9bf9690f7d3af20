//! Mailgun look-ups against a local server that keeps what it was sent and lists its events
//! as Mailgun documents (late, paged, filtered by Message-ID): found by the delivery key,
//! not found while the events lag, other senders' events under the same Message-ID ignored,
//! failures said and never read as "not there".

mod common;
#[path = "support/mock_mailgun.rs"]
mod mock_mailgun;

use std::sync::Arc;
use std::time::Duration;

use common::{full_message, sender_spec};
use kmailops::message::OutgoingMessage;
use kmailops::provider::{
    Credentials, ErrorClass, LookupAnswer, Provider, Recall, build_provider, http_client,
};
use mock_mailgun::{Inject, MockMailgun};

const KEY: &str = "key-mg-lookup-7d2e-distinctive";
const DOMAIN: &str = "mg.example.com";
const LOOKUP: Duration = Duration::from_millis(800);

fn provider(base: &str, key: &str) -> (Arc<dyn Provider>, OutgoingMessage) {
    let spec = sender_spec(&format!(
        "sender: {{address: noreply@{DOMAIN}}}\nmailgun: {{domain: {DOMAIN}, apiKeySecretRef: {{name: mg, key: k}}, baseUrl: '{base}'}}"
    ));
    let p = build_provider(&spec, Credentials::new(key), &http_client()).expect("provider");
    let msg = full_message(&spec).for_delivery("mail", "welcome", None);
    (p, msg)
}

#[tokio::test]
async fn a_sent_message_is_found_by_its_message_id_and_delivery_key() {
    let mock = MockMailgun::start(KEY, DOMAIN, Duration::ZERO).await;
    let (p, msg) = provider(&mock.url, KEY);
    assert_eq!(p.recall(), Recall::Searchable { settles: true });
    assert_eq!(p.look_up(&msg, LOOKUP).await, LookupAnswer::Absent);
    let receipt = p.send(&msg).await.expect("accepted");
    assert_eq!(
        p.look_up(&msg, LOOKUP).await,
        LookupAnswer::Found {
            message_id: receipt.message_id.clone()
        }
    );
    assert_eq!(receipt.message_id, msg.message_id);
    // Another delivery of the same Email (a retry token) is another Message-ID and key.
    let mut other = msg.clone();
    other = other.for_delivery("mail", "welcome", Some("t1"));
    assert_ne!(other.delivery_key, msg.delivery_key);
    assert_eq!(p.look_up(&other, LOOKUP).await, LookupAnswer::Absent);
}

#[tokio::test]
async fn a_message_is_not_found_until_its_events_arrive() {
    let mock = MockMailgun::start(KEY, DOMAIN, Duration::from_millis(700)).await;
    let (p, msg) = provider(&mock.url, KEY);
    p.send(&msg).await.expect("accepted");
    assert_eq!(
        p.look_up(&msg, LOOKUP).await,
        LookupAnswer::Absent,
        "events arrive late: this is why absence counts only after the settling time"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(matches!(
        p.look_up(&msg, LOOKUP).await,
        LookupAnswer::Found { .. }
    ));
}

#[tokio::test]
async fn pages_are_followed_and_events_of_other_keys_are_not_ours() {
    let mock = MockMailgun::start(KEY, DOMAIN, Duration::ZERO).await;
    let (p, msg) = provider(&mock.url, KEY);
    let bare = msg
        .message_id
        .trim_matches(|c| c == '<' || c == '>')
        .to_string();
    mock.foreign_event(&bare);
    mock.foreign_event(&bare);
    mock.page_size(1);
    assert_eq!(
        p.look_up(&msg, LOOKUP).await,
        LookupAnswer::Absent,
        "someone else's message under our Message-ID is not ours"
    );
    p.send(&msg).await.expect("accepted");
    let before = mock.event_requests();
    assert!(matches!(
        p.look_up(&msg, LOOKUP).await,
        LookupAnswer::Found { .. }
    ));
    assert_eq!(
        mock.event_requests() - before,
        3,
        "three pages of one event"
    );
}

#[tokio::test]
async fn a_500_after_acceptance_is_ambiguous_and_its_events_find_it() {
    let mock = MockMailgun::start(KEY, DOMAIN, Duration::ZERO).await;
    let (p, msg) = provider(&mock.url, KEY);
    mock.inject(Inject::AcceptThenFail);
    let err = p.send(&msg).await.expect_err("500");
    assert_eq!(err.class, ErrorClass::Ambiguous);
    assert!(matches!(
        p.look_up(&msg, LOOKUP).await,
        LookupAnswer::Found { .. }
    ));
    assert_eq!(mock.accepted().len(), 1);
}

#[tokio::test]
async fn failed_look_ups_say_why_never_absent_and_never_leak_the_key() {
    let mock = MockMailgun::start(KEY, DOMAIN, Duration::ZERO).await;
    let (p, msg) = provider(&mock.url, KEY);
    mock.inject_events(500, r#"{"message":"Internal error"}"#);
    match p.look_up(&msg, LOOKUP).await {
        LookupAnswer::Failed(why) => assert!(why.contains("500"), "{why}"),
        other => panic!("{other:?}"),
    }
    mock.inject_events(200, "<html>not json</html>");
    match p.look_up(&msg, LOOKUP).await {
        LookupAnswer::Failed(why) => assert!(!why.contains("not json"), "{why}"),
        other => panic!("{other:?}"),
    }
    let (wrong, msg) = provider(&mock.url, "key-WRONG-distinctive");
    match wrong.look_up(&msg, LOOKUP).await {
        LookupAnswer::Failed(why) => {
            assert!(why.contains("401") && why.contains("events"), "{why}");
            assert!(!why.contains("key-WRONG"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}
