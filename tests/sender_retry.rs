//! `kmailops.io/retry` on an EmailSenderConfig: after a provider outage, one action retries
//! every Email whose last attempt went through that sender and that rests where another
//! attempt may help (Unknown, RetriesExhausted), once per token.

mod common;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Answer, serve};
use kube::Api;
use kube::api::{Patch, PatchParams};
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailPhase, EmailSenderConfig};

fn mailgun_sender(base: &str) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata:
  name: mailgun
spec:
  default: true
  sender: {{address: noreply@mg.example.com}}
  mailgun:
    domain: mg.example.com
    apiKeySecretRef: {{name: mailgun, key: api-key}}
    baseUrl: {base}
  # Not asking Mailgun's events: an ambiguous answer rests Unknown for a person, as with the
  # providers that can not be asked (tests/provider_lookup.rs covers the asking).
  lookup: {{disabled: true}}
"#
    )
}

/// Mailgun answers 503 to sends during an outage: the mail may be out, and with look-ups off
/// nobody asks Mailgun, so each Email ends Unknown and nothing is resent by itself. One annotation on the sender, after the outage,
/// sends each of them once more; setting the same token again does nothing.
#[tokio::test]
async fn one_token_on_the_sender_retries_its_unknown_emails_once() {
    let env = TestEnv::get().await;
    init_test_logging();
    let ns = env.unique_namespace("sender-retry").await;
    secret(&env.client(), &ns, "mailgun", "api-key", "key-test").await;
    let outage = Arc::new(AtomicBool::new(true));
    let down = outage.clone();
    let mock = serve(move |req| {
        if req.method == "GET" {
            return Answer::new(200, r#"{"domain":{"state":"active","is_disabled":false}}"#);
        }
        if down.load(Ordering::SeqCst) {
            Answer::new(503, r#"{"message":"Service Unavailable"}"#)
        } else {
            Answer::new(
                200,
                r#"{"id":"<1@mg.example.com>","message":"Queued. Thank you."}"#,
            )
        }
    })
    .await;
    env.apply_yaml(&ns, &mailgun_sender(&mock.url)).await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let op = Operator::start(env.client(), &ns);
    let names = ["a", "b", "c"];
    for n in names {
        env.apply_yaml(&ns, &email_yaml(n, "Outage", "")).await;
    }
    for n in names {
        wait_for(&emails, n, phase_is(EmailPhase::Unknown), WAIT).await;
    }
    let sends = || {
        mock.requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    assert_eq!(sends(), 3, "one attempt each, no automatic resend");

    outage.store(false, Ordering::SeqCst);
    let senders: Api<EmailSenderConfig> = Api::namespaced(env.client(), &ns);
    let retry = |token: &'static str| {
        let senders = senders.clone();
        async move {
            let patch =
                serde_json::json!({"metadata": {"annotations": {"kmailops.io/retry": token}}});
            senders
                .patch("mailgun", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    retry("after-outage").await;
    for n in names {
        let sent = wait_for(&emails, n, phase_is(EmailPhase::Sent), WAIT).await;
        let status = sent.status.unwrap();
        assert_eq!(
            status.last_handled_sender_retry.as_deref(),
            Some(format!("{ns}/mailgun=after-outage").as_str())
        );
    }
    assert_eq!(sends(), 6, "exactly one more attempt each");

    // The same token again, or an unrelated change of the sender: nothing more.
    retry("after-outage").await;
    env.apply_yaml(
        &ns,
        &format!("{}  displayName: Mailgun EU\n", mailgun_sender(&mock.url)),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(sends(), 6);
    op.stop().await;
}
