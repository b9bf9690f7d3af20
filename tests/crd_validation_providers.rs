//! The CRD rules of the providers added later (SES, SendGrid, Postmark, Resend, SMTP OAuth2) on
//! a real API server: valid specs are accepted with their defaults filled in, invalid ones are
//! refused with the rule messages written in `src/api`.

mod support;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

use kmailops::api::EmailSenderConfig;
use support::TestEnv;

fn api(env: &TestEnv, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client(),
        ns,
        &ApiResource::erase::<EmailSenderConfig>(&()),
    )
}

fn object(name: &str, spec: &Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "EmailSenderConfig",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("an EmailSenderConfig")
}

fn with_sender(provider: &str, section: Value) -> Value {
    let mut spec = json!({ "sender": { "address": "orders@shop.example.com" } });
    spec[provider] = section;
    spec
}

fn secret_ref(name: &str) -> Value {
    json!({ "name": name, "key": "value" })
}

async fn create(api: &Api<DynamicObject>, name: &str, spec: &Value) -> Value {
    let created = api
        .create(&PostParams::default(), &object(name, spec))
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}\n{spec:#}"));
    serde_json::to_value(created).expect("json")
}

async fn refused(api: &Api<DynamicObject>, spec: &Value, message: &str) {
    match api
        .create(&PostParams::default(), &object("refused", spec))
        .await
    {
        Ok(o) => panic!("accepted what must be refused ({message}): {o:#?}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:#?}");
            assert!(
                status.message.contains(message),
                "the refusal does not say {message:?}: {}",
                status.message
            );
        }
        Err(e) => panic!("expected a 422, got {e}"),
    }
}

const ONE_PROVIDER: &str =
    "exactly one of mailersend, mailgun, smtp, ses, sendgrid, postmark or resend must be set";

#[tokio::test]
async fn each_new_provider_alone_is_accepted_with_its_defaults() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-new-providers").await;
    let api = api(&env, &ns);
    let ses = create(
        &api,
        "ses",
        &with_sender("ses", json!({ "region": "eu-west-1" })),
    )
    .await;
    assert_eq!(ses["spec"]["ses"]["region"], "eu-west-1");
    let sg = create(
        &api,
        "sendgrid",
        &with_sender("sendgrid", json!({ "apiKeySecretRef": secret_ref("sg") })),
    )
    .await;
    assert_eq!(sg["spec"]["sendgrid"]["region"], "Global");
    let pm = create(
        &api,
        "postmark",
        &with_sender(
            "postmark",
            json!({ "serverTokenSecretRef": secret_ref("pm") }),
        ),
    )
    .await;
    assert_eq!(pm["spec"]["postmark"]["messageStream"], "outbound");
    create(
        &api,
        "resend",
        &with_sender("resend", json!({ "apiKeySecretRef": secret_ref("rs") })),
    )
    .await;
    create(
        &api,
        "m365",
        &with_sender(
            "smtp",
            json!({
                "host": "smtp.office365.com",
                "username": "noreply@example.com",
                "oauth2": {
                    "tokenUrl": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                    "clientId": "c",
                    "clientSecretSecretRef": secret_ref("app"),
                    "scope": "https://outlook.office365.com/.default"
                }
            }),
        ),
    )
    .await;
}

#[tokio::test]
async fn two_providers_among_the_new_ones_are_refused() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-two-new-providers").await;
    let mut spec = with_sender("resend", json!({ "apiKeySecretRef": secret_ref("rs") }));
    spec["ses"] = json!({ "region": "eu-west-1" });
    refused(&api(&env, &ns), &spec, ONE_PROVIDER).await;
}

#[tokio::test]
async fn ses_keys_come_in_pairs_and_the_region_is_a_region() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-ses-keys").await;
    let api = api(&env, &ns);
    let half = with_sender(
        "ses",
        json!({ "region": "eu-west-1", "accessKeyIdSecretRef": secret_ref("aws") }),
    );
    refused(
        &api,
        &half,
        "ses.accessKeyIdSecretRef and ses.secretAccessKeySecretRef must be set together",
    )
    .await;
    let bad_region = with_sender("ses", json!({ "region": "EU West" }));
    refused(&api, &bad_region, "spec.ses.region").await;
}

#[tokio::test]
async fn smtp_oauth2_needs_a_username_and_no_password() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-smtp-oauth2").await;
    let api = api(&env, &ns);
    let oauth2 = json!({
        "tokenUrl": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        "clientId": "c",
        "clientSecretSecretRef": secret_ref("app")
    });
    let message = "smtp.oauth2 needs smtp.username (the mailbox) and no smtp.passwordSecretRef";
    let no_user = with_sender(
        "smtp",
        json!({ "host": "smtp.office365.com", "oauth2": oauth2 }),
    );
    refused(&api, &no_user, message).await;
    let both = with_sender(
        "smtp",
        json!({
            "host": "smtp.office365.com",
            "username": "noreply@example.com",
            "passwordSecretRef": secret_ref("pw"),
            "oauth2": oauth2
        }),
    );
    refused(&api, &both, message).await;
}
