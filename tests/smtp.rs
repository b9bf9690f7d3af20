//! SMTP against a real SMTP server process (aiosmtpd) with STARTTLS, implicit TLS, AUTH,
//! and scripted unhappy paths.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::smtp_server::{Mode, Options, Pki, SmtpServer, pki, pki_for};
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
        ..SmtpTimeouts::default()
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
    provider_with(spec, password, timeouts())
}

fn provider_with(
    spec: &EmailSenderConfigSpec,
    password: &str,
    timeouts: SmtpTimeouts,
) -> Arc<dyn Provider> {
    let creds = if spec.smtp.as_ref().is_some_and(|s| s.username.is_some()) {
        Credentials::new(password)
    } else {
        Credentials::default()
    };
    let http = http_client_with(HttpTimeouts::default());
    build_provider_with(spec, creds, &http, timeouts).expect("provider")
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
    assert!(
        events
            .iter()
            .all(|e| e == "CONNECT" || e.starts_with("EHLO ") || e == "QUIT" || e == "DISCONNECT"),
        "the client must stop after EHLO: {events:?}"
    );
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
async fn a_reply_that_names_the_recipient_is_reported_without_the_address() {
    let server = SmtpServer::start(Options::new(Mode::None, None));
    let spec = spec(server.port, SmtpTls::None, None, false);
    let email = serde_yaml::from_str(
        "{to: [ok@example.org], cc: [Echo-Reject@Example.org], bcc: [hidden@example.org], text: x}",
    )
    .expect("email");
    let msg = build_message(
        &email,
        &spec,
        "mail/smtp",
        RenderedContent {
            subject: "Ping".into(),
            text: Some("the body text".into()),
            html: None,
        },
        vec![],
    )
    .expect("message");
    let err = provider(&spec, "").send(&msg).await.expect_err("550");
    assert_eq!(err.status, Some(550));
    assert!(
        err.message.contains("Recipient address rejected"),
        "{}",
        err.message
    );
    assert!(err.message.contains("recipient 2 of 3"), "{}", err.message);
    let lower = format!("{err:?}").to_ascii_lowercase();
    for hidden in [
        "echo-reject@example.org",
        "ok@example.org",
        "hidden@example.org",
        "the body text",
    ] {
        assert!(!lower.contains(hidden), "{hidden} in {err:?}");
    }
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

fn message_with(
    spec: &EmailSenderConfigSpec,
    subject: &str,
    headers: &[(&str, &str)],
) -> kmailops::message::OutgoingMessage {
    let mut email: kmailops::api::EmailSpec =
        serde_yaml::from_str("{to: [jane@example.org], text: x}").expect("email");
    for (name, value) in headers {
        email.headers.insert(name.to_string(), value.to_string());
    }
    build_message(
        &email,
        spec,
        "mail/smtp",
        RenderedContent {
            subject: subject.into(),
            text: Some("ping".into()),
            html: None,
        },
        vec![],
    )
    .expect("message")
}

#[tokio::test]
async fn ehlo_sends_smtp_helo_name_or_else_the_hosts_own_qualified_name() {
    let server = SmtpServer::start(Options::new(Mode::None, None));
    let mut named = spec(server.port, SmtpTls::None, None, false);
    if let Some(s) = named.smtp.as_mut() {
        s.helo_name = Some("mailer.apps.example.net".into());
    }
    provider(&named, "")
        .send(&one_recipient(&named, "a@example.org"))
        .await
        .expect("delivered");
    let default = spec(server.port, SmtpTls::None, None, false);
    provider(&default, "")
        .send(&one_recipient(&default, "b@example.org"))
        .await
        .expect("delivered");
    let ehlo: Vec<String> = server
        .events()
        .into_iter()
        .filter(|e| e.starts_with("EHLO "))
        .collect();
    assert_eq!(
        ehlo,
        [
            "EHLO mailer.apps.example.net".to_string(),
            format!("EHLO {}", kmailops::provider::smtp::local_helo_name()),
        ]
    );
}

#[tokio::test]
async fn long_header_values_are_folded_below_998_characters_and_unfold_to_the_original() {
    let server = SmtpServer::start(Options::new(Mode::None, None));
    let spec = spec(server.port, SmtpTls::None, None, false);
    // Without spaces (a token, e.g. a tracking ID), with spaces, and non-ASCII.
    let token = format!("id-{}", "0123456789abcdef".repeat(62)); // 995 characters
    let words = "lorem ipsum dolor sit amet ".repeat(36); // 972 characters
    let words = words.trim_end();
    let accents = "é".repeat(495); // 990 bytes
    let subject = format!("Report-{}", "x".repeat(983)); // 990 characters, no space
    let msg = message_with(
        &spec,
        &subject,
        &[
            ("X-Tracking-Token", &token),
            ("X-Words", words),
            ("X-Accents", &accents),
        ],
    );
    provider(&spec, "").send(&msg).await.expect("delivered");

    let raw = server.raw(1);
    for line in raw.split("\r\n") {
        assert!(
            line.len() <= 998,
            "a line of {} characters: {}...",
            line.len(),
            &line[..60]
        );
    }
    let h = &server.messages()[0]["headers"];
    assert_eq!(h["X-Tracking-Token"], token.as_str());
    assert_eq!(h["X-Words"], words);
    assert_eq!(h["X-Accents"], accents.as_str());
    assert_eq!(h["Subject"], subject.as_str());
}

#[tokio::test]
async fn starttls_against_an_implicit_tls_port_says_to_use_tls_mode() {
    let pki = pki("wrong-mode");
    let server = SmtpServer::start(Options::new(Mode::Tls, Some(&pki)));
    let spec = spec(server.port, SmtpTls::StartTls, Some(&pki), false);
    let started = std::time::Instant::now();
    let err = provider(&spec, "")
        .send(&full_message(&spec))
        .await
        .expect_err("no greeting in plain text");
    // Before: connect + command limit (4 s here) and a bare timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(err.message.contains("sent no greeting"), "{}", err.message);
    assert!(
        err.message.contains("spec.smtp.tls: TLS") && err.message.contains("465"),
        "{}",
        err.message
    );

    let report = provider(&spec, "")
        .check_health(Duration::from_secs(3))
        .await;
    assert!(!report.is_healthy(), "{report}");
    assert!(report.message().contains("spec.smtp.tls: TLS"), "{report}");
}

#[tokio::test]
async fn a_server_whose_first_bytes_are_tls_is_a_permanent_error_that_says_to_use_tls_mode() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let serve = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut open = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            // A TLS alert record (fatal, handshake_failure), as some TLS servers send to a
            // client that says nothing.
            let _ = sock
                .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
                .await;
            open.push(sock);
        }
    });
    let spec = spec(port, SmtpTls::StartTls, None, false);
    let started = std::time::Instant::now();
    let err = provider(&spec, "")
        .send(&full_message(&spec))
        .await
        .expect_err("TLS, not SMTP");
    serve.abort();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.message.contains("began with TLS"), "{}", err.message);
    assert!(
        err.message.contains("spec.smtp.tls: TLS"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn implicit_tls_against_a_plaintext_greeting_says_to_use_starttls_or_none() {
    let server = SmtpServer::start(Options::new(Mode::None, None));
    let spec = spec(server.port, SmtpTls::Tls, None, false);
    let started = std::time::Instant::now();
    let err = provider(&spec, "")
        .send(&full_message(&spec))
        .await
        .expect_err("plain text is no TLS");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("answered in plain text"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("StartTLS") && err.message.contains("587"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_says_to_fix_the_host_not_the_ca_bundle() {
    // The CA is trusted (caBundle); the certificate names only mail.internal.example.
    let pki = pki_for("other-name", &["mail.internal.example"]);
    let server = SmtpServer::start(Options::new(Mode::StartTls, Some(&pki)).user(USER, PASSWORD));
    let spec = spec(server.port, SmtpTls::StartTls, Some(&pki), true);
    let err = provider(&spec, PASSWORD)
        .send(&full_message(&spec))
        .await
        .expect_err("name mismatch");
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("does not name 127.0.0.1"),
        "{}",
        err.message
    );
    assert!(err.message.contains("spec.smtp.host"), "{}", err.message);
    assert!(
        err.message.contains("mail.internal.example"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("caBundle"), "{}", err.message);
    let report = provider(&spec, PASSWORD)
        .check_health(Duration::from_secs(3))
        .await;
    assert_eq!(report.reason(), "TlsError", "{report}");
    assert!(report.message().contains("spec.smtp.host"), "{report}");
}

#[tokio::test]
async fn the_health_check_fails_when_the_server_requires_auth_the_sender_does_not_have() {
    let pki = pki("auth-required");
    let server = SmtpServer::start(Options::new(Mode::StartTls, Some(&pki)).user(USER, PASSWORD));
    let check = |p: Arc<dyn Provider>| async move { p.check_health(Duration::from_secs(3)).await };

    let anonymous = spec(server.port, SmtpTls::StartTls, Some(&pki), false);
    let report = check(provider(&anonymous, "")).await;
    assert_eq!(
        (report.state(), report.reason()),
        ("Unhealthy", "AuthFailed"),
        "{report}"
    );
    assert!(report.message().contains("530"), "{report}");
    assert!(
        report.message().contains("requires authentication")
            && report.message().contains("spec.smtp.username"),
        "{report}"
    );

    let with_password = spec(server.port, SmtpTls::StartTls, Some(&pki), true);
    let report = check(provider(&with_password, PASSWORD)).await;
    assert!(report.is_healthy(), "{report}");
    assert!(
        report
            .message()
            .ends_with("TLS, AUTH and MAIL FROM:<noreply@example.com>"),
        "{report}"
    );
    let events = server.events();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("MAIL noreply@example.com")),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e == "RSET"), "{events:?}");
    assert!(
        !events.iter().any(|e| e == "DATA" || e.starts_with("RCPT")),
        "{events:?}"
    );
    assert!(server.messages().is_empty());

    // A send without credentials fails the same way, and says so without recipients.
    let err = provider(&anonymous, "")
        .send(&full_message(&anonymous))
        .await
        .expect_err("530");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(530))
    );
    assert!(
        err.message.contains("spec.smtp.username"),
        "{}",
        err.message
    );
    for secret_or_recipient in [
        "jane@example.org",
        "audit@example.org",
        "Hello Jane",
        PASSWORD,
    ] {
        assert!(
            !err.message.contains(secret_or_recipient),
            "{}",
            err.message
        );
    }
}

#[tokio::test]
async fn idle_pooled_connections_are_closed_with_quit_so_a_connection_limit_admits_the_health_check()
 {
    let server = SmtpServer::start(Options::new(Mode::None, None).max_connections_per_client(2));
    let spec = spec(server.port, SmtpTls::None, None, false);
    let idle = Duration::from_secs(1);
    let p = provider_with(&spec, "", SmtpTimeouts { idle, ..timeouts() });
    // Two sends at once open two connections, and both go back into the pool.
    let (first, second) = (
        one_recipient(&spec, "a@example.org"),
        one_recipient(&spec, "b@example.org"),
    );
    let (a, b) = tokio::join!(p.send(&first), p.send(&second));
    a.expect("first");
    b.expect("second");
    assert_eq!(server.messages().len(), 2);
    let count = |what: &str| server.events().iter().filter(|e| *e == what).count();
    assert_eq!(count("CONNECT"), 2, "{:?}", server.events());

    // While both are pooled, the limit leaves no room for the health check.
    let report = p.check_health(Duration::from_secs(3)).await;
    assert!(!report.is_healthy(), "{report}");
    assert_eq!(count("REFUSED"), 1, "{:?}", server.events());

    tokio::time::sleep(idle + Duration::from_millis(1500)).await;
    assert_eq!(count("QUIT"), 2, "{:?}", server.events());
    assert_eq!(count("DISCONNECT"), 2, "{:?}", server.events());
    let report = p.check_health(Duration::from_secs(3)).await;
    assert!(report.is_healthy(), "{report}");
}
