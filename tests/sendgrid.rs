//! SendGrid against a local server that behaves as SendGrid v3 documents
//! (tests/support/mock_sendgrid.rs), unhappy paths included.

mod common;
#[path = "support/mock_sendgrid.rs"]
mod mock_sendgrid;

use std::sync::Arc;
use std::time::Duration;

use common::{closed_port_url, full_message, sender_spec};
use kmailops::api::EmailSenderConfigSpec;
use kmailops::message::{OutgoingMessage, delivery_key};
use kmailops::provider::{
    Credentials, ErrorClass, HealthReport, HttpTimeouts, Provider, SendError, build_provider,
    http_client_with,
};
use mock_sendgrid::{Inject, MockSendGrid};
use serde_json::json;

const KEY: &str = "SG.TEST-2f8a6c.distinctive-key";

fn spec(base: &str) -> EmailSenderConfigSpec {
    sender_spec(&format!(
        r#"
sender: {{address: noreply@example.com, name: Example App}}
sendgrid:
  apiKeySecretRef: {{name: sendgrid, key: apiKey}}
  region: EU
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

async fn error_for(inject: Inject) -> (MockSendGrid, SendError) {
    let mock = MockSendGrid::start(KEY).await;
    mock.inject(inject);
    let err = provider(&mock.url)
        .send(&message(&mock.url))
        .await
        .expect_err("the send should fail");
    assert!(!err.message.contains(KEY), "key leaked: {}", err.message);
    (mock, err)
}

#[tokio::test]
async fn a_send_posts_the_documented_json_and_returns_the_x_message_id() {
    let mock = MockSendGrid::start(KEY).await;
    let msg = message(&mock.url);
    let receipt = provider(&mock.url).send(&msg).await.expect("accepted");
    assert_eq!(receipt.message_id, "14c5d75ce93.dfd.64b469.filter-0001");
    assert!(receipt.warnings.is_empty(), "{:?}", receipt.warnings);
    assert_eq!(
        mock.last_headers()["authorization"],
        format!("Bearer {KEY}").as_str()
    );
    assert_eq!(
        mock.sent()[0],
        json!({
            "personalizations": [{
                "to": [
                    {"email": "jane@example.org", "name": "Jane Doe"},
                    {"email": "bob@example.org"}
                ],
                "cc": [{"email": "carol@example.org", "name": "Doe, Carol"}],
                "bcc": [{"email": "audit@example.org"}]
            }],
            "from": {"email": "noreply@example.com", "name": "Example App"},
            "reply_to": {"email": "help@example.com", "name": "Help Desk"},
            "subject": "Welcome, Jane",
            "content": [
                {"type": "text/plain", "value": "Hello Jane,\nwelcome aboard."},
                {"type": "text/html", "value": "<p>Hello Jane, <b>welcome</b> aboard.</p>"}
            ],
            "attachments": [{
                "content": "JVBERi0xLjQAAWJpbmFyef8=",
                "filename": "report.pdf",
                "type": "application/pdf",
                "disposition": "attachment"
            }],
            "categories": ["welcome", "onboarding", "q2", "extra"],
            "headers": {"X-Campaign": "spring"},
            "custom_args": {"kmailops_delivery_key": msg.delivery_key.clone().unwrap()}
        })
    );
}

#[tokio::test]
async fn a_400_lists_every_error_with_its_field() {
    let (mock, err) = error_for(Inject::Raw(
        400,
        json!({"errors": [
            {"message": "The from address does not match a verified Sender Identity.", "field": "from", "help": null},
            {"message": "Invalid type. Expected: string", "field": "subject", "help": null}
        ]})
        .to_string(),
        vec![],
    ))
    .await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, false, Some(400))
    );
    assert!(
        err.message.contains("from: The from address does not match a verified Sender Identity.; subject: Invalid type"),
        "{}",
        err.message
    );
    assert!(mock.sent().is_empty());
}

#[tokio::test]
async fn an_address_named_twice_is_refused_before_the_call() {
    let mock = MockSendGrid::start(KEY).await;
    let mut msg = message(&mock.url);
    msg.bcc = vec![msg.to[0].clone()];
    let err = provider(&mock.url).send(&msg).await.expect_err("duplicate");
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("jane@example.org appears twice"),
        "{}",
        err.message
    );
    assert_eq!(mock.posts(), 0);
}

#[tokio::test]
async fn a_bad_key_is_an_auth_error_and_the_echo_is_redacted() {
    let mock = MockSendGrid::start(KEY).await;
    let err = provider_with_key(&mock.url, "SG.WRONG-1234.distinctive")
        .send(&message(&mock.url))
        .await
        .expect_err("401");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(401))
    );
    assert!(err.message.contains("Bearer <redacted>"), "{}", err.message);
    assert!(!format!("{err:?}").contains("SG.WRONG-1234"));

    mock.set_scopes(&["user.profile.read"]);
    let err = provider(&mock.url)
        .send(&message(&mock.url))
        .await
        .expect_err("403");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(403))
    );
}

#[tokio::test]
async fn a_429_waits_until_x_ratelimit_reset() {
    let (_m, err) = error_for(Inject::RateLimited(42)).await;
    assert_eq!((err.class, err.status), (ErrorClass::Transient, Some(429)));
    let wait = err.retry_after.expect("a wait").as_secs();
    assert!((40..=42).contains(&wait), "{wait}");
}

#[tokio::test]
async fn a_413_is_permanent_and_a_500_may_have_sent() {
    let (_m, err) = error_for(Inject::Raw(
        413,
        r#"{"errors":[{"message":"Payload too large","field":null}]}"#.into(),
        vec![],
    ))
    .await;
    assert_eq!((err.class, err.status), (ErrorClass::Permanent, Some(413)));
    let (mock, err) = error_for(Inject::AcceptThenFail).await;
    assert_eq!((err.class, err.status), (ErrorClass::Ambiguous, Some(500)));
    assert_eq!(mock.sent().len(), 1);
    let (_m, err) = error_for(Inject::Stall(Duration::from_secs(3))).await;
    assert_eq!(err.class, ErrorClass::Ambiguous);
}

#[tokio::test]
async fn more_than_ten_tags_keep_the_first_ten_with_a_warning() {
    let mock = MockSendGrid::start(KEY).await;
    let mut msg = message(&mock.url);
    msg.tags = (0..12).map(|i| format!("t{i}")).collect();
    let receipt = provider(&mock.url).send(&msg).await.expect("accepted");
    assert_eq!(mock.sent()[0]["categories"].as_array().unwrap().len(), 10);
    assert!(
        receipt.warnings[0].contains("t10, t11"),
        "{:?}",
        receipt.warnings
    );
}

#[tokio::test]
async fn the_health_check_needs_the_mail_send_scope() {
    let mock = MockSendGrid::start(KEY).await;
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(report.is_healthy(), "{report}");
    mock.set_scopes(&["user.profile.read"]);
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(
        matches!(&report, HealthReport::Unhealthy { reason, .. } if reason == "AuthFailed"),
        "{report}"
    );
    assert!(report.message().contains("mail.send"), "{report}");
    let report = provider_with_key(&mock.url, "SG.WRONG-1234.distinctive")
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "AuthFailed", "{report}");
    assert!(!report.message().contains("SG.WRONG-1234"), "{report}");
    let report = provider(&closed_port_url())
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "Unreachable");
}

#[tokio::test]
async fn the_region_picks_the_base_url_and_a_missing_key_names_the_field() {
    let http = http_client_with(HttpTimeouts::default());
    let err = build_provider(&spec("http://127.0.0.1:1"), Credentials::default(), &http)
        .err()
        .expect("no key");
    assert_eq!(err.field, "spec.sendgrid.apiKeySecretRef");
    use kmailops::api::sender_config::SendGridRegion;
    assert_eq!(SendGridRegion::EU.base_url(), "https://api.eu.sendgrid.com");
    assert_eq!(
        SendGridRegion::default().base_url(),
        "https://api.sendgrid.com"
    );
}
