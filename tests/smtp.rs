//! SMTP against a real SMTP server process (aiosmtpd) with STARTTLS, implicit TLS, AUTH,
//! and scripted unhappy paths.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::smtp_server::{Mode, Options, Pki, SmtpServer, pki};
use common::{full_message, sender_spec};
use kmailops::api::EmailSenderConfigSpec;
use kmailops::api::sender_config::SmtpTls;
use kmailops::message::{RenderedContent, build_message};
use kmailops::provider::smtp::SmtpTimeouts;
use kmailops::provider::{
    Credentials, ErrorClass, HttpTimeouts, Provider, build_provider_with, http_client_with,
};

const USER: &str = "mailer";
const PASSWORD: &str = "pw-SMTP-4e1d2c-distinctive";

fn timeouts() -> SmtpTimeouts {
    SmtpTimeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_secs(2),
        data: Duration::from_millis(700),
    }
}

fn spec(port: u16, tls: SmtpTls, ca: Option<&Pki>, auth: bool) -> EmailSenderConfigSpec {
    let mut s = sender_spec(&format!(
        "sender: {{address: noreply@example.com, name: Example App}}\nsmtp: {{host: 127.0.0.1, port: {port}}}"
    ));
    let smtp = s.smtp.as_mut().expect("smtp");
    smtp.tls = tls;
    smtp.ca_bundle = ca.map(|p| p.ca_pem.clone());
    if auth {
        smtp.username = Some(USER.into());
        smtp.password_secret_ref = serde_yaml::from_str("{name: smtp, key: password}").ok();
    }
    s
}

fn provider(spec: &EmailSenderConfigSpec, password: &str) -> Arc<dyn Provider> {
    let creds = if spec.smtp.as_ref().is_some_and(|s| s.username.is_some()) {
        Credentials::new(password)
    } else {
        Credentials::default()
    };
    let http = http_client_with(HttpTimeouts::default());
    build_provider_with(spec, creds, &http, timeouts()).expect("provider")
}

/// The message arrived whole: headers, both bodies, the attachment's bytes, and every
/// recipient in the envelope, with Bcc only there.
fn assert_delivered_complete(server: &SmtpServer, spec: &EmailSenderConfigSpec, tls: bool) {
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1, "events: {:?}", server.events());
    let m = &msgs[0];
    let expected = full_message(spec);
    assert_eq!(m["tls"], tls);
    assert_eq!(m["mail_from"], "noreply@example.com");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!([
            "jane@example.org",
            "bob@example.org",
            "carol@example.org",
            "audit@example.org"
        ])
    );
    let h = &m["headers"];
    assert_eq!(h["From"], "Example App <noreply@example.com>");
    assert_eq!(h["To"], "Jane Doe <jane@example.org>, bob@example.org");
    assert_eq!(h["Cc"], "\"Doe, Carol\" <carol@example.org>");
    assert_eq!(h["Reply-To"], "Help Desk <help@example.com>");
    assert_eq!(h["Subject"], "Welcome, Jane");
    assert_eq!(h["Message-ID"], expected.message_id.as_str());
    assert_eq!(h["X-Campaign"], "spring");
    assert!(h.get("Bcc").is_none(), "Bcc must not be a header: {h}");
    assert!(
        !server.raw(1).contains("audit@example.org"),
        "Bcc address leaked into the message"
    );
    assert_eq!(
        m["text"]
            .as_str()
            .map(|t| t.replace("\r\n", "\n").trim_end().to_string())
            .as_deref(),
        Some("Hello Jane,\nwelcome aboard.")
    );
    assert_eq!(
        m["html"]
            .as_str()
            .map(|t| t.replace("\r\n", "\n").trim_end().to_string())
            .as_deref(),
        Some("<p>Hello Jane, <b>welcome</b> aboard.</p>")
    );
    let a = &m["attachments"][0];
    assert_eq!(a["filename"], "report.pdf");
    assert_eq!(a["content_type"], "application/pdf");
    assert_eq!(
        a["content_b64"],
        STANDARD.encode(b"%PDF-1.4\x00\x01binary\xff")
    );
}

#[tokio::test]
async fn starttls_with_auth_delivers_a_complete_message() {
    let pki = pki("starttls");
    let server = SmtpServer::start(Options::new(Mode::StartTls, Some(&pki)).user(USER, PASSWORD));
    let spec = spec(server.port, SmtpTls::StartTls, Some(&pki), true);
    let receipt = provider(&spec, PASSWORD)
        .send(&full_message(&spec))
        .await
        .expect("delivered");
    assert_eq!(receipt.message_id, full_message(&spec).message_id);
    assert_delivered_complete(&server, &spec, true);
    assert_eq!(server.messages()[0]["auth_user"], USER);
}

#[tokio::test]
async fn implicit_tls_with_auth_delivers_a_complete_message() {
    let pki = pki("implicit");
    let server = SmtpServer::start(Options::new(Mode::Tls, Some(&pki)).user(USER, PASSWORD));
    let spec = spec(server.port, SmtpTls::Tls, Some(&pki), true);
    provider(&spec, PASSWORD)
        .send(&full_message(&spec))
        .await
        .expect("delivered");
    assert_delivered_complete(&server, &spec, true);
}

#[tokio::test]
async fn plaintext_mode_delivers_a_complete_message_to_a_dev_catcher() {
    let server = SmtpServer::start(Options::new(Mode::None, None));
    let spec = spec(server.port, SmtpTls::None, None, false);
    provider(&spec, "")
        .send(&full_message(&spec))
        .await
        .expect("delivered");
    assert_delivered_complete(&server, &spec, false);
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_auth_error_and_nothing_is_sent() {
    let pki = pki("wrong-password");
    let server = SmtpServer::start(Options::new(Mode::StartTls, Some(&pki)).user(USER, PASSWORD));
    let spec = spec(server.port, SmtpTls::StartTls, Some(&pki), true);
    let wrong = "wrong-PASSWORD-77aa";
    let err = provider(&spec, wrong)
        .send(&full_message(&spec))
        .await
        .expect_err("AUTH refused");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(535))
    );
    assert!(err.message.contains("535"), "{}", err.message);
    assert!(err.message.contains("passwordSecretRef"), "{}", err.message);
    assert!(!err.message.contains(wrong) && !format!("{err:?}").contains(wrong));
    assert!(
        server.events().iter().all(|e| !e.starts_with("MAIL")),
        "{:?}",
        server.events()
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_permanent_error_that_points_at_ca_bundle() {
    let trusted = pki("trusted");
    let other = pki("other");
    let server = SmtpServer::start(Options::new(Mode::StartTls, Some(&other)).user(USER, PASSWORD));
    let spec = spec(server.port, SmtpTls::StartTls, Some(&trusted), true);
    let err = provider(&spec, PASSWORD)
        .send(&full_message(&spec))
        .await
        .expect_err("untrusted certificate");
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(!err.auth);
    assert!(
        err.message.contains("certificate is not trusted"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("spec.smtp.caBundle"),
        "{}",
        err.message
    );
    assert!(
        server
            .events()
            .iter()
            .all(|e| !e.starts_with("AUTH") && !e.starts_with("MAIL")),
        "{:?}",
        server.events()
    );
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_untrusted_certificate() {
    let other = pki("skip-verify");
    let server = SmtpServer::start(Options::new(Mode::Tls, Some(&other)));
    let mut spec = spec(server.port, SmtpTls::Tls, None, false);
    if let Some(s) = spec.smtp.as_mut() {
        s.insecure_skip_verify = true;
    }
    provider(&spec, "")
        .send(&full_message(&spec))
        .await
        .expect("delivered despite the unknown CA");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_server_without_starttls_gets_nothing_in_plaintext_when_starttls_is_required() {
    let server = SmtpServer::start(Options::new(Mode::None, None).user(USER, PASSWORD));
    let spec = spec(server.port, SmtpTls::StartTls, None, true);
    let err = provider(&spec, PASSWORD)
        .send(&full_message(&spec))
        .await
        .expect_err("STARTTLS missing");
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("does not offer STARTTLS"),
        "{}",
        err.message
    );
    let events = server.events();
    assert_eq!(events, ["CONNECT"], "the client must stop after EHLO");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_4xx_reply_is_transient() {
    let server = SmtpServer::start(Options::new(Mode::None, None));
    let spec = spec(server.port, SmtpTls::None, None, false);
    let msg = one_recipient(&spec, "tempfail@example.org");
    let err = provider(&spec, "").send(&msg).await.expect_err("451");
    assert_eq!((err.class, err.status), (ErrorClass::Transient, Some(451)));
    assert!(err.message.contains("try again later"), "{}", err.message);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_5xx_reply_is_permanent() {
    let server = SmtpServer::start(Options::new(Mode::None, None));
    let spec = spec(server.port, SmtpTls::None, None, false);
    let err = provider(&spec, "")
        .send(&one_recipient(&spec, "reject@example.org"))
        .await
        .expect_err("550");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, false, Some(550))
    );
    assert!(err.message.contains("No such user"), "{}", err.message);
}

#[tokio::test]
async fn no_reply_after_the_message_body_is_ambiguous() {
    let server = SmtpServer::start(Options::new(Mode::None, None));
    let spec = spec(server.port, SmtpTls::None, None, false);
    let err = provider(&spec, "")
        .send(&one_recipient(&spec, "slow@example.org"))
        .await
        .expect_err("timeout after DATA");
    assert_eq!(err.class, ErrorClass::Ambiguous);
    assert!(err.message.contains("may have accepted"), "{}", err.message);
}

#[tokio::test]
async fn a_server_that_never_greets_is_transient_because_nothing_was_handed_over() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            open.push(sock);
        }
    });
    let spec = spec(port, SmtpTls::None, None, false);
    let err = provider(&spec, "")
        .send(&full_message(&spec))
        .await
        .expect_err("no greeting");
    hold.abort();
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(
        err.message.contains("nothing was handed over"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_second_send_reuses_the_pooled_connection() {
    let pki = pki("pool");
    let server = SmtpServer::start(Options::new(Mode::StartTls, Some(&pki)).user(USER, PASSWORD));
    let spec = spec(server.port, SmtpTls::StartTls, Some(&pki), true);
    let p = provider(&spec, PASSWORD);
    p.send(&full_message(&spec)).await.expect("first");
    p.send(&one_recipient(&spec, "second@example.org"))
        .await
        .expect("second");
    assert_eq!(server.messages().len(), 2);
    let connects = server.events().iter().filter(|e| *e == "CONNECT").count();
    assert_eq!(connects, 1, "{:?}", server.events());
}

#[tokio::test]
async fn the_health_check_connects_upgrades_authenticates_and_says_what_failed() {
    let pki_ok = pki("health");
    let server =
        SmtpServer::start(Options::new(Mode::StartTls, Some(&pki_ok)).user(USER, PASSWORD));
    let good = spec(server.port, SmtpTls::StartTls, Some(&pki_ok), true);
    let check = |p: Arc<dyn Provider>| async move { p.check_health(Duration::from_secs(3)).await };

    let report = check(provider(&good, PASSWORD)).await;
    assert!(report.is_healthy(), "{report}");
    assert!(
        server.events().iter().any(|e| e == "AUTH PLAIN ok"),
        "{:?}",
        server.events()
    );

    let report = check(provider(&good, "wrong-password")).await;
    assert_eq!(
        (report.state(), report.reason()),
        ("Unhealthy", "AuthFailed"),
        "{report}"
    );

    let untrusted = spec(
        server.port,
        SmtpTls::StartTls,
        Some(&pki("elsewhere")),
        true,
    );
    let report = check(provider(&untrusted, PASSWORD)).await;
    assert_eq!(report.reason(), "TlsError", "{report}");

    let plain = SmtpServer::start(Options::new(Mode::None, None));
    let report = check(provider(
        &spec(plain.port, SmtpTls::StartTls, None, false),
        "",
    ))
    .await;
    assert_eq!(report.reason(), "StartTLSNotOffered", "{report}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let report = check(provider(&spec(port, SmtpTls::None, None, false), "")).await;
    assert_eq!(report.reason(), "Unreachable", "{report}");
}

#[test]
fn a_ca_bundle_without_certificates_is_a_config_error_naming_the_field() {
    let mut s = spec(2525, SmtpTls::StartTls, None, false);
    if let Some(smtp) = s.smtp.as_mut() {
        smtp.ca_bundle = Some("not a certificate".into());
    }
    let http = http_client_with(HttpTimeouts::default());
    let err = build_provider_with(&s, Credentials::default(), &http, timeouts())
        .err()
        .expect("invalid caBundle");
    assert_eq!(err.field, "spec.smtp.caBundle");
}

fn one_recipient(spec: &EmailSenderConfigSpec, to: &str) -> kmailops::message::OutgoingMessage {
    let email = serde_yaml::from_str(&format!("{{to: [{to}], text: x}}")).expect("email");
    build_message(
        &email,
        spec,
        "mail/smtp",
        RenderedContent {
            subject: "Ping".into(),
            text: Some("ping".into()),
            html: None,
        },
        vec![],
    )
    .expect("message")
}
