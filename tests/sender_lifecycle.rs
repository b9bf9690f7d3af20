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
async fn emails_go_through_the_fallback_when_the_primary_stays_in_maintenance() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("failover").await;
    let primary = MockMailerSend::start().await;
    primary.always(Reply::Status(
        421,
        r#"{"message":"Service down for maintenance"}"#.into(),
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
        sends: kmailops::send_slots::SlotLimits::from_total(32),
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
    // Token bucket, as the provider sees it: in any window of w seconds, at most
    // burst + w * rate calls (plus one for the moments between a call's pacing and its
    // arrival at the mock on a loaded machine).
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

/// Scrapes `/metrics` until `ok` holds, failing with `what` and the last text after [`WAIT`].
async fn scrape_until(addr: std::net::SocketAddr, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, text) = scrape(addr, "/metrics").await;
        if ok(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let addr = free_addr();
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

/// With a slow provider and two send slots, a backlog of Emails shows in
/// `kmailops_send_queue`: two sending, two in line, the rest parked; it drains to zero.
#[tokio::test]
async fn the_send_queue_shows_a_backlog_and_drains_to_zero() {
    kmailops::provider::http::install_crypto_provider();
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "queue").await;
    mock.always(Reply::Slow(Duration::from_millis(400)));
    let addr = free_addr();
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let settings = Settings {
        sends: kmailops::send_slots::SlotLimits::from_total(2),
        ..Settings::default()
    };
    let op = Operator::start_full(client.clone(), &ns, settings, Some(addr));
    let mut yaml = String::new();
    for i in 0..12 {
        yaml.push_str("---\n");
        yaml.push_str(&email_yaml(&format!("q-{i:02}"), "Queued", ""));
    }
    env.apply_yaml(&ns, &yaml).await;

    let queue = |text: &str, state: &str| metric(text, "kmailops_send_queue", &[("state", state)]);
    let deadline = Instant::now() + WAIT;
    let mut most_parked = 0.0_f64;
    loop {
        let (_, text) = scrape(addr, "/metrics").await;
        assert!(queue(&text, "sending") <= 2.0, "{text}");
        assert!(queue(&text, "waiting") <= 2.0, "{text}");
        most_parked = most_parked.max(queue(&text, "parked"));
        if most_parked >= 4.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no backlog parked: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..12 {
        wait_for(
            &emails,
            &format!("q-{i:02}"),
            phase_is(EmailPhase::Sent),
            WAIT,
        )
        .await;
    }
    // The last reconciles end just after the last status write.
    scrape_until(addr, "the queue did not drain", |t| {
        ["sending", "waiting", "parked"]
            .iter()
            .all(|state| queue(t, state) == 0.0)
    })
    .await;
    op.stop().await;
}

/// A sender that no Email uses (not the default), to watch `kmailops_sender_configured`.
fn spare_sender_yaml(name: &str, base_url: &str, disabled: bool) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata:
  name: {name}
spec:
  disabled: {disabled}
  sender: {{address: spare@example.com}}
  mailersend:
    apiTokenSecretRef: {{name: mailersend-token, key: token}}
    baseUrl: {base_url}
"#
    )
}

/// The Ready reason and sender of an Email, as its status says.
fn reason_and_sender(e: &Email) -> (String, Option<String>) {
    (
        ready_reason(e).unwrap_or_default(),
        e.status.as_ref().and_then(|s| s.sender_config.clone()),
    )
}

#[tokio::test]
async fn every_email_that_comes_to_rest_failed_or_unknown_is_counted_once_by_the_reason_its_status_gives()
 {
    kmailops::provider::http::install_crypto_provider();
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "failcount").await;
    let addr = free_addr();
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    // A short claim: a provider call that outlasts 80% of it is cut off as ambiguous (Unknown).
    let settings = Settings {
        claim_ttl: Duration::from_secs(3),
        ..Settings::default()
    };
    let op = Operator::start_full(client.clone(), &ns, settings, Some(addr));
    let sender = format!("{ns}/mailersend");

    // Failures before any provider call: no such sender, no such template, a sender whose
    // Secret is missing (its credentials never load).
    env.apply_yaml(
        &ns,
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata:
  name: secretless
spec:
  sender: {address: shop@example.com}
  mailersend:
    apiTokenSecretRef: {name: no-such-secret, key: token}
"#,
    )
    .await;
    env.apply_yaml(
        &ns,
        &email_yaml("no-sender", "x", "  senderConfigRef: {name: nobody}"),
    )
    .await;
    env.apply_yaml(
        &ns,
        r#"
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata:
  name: no-template
spec:
  to: ["ada@example.org"]
  templateRef: {name: nothing-here}
"#,
    )
    .await;
    env.apply_yaml(
        &ns,
        &email_yaml("no-secret", "x", "  senderConfigRef: {name: secretless}"),
    )
    .await;
    // Failures from the provider: a 422, and a call that outlasts its claim (Unknown).
    mock.script([Reply::Status(
        422,
        r#"{"message":"The to.0.email must be a valid email address."}"#.into(),
        vec![],
    )]);
    env.apply_yaml(&ns, &email_yaml("rejected", "Rejected", ""))
        .await;
    wait_for(&emails, "rejected", phase_is(EmailPhase::Failed), WAIT).await;
    mock.script([Reply::Slow(Duration::from_secs(4))]);
    env.apply_yaml(&ns, &email_yaml("timed-out", "Timed out", ""))
        .await;
    wait_for(&emails, "timed-out", phase_is(EmailPhase::Unknown), WAIT).await;

    let failing = [
        "no-sender",
        "no-template",
        "no-secret",
        "rejected",
        "timed-out",
    ];
    let mut expected: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for name in failing {
        let e = wait_for(
            &emails,
            name,
            |e: &Email| {
                matches!(
                    e.status.as_ref().and_then(|s| s.phase),
                    Some(EmailPhase::Failed) | Some(EmailPhase::Unknown)
                )
            },
            WAIT,
        )
        .await;
        let (reason, sender) = reason_and_sender(&e);
        *expected
            .entry((reason, sender.unwrap_or_else(|| "none".into())))
            .or_default() += 1.0;
    }
    let reasons: Vec<&str> = expected.keys().map(|(r, _)| r.as_str()).collect();
    for reason in [
        "SenderNotFound",
        "TemplateNotFound",
        "ProviderRejected",
        "OutcomeUnknown",
    ] {
        assert!(reasons.contains(&reason), "{reason} in {expected:?}");
    }
    // Whatever the missing Secret is called in the status, it is counted as such.
    assert_eq!(expected.len(), 5, "{expected:?}");

    let check = |text: &str| {
        for ((reason, sender), n) in &expected {
            assert_eq!(
                metric(
                    text,
                    "kmailops_emails_failed_total",
                    &[("reason", reason), ("sender", sender)]
                ),
                *n,
                "{reason} through {sender}: {text}"
            );
        }
        assert_eq!(
            metric(text, "kmailops_emails_failed_total", &[]),
            5.0,
            "{text}"
        );
    };
    let (_, text) = scrape(addr, "/metrics").await;
    check(&text);
    assert_eq!(
        metric(
            &text,
            "kmailops_emails_failed_total",
            &[
                ("reason", "ProviderRejected"),
                ("sender", &sender),
                ("provider", "MailerSend")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "kmailops_emails_failed_total",
            &[
                ("reason", "SenderNotFound"),
                ("sender", "none"),
                ("provider", "none")
            ]
        ),
        1.0
    );

    // Looked at again (a label change wakes each one): the same failures, not counted again.
    for name in failing {
        emails
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touched": "yes"}}})),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    check(&scrape(addr, "/metrics").await.1);

    // A retry that fails the same way again is another failed delivery, counted once more.
    mock.script([Reply::Status(
        422,
        r#"{"message":"The to.0.email must be a valid email address."}"#.into(),
        vec![],
    )]);
    emails
        .patch(
            "rejected",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"kmailops.io/retry": "1"}}}),
            ),
        )
        .await
        .unwrap();
    wait_for(
        &emails,
        "rejected",
        |e: &Email| {
            e.status
                .as_ref()
                .is_some_and(|s| s.last_handled_retry.as_deref() == Some("1"))
                && phase_is(EmailPhase::Failed)(e)
        },
        WAIT,
    )
    .await;
    let (_, text) = scrape(addr, "/metrics").await;
    assert_eq!(
        metric(
            &text,
            "kmailops_emails_failed_total",
            &[("reason", "ProviderRejected"), ("sender", &sender)]
        ),
        2.0,
        "{text}"
    );
    op.stop().await;
}

#[tokio::test]
async fn every_sender_is_counted_as_configured_by_provider_and_status_until_it_is_deleted() {
    kmailops::provider::http::install_crypto_provider();
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "configured").await;
    let addr = free_addr();
    let client = env.client();
    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start_full(client.clone(), &ns, Settings::default(), Some(addr));
    env.apply_yaml(&ns, &spare_sender_yaml("spare", &mock.base_url, false))
        .await;
    let (main, spare) = (format!("{ns}/mailersend"), format!("{ns}/spare"));
    let configured = |text: &str, sender: &str, status: &str| {
        metric(
            text,
            "kmailops_sender_configured",
            &[
                ("sender", sender),
                ("provider", "MailerSend"),
                ("status", status),
            ],
        )
    };
    let text = scrape_until(addr, "both senders enabled", |t| {
        configured(t, &main, "enabled") == 1.0 && configured(t, &spare, "enabled") == 1.0
    })
    .await;
    assert_eq!(configured(&text, &spare, "disabled"), 0.0);

    // Disabled: the series moves, the old one goes.
    env.apply_yaml(&ns, &spare_sender_yaml("spare", &mock.base_url, true))
        .await;
    let text = scrape_until(addr, "the spare sender disabled", |t| {
        configured(t, &spare, "disabled") == 1.0
    })
    .await;
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("kmailops_sender_configured{")
                && l.contains(&format!("sender=\"{spare}\""))
                && l.contains("status=\"enabled\"")),
        "{text}"
    );
    assert_eq!(configured(&text, &main, "enabled"), 1.0);

    // Deleted: neither its configured nor its status series is left.
    senders.delete("spare", &Default::default()).await.unwrap();
    let text = scrape_until(addr, "the spare sender deleted", |t| {
        !t.lines().any(|l| {
            (l.starts_with("kmailops_sender_configured{")
                || l.starts_with("kmailops_sender_status{"))
                && l.contains(&format!("sender=\"{spare}\""))
        })
    })
    .await;
    assert_eq!(configured(&text, &main, "enabled"), 1.0);
    op.stop().await;
}

#[tokio::test]
async fn a_provider_outage_changes_healthy_never_ready_and_a_disabled_sender_is_ready() {
    kmailops::provider::http::install_crypto_provider();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("ready-healthy").await;
    let client = env.client();
    secret(&client, &ns, "mailersend-token", "token", "test-token").await;
    let (base_url, down, _) = switchable_provider().await;
    // The shortest intervals the schema allows. A changed spec is checked at once, which is
    // how the outage below is noticed without waiting out the interval.
    let checks = "  healthCheck: {interval: 30s, unhealthyInterval: 10s, timeout: 2s}";
    env.apply_yaml(&ns, &sender_yaml("mailersend", &base_url, checks))
        .await;
    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);
    let is = |type_: &'static str, status: &'static str| {
        move |s: &EmailSenderConfig| sender_condition(s, type_).is_some_and(|c| c.0 == status)
    };

    let ok = wait_for(&senders, "mailersend", is("Healthy", "True"), WAIT).await;
    assert_eq!(
        sender_condition(&ok, "Ready"),
        Some(("True".into(), "Ready".into()))
    );

    // The provider goes down: Healthy turns, Ready stays (Flux and Argo CD keep syncing).
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    env.apply_yaml(
        &ns,
        &sender_yaml(
            "mailersend",
            &base_url,
            &format!("{checks}\n  displayName: Shop"),
        ),
    )
    .await;
    let outage = wait_for(
        &senders,
        "mailersend",
        |s: &EmailSenderConfig| sender_condition(s, "Healthy").is_some_and(|c| c.0 != "True"),
        WAIT,
    )
    .await;
    assert_eq!(
        sender_condition(&outage, "Ready"),
        Some(("True".into(), "Ready".into())),
        "a provider outage must not change Ready"
    );
    let ready_since = |s: &EmailSenderConfig| {
        s.status
            .as_ref()
            .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.last_transition_time.clone())
    };
    assert_eq!(
        ready_since(&outage),
        ready_since(&ok),
        "Ready never flipped"
    );
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let back = wait_for(&senders, "mailersend", is("Healthy", "True"), WAIT).await;
    assert_eq!(ready_since(&back), ready_since(&ok));

    // Disabled: in its desired state, so Ready=True with reason Disabled.
    env.apply_yaml(
        &ns,
        &sender_yaml(
            "mailersend",
            &base_url,
            &format!("{checks}\n  disabled: true\n  displayName: Shop notifications"),
        ),
    )
    .await;
    let disabled = wait_for(
        &senders,
        "mailersend",
        |s: &EmailSenderConfig| {
            sender_condition(s, "Ready").is_some_and(|c| c.1 == "Disabled")
                && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
        },
        WAIT,
    )
    .await;
    assert_eq!(
        sender_condition(&disabled, "Ready"),
        Some(("True".into(), "Disabled".into()))
    );
    assert_eq!(
        disabled.spec.display_name.as_deref(),
        Some("Shop notifications")
    );

    // A fallback that names no config stays Ready=False: the config itself is wrong.
    env.apply_yaml(
        &ns,
        &sender_yaml("lonely", &base_url, "  fallback: [ghost]")
            .replace("default: true", "default: false"),
    )
    .await;
    let lonely = wait_for(&senders, "lonely", is("Ready", "False"), WAIT).await;
    assert_eq!(
        sender_condition(&lonely, "Ready").map(|c| c.1),
        Some("FallbackNotFound".into())
    );
    op.stop().await;
}

/// A MailerSend stand-in that takes mail (202) and answers its health check (200), or during
/// an "outage" answers both with 503. Counts the mail it took.
async fn switchable_provider() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let down = std::sync::Arc::new(AtomicBool::new(false));
    let taken = std::sync::Arc::new(AtomicUsize::new(0));
    let (quota_down, send_down, count) = (down.clone(), down.clone(), taken.clone());
    let unavailable = (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [("x-message-id", "")],
        r#"{"message":"Service Unavailable"}"#,
    );
    let app = axum::Router::new()
        .route(
            "/v1/api-quota",
            axum::routing::get(move || {
                let down = quota_down.load(Ordering::SeqCst);
                async move {
                    if down {
                        unavailable
                    } else {
                        (
                            axum::http::StatusCode::OK,
                            [("x-message-id", "")],
                            r#"{"quota":3000,"remaining":2999,"reset":"2026-12-01T00:00:00Z"}"#,
                        )
                    }
                }
            }),
        )
        .route(
            "/v1/email",
            axum::routing::post(move || {
                let down = send_down.load(Ordering::SeqCst);
                let n = if down {
                    0
                } else {
                    count.fetch_add(1, Ordering::SeqCst) + 1
                };
                async move {
                    if down {
                        unavailable
                    } else {
                        (
                            axum::http::StatusCode::ACCEPTED,
                            [("x-message-id", if n == 1 { "msg-1" } else { "msg-n" })],
                            "",
                        )
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), down, taken)
}

/// A sender with no fallback that turns unhealthy keeps its Emails `Retrying`
/// (`SenderUnhealthy`), never `Failed`, and they go out once it recovers: an MTA or provider
/// restart must not fail mail (Flux and Argo CD would treat the Emails as hard failures).
#[tokio::test]
async fn emails_wait_for_an_unhealthy_sender_without_fallback_and_go_out_when_it_recovers() {
    use std::sync::atomic::Ordering;
    kmailops::provider::http::install_crypto_provider();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("sender-unhealthy").await;
    let client = env.client();
    secret(&client, &ns, "mailersend-token", "token", "test-token").await;
    let (base_url, down, taken) = switchable_provider().await;
    let checks = "  healthCheck: {interval: 30s, unhealthyInterval: 10s, timeout: 2s}";
    env.apply_yaml(&ns, &sender_yaml("mailersend", &base_url, checks))
        .await;
    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), &ns);
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);
    let healthy = |status: &'static str| {
        move |s: &EmailSenderConfig| sender_condition(s, "Healthy").is_some_and(|c| c.0 == status)
    };
    wait_for(&senders, "mailersend", healthy("True"), WAIT).await;

    // The outage: a changed spec is checked at once.
    down.store(true, Ordering::SeqCst);
    env.apply_yaml(
        &ns,
        &sender_yaml(
            "mailersend",
            &base_url,
            &format!("{checks}\n  displayName: Shop"),
        ),
    )
    .await;
    wait_for(&senders, "mailersend", healthy("False"), WAIT).await;
    env.apply_yaml(&ns, &email_yaml("during-outage", "Hello", ""))
        .await;
    let waiting = wait_for(
        &emails,
        "during-outage",
        phase_is(EmailPhase::Retrying),
        WAIT,
    )
    .await;
    assert_eq!(ready_reason(&waiting).as_deref(), Some("SenderUnhealthy"));
    assert!(
        waiting
            .status
            .as_ref()
            .and_then(|s| s.next_attempt_time.as_ref())
            .is_some(),
        "the status says until when it waits"
    );

    // Back: the next health check (within unhealthyInterval) wakes the Email.
    down.store(false, Ordering::SeqCst);
    wait_for(&emails, "during-outage", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(taken.load(Ordering::SeqCst), 1, "sent once");
    op.stop().await;
}
