//! EmailSenderConfig lifecycle against the real API server and local MailerSend-compatible
//! servers: health checks, Secret rotation, failover, rate limits, metrics.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use support::mock_mailersend::{MockMailerSend, Reply};
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailPhase, EmailSenderConfig};
use kmailops::context::Settings;

fn sender_condition(s: &EmailSenderConfig, type_: &str) -> Option<(String, String)> {
    s.status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn a_wrong_token_makes_the_sender_unhealthy_and_fixing_the_secret_heals_it_without_restart() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("health").await;
    let mock = MockMailerSend::start().await;
    let client = env.client();
    secret(&client, &ns, "mailersend-token", "token", "wrong-token").await;
    env.apply_yaml(&ns, &sender_yaml("mailersend", &mock.base_url, ""))
        .await;
    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    let unhealthy = wait_for(
        &senders,
        "mailersend",
        |s: &EmailSenderConfig| sender_condition(s, "Healthy").is_some_and(|c| c.0 == "False"),
        WAIT,
    )
    .await;
    let (_, reason) = sender_condition(&unhealthy, "Healthy").unwrap();
    assert_eq!(reason, "AuthFailed");
    assert_eq!(
        sender_condition(&unhealthy, "CredentialsLoaded").map(|c| c.0),
        Some("True".into())
    );
    let status = unhealthy.status.clone().unwrap();
    assert_eq!(status.provider.map(|p| p.as_str()), Some("MailerSend"));
    assert!(status.last_health_check_time.is_some());
    let text = serde_json::to_string(&status).unwrap();
    assert!(
        !text.contains("wrong-token"),
        "a secret leaked into status: {text}"
    );

    // Fix the Secret: the next check passes without restarting the operator.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"data": {"token": ByteString(b"test-token".to_vec())}});
    secrets
        .patch(
            "mailersend-token",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let healed = wait_for(
        &senders,
        "mailersend",
        |s: &EmailSenderConfig| sender_condition(s, "Healthy").is_some_and(|c| c.0 == "True"),
        WAIT,
    )
    .await;
    assert_eq!(
        sender_condition(&healed, "Ready").map(|c| c.0),
        Some("True".into())
    );
    op.stop().await;
}

#[tokio::test]
async fn a_missing_secret_is_named_in_credentials_loaded_and_plaintext_smtp_is_warned_about() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("sender-conds").await;
    let client = env.client();
    env.apply_yaml(
        &ns,
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {name: catcher}
spec:
  sender: {address: dev@example.com}
  smtp: {host: 127.0.0.1, port: 1, tls: None, username: dev, passwordSecretRef: {name: smtp-pass, key: password}}
"#,
    )
    .await;
    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);
    let s = wait_for(
        &senders,
        "catcher",
        |s: &EmailSenderConfig| sender_condition(s, "CredentialsLoaded").is_some(),
        WAIT,
    )
    .await;
    assert_eq!(
        sender_condition(&s, "CredentialsLoaded"),
        Some(("False".into(), "SecretNotFound".into()))
    );
    assert_eq!(
        sender_condition(&s, "Ready").map(|c| c.0),
        Some("False".into())
    );
    assert_eq!(
        sender_condition(&s, "InsecureTransport"),
        Some(("True".into(), "PlaintextSmtp".into()))
    );
    let message = s
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "CredentialsLoaded")
        .unwrap()
        .message
        .clone();
    assert!(
        message.contains(&format!("Secret {ns}/smtp-pass")),
        "{message}"
    );
    assert_eq!(
        s.status.unwrap().observed_generation,
        s.metadata.generation,
        "observedGeneration follows the spec"
    );
    op.stop().await;
}

#[tokio::test]
async fn emails_go_through_the_fallback_when_the_primary_keeps_answering_503() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("failover").await;
    let primary = MockMailerSend::start().await;
    primary.always(Reply::Status(
        503,
        r#"{"message":"Service Unavailable"}"#.into(),
        vec![],
    ));
    let backup = MockMailerSend::start().await;
    let client = env.client();
    secret(&client, &ns, "mailersend-token", "token", "test-token").await;
    env.apply_yaml(
        &ns,
        &sender_yaml(
            "primary",
            &primary.base_url,
            "  fallback: [backup]\n  retry: {maxAttempts: 2, initialBackoff: 1s, maxBackoff: 2s}",
        )
        .replace(
            "  retry: {maxAttempts: 4, initialBackoff: 1s, maxBackoff: 4s}\n",
            "",
        ),
    )
    .await;
    env.apply_yaml(
        &ns,
        &sender_yaml("backup", &backup.base_url, "").replace("default: true", "default: false"),
    )
    .await;
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(&ns, &email_yaml("one", "One", "")).await;
    env.apply_yaml(&ns, &email_yaml("two", "Two", "")).await;
    for name in ["one", "two"] {
        let sent = wait_for(&emails, name, phase_is(EmailPhase::Sent), WAIT).await;
        assert_eq!(
            sent.status.unwrap().sender_config.as_deref(),
            Some(&*format!("{ns}/backup")),
            "status.senderConfig shows the sender that delivered"
        );
    }
    assert_eq!(primary.calls(), 4, "two attempts per Email on the primary");
    assert_eq!(backup.calls(), 2);
    op.stop().await;
}

#[tokio::test]
async fn a_rate_limited_sender_never_lets_more_through_than_its_limit_in_any_window() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("ratelimit").await;
    let mock = MockMailerSend::start().await;
    let client = env.client();
    secret(&client, &ns, "mailersend-token", "token", "test-token").await;
    env.apply_yaml(
        &ns,
        &sender_yaml(
            "mailersend",
            &mock.base_url,
            "  rateLimit: {perMinute: 60, burst: 10}",
        ),
    )
    .await;
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let settings = Settings {
        max_concurrent_sends: 32,
        ..Settings::default()
    };
    let op = Operator::start_with(client.clone(), &ns, settings);

    let mut yaml = String::new();
    for i in 0..100 {
        yaml.push_str("---\n");
        yaml.push_str(&email_yaml(
            &format!("news-{i:03}"),
            &format!("News {i}"),
            "",
        ));
    }
    env.apply_yaml(&ns, &yaml).await;

    // While waiting for tokens, Emails are Pending with a reason, never Failed.
    let waiting = wait_for(
        &emails,
        "news-099",
        |e: &Email| {
            e.status.as_ref().is_some_and(|s| {
                s.phase == Some(EmailPhase::Pending) || s.phase == Some(EmailPhase::Sent)
            })
        },
        WAIT,
    )
    .await;
    if waiting.status.as_ref().unwrap().phase == Some(EmailPhase::Pending) {
        let reason = waiting
            .status
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.reason.clone());
        assert_eq!(reason.as_deref(), Some("RateLimited"));
    }
    for i in 0..100 {
        wait_for(
            &emails,
            &format!("news-{i:03}"),
            phase_is(EmailPhase::Sent),
            Duration::from_secs(180),
        )
        .await;
    }
    let times: Vec<Instant> = mock.call_times();
    assert_eq!(times.len(), 100);
    // Token bucket: in any window of w seconds, at most burst + w * rate sends (plus one for
    // the token that refills right at the window's edge).
    for i in 0..times.len() {
        for j in i..times.len() {
            let window = (times[j] - times[i]).as_secs_f64();
            let count = (j - i + 1) as f64;
            assert!(
                count <= 10.0 + window + 1.0,
                "{count} sends within {window:.2}s exceed 60/min with burst 10"
            );
        }
    }
    op.stop().await;
}

async fn scrape(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn every_metric_is_served_over_http_and_moves_when_it_should() {
    kmailops::provider::http::install_crypto_provider();
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "metrics").await;
    mock.script([
        Reply::Accepted,
        Reply::Status(
            422,
            r#"{"message":"The to.0.email must be a valid email address."}"#.into(),
            vec![],
        ),
    ]);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start_full(client.clone(), &ns, Settings::default(), Some(addr));

    env.apply_yaml(&ns, &email_yaml("ok", "Ok", "")).await;
    wait_for(&emails, "ok", phase_is(EmailPhase::Sent), WAIT).await;
    env.apply_yaml(&ns, &email_yaml("bad", "Bad", "")).await;
    wait_for(&emails, "bad", phase_is(EmailPhase::Failed), WAIT).await;
    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), &ns);
    wait_for(
        &senders,
        "mailersend",
        |s: &EmailSenderConfig| sender_condition(s, "Healthy").is_some_and(|c| c.0 == "True"),
        WAIT,
    )
    .await;

    // The sender's status shows its last send (the 422 of "bad", after "ok").
    let after_sends = wait_for(
        &senders,
        "mailersend",
        |s: &EmailSenderConfig| {
            s.status
                .as_ref()
                .is_some_and(|st| st.last_send_time.is_some() && st.last_send_error.is_some())
        },
        WAIT,
    )
    .await;
    let last_error = after_sends.status.unwrap().last_send_error.unwrap();
    assert!(last_error.contains("422"), "{last_error}");

    assert_eq!(scrape(addr, "/healthz").await.0, 200);
    assert_eq!(scrape(addr, "/readyz").await.0, 200);
    let (code, text) = scrape(addr, "/metrics").await;
    assert_eq!(code, 200);
    let sender = format!("{ns}/mailersend");
    let s = sender.as_str();
    assert_eq!(
        metric(
            &text,
            "kmailops_emails_sent_total",
            &[("sender", s), ("provider", "MailerSend")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "kmailops_emails_failed_total",
            &[("sender", s), ("reason", "ProviderRejected")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "kmailops_send_duration_seconds_count",
            &[("provider", "MailerSend")]
        ),
        2.0
    );
    assert!(
        metric(
            &text,
            "kmailops_sender_health_checks_total",
            &[("sender", s), ("result", "Healthy")]
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "kmailops_sender_health_check_duration_seconds_count",
            &[("sender", s)]
        ) >= 1.0
    );
    assert_eq!(
        metric(&text, "kmailops_sender_status", &[("sender", s)]),
        1.0
    );
    assert!(
        metric(
            &text,
            "kmailops_reconcile_duration_seconds_count",
            &[("kind", "Email")]
        ) >= 2.0
    );
    assert!(
        metric(
            &text,
            "kmailops_reconcile_duration_seconds_count",
            &[("kind", "EmailSenderConfig")]
        ) >= 1.0
    );
    // No reconcile failed here, and the error series are there at 0 for alerting.
    assert!(
        text.contains("kmailops_reconcile_errors_total{kind=\"Email\",reason=\"KubeApi\"} 0"),
        "{text}"
    );
    op.stop().await;
}
