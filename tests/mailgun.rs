//! Mailgun against a local server that behaves as Mailgun documents, unhappy paths
//! included.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{
    Answer, FormPart, Mock, closed_port_url, full_message, multipart, sender_spec, serve,
};
use kmailops::api::EmailSenderConfigSpec;
use kmailops::provider::{
    Credentials, ErrorClass, HttpTimeouts, Provider, SendError, SendReceipt, build_provider,
    http_client_with,
};

const KEY: &str = "key-MAILGUN-9d8c7b6a-distinctive";

fn spec(base: &str) -> EmailSenderConfigSpec {
    sender_spec(&format!(
        r#"
sender: {{address: noreply@mg.example.com, name: Example App}}
mailgun:
  domain: mg.example.com
  region: EU
  apiKeySecretRef: {{name: mailgun, key: api-key}}
  baseUrl: {base}
"#
    ))
}

fn provider(base: &str) -> Arc<dyn Provider> {
    let http = http_client_with(HttpTimeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_millis(600),
    });
    build_provider(&spec(base), Credentials::new(KEY), &http).expect("provider")
}

async fn send_with(answer: Answer) -> (Mock, Result<SendReceipt, SendError>) {
    let mock = serve(move |_| answer.clone()).await;
    let result = provider(&mock.url)
        .send(&full_message(&spec(&mock.url)))
        .await;
    (mock, result)
}

async fn error_for(answer: Answer) -> SendError {
    let (_mock, result) = send_with(answer).await;
    let err = result.expect_err("the send should fail");
    assert!(!err.message.contains(KEY), "key leaked: {}", err.message);
    err
}

fn values(parts: &[FormPart], name: &str) -> Vec<String> {
    parts
        .iter()
        .filter(|p| p.name == name)
        .map(FormPart::text)
        .collect()
}

#[tokio::test]
async fn a_send_posts_every_documented_form_field_with_basic_auth() {
    let (mock, result) = send_with(Answer::new(
        200,
        r#"{"id":"<20260110.1@mg.example.com>","message":"Queued. Thank you."}"#,
    ))
    .await;
    let receipt = result.expect("accepted");
    assert_eq!(receipt.message_id, "<20260110.1@mg.example.com>");
    assert_eq!(
        receipt.warnings,
        ["Mailgun keeps at most 3 tags; not sent: extra"]
    );

    let req = mock.only_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v3/mg.example.com/messages");
    assert_eq!(
        req.header("authorization"),
        format!("Basic {}", STANDARD.encode(format!("api:{KEY}")))
    );
    assert!(
        req.header("content-type")
            .starts_with("multipart/form-data")
    );
    let parts = multipart(&req);
    let msg = full_message(&spec(&mock.url));
    assert_eq!(
        values(&parts, "from"),
        ["Example App <noreply@mg.example.com>"]
    );
    assert_eq!(
        values(&parts, "to"),
        ["Jane Doe <jane@example.org>", "bob@example.org"]
    );
    assert_eq!(values(&parts, "cc"), ["\"Doe, Carol\" <carol@example.org>"]);
    assert_eq!(values(&parts, "bcc"), ["audit@example.org"]);
    assert_eq!(values(&parts, "subject"), ["Welcome, Jane"]);
    assert_eq!(values(&parts, "text"), ["Hello Jane,\nwelcome aboard."]);
    assert_eq!(
        values(&parts, "html"),
        ["<p>Hello Jane, <b>welcome</b> aboard.</p>"]
    );
    assert_eq!(
        values(&parts, "h:Reply-To"),
        ["Help Desk <help@example.com>"]
    );
    assert_eq!(values(&parts, "h:Message-Id"), [msg.message_id.as_str()]);
    assert_eq!(values(&parts, "h:X-Campaign"), ["spring"]);
    assert_eq!(values(&parts, "o:tag"), ["welcome", "onboarding", "q2"]);
    let attachment: Vec<&FormPart> = parts.iter().filter(|p| p.name == "attachment").collect();
    assert_eq!(attachment.len(), 1);
    assert_eq!(attachment[0].filename.as_deref(), Some("report.pdf"));
    assert_eq!(
        attachment[0].content_type.as_deref(),
        Some("application/pdf")
    );
    assert_eq!(attachment[0].value, b"%PDF-1.4\x00\x01binary\xff");
    let known = [
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "text",
        "html",
        "h:Reply-To",
        "h:Message-Id",
        "h:X-Campaign",
        "o:tag",
        "attachment",
    ];
    for p in &parts {
        assert!(
            known.contains(&p.name.as_str()),
            "unexpected part {}",
            p.name
        );
    }
}

#[tokio::test]
async fn a_401_forbidden_in_plain_text_is_a_permanent_auth_error() {
    let err = error_for(Answer::new(401, "Forbidden")).await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(401))
    );
    // A body outside Mailgun's JSON error format is described by its size, never quoted: a
    // baseUrl can point anywhere, and what answers there is not Mailgun's to show.
    assert!(
        err.message.contains(
            "Mailgun answered 401: a response body that is not in the provider's error format"
        ),
        "{}",
        err.message
    );
    assert!(err.message.contains("check the API key"), "{}", err.message);
}

#[tokio::test]
async fn client_errors_are_permanent_with_mailguns_message() {
    for (status, said) in [
        (
            400,
            "'from' parameter is not a valid address. please check documentation",
        ),
        (402, "Request failed"),
        (404, "Domain not found: mg.example.com"),
        (413, "Request entity too large"),
    ] {
        let body = serde_json::json!({ "message": said }).to_string();
        let err = error_for(Answer::new(status, &body)).await;
        assert_eq!(
            (err.class, err.auth),
            (ErrorClass::Permanent, false),
            "{status}"
        );
        assert_eq!(err.status, Some(status));
        assert!(err.message.contains(said), "{}", err.message);
    }
}

#[tokio::test]
async fn a_429_is_transient_and_reads_the_retry_time_from_the_message() {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
    let date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&at)
        .expect("date");
    let said = format!(
        "Domain mg.example.com is not allowed to send: rate limit exceeded, try again after {date}"
    );
    let err = error_for(Answer::new(
        429,
        &serde_json::json!({ "message": said }).to_string(),
    ))
    .await;
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Transient, false, Some(429))
    );
    let wait = err.retry_after.expect("retry_after parsed from the text");
    assert!(
        (Duration::from_secs(115)..=Duration::from_secs(121)).contains(&wait),
        "{wait:?}"
    );
    assert!(err.message.contains("rate limit exceeded"));
}

#[tokio::test]
async fn a_server_error_is_ambiguous_because_mailgun_may_have_sent_it() {
    for status in [500, 502, 503] {
        let err = error_for(Answer::new(
            status,
            r#"{"message":"Internal Server Error"}"#,
        ))
        .await;
        assert_eq!(err.class, ErrorClass::Ambiguous, "{status}");
        assert!(err.message.contains("Internal Server Error"));
        assert!(
            err.message.contains("may still have sent"),
            "{}",
            err.message
        );
    }
}

#[tokio::test]
async fn no_answer_after_the_request_was_sent_is_ambiguous() {
    let err = error_for(
        Answer::new(200, r#"{"id":"<late@mg.example.com>","message":"Queued."}"#)
            .delayed(Duration::from_secs(5)),
    )
    .await;
    assert_eq!(err.class, ErrorClass::Ambiguous);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let base = closed_port_url();
    let err = provider(&base)
        .send(&full_message(&spec(&base)))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.class, ErrorClass::Transient);
}

#[tokio::test]
async fn a_server_echoing_the_basic_credentials_does_not_leak_the_key() {
    let mock = serve(|req| {
        let echoed = req.header("authorization");
        Answer::new(
            400,
            &serde_json::json!({"message": format!("bad request from {echoed}")}).to_string(),
        )
    })
    .await;
    let err = provider(&mock.url)
        .send(&full_message(&spec(&mock.url)))
        .await
        .expect_err("400");
    let basic = STANDARD.encode(format!("api:{KEY}"));
    assert!(
        !err.message.contains(&basic) && !err.message.contains(KEY),
        "{}",
        err.message
    );
    assert!(err.message.contains("Basic <redacted>"), "{}", err.message);
}

async fn health_with(answer: Answer) -> (Mock, kmailops::provider::HealthReport) {
    let mock = serve(move |_| answer.clone()).await;
    let report = provider(&mock.url)
        .check_health(Duration::from_secs(2))
        .await;
    (mock, report)
}

#[tokio::test]
async fn the_health_check_reads_the_domain_state() {
    let (mock, report) = health_with(Answer::new(
        200,
        r#"{"domain":{"name":"mg.example.com","state":"active"}}"#,
    ))
    .await;
    assert!(report.is_healthy(), "{report}");
    let req = mock.only_request();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/v4/domains/mg.example.com")
    );
    assert!(req.header("authorization").starts_with("Basic "));

    let (_, report) = health_with(Answer::new(200, r#"{"domain":{"state":"unverified"}}"#)).await;
    assert_eq!(
        (report.state(), report.reason()),
        ("Unhealthy", "DomainUnverified")
    );
    let (_, report) = health_with(Answer::new(200, r#"{"domain":{"state":"disabled"}}"#)).await;
    assert_eq!(
        (report.state(), report.reason()),
        ("Unhealthy", "DomainDisabled")
    );
    let (_, report) = health_with(Answer::new(404, r#"{"message":"Domain not found"}"#)).await;
    assert_eq!(
        (report.state(), report.reason()),
        ("Unhealthy", "DomainNotFound")
    );
}

#[tokio::test]
async fn a_sending_key_refused_by_the_domain_check_is_unknown_never_healthy() {
    for status in [401, 403] {
        let (_, report) = health_with(Answer::new(status, "Forbidden")).await;
        assert_eq!(
            (report.state(), report.reason()),
            ("Unknown", "CheckNotPermitted"),
            "{report}"
        );
        assert!(report.message().contains("sending key"), "{report}");
    }
}

#[tokio::test]
async fn a_domain_that_is_not_a_host_name_is_refused_at_build_time() {
    let mut s = spec("http://127.0.0.1:1");
    if let Some(mg) = s.mailgun.as_mut() {
        mg.domain = "mg.example.com/../admin".into();
    }
    let http = http_client_with(HttpTimeouts::default());
    let err = build_provider(&s, Credentials::new(KEY), &http)
        .err()
        .expect("invalid domain");
    assert_eq!(err.field, "spec.mailgun.domain");
}
