//! The operator sends through the providers added later, end to end on the API server: the
//! sender's Secrets are loaded (SES reads two), the Email ends `Sent` with the provider's id,
//! and both objects name the provider in their status.

#[path = "support/mock_resend.rs"]
mod mock_resend;
#[path = "support/mock_ses.rs"]
mod mock_ses;
mod support;

use kube::Api;
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailPhase, EmailSenderConfig, ProviderKind};

fn sender_condition(s: &EmailSenderConfig, type_: &str) -> Option<String> {
    s.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

#[tokio::test]
async fn an_email_goes_out_through_ses_with_keys_from_two_secrets() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("op-ses").await;
    let client = env.client();
    let mock = mock_ses::MockSes::start("AKIAOPERATORTEST0001", "op/secret-key-distinctive").await;
    secret(&client, &ns, "aws-id", "id", "AKIAOPERATORTEST0001").await;
    secret(
        &client,
        &ns,
        "aws-secret",
        "secret",
        "op/secret-key-distinctive\n",
    )
    .await;
    env.apply_yaml(
        &ns,
        &format!(
            r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {{name: ses}}
spec:
  default: true
  sender: {{address: shop@example.com}}
  ses:
    region: {}
    endpoint: {}
    accessKeyIdSecretRef: {{name: aws-id, key: id}}
    secretAccessKeySecretRef: {{name: aws-secret, key: secret}}
"#,
            mock_ses::REGION,
            mock.url
        ),
    )
    .await;
    let op = Operator::start(client.clone(), &ns);
    env.apply_yaml(&ns, &email_yaml("welcome", "Welcome", ""))
        .await;
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let sent = wait_for(&emails, "welcome", phase_is(EmailPhase::Sent), WAIT).await;
    let status = sent.status.unwrap();
    assert_eq!(status.provider, Some(ProviderKind::Ses));
    assert!(
        status
            .message_id
            .as_deref()
            .is_some_and(|id| id.starts_with("0102019abcde0001-")),
        "{:?}",
        status.message_id
    );
    assert_eq!(mock.sent().len(), 1);
    assert_eq!(
        mock.sent()[0]["Destination"]["ToAddresses"][0],
        "Ada Lovelace <ada@example.org>"
    );

    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), &ns);
    let sender = wait_for(
        &senders,
        "ses",
        |s: &EmailSenderConfig| sender_condition(s, "Healthy").as_deref() == Some("True"),
        WAIT,
    )
    .await;
    assert_eq!(
        sender.status.as_ref().unwrap().provider,
        Some(ProviderKind::Ses)
    );
    assert_eq!(sender_condition(&sender, "Ready").as_deref(), Some("True"));
    op.stop().await;
}

#[tokio::test]
async fn an_email_goes_out_through_resend_with_an_idempotency_key() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("op-resend").await;
    let client = env.client();
    let mock = mock_resend::MockResend::start("re_OPERATOR_test_key").await;
    secret(&client, &ns, "resend", "apiKey", "re_OPERATOR_test_key").await;
    env.apply_yaml(
        &ns,
        &format!(
            r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {{name: resend}}
spec:
  default: true
  sender: {{address: shop@example.com}}
  resend:
    apiKeySecretRef: {{name: resend, key: apiKey}}
    baseUrl: {}
"#,
            mock.url
        ),
    )
    .await;
    let op = Operator::start(client.clone(), &ns);
    env.apply_yaml(&ns, &email_yaml("welcome", "Welcome", ""))
        .await;
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let sent = wait_for(&emails, "welcome", phase_is(EmailPhase::Sent), WAIT).await;
    let status = sent.status.unwrap();
    assert_eq!(status.provider, Some(ProviderKind::Resend));
    let delivered = mock.sent();
    assert_eq!(delivered.len(), 1);
    assert_eq!(status.message_id.as_deref(), Some(delivered[0].id.as_str()));
    assert!(
        delivered[0]
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.len() == 64)
    );
    op.stop().await;
}
