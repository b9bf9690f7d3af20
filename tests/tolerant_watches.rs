//! Objects the API server accepts but our types reject: they never stop the watches, every
//! other object is handled as usual, and each one gets a status and a Warning Event naming the
//! field, without its content in either.

mod support;

use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailPhase};

#[tokio::test]
async fn an_email_our_types_reject_is_reported_and_every_other_email_is_sent() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "tolerant").await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);

    // Both exist before the operator starts, so its first list holds the bad one.
    env.apply_yaml(
        &ns,
        &email_yaml(
            "broken",
            "Broken",
            "  sendAt: \"2026-12-01T10:00:00+99:00\"",
        ),
    )
    .await;
    env.apply_yaml(&ns, &email_yaml("fine", "Fine", "")).await;
    let op = Operator::start(env.client(), &ns);

    wait_for(&emails, "fine", phase_is(EmailPhase::Sent), WAIT).await;
    // Read untyped: the test's own typed client can not read it either.
    let raw: Api<DynamicObject> =
        Api::namespaced_with(env.client(), &ns, &ApiResource::erase::<Email>(&()));
    let broken = wait_for(
        &raw,
        "broken",
        |o| o.data["status"]["phase"] == "Failed",
        WAIT,
    )
    .await;
    let status = &broken.data["status"];
    assert_eq!(status["conditions"][0]["reason"], "InvalidSpec");
    let error = status["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("spec.sendAt: "), "{error}");
    assert!(!error.contains("+99:00"), "no value quoted back: {error}");

    let events: Api<K8sEvent> = Api::namespaced(env.client(), &ns);
    let warned = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("InvalidSpec")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
        });
    assert!(warned, "a Warning Event names the object");

    // Emails created after it are still handled, and fixing it makes it go out.
    env.apply_yaml(&ns, &email_yaml("later", "Later", "")).await;
    wait_for(&emails, "later", phase_is(EmailPhase::Sent), WAIT).await;
    env.apply_yaml(
        &ns,
        &email_yaml(
            "broken",
            "Broken",
            "  sendAt: \"2026-12-01T10:00:00+01:00\"",
        ),
    )
    .await;
    wait_for(&emails, "broken", phase_is(EmailPhase::Scheduled), WAIT).await;
    assert_eq!(mock.calls(), 2);
    op.stop().await;
}
