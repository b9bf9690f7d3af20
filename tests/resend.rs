//! Resend against a local server that behaves as Resend documents (tests/support/mock_resend.rs),
//! unhappy paths and the idempotency store included.

mod common;
#[path = "support/mock_resend.rs"]
mod mock_resend;

use std::sync::Arc;
use std::time::Duration;

use common::{closed_port_url, full_message, sender_spec};
use kmailops::api::EmailSenderConfigSpec;
use kmailops::message::{OutgoingMessage, delivery_key};
use kmailops::provider::{
    Credentials, ErrorClass, HealthReport, HttpTimeouts, Provider, SendError, build_provider,
    http_client_with,
};
use mock_resend::{Inject, MockResend};
use serde_json::json;

const KEY: &str = "re_TEST_8f2c41d07a_distinctive";

fn spec(base: &str) -> EmailSenderConfigSpec {
    sender_spec(&format!(
        r#"
sender: {{address: noreply@example.com, name: Example App}}
resend:
  apiKeySecretRef: {{name: resend, key: apiKey}}
  baseUrl: {base}
"#
    ))
}

fn provider_with_key(base: &str, key: &str) -> Arc<dyn Provider> {
    let http = http_client_with(HttpTimeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_millis(600),
    });
    build_provider(&spec(base), Credentials::new(key), &http).expect("provider")
}

fn provider(base: &str) -> Arc<dyn Provider> {
    provider_with_key(base, KEY)
}

fn message(base: &str) -> OutgoingMessage {
    let mut msg = full_message(&spec(base));
    msg.delivery_key = Some(delivery_key("mail", "welcome", &msg.delivery_hash, None));
    msg
}

async fn error_for(inject: Inject) -> (MockResend, SendError) {
    let mock = MockResend::start(KEY).await;
    mock.inject(inject);
    let err = provider(&mock.url)
        .send(&message(&mock.url))
        .await
        .expect_err("the send should fail");
    assert!(!err.message.contains(KEY), "key leaked: {}", err.message);
    (mock, err)
}

#[tokio::test]
async fn a_send_posts_the_documented_json_with_bearer_auth_and_the_delivery_key() {
    let mock = MockResend::start(KEY).await;
    let msg = message(&mock.url);
    let receipt = provider(&mock.url).send(&msg).await.expect("accepted");
    let sent = mock.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(receipt.message_id, sent[0].id);
    let headers = mock.last_headers();
    assert_eq!(headers["authorization"], format!("Bearer {KEY}").as_str());
    assert_eq!(
        sent[0].idempotency_key.as_deref(),
        msg.delivery_key.as_deref()
    );
    assert_eq!(
        sent[0].body,
        json!({
            "from": "Example App <noreply@example.com>",
            "to": ["Jane Doe <jane@example.org>", "bob@example.org"],
            "cc": ["\"Doe, Carol\" <carol@example.org>"],
            "bcc": ["audit@example.org"],
            "reply_to": "Help Desk <help@example.com>",
            "subject": "Welcome, Jane",
            "text": "Hello Jane,\nwelcome aboard.",
            "html": "<p>Hello Jane, <b>welcome</b> aboard.</p>",
            "headers": {"X-Campaign": "spring"},
            "attachments": [{
                "filename": "report.pdf",
                "content": "JVBERi0xLjQAAWJpbmFyef8=",
                "content_type": "application/pdf"
            }],
            "tags": [
                {"name": "welcome", "value": "true"},
                {"name": "onboarding", "value": "true"},
                {"name": "q2", "value": "true"},
                {"name": "extra", "value": "true"}
            ]
        })
    );
    assert!(receipt.warnings.is_empty(), "{:?}", receipt.warnings);
}

#[tokio::test]
async fn without_a_delivery_key_the_delivery_hash_is_the_idempotency_key() {
    let mock = MockResend::start(KEY).await;
    let msg = full_message(&spec(&mock.url));
    assert!(msg.delivery_key.is_none());
    provider(&mock.url).send(&msg).await.expect("accepted");
    assert_eq!(
        mock.sent()[0].idempotency_key.as_deref(),
        Some(msg.delivery_hash.as_str())
    );
}

#[tokio::test]
async fn a_500_after_acceptance_is_retryable_and_the_retry_sends_nothing_twice() {
    let (mock, err) = error_for(Inject::AcceptThenFail).await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Transient, false, Some(500))
    );
    assert!(err.message.contains("application_error"), "{}", err.message);
    assert!(err.message.contains("Idempotency-Key"), "{}", err.message);
    // Retryable only on the key: the operator must never send it through another sender.
    assert!(err.may_be_accepted);
    // The operator retries: the same key returns the first answer, nothing is sent again.
    let receipt = provider(&mock.url)
        .send(&message(&mock.url))
        .await
        .expect("the retry gets the first answer");
    assert_eq!(mock.posts(), 2);
    assert_eq!(mock.sent().len(), 1, "sent once");
    assert_eq!(receipt.message_id, mock.sent()[0].id);
}

#[tokio::test]
async fn a_timeout_after_hand_over_is_retryable_because_of_the_key() {
    let started = std::time::Instant::now();
    let (mock, err) = error_for(Inject::AcceptThenStall(Duration::from_secs(3))).await;
    assert_eq!(err.class, ErrorClass::Transient, "{}", err.message);
    assert!(err.message.contains("Idempotency-Key"), "{}", err.message);
    assert!(!err.message.contains("not resent"), "{}", err.message);
    assert!(err.may_be_accepted);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "client timeout applied"
    );
    // While the first is still in flight, Resend says so: retry later.
    let err = provider(&mock.url)
        .send(&message(&mock.url))
        .await
        .expect_err("concurrent");
    assert_eq!((err.class, err.status), (ErrorClass::Transient, Some(409)));
    assert!(err.message.contains("concurrent_idempotent_requests"));
    assert!(err.retry_after.is_some());
    assert!(err.may_be_accepted, "an attempt with this key is in flight");
    tokio::time::sleep(Duration::from_secs(3)).await;
    provider(&mock.url)
        .send(&message(&mock.url))
        .await
        .expect("after the first finished, the repeat gets its answer");
    assert_eq!(mock.sent().len(), 1);
}

#[tokio::test]
async fn the_same_key_with_other_content_is_a_permanent_conflict() {
    let mock = MockResend::start(KEY).await;
    let msg = message(&mock.url);
    provider(&mock.url).send(&msg).await.expect("first");
    let mut changed = msg.clone();
    changed.subject = "Something else".into();
    let err = provider(&mock.url).send(&changed).await.expect_err("409");
    assert_eq!((err.class, err.status), (ErrorClass::Permanent, Some(409)));
    assert!(
        err.message.contains("invalid_idempotent_request"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_bad_key_is_a_permanent_auth_error_and_an_echoed_key_is_redacted() {
    let mock = MockResend::start(KEY).await;
    let p = provider_with_key(&mock.url, "re_WRONG_7777777777_distinctive");
    let err = p.send(&message(&mock.url)).await.expect_err("403");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(403))
    );
    assert!(err.message.contains("invalid_api_key"), "{}", err.message);
    assert!(err.message.contains("Bearer <redacted>"), "{}", err.message);
    assert!(!format!("{err:?}").contains("re_WRONG_7777777777"));
    assert!(err.message.contains("spec.resend.apiKeySecretRef"));
}

#[tokio::test]
async fn an_unverified_domain_403_fails_over_as_an_auth_error() {
    let (_mock, err) = error_for(Inject::Refuse(
        403,
        "validation_error",
        "The example.com domain is not verified. Please, add and verify your domain on https://resend.com/domains".into(),
        vec![],
    ))
    .await;
    assert_eq!((err.class, err.auth), (ErrorClass::Permanent, true));
    assert!(err.message.contains("domain is not verified"));
}

#[tokio::test]
async fn a_429_is_transient_and_honours_retry_after() {
    let (_mock, err) = error_for(Inject::Refuse(
        429,
        "rate_limit_exceeded",
        "Too many requests. You can only make 2 requests per second.".into(),
        vec![
            ("retry-after", "2".into()),
            ("ratelimit-limit", "2".into()),
            ("ratelimit-remaining", "0".into()),
            ("ratelimit-reset", "2".into()),
        ],
    ))
    .await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Transient, false, Some(429))
    );
    assert_eq!(err.retry_after, Some(Duration::from_secs(2)));
    assert!(err.message.contains("rate_limit_exceeded"));
    assert!(!err.may_be_accepted, "a 429 took nothing");
}

#[tokio::test]
async fn validation_errors_are_permanent_with_resends_message() {
    let (mock, err) = error_for(Inject::Refuse(
        422,
        "invalid_from_address",
        "Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.".into(),
        vec![],
    ))
    .await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, false, Some(422))
    );
    assert!(!err.may_be_accepted);
    assert!(
        err.message
            .contains("invalid_from_address: Invalid `from` field")
    );
    assert!(mock.sent().is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let base = closed_port_url();
    let err = provider(&base)
        .send(&message(&base))
        .await
        .expect_err("closed");
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(!err.may_be_accepted, "nothing was handed over");
    assert!(
        err.message.contains("could not connect to Resend"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn tags_outside_resends_alphabet_are_cleaned_with_a_warning() {
    let mock = MockResend::start(KEY).await;
    let mut msg = message(&mock.url);
    msg.tags = vec!["order shipped".into(), "category:billing".into()];
    let receipt = provider(&mock.url).send(&msg).await.expect("accepted");
    assert_eq!(
        mock.sent()[0].body["tags"],
        json!([{"name": "order_shipped", "value": "true"}, {"name": "category", "value": "billing"}])
    );
    assert_eq!(receipt.warnings.len(), 1, "{:?}", receipt.warnings);
}

#[tokio::test]
async fn limits_are_checked_before_the_call() {
    let mock = MockResend::start(KEY).await;
    let mut msg = message(&mock.url);
    msg.to = std::iter::repeat_n(msg.to[1].clone(), 51).collect();
    let err = provider(&mock.url).send(&msg).await.expect_err("51 to");
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("at most 50 To recipients"),
        "{}",
        err.message
    );
    let mut msg = message(&mock.url);
    msg.attachments[0].content = vec![0; 31 * 1024 * 1024];
    let err = provider(&mock.url).send(&msg).await.expect_err("too big");
    assert!(err.message.contains("up to 40 MB"), "{}", err.message);
    assert_eq!(mock.posts(), 0);
}

#[tokio::test]
async fn the_health_check_finds_the_from_domain_verified() {
    let mock = MockResend::start(KEY).await;
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(report.is_healthy(), "{report}");
    assert!(report.message().contains("example.com is verified"));

    mock.set_domains(&[("example.com", "pending")]);
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "DomainUnverified", "{report}");

    mock.set_domains(&[("other.example", "verified")]);
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "DomainNotFound", "{report}");
}

#[tokio::test]
async fn the_health_check_tells_a_bad_key_from_a_sending_only_key() {
    let mock = MockResend::start(KEY).await;
    let report = provider_with_key(&mock.url, "re_WRONG_7777777777_distinctive")
        .check_health(Duration::from_secs(2))
        .await;
    assert!(
        matches!(&report, HealthReport::Unhealthy { reason, .. } if reason == "AuthFailed"),
        "{report}"
    );
    assert!(
        !report.message().contains("re_WRONG_7777777777"),
        "{report}"
    );

    mock.restrict_key();
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(
        matches!(&report, HealthReport::Unknown { reason, .. } if reason == "CheckNotPermitted"),
        "{report}"
    );

    let report = provider(&closed_port_url())
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "Unreachable", "{report}");
}

#[tokio::test]
async fn a_config_without_a_key_or_with_a_bad_base_url_names_the_field() {
    let http = http_client_with(HttpTimeouts::default());
    let err = build_provider(&spec("http://127.0.0.1:1"), Credentials::default(), &http)
        .err()
        .expect("no key");
    assert_eq!(err.field, "spec.resend.apiKeySecretRef");
    let err = build_provider(&spec("not a url"), Credentials::new(KEY), &http)
        .err()
        .expect("bad url");
    assert_eq!(err.field, "spec.resend.baseUrl");
}
