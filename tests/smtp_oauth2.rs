//! SMTP with AUTH XOAUTH2 against the real SMTP server (aiosmtpd, STARTTLS) and a local
//! OAuth2 token endpoint (client-credentials grant); tests/support/smtp_oauth2.rs.

mod common;
#[path = "support/smtp_oauth2.rs"]
mod smtp_oauth2;

use std::sync::Arc;
use std::time::Duration;

use common::smtp_server::{Pki, pki};
use common::{full_message, sender_spec};
use kmailops::api::EmailSenderConfigSpec;
use kmailops::provider::smtp::SmtpTimeouts;
use kmailops::provider::{
    Credentials, ErrorClass, HealthReport, HttpTimeouts, Provider, build_provider_with,
    http_client_with,
};
use smtp_oauth2::{CLIENT_ID, OAuthSmtpServer, SCOPE, TokenServer};

const MAILBOX: &str = "noreply@example.com";
const CLIENT_SECRET: &str = "Q~8Q.client-secret-7f3a-distinctive";

fn timeouts() -> SmtpTimeouts {
    SmtpTimeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_secs(3),
        data: Duration::from_secs(3),
        ..SmtpTimeouts::default()
    }
}

fn spec(port: u16, pki: &Pki, token_url: &str) -> EmailSenderConfigSpec {
    let mut s = sender_spec(&format!(
        r#"
sender: {{address: {MAILBOX}, name: Example App}}
smtp:
  host: 127.0.0.1
  port: {port}
  tls: StartTLS
  username: {MAILBOX}
  oauth2:
    tokenUrl: {token_url}
    clientId: {CLIENT_ID}
    clientSecretSecretRef: {{name: m365-app, key: clientSecret}}
    scope: {SCOPE}
"#
    ));
    s.smtp.as_mut().unwrap().ca_bundle = Some(pki.ca_pem.clone());
    s
}

fn provider(spec: &EmailSenderConfigSpec, secret: &str) -> Arc<dyn Provider> {
    let http = http_client_with(HttpTimeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(2),
    });
    build_provider_with(spec, Credentials::new(secret), &http, timeouts()).expect("provider")
}

struct Setup {
    pki: Pki,
    tokens: TokenServer,
    smtp: OAuthSmtpServer,
}

async fn setup() -> Setup {
    let pki = pki("oauth2");
    let tokens = TokenServer::start(CLIENT_SECRET).await;
    let smtp = OAuthSmtpServer::start(&pki, MAILBOX, &tokens);
    Setup { pki, tokens, smtp }
}

impl Setup {
    fn spec(&self) -> EmailSenderConfigSpec {
        spec(self.smtp.port, &self.pki, &self.tokens.url)
    }
}

fn xoauth2_events(events: &[String]) -> Vec<&String> {
    events
        .iter()
        .filter(|e| e.starts_with("AUTH XOAUTH2"))
        .collect()
}

#[tokio::test]
async fn a_send_authenticates_with_xoauth2_and_reuses_the_cached_token() {
    let s = setup().await;
    let spec = s.spec();
    let p = provider(&spec, CLIENT_SECRET);
    let receipt = p.send(&full_message(&spec)).await.expect("sent");
    assert_eq!(receipt.message_id, full_message(&spec).message_id);
    let msgs = s.smtp.messages();
    assert_eq!(msgs.len(), 1, "events: {:?}", s.smtp.events());
    assert_eq!(msgs[0]["auth_user"], MAILBOX);
    assert_eq!(msgs[0]["tls"], true);
    let issued = s.tokens.issued();
    assert_eq!(issued.len(), 1);
    let events = s.smtp.events();
    assert_eq!(
        xoauth2_events(&events),
        vec![&format!(
            "AUTH XOAUTH2 ok user={MAILBOX} token={}",
            issued[0]
        )]
    );

    // A health check (a new connection, so a new AUTH) uses the cached token.
    let report = p.check_health(Duration::from_secs(5)).await;
    assert!(report.is_healthy(), "{report}");
    assert!(report.message().contains("XOAUTH2"), "{report}");
    assert_eq!(s.tokens.requests(), 1);
    assert_eq!(xoauth2_events(&s.smtp.events()).len(), 2);
}

#[tokio::test]
async fn a_refused_token_is_dropped_and_a_new_one_fetched_once() {
    let s = setup().await;
    let spec = s.spec();
    let p = provider(&spec, CLIENT_SECRET);
    p.check_health(Duration::from_secs(5)).await;
    assert_eq!(s.tokens.requests(), 1);
    s.tokens.revoke_all();
    p.send(&full_message(&spec))
        .await
        .expect("sent with a new token");
    assert_eq!(s.tokens.requests(), 2);
    let events = s.smtp.events();
    let auths = xoauth2_events(&events);
    assert_eq!(auths.len(), 3, "{events:?}");
    assert!(auths[1].starts_with("AUTH XOAUTH2 refused"), "{auths:?}");
    assert!(auths[2].starts_with("AUTH XOAUTH2 ok"), "{auths:?}");
    assert_eq!(s.smtp.messages().len(), 1);
}

#[tokio::test]
async fn a_token_near_its_expiry_is_renewed_before_use() {
    let s = setup().await;
    s.tokens.set_expires_in(2);
    let spec = s.spec();
    let p = provider(&spec, CLIENT_SECRET);
    assert!(p.check_health(Duration::from_secs(5)).await.is_healthy());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(p.check_health(Duration::from_secs(5)).await.is_healthy());
    assert_eq!(
        s.tokens.requests(),
        2,
        "renewed at half of a short lifetime"
    );
}

#[tokio::test]
async fn a_refused_client_secret_is_a_permanent_auth_error_that_never_leaks_the_secret() {
    let s = setup().await;
    s.tokens.echo_secret();
    let spec = s.spec();
    let wrong = "Q~8Q.WRONG-secret-distinctive";
    let p = provider(&spec, wrong);
    let err = p
        .send(&full_message(&spec))
        .await
        .expect_err("invalid_client");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(401))
    );
    assert!(err.message.contains("invalid_client"), "{}", err.message);
    assert!(err.message.contains("(got <redacted>)"), "{}", err.message);
    assert!(!format!("{err:?}").contains(wrong));
    assert!(s.smtp.messages().is_empty());
    let report = p.check_health(Duration::from_secs(5)).await;
    assert!(
        matches!(&report, HealthReport::Unhealthy { reason, .. } if reason == "AuthFailed"),
        "{report}"
    );
    assert!(!report.message().contains(wrong), "{report}");
}

#[tokio::test]
async fn a_token_endpoint_outage_is_transient() {
    let s = setup().await;
    s.tokens.fail_with(503, "temporarily_unavailable");
    let spec = s.spec();
    let err = provider(&spec, CLIENT_SECRET)
        .send(&full_message(&spec))
        .await
        .expect_err("503");
    assert_eq!(err.class, ErrorClass::Transient, "{}", err.message);
    assert!(err.message.contains("nothing was sent"), "{}", err.message);
}

#[tokio::test]
async fn a_token_the_server_never_accepts_is_an_auth_error_naming_the_mailbox_rule() {
    let s = setup().await;
    let mut spec = s.spec();
    // The token is fine, but not for this mailbox.
    spec.smtp.as_mut().unwrap().username = Some("other@example.com".into());
    let err = provider(&spec, CLIENT_SECRET)
        .send(&full_message(&spec))
        .await
        .expect_err("535");
    assert_eq!(
        (err.class, err.auth, err.status),
        (ErrorClass::Permanent, true, Some(535))
    );
    assert!(
        err.message.contains("spec.smtp.username is the mailbox"),
        "{}",
        err.message
    );
    assert_eq!(
        s.tokens.requests(),
        2,
        "fetched anew once after the refusal"
    );
    for token in s.tokens.issued() {
        assert!(!err.message.contains(&token), "{}", err.message);
    }
}

#[tokio::test]
async fn a_gmail_style_challenge_on_a_refused_token_also_fetches_a_new_token() {
    let pki = pki("oauth2-google");
    let tokens = TokenServer::start(CLIENT_SECRET).await;
    let smtp = OAuthSmtpServer::start_with(&pki, MAILBOX, &tokens, "google");
    let spec = spec(smtp.port, &pki, &tokens.url);
    let p = provider(&spec, CLIENT_SECRET);
    assert!(p.check_health(Duration::from_secs(5)).await.is_healthy());
    tokens.revoke_all();
    p.send(&full_message(&spec))
        .await
        .expect("sent with a new token");
    assert_eq!(tokens.requests(), 2);
    assert_eq!(smtp.messages().len(), 1);

    let mut other = spec.clone();
    other.smtp.as_mut().unwrap().username = Some("other@example.com".into());
    let err = provider(&other, CLIENT_SECRET)
        .send(&full_message(&other))
        .await
        .expect_err("refused");
    assert_eq!((err.class, err.auth), (ErrorClass::Permanent, true));
    assert!(
        err.message.contains("did not accept AUTH XOAUTH2"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn oauth2_needs_a_username_and_excludes_a_password() {
    let http = http_client_with(HttpTimeouts::default());
    let p = pki("cfg");
    let mut s = spec(25, &p, "https://login.example.com/t/oauth2/v2.0/token");
    let err = build_provider_with(&s, Credentials::default(), &http, timeouts())
        .err()
        .expect("no client secret");
    assert_eq!(err.field, "spec.smtp.oauth2.clientSecretSecretRef");
    s.smtp.as_mut().unwrap().username = None;
    let err = build_provider_with(&s, Credentials::new(CLIENT_SECRET), &http, timeouts())
        .err()
        .expect("no username");
    assert_eq!(err.field, "spec.smtp.username");
    let mut s = spec(25, &p, "not a url");
    s.smtp.as_mut().unwrap().username = Some(MAILBOX.into());
    let err = build_provider_with(&s, Credentials::new(CLIENT_SECRET), &http, timeouts())
        .err()
        .expect("bad url");
    assert_eq!(err.field, "spec.smtp.oauth2.tokenUrl");
}
