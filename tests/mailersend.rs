//! MailerSend against a local server that behaves as MailerSend documents, unhappy paths
//! included.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Answer, Mock, closed_port_url, full_message, sender_spec, serve};
use kmailops::api::EmailSenderConfigSpec;
use kmailops::provider::{
    Credentials, ErrorClass, HealthReport, HttpTimeouts, Provider, SendError, build_provider,
    http_client_with,
};
use serde_json::json;

const TOKEN: &str = "mlsn.TOKEN-5f3c9a7e-distinctive";

fn spec(base: &str) -> EmailSenderConfigSpec {
    sender_spec(&format!(
        r#"
sender: {{address: noreply@example.com, name: Example App}}
mailersend:
  apiTokenSecretRef: {{name: mailersend, key: token}}
  baseUrl: {base}/v1
"#
    ))
}

fn provider(base: &str) -> Arc<dyn Provider> {
    let http = http_client_with(HttpTimeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_millis(600),
    });
    build_provider(&spec(base), Credentials::new(TOKEN), &http).expect("provider")
}

async fn send_with(answer: Answer) -> (Mock, Result<kmailops::provider::SendReceipt, SendError>) {
    let mock = serve(move |_| answer.clone()).await;
    let p = provider(&mock.url);
    let result = p.send(&full_message(&spec(&mock.url))).await;
    (mock, result)
}

async fn error_for(answer: Answer) -> SendError {
    let (_mock, result) = send_with(answer).await;
    let err = result.expect_err("the send should fail");
    assert!(
        !err.message.contains(TOKEN),
        "token leaked: {}",
        err.message
    );
    err
}

#[tokio::test]
async fn a_send_posts_the_documented_json_with_bearer_auth_and_returns_the_x_message_id() {
    let (mock, result) =
        send_with(Answer::new(202, "").header("X-Message-Id", "5e42957d51f1d94a1070a733")).await;
    let receipt = result.expect("accepted");
    assert_eq!(receipt.message_id, "5e42957d51f1d94a1070a733");
    assert!(receipt.warnings.is_empty(), "{:?}", receipt.warnings);

    let req = mock.only_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/email");
    assert_eq!(req.header("authorization"), format!("Bearer {TOKEN}"));
    assert!(req.header("content-type").starts_with("application/json"));
    assert_eq!(
        req.json(),
        json!({
            "from": {"email": "noreply@example.com", "name": "Example App"},
            "to": [
                {"email": "jane@example.org", "name": "Jane Doe"},
                {"email": "bob@example.org"}
            ],
            "cc": [{"email": "carol@example.org", "name": "Doe, Carol"}],
            "bcc": [{"email": "audit@example.org"}],
            "reply_to": {"email": "help@example.com", "name": "Help Desk"},
            "subject": "Welcome, Jane",
            "text": "Hello Jane,\nwelcome aboard.",
            "html": "<p>Hello Jane, <b>welcome</b> aboard.</p>",
            "attachments": [{
                "content": "JVBERi0xLjQAAWJpbmFyef8=",
                "filename": "report.pdf",
                "disposition": "attachment"
            }],
            "tags": ["welcome", "onboarding", "q2", "extra"],
            "headers": [{"name": "X-Campaign", "value": "spring"}]
        })
    );
}

#[tokio::test]
async fn a_202_whose_recipients_are_all_suppressed_is_a_permanent_error_saying_nothing_was_delivered()
 {
    let body = json!({"warnings": [{
        "type": "ALL_SUPPRESSED",
        "warning": "None of the recipients were sent this email because they are all suppressed.",
        "recipients": [{"email": "jane@example.org", "name": "Jane", "reasons": ["hard_bounced"]}]
    }]});
    let err = error_for(Answer::new(202, &body.to_string()).header("X-Message-Id", "abc")).await;
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(!err.auth);
    assert_eq!(err.status, Some(202));
    assert!(
        err.message.contains("delivered it to nobody"),
        "{}",
        err.message
    );
    assert!(err.message.contains("ALL_SUPPRESSED"), "{}", err.message);
    assert!(
        err.message.contains("jane@example.org (hard_bounced)"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_202_with_some_recipients_suppressed_succeeds_and_reports_the_warning() {
    let body = json!({"warnings": [{
        "type": "SOME_SUPPRESSED",
        "warning": "Some of the recipients were not sent this email because they are suppressed.",
        "recipients": [{"email": "bob@example.org", "reasons": ["unsubscribed"]}]
    }]});
    let (_mock, result) =
        send_with(Answer::new(202, &body.to_string()).header("X-Message-Id", "id-1")).await;
    let receipt = result.expect("accepted");
    assert_eq!(receipt.message_id, "id-1");
    assert_eq!(receipt.warnings.len(), 1);
    assert!(receipt.warnings[0].contains("SOME_SUPPRESSED"));
    assert!(receipt.warnings[0].contains("bob@example.org (unsubscribed)"));
}

#[tokio::test]
async fn a_401_is_a_permanent_auth_error_with_the_providers_message() {
    let err = error_for(Answer::new(401, r#"{"message":"Unauthenticated."}"#)).await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(401))
    );
    assert!(err.message.contains("Unauthenticated."), "{}", err.message);
    assert!(err.message.contains("apiTokenSecretRef"), "{}", err.message);
}

#[tokio::test]
async fn a_403_is_a_permanent_auth_error() {
    let err = error_for(Answer::new(
        403,
        r#"{"message":"This action is unauthorized."}"#,
    ))
    .await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(403))
    );
    assert!(err.message.contains("This action is unauthorized."));
}

#[tokio::test]
async fn a_422_is_permanent_and_lists_every_field_error() {
    let body = json!({
        "message": "The from.email domain must be verified in your account to send emails. (and 1 more error)",
        "errors": {
            "from.email": ["The from.email domain must be verified in your account to send emails. #MS42207"],
            "to.1.email": ["The to.1.email must be a valid email address."]
        }
    });
    let err = error_for(Answer::new(422, &body.to_string())).await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, false, Some(422))
    );
    assert!(
        err.message
            .contains("from.email: The from.email domain must be verified"),
        "{}",
        err.message
    );
    assert!(err.message.contains("#MS42207"), "{}", err.message);
    assert!(
        err.message
            .contains("to.1.email: The to.1.email must be a valid email address."),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_429_is_transient_and_honours_retry_after() {
    let err = error_for(
        Answer::new(429, r#"{"message":"Too Many Attempts."}"#)
            .header("Retry-After", "17")
            .header("X-RateLimit-Limit", "120")
            .header("X-RateLimit-Remaining", "0"),
    )
    .await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Transient, false, Some(429))
    );
    assert_eq!(err.retry_after, Some(Duration::from_secs(17)));
    assert!(err.message.contains("Too Many Attempts."));
}

#[tokio::test]
async fn a_timeout_and_maintenance_are_transient() {
    for status in [408, 421] {
        let err = error_for(Answer::new(
            status,
            r#"{"message":"Service down for maintenance"}"#,
        ))
        .await;
        assert_eq!(err.class, ErrorClass::Transient, "status {status}");
        assert_eq!(err.status, Some(status));
        assert!(err.message.contains("Service down for maintenance"));
    }
}

#[tokio::test]
async fn a_server_error_is_ambiguous_because_mailersend_may_have_sent_it() {
    for status in [500, 502, 503] {
        let err = error_for(Answer::new(status, r#"{"message":"Server Error"}"#)).await;
        assert_eq!(err.class, ErrorClass::Ambiguous, "status {status}");
        assert_eq!(err.status, Some(status));
        assert!(err.message.contains("may have accepted"), "{}", err.message);
    }
}

#[tokio::test]
async fn other_client_errors_are_permanent_and_a_non_json_body_is_described_not_quoted() {
    let err = error_for(Answer::new(413, "<html>Request Entity Too Large</html>")).await;
    assert_eq!((err.class, err.status), (ErrorClass::Permanent, Some(413)));
    assert!(err.message.contains("413"), "{}", err.message);
    assert!(!err.message.contains("Entity"), "{}", err.message);
}

#[tokio::test]
async fn no_answer_after_the_request_was_sent_is_ambiguous() {
    let started = std::time::Instant::now();
    let err = error_for(
        Answer::new(202, "")
            .header("X-Message-Id", "late")
            .delayed(Duration::from_secs(5)),
    )
    .await;
    assert_eq!(err.class, ErrorClass::Ambiguous);
    assert!(err.message.contains("may have accepted"), "{}", err.message);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the client timeout did not apply"
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient_because_nothing_was_sent() {
    let base = closed_port_url();
    let err = provider(&base)
        .send(&full_message(&spec(&base)))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(
        err.message.contains("could not connect to MailerSend"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_server_echoing_the_token_does_not_leak_it_into_errors_or_debug_output() {
    let mock = serve(|req| {
        let echoed = req.header("authorization");
        Answer::new(
            401,
            &json!({"message": format!("bad credentials: {echoed}")}).to_string(),
        )
    })
    .await;
    let p = provider(&mock.url);
    let err = p
        .send(&full_message(&spec(&mock.url)))
        .await
        .expect_err("401");
    assert!(
        err.message.contains("bad credentials: Bearer <redacted>"),
        "{}",
        err.message
    );
    assert!(!format!("{err:?} {err}").contains(TOKEN));
    let health = p.check_health(Duration::from_secs(2)).await;
    assert!(!format!("{health:?}").contains(TOKEN), "{health:?}");
    assert!(!format!("{:?}", Credentials::new(TOKEN)).contains(TOKEN));
}

#[tokio::test]
async fn the_health_check_reads_the_quota_with_the_token() {
    let mock = serve(|_| {
        Answer::new(
            200,
            r#"{"quota":100,"remaining":97,"reset":"2026-01-11T00:00:00Z"}"#,
        )
    })
    .await;
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(report.is_healthy(), "{report}");
    assert!(report.message().contains("97 of 100"), "{report}");
    let req = mock.only_request();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/v1/api-quota")
    );
    assert_eq!(req.header("authorization"), format!("Bearer {TOKEN}"));
}

#[tokio::test]
async fn the_health_check_reports_a_bad_token_and_an_exhausted_quota() {
    let mock = serve(|_| Answer::new(401, r#"{"message":"Unauthenticated."}"#)).await;
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert!(
        matches!(&report, HealthReport::Unhealthy { reason, .. } if reason == "AuthFailed"),
        "{report}"
    );
    assert!(report.message().contains("Unauthenticated."));

    let mock =
        serve(|_| Answer::new(200, r#"{"quota":100,"remaining":0,"reset":"tomorrow"}"#)).await;
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "QuotaExhausted", "{report}");

    let report = provider(&closed_port_url())
        .check_health(Duration::from_secs(2))
        .await;
    assert_eq!(report.reason(), "Unreachable", "{report}");
}

#[tokio::test]
async fn a_config_without_token_or_with_a_bad_base_url_names_the_field() {
    let http = http_client_with(HttpTimeouts::default());
    let err = build_provider(&spec("http://127.0.0.1:1"), Credentials::default(), &http)
        .err()
        .expect("no token");
    assert_eq!(err.field, "spec.mailersend.apiTokenSecretRef");
    let err = build_provider(&spec("not a url"), Credentials::new(TOKEN), &http)
        .err()
        .expect("bad url");
    assert_eq!(err.field, "spec.mailersend.baseUrl");
}
