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
    env.apply_yaml(&ns, &email_yaml("broken", "Broken", UNREADABLE_SEND_AT))
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

    // Emails created after it are still handled, and once fixed it is scheduled like any other.
    env.apply_yaml(&ns, &email_yaml("later", "Later", "")).await;
    wait_for(&emails, "later", phase_is(EmailPhase::Sent), WAIT).await;
    // A day ahead, written with an offset our types accept, so fixing it schedules it.
    let tomorrow = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24))
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(1)))
        .strftime("%Y-%m-%dT%H:%M:%S%:z");
    env.apply_yaml(
        &ns,
        &email_yaml("broken", "Broken", &format!("  sendAt: \"{tomorrow}\"")),
    )
    .await;
    wait_for(&emails, "broken", phase_is(EmailPhase::Scheduled), WAIT).await;
    assert_eq!(mock.calls(), 2);
    op.stop().await;
}

/// `{"a": {"a": ... {"a": 1}}}`, `depth` objects deep.
fn nested(depth: usize) -> serde_json::Value {
    let mut v = serde_json::json!(1);
    for _ in 0..depth {
        v = serde_json::json!({ "a": v });
    }
    v
}

#[tokio::test]
async fn an_email_nested_deeper_than_a_parser_allows_does_not_stop_the_others() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "too-deep").await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let raw: Api<DynamicObject> =
        Api::namespaced_with(env.client(), &ns, &ApiResource::erase::<Email>(&()));
    let mut deep = DynamicObject::new("deep", &ApiResource::erase::<Email>(&()));
    deep.data = serde_json::json!({
        "spec": {"to": ["a@example.org"], "subject": "s", "text": "t", "variables": nested(200)}
    });
    // The answer repeats the object, which no default JSON parser takes: only the create counts.
    let _ = raw.create(&Default::default(), &deep).await;
    // A template as deep: its watch used to keep the operator from starting at all.
    let templates = ApiResource::erase::<kmailops::api::EmailTemplate>(&());
    let mut template = DynamicObject::new("deep", &templates);
    template.data = serde_json::json!({
        "spec": {"subject": "s", "text": "t", "previewVariables": nested(200)}
    });
    let _ = Api::<DynamicObject>::namespaced_with(env.client(), &ns, &templates)
        .create(&Default::default(), &template)
        .await;
    env.apply_yaml(&ns, &email_yaml("fine", "Fine", "")).await;
    let op = Operator::start(env.client(), &ns);
    wait_for(&emails, "fine", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 1);

    // Read through the same guard the operator uses (a plain client can not parse it).
    let guarded = kmailops::tolerant::depth::DepthGuard::client(env.client());
    let raw: Api<DynamicObject> =
        Api::namespaced_with(guarded, &ns, &ApiResource::erase::<Email>(&()));
    let failed = wait_for(
        &raw,
        "deep",
        |o| o.data["status"]["phase"] == "Failed",
        WAIT,
    )
    .await;
    let error = failed.data["status"]["error"].as_str().unwrap().to_string();
    assert!(
        error.starts_with("spec.variables.a nests deeper than"),
        "{error}"
    );
    op.stop().await;
}

/// The ledger is watched as far as its index reads it (`ledger::head`): an EmailDelivery whose
/// status our types reject (here a time with a `+99:00` offset, which the API server keeps)
/// neither stops that watch nor keeps the operator from filling its caches.
#[tokio::test]
async fn an_emaildelivery_our_types_reject_does_not_stop_the_operator() {
    use kmailops::api::{EmailDelivery, EmailDeliverySpec};
    use kube::api::{Patch, PatchParams, PostParams};

    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "tolerant-ledger").await;
    let ledger: Api<EmailDelivery> = Api::namespaced(env.client(), &ns);
    let entry = EmailDelivery::new(
        "by-hand-0123456789abcdef",
        EmailDeliverySpec {
            email_name: "by-hand".into(),
            email_uid: "0b5e7a8c-0000-4000-8000-000000000000".into(),
            delivery_hash: "0".repeat(64),
            sender_config: format!("{ns}/mailersend"),
            recipient_count: 1,
        },
    );
    ledger.create(&PostParams::default(), &entry).await.unwrap();
    let raw: Api<DynamicObject> =
        Api::namespaced_with(env.client(), &ns, &ApiResource::erase::<EmailDelivery>(&()));
    let bad =
        serde_json::json!({"status": {"phase": "Sent", "sentTime": "2026-12-01T10:00:00+99:00"}});
    raw.patch_status(
        "by-hand-0123456789abcdef",
        &PatchParams::default(),
        &Patch::Merge(&bad),
    )
    .await
    .unwrap();
    assert!(
        ledger.get("by-hand-0123456789abcdef").await.is_err(),
        "the test needs an entry our types reject"
    );

    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    env.apply_yaml(&ns, &email_yaml("fine", "Fine", "")).await;
    let op = Operator::start(env.client(), &ns);
    wait_for(&emails, "fine", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 1);
    op.stop().await;
}
