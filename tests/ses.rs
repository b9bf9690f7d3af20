//! Amazon SES v2 against a local server that behaves as SES documents and verifies every
//! SigV4 signature with the secret key it knows (tests/support/mock_ses.rs).

mod common;
#[path = "support/mock_ses.rs"]
mod mock_ses;

use std::sync::Arc;
use std::time::Duration;

use common::{closed_port_url, full_message, sender_spec};
use kmailops::api::EmailSenderConfigSpec;
use kmailops::message::{OutgoingMessage, delivery_key};
use kmailops::provider::{
    Credentials, ErrorClass, HealthReport, HttpTimeouts, Provider, SendError, build_provider,
    http_client_with,
};
use mock_ses::{Inject, MockSes, REGION};
use serde_json::json;

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";

fn spec(base: &str) -> EmailSenderConfigSpec {
    sender_spec(&format!(
        r#"
sender: {{address: noreply@example.com, name: Example App}}
ses:
  region: {REGION}
  accessKeyIdSecretRef: {{name: aws, key: accessKeyId}}
  secretAccessKeySecretRef: {{name: aws, key: secretAccessKey}}
  configurationSetName: transactional
  endpoint: {base}
"#
    ))
}

fn credentials(id: &str, secret: &str) -> Credentials {
    Credentials::new(id)
        .with("spec.ses.accessKeyIdSecretRef", id)
        .with("spec.ses.secretAccessKeySecretRef", secret)
}

fn provider_with(base: &str, id: &str, secret: &str) -> Arc<dyn Provider> {
    let http = http_client_with(HttpTimeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_millis(600),
    });
    build_provider(&spec(base), credentials(id, secret), &http).expect("provider")
}

fn provider(base: &str) -> Arc<dyn Provider> {
    provider_with(base, KEY_ID, SECRET)
}

fn message(base: &str) -> OutgoingMessage {
    let mut msg = full_message(&spec(base));
    msg.delivery_key = Some(delivery_key("mail", "welcome", &msg.delivery_hash, None));
    msg
}

async fn error_for(inject: Inject) -> (MockSes, SendError) {
    let mock = MockSes::start(KEY_ID, SECRET).await;
    mock.inject(inject);
    let err = provider(&mock.url)
        .send(&message(&mock.url))
        .await
        .expect_err("the send should fail");
    assert!(
        !err.message.contains(SECRET),
        "secret leaked: {}",
        err.message
    );
    (mock, err)
}

#[tokio::test]
async fn a_signed_send_email_carries_the_documented_json_and_returns_the_message_id() {
    let mock = MockSes::start(KEY_ID, SECRET).await;
    let msg = message(&mock.url);
    let receipt = provider(&mock.url).send(&msg).await.expect("accepted");
    assert!(
        receipt.message_id.starts_with("0102019abcde0001-"),
        "{}",
        receipt.message_id
    );
    assert!(receipt.warnings.is_empty(), "{:?}", receipt.warnings);
    let signed = mock.signed_headers();
    for h in ["content-type", "host", "x-amz-date"] {
        assert!(signed.iter().any(|s| s == h), "{h} not signed: {signed:?}");
    }
    let key = msg.delivery_key.clone().unwrap();
    assert_eq!(
        mock.sent()[0],
        json!({
            "FromEmailAddress": "Example App <noreply@example.com>",
            "Destination": {
                "ToAddresses": ["Jane Doe <jane@example.org>", "bob@example.org"],
                "CcAddresses": ["\"Doe, Carol\" <carol@example.org>"],
                "BccAddresses": ["audit@example.org"]
            },
            "ReplyToAddresses": ["Help Desk <help@example.com>"],
            "Content": {"Simple": {
                "Subject": {"Data": "Welcome, Jane", "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": "Hello Jane,\nwelcome aboard.", "Charset": "UTF-8"},
                    "Html": {"Data": "<p>Hello Jane, <b>welcome</b> aboard.</p>", "Charset": "UTF-8"}
                },
                "Headers": [{"Name": "X-Campaign", "Value": "spring"}],
                "Attachments": [{
                    "RawContent": "JVBERi0xLjQAAWJpbmFyef8=",
                    "FileName": "report.pdf",
                    "ContentType": "application/pdf",
                    "ContentDisposition": "ATTACHMENT",
                    "ContentTransferEncoding": "BASE64"
                }]
            }},
            "EmailTags": [
                {"Name": "welcome", "Value": "true"},
                {"Name": "onboarding", "Value": "true"},
                {"Name": "q2", "Value": "true"},
                {"Name": "extra", "Value": "true"},
                {"Name": "kmailops-delivery-key", "Value": key}
            ],
            "ConfigurationSetName": "transactional"
        })
    );
}

#[tokio::test]
async fn a_wrong_secret_fails_the_signature_check_as_an_auth_error_without_leaking_it() {
    let mock = MockSes::start(KEY_ID, SECRET).await;
    let wrong = "wJalrXUtnFEMI/K7MDENG/bPxRfiCyWRONGKEYXX";
    let err = provider_with(&mock.url, KEY_ID, wrong)
        .send(&message(&mock.url))
        .await
        .expect_err("bad signature");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(403))
    );
    assert!(
        err.message.contains("InvalidSignatureException"),
        "{}",
        err.message
    );
    assert!(!format!("{err:?}").contains(wrong));
    assert!(mock.sent().is_empty());

    let err = provider_with(&mock.url, "AKIAUNKNOWNKEY000000", SECRET)
        .send(&message(&mock.url))
        .await
        .expect_err("unknown key");
    assert!(
        err.message.contains("UnrecognizedClientException"),
        "{}",
        err.message
    );
    assert!(err.auth);
}

#[tokio::test]
async fn a_server_echoing_the_secret_gets_it_scrubbed() {
    let (_m, err) = error_for(Inject::Error(
        400,
        "BadRequestException",
        format!("we saw your secret {SECRET}"),
    ))
    .await;
    assert!(
        err.message.contains("we saw your secret <redacted>"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn message_rejected_is_permanent_without_failover() {
    let (_m, err) = error_for(Inject::Error(
        400,
        "MessageRejected",
        "Email address is not verified. The following identities failed the check in region EU-WEST-1: jane@example.org".into(),
    ))
    .await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, false, Some(400))
    );
    assert!(
        err.message
            .contains("MessageRejected: Email address is not verified"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_sender_that_may_not_send_fails_over() {
    for kind in [
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
    ] {
        let (_m, err) = error_for(Inject::Error(400, kind, "nope".into())).await;
        assert_eq!(
            (err.class, err.auth),
            (ErrorClass::Permanent, true),
            "{kind}"
        );
        assert!(err.message.contains(kind));
    }
}

#[tokio::test]
async fn throttling_and_quotas_are_transient() {
    for (status, kind) in [
        (429, "TooManyRequestsException"),
        (400, "LimitExceededException"),
    ] {
        let (_m, err) = error_for(Inject::Error(
            status,
            kind,
            "Maximum sending rate exceeded.".into(),
        ))
        .await;
        assert_eq!(
            (err.class, err.auth),
            (ErrorClass::Transient, false),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn other_client_errors_are_permanent_and_a_5xx_is_ambiguous() {
    let (_m, err) = error_for(Inject::Error(
        404,
        "NotFoundException",
        "Configuration set <transactional> does not exist.".into(),
    ))
    .await;
    assert_eq!((err.class, err.auth), (ErrorClass::Permanent, false));
    let (mock, err) = error_for(Inject::AcceptThenFail).await;
    assert_eq!((err.class, err.status), (ErrorClass::Ambiguous, Some(500)));
    assert_eq!(mock.sent().len(), 1);
    let (_m, err) = error_for(Inject::Stall(Duration::from_secs(3))).await;
    assert_eq!(err.class, ErrorClass::Ambiguous);
}

#[tokio::test]
async fn limits_are_checked_before_the_call() {
    let mock = MockSes::start(KEY_ID, SECRET).await;
    let mut msg = message(&mock.url);
    msg.to = vec![msg.to[1].clone(); 49];
    let err = provider(&mock.url)
        .send(&msg)
        .await
        .expect_err("51 recipients");
    assert!(
        err.message.contains("at most 50 recipients"),
        "{}",
        err.message
    );
    assert_eq!(mock.posts(), 0);
}

#[tokio::test]
async fn non_ascii_names_are_encoded_and_tags_cleaned() {
    let mock = MockSes::start(KEY_ID, SECRET).await;
    let mut msg = message(&mock.url);
    msg.to[0].name = Some("Jürgen".into());
    msg.tags = vec!["order shipped".into(), "team:billing".into()];
    let receipt = provider(&mock.url).send(&msg).await.expect("accepted");
    let sent = &mock.sent()[0];
    assert_eq!(
        sent["Destination"]["ToAddresses"][0],
        "=?UTF-8?B?SsO8cmdlbg==?= <jane@example.org>"
    );
    assert_eq!(
        sent["EmailTags"][0],
        json!({"Name": "order_shipped", "Value": "true"})
    );
    assert_eq!(
        sent["EmailTags"][1],
        json!({"Name": "team", "Value": "billing"})
    );
    assert_eq!(receipt.warnings.len(), 1, "{:?}", receipt.warnings);
}

#[tokio::test]
async fn the_health_check_is_a_signed_get_account() {
    let mock = MockSes::start(KEY_ID, SECRET).await;
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(report.is_healthy(), "{report}");

    mock.set_account(
        json!({"SendingEnabled": true, "ProductionAccessEnabled": false,
        "SendQuota": {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 3.0}}),
    );
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(
        report.is_healthy() && report.message().contains("sandbox"),
        "{report}"
    );

    mock.set_account(json!({"SendingEnabled": true,
        "SendQuota": {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 200.0}}));
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "QuotaExhausted", "{report}");

    mock.set_account(json!({"SendingEnabled": false, "EnforcementStatus": "PROBATION"}));
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(matches!(report, HealthReport::Unhealthy { .. }), "{report}");

    let report = provider_with(
        &mock.url,
        KEY_ID,
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCyWRONGKEYXX",
    )
    .check_health(Duration::from_secs(2))
    .await;
    assert_eq!(report.reason(), "AuthFailed", "{report}");
    assert!(!report.message().contains("WRONGKEY"), "{report}");

    mock.inject(Inject::Error(
        403,
        "AccessDeniedException",
        "User is not authorized to perform: ses:GetAccount".into(),
    ));
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "CheckNotPermitted", "{report}");

    let report = provider(&closed_port_url())
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "Unreachable", "{report}");
}

#[tokio::test]
async fn keys_come_in_pairs_and_the_region_is_checked() {
    let http = http_client_with(HttpTimeouts::default());
    let err = build_provider(&spec("http://127.0.0.1:1"), Credentials::new(KEY_ID), &http)
        .err()
        .expect("no secret key");
    assert_eq!(err.field, "spec.ses.secretAccessKeySecretRef");
    let mut s = spec("http://127.0.0.1:1");
    s.ses.as_mut().unwrap().secret_access_key_secret_ref = None;
    let err = build_provider(&s, credentials(KEY_ID, SECRET), &http)
        .err()
        .expect("half");
    assert_eq!(err.field, "spec.ses.accessKeyIdSecretRef");
    let mut s = spec("http://127.0.0.1:1");
    s.ses.as_mut().unwrap().region = "EU West".into();
    let err = build_provider(&s, credentials(KEY_ID, SECRET), &http)
        .err()
        .expect("region");
    assert_eq!(err.field, "spec.ses.region");
}
