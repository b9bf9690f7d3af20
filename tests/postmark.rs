//! Postmark against a local server that behaves as Postmark documents
//! (tests/support/mock_postmark.rs), unhappy paths included.

mod common;
#[path = "support/mock_postmark.rs"]
mod mock_postmark;

use std::sync::Arc;
use std::time::Duration;

use common::{closed_port_url, full_message, sender_spec};
use kmailops::api::EmailSenderConfigSpec;
use kmailops::message::{OutgoingMessage, delivery_key};
use kmailops::provider::{
    Credentials, ErrorClass, HealthReport, HttpTimeouts, Provider, SendError, build_provider,
    http_client_with,
};
use kmailops::provider::{LookupAnswer, Recall};
use mock_postmark::{Inject, MockPostmark, SearchInject, TEST_TOKEN};
use serde_json::json;

const TOKEN: &str = "pm-server-6a1f0c2e-distinctive";

fn spec_with_stream(base: &str, stream: &str) -> EmailSenderConfigSpec {
    sender_spec(&format!(
        r#"
sender: {{address: noreply@example.com, name: Example App}}
postmark:
  serverTokenSecretRef: {{name: postmark, key: token}}
  messageStream: {stream}
  baseUrl: {base}
"#
    ))
}

fn spec(base: &str) -> EmailSenderConfigSpec {
    sender_spec(&format!(
        r#"
sender: {{address: noreply@example.com, name: Example App}}
postmark:
  serverTokenSecretRef: {{name: postmark, key: token}}
  baseUrl: {base}
"#
    ))
}

fn provider_for(spec: &EmailSenderConfigSpec, token: &str) -> Arc<dyn Provider> {
    let http = http_client_with(HttpTimeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_millis(600),
    });
    build_provider(spec, Credentials::new(token), &http).expect("provider")
}

fn provider(base: &str) -> Arc<dyn Provider> {
    provider_for(&spec(base), TOKEN)
}

fn message(base: &str) -> OutgoingMessage {
    let mut msg = full_message(&spec(base));
    msg.delivery_key = Some(delivery_key("mail", "welcome", &msg.delivery_hash, None));
    msg
}

async fn error_for(inject: Inject) -> (MockPostmark, SendError) {
    let mock = MockPostmark::start(TOKEN).await;
    mock.inject(inject);
    let err = provider(&mock.url)
        .send(&message(&mock.url))
        .await
        .expect_err("the send should fail");
    assert!(
        !err.message.contains(TOKEN),
        "token leaked: {}",
        err.message
    );
    (mock, err)
}

#[tokio::test]
async fn a_send_posts_the_documented_json_with_the_server_token_and_the_delivery_key() {
    let mock = MockPostmark::start(TOKEN).await;
    let msg = message(&mock.url);
    let receipt = provider(&mock.url).send(&msg).await.expect("accepted");
    assert_eq!(receipt.message_id, "b7bc2f4a-e38e-4336-af7d-e6c390000001");
    assert_eq!(mock.last_headers()["x-postmark-server-token"], TOKEN);
    let sent = mock.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0],
        json!({
            "From": "Example App <noreply@example.com>",
            "To": "Jane Doe <jane@example.org>, bob@example.org",
            "Cc": "\"Doe, Carol\" <carol@example.org>",
            "Bcc": "audit@example.org",
            "Subject": "Welcome, Jane",
            "TextBody": "Hello Jane,\nwelcome aboard.",
            "HtmlBody": "<p>Hello Jane, <b>welcome</b> aboard.</p>",
            "ReplyTo": "Help Desk <help@example.com>",
            "Tag": "welcome",
            "Metadata": {"kmailops-delivery": msg.delivery_key.clone().unwrap()},
            "Headers": [{"Name": "X-Campaign", "Value": "spring"}],
            "Attachments": [{
                "Name": "report.pdf",
                "Content": "JVBERi0xLjQAAWJpbmFyef8=",
                "ContentType": "application/pdf"
            }],
            "MessageStream": "outbound"
        })
    );
    // Postmark keeps one tag: the others are named in a warning.
    assert_eq!(receipt.warnings.len(), 1, "{:?}", receipt.warnings);
    assert!(receipt.warnings[0].contains("onboarding, q2, extra"));
}

#[tokio::test]
async fn the_delivery_key_finds_the_message_in_postmarks_search() {
    let mock = MockPostmark::start(TOKEN).await;
    let msg = message(&mock.url);
    provider(&mock.url).send(&msg).await.expect("accepted");
    let found: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/messages/outbound?count=1&offset=0&metadata_kmailops-delivery={}",
            mock.url,
            msg.delivery_key.as_deref().unwrap()
        ))
        .header("X-Postmark-Server-Token", TOKEN)
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(found["TotalCount"], 1, "{found}");
}

const LOOKUP: Duration = Duration::from_millis(500);

#[tokio::test]
async fn a_look_up_finds_a_sent_message_by_its_delivery_key_and_only_that_one() {
    let mock = MockPostmark::start(TOKEN).await;
    let p = provider(&mock.url);
    assert_eq!(p.recall(), Recall::Searchable { settles: false });
    let msg = message(&mock.url);
    assert_eq!(p.look_up(&msg, LOOKUP).await, LookupAnswer::Absent);
    let receipt = p.send(&msg).await.expect("accepted");
    assert_eq!(
        p.look_up(&msg, LOOKUP).await,
        LookupAnswer::Found {
            message_id: receipt.message_id
        }
    );
    // Another delivery (a retry token) is another key: not found.
    let mut other = message(&mock.url);
    other.delivery_key = Some(delivery_key(
        "mail",
        "welcome",
        &other.delivery_hash,
        Some("t1"),
    ));
    assert_eq!(p.look_up(&other, LOOKUP).await, LookupAnswer::Absent);
    assert_eq!(mock.searches(), 3);
}

#[tokio::test]
async fn a_500_after_acceptance_is_ambiguous_and_the_look_up_finds_the_message() {
    let mock = MockPostmark::start(TOKEN).await;
    mock.inject(Inject::AcceptThenFail);
    let p = provider(&mock.url);
    let msg = message(&mock.url);
    let err = p.send(&msg).await.expect_err("500");
    assert_eq!(err.class, ErrorClass::Ambiguous);
    assert!(matches!(
        p.look_up(&msg, LOOKUP).await,
        LookupAnswer::Found { .. }
    ));
    assert_eq!(mock.sent().len(), 1);
}

#[tokio::test]
async fn a_look_up_that_fails_says_why_and_never_reads_as_absent() {
    let mock = MockPostmark::start(TOKEN).await;
    let p = provider(&mock.url);
    let msg = message(&mock.url);
    mock.inject_search(SearchInject::Raw(
        500,
        r#"{"ErrorCode":500,"Message":"Internal server error"}"#.into(),
    ));
    match p.look_up(&msg, LOOKUP).await {
        LookupAnswer::Failed(why) => assert!(why.contains("500"), "{why}"),
        other => panic!("a 500 is no answer: {other:?}"),
    }
    mock.inject_search(SearchInject::Stall(Duration::from_secs(3)));
    match p.look_up(&msg, LOOKUP).await {
        LookupAnswer::Failed(why) => assert!(why.contains("in time"), "{why}"),
        other => panic!("a timeout is no answer: {other:?}"),
    }
    // Not JSON in Postmark's format: described, not quoted.
    mock.inject_search(SearchInject::Raw(200, "<html>proxy login</html>".into()));
    match p.look_up(&msg, LOOKUP).await {
        LookupAnswer::Failed(why) => assert!(!why.contains("proxy login"), "{why}"),
        other => panic!("an unreadable answer is no answer: {other:?}"),
    }
    match closed_port_provider().look_up(&msg, LOOKUP).await {
        LookupAnswer::Failed(why) => assert!(why.contains("could not reach"), "{why}"),
        other => panic!("no server is no answer: {other:?}"),
    }
}

fn closed_port_provider() -> Arc<dyn Provider> {
    provider(&closed_port_url())
}

#[tokio::test]
async fn a_look_up_with_a_wrong_token_fails_naming_the_field_without_the_token() {
    let mock = MockPostmark::start(TOKEN).await;
    let p = provider_for(&spec(&mock.url), "pm-WRONG-0000-distinctive");
    match p.look_up(&message(&mock.url), LOOKUP).await {
        LookupAnswer::Failed(why) => {
            assert!(why.contains("spec.postmark.serverTokenSecretRef"), "{why}");
            assert!(!why.contains("pm-WRONG-0000"), "token leaked: {why}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_message_stream_is_sent_and_an_unknown_one_is_refused() {
    let mock = MockPostmark::start(TOKEN).await;
    let p = provider_for(&spec_with_stream(&mock.url, "broadcast"), TOKEN);
    p.send(&message(&mock.url)).await.expect("accepted");
    assert_eq!(mock.sent()[0]["MessageStream"], "broadcast");
    let p = provider_for(&spec_with_stream(&mock.url, "nope"), TOKEN);
    let err = p
        .send(&message(&mock.url))
        .await
        .expect_err("unknown stream");
    assert_eq!((err.class, err.status), (ErrorClass::Permanent, Some(422)));
    assert!(err.message.contains("ErrorCode 1235"), "{}", err.message);
}

#[tokio::test]
async fn a_wrong_token_is_error_code_10_an_auth_error_and_the_echo_is_redacted() {
    let mock = MockPostmark::start(TOKEN).await;
    let p = provider_for(&spec(&mock.url), "pm-WRONG-0000-distinctive");
    let err = p.send(&message(&mock.url)).await.expect_err("code 10");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(422))
    );
    assert!(err.message.contains("ErrorCode 10"), "{}", err.message);
    assert!(err.message.contains("(<redacted>)"), "{}", err.message);
    assert!(!format!("{err:?}").contains("pm-WRONG-0000"));
    assert!(err.message.contains("spec.postmark.serverTokenSecretRef"));
}

#[tokio::test]
async fn an_http_401_is_an_auth_error() {
    let (_m, err) = error_for(Inject::Raw(
        401,
        r#"{"ErrorCode":10,"Message":"Bad or missing API token"}"#.into(),
        vec![],
    ))
    .await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(401))
    );
}

#[tokio::test]
async fn an_inactive_recipient_is_permanent_and_does_not_fail_over() {
    let mock = MockPostmark::start(TOKEN).await;
    mock.suppress("bob@example.org");
    let err = provider(&mock.url)
        .send(&message(&mock.url))
        .await
        .expect_err("406");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, false, Some(422))
    );
    assert!(err.message.contains("ErrorCode 406"), "{}", err.message);
    assert!(err.message.contains("bob@example.org"), "{}", err.message);
    assert!(mock.sent().is_empty());
}

#[tokio::test]
async fn an_invalid_request_is_permanent() {
    let (_m, err) = error_for(Inject::Code(300, "Invalid 'To' address: 'x'.".into())).await;
    assert_eq!((err.class, err.auth), (ErrorClass::Permanent, false));
    assert!(err.message.contains("ErrorCode 300: Invalid 'To' address"));
}

#[tokio::test]
async fn an_account_that_may_not_send_fails_over() {
    for code in [405, 412, 413] {
        let (_m, err) = error_for(Inject::Code(code, "Not allowed to send".into())).await;
        assert_eq!(
            (err.class, err.auth),
            (ErrorClass::Permanent, true),
            "code {code}"
        );
    }
}

#[tokio::test]
async fn a_rate_limit_is_transient_as_http_429_or_error_code_429() {
    let (_m, err) = error_for(Inject::Raw(
        429,
        r#"{"ErrorCode":429,"Message":"Rate limit exceeded"}"#.into(),
        vec![("retry-after", "30".into())],
    ))
    .await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Transient, false, Some(429))
    );
    assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
    let (_m, err) = error_for(Inject::Code(429, "Rate limit exceeded".into())).await;
    assert_eq!((err.class, err.status), (ErrorClass::Transient, Some(422)));
}

#[tokio::test]
async fn a_500_may_have_sent_and_is_ambiguous() {
    let (mock, err) = error_for(Inject::AcceptThenFail).await;
    assert_eq!((err.class, err.status), (ErrorClass::Ambiguous, Some(500)));
    assert!(
        err.message.contains("may still have sent"),
        "{}",
        err.message
    );
    assert_eq!(mock.sent().len(), 1);
}

#[tokio::test]
async fn a_timeout_after_hand_over_is_ambiguous() {
    let (_m, err) = error_for(Inject::Stall(Duration::from_secs(3))).await;
    assert_eq!(err.class, ErrorClass::Ambiguous, "{}", err.message);
}

#[tokio::test]
async fn the_test_token_validates_without_sending() {
    let mock = MockPostmark::start(TOKEN).await;
    let p = provider_for(&spec(&mock.url), TEST_TOKEN);
    let receipt = p.send(&message(&mock.url)).await.expect("accepted");
    assert_eq!(receipt.message_id, "00000000-0000-0000-0000-000000000000");
    assert!(mock.sent().is_empty());
}

#[tokio::test]
async fn limits_are_checked_before_the_call() {
    let mock = MockPostmark::start(TOKEN).await;
    let mut msg = message(&mock.url);
    msg.to = vec![msg.to[1].clone(); 49];
    let err = provider(&mock.url)
        .send(&msg)
        .await
        .expect_err("51 recipients");
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("at most 50 recipients"),
        "{}",
        err.message
    );
    let mut msg = message(&mock.url);
    msg.attachments[0].content = vec![0; 8 * 1024 * 1024];
    let err = provider(&mock.url).send(&msg).await.expect_err("too big");
    assert!(err.message.contains("up to 10 MB"), "{}", err.message);
    assert_eq!(mock.posts(), 0);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let base = closed_port_url();
    let err = provider(&base)
        .send(&message(&base))
        .await
        .expect_err("closed");
    assert_eq!(err.class, ErrorClass::Transient);
}

#[tokio::test]
async fn the_health_check_reads_the_server_with_the_token() {
    let mock = MockPostmark::start(TOKEN).await;
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(report.is_healthy(), "{report}");
    assert!(report.message().contains("Production"), "{report}");
    let report = provider_for(&spec(&mock.url), "pm-WRONG-0000-distinctive")
        .check_health(Duration::from_secs(2))
        .await;
    assert!(
        matches!(&report, HealthReport::Unhealthy { reason, .. } if reason == "AuthFailed"),
        "{report}"
    );
    assert!(!report.message().contains("pm-WRONG-0000"), "{report}");
    let report = provider(&closed_port_url())
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "Unreachable");
}

#[tokio::test]
async fn a_config_without_a_token_names_the_field() {
    let http = http_client_with(HttpTimeouts::default());
    let err = build_provider(&spec("http://127.0.0.1:1"), Credentials::default(), &http)
        .err()
        .expect("no token");
    assert_eq!(err.field, "spec.postmark.serverTokenSecretRef");
    let s = spec("http://127.0.0.1:1");
    assert_eq!(s.postmark.as_ref().unwrap().message_stream, "outbound");
}
