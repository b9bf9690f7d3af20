//! The Email controller against the real API server and a local MailerSend-compatible server
//! that counts provider calls. Secrets go through the harness's core stand-in on the testenv
//! server (see tests/support/core_standin.rs).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use support::mock_mailersend::{MockMailerSend, Reply};
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{
    DeliveryPhase, Email, EmailDelivery, EmailDeliverySpec, EmailPhase, EmailSenderConfig,
};

#[tokio::test]
async fn an_email_is_sent_once_and_reapplying_relabelling_or_restarting_sends_nothing_more() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "sent-once").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(&ns, &email_yaml("welcome", "Welcome", ""))
        .await;
    let sent = wait_for(&emails, "welcome", phase_is(EmailPhase::Sent), WAIT).await;
    let status = sent.status.clone().unwrap();
    assert_eq!(status.message_id.as_deref(), Some("ms-0001"));
    assert_eq!(
        status.sender_config.as_deref(),
        Some(&*format!("{ns}/mailersend"))
    );
    assert_eq!(status.observed_generation, sent.metadata.generation);
    assert_eq!(
        condition(&sent, "Ready"),
        Some(("True".into(), "Sent".into()))
    );
    assert_eq!(
        condition(&sent, "Stalled").map(|c| c.0),
        Some("False".into())
    );
    assert_eq!(mock.calls(), 1);
    let body = &mock.bodies()[0];
    assert_eq!(body["to"][0]["email"], "ada@example.org");
    assert_eq!(body["subject"], "Welcome");

    // The ledger holds exactly one Sent entry, without an ownerReference.
    let ledger = deliveries(&client, &ns).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        ledger[0].status.as_ref().unwrap().phase,
        Some(DeliveryPhase::Sent)
    );
    assert!(ledger[0].metadata.owner_references.is_none());

    // Re-apply the same manifest, then change only labels and annotations.
    env.apply_yaml(&ns, &email_yaml("welcome", "Welcome", ""))
        .await;
    let patch = serde_json::json!({"metadata": {
        "labels": {"app.kubernetes.io/instance": "shop"},
        "annotations": {"argocd.argoproj.io/tracking-id": "shop:kmailops.io/Email:shop/welcome"}
    }});
    emails
        .patch("welcome", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_restart = emails.get("welcome").await.unwrap();
    assert_eq!(
        before_restart.status, sent.status,
        "no status write for metadata changes"
    );

    // Restart the operator.
    op.stop().await;
    let op = Operator::start(client.clone(), &ns);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = emails.get("welcome").await.unwrap();
    assert_eq!(
        after.resource_version(),
        before_restart.resource_version(),
        "a restart must not write to a Sent Email"
    );
    assert_eq!(mock.calls(), 1);
    assert_eq!(deliveries(&client, &ns).await.len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn a_recreated_email_is_recovered_from_the_ledger_without_a_send() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "recreate").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    let manifest = email_yaml("invoice", "Your invoice", "");
    env.apply_yaml(&ns, &manifest).await;
    let first = wait_for(&emails, "invoice", phase_is(EmailPhase::Sent), WAIT).await;
    let first_id = first.status.unwrap().message_id;

    emails
        .delete("invoice", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&emails, "invoice").await;
    env.apply_yaml(&ns, &manifest).await;
    let again = wait_for(&emails, "invoice", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(again.status.as_ref().unwrap().message_id, first_id);
    assert_eq!(ready_reason(&again).as_deref(), Some("RecoveredFromLedger"));
    assert_eq!(mock.calls(), 1);
    assert_eq!(deliveries(&client, &ns).await.len(), 1);
    op.stop().await;
}

async fn wait_gone(emails: &Api<Email>, name: &str) {
    let deadline = Instant::now() + WAIT;
    while emails.get_opt(name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{name} was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_spec_change_after_send_is_reported_under_never_and_sent_once_under_on_change() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "changed").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(&ns, &email_yaml("never", "First", "")).await;
    env.apply_yaml(
        &ns,
        &email_yaml("onchange", "First", "  resendPolicy: OnChange"),
    )
    .await;
    wait_for(&emails, "never", phase_is(EmailPhase::Sent), WAIT).await;
    wait_for(&emails, "onchange", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 2);

    env.apply_yaml(&ns, &email_yaml("never", "Second", ""))
        .await;
    let never = wait_for(
        &emails,
        "never",
        |e: &Email| ready_reason(e).as_deref() == Some("ChangedAfterSend"),
        WAIT,
    )
    .await;
    assert_eq!(never.status.as_ref().unwrap().phase, Some(EmailPhase::Sent));
    assert_eq!(
        never.status.as_ref().unwrap().observed_generation,
        never.metadata.generation
    );

    env.apply_yaml(
        &ns,
        &email_yaml("onchange", "Second", "  resendPolicy: OnChange"),
    )
    .await;
    wait_for(
        &emails,
        "onchange",
        |e: &Email| {
            phase_is(EmailPhase::Sent)(e)
                && e.status.as_ref().unwrap().observed_generation == e.metadata.generation
                && e.status.as_ref().unwrap().message_id.as_deref() == Some("ms-0003")
        },
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        mock.calls(),
        3,
        "one more send for OnChange, none for Never"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_transient_error_is_retried_and_the_second_attempt_sends() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "retry").await;
    // 421: MailerSend is in maintenance and took nothing (a 5xx may have sent the mail).
    mock.script([Reply::Status(
        421,
        r#"{"message":"Service down for maintenance"}"#.into(),
        vec![],
    )]);
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(&ns, &email_yaml("flaky", "Flaky", "")).await;
    let retrying = wait_for(&emails, "flaky", phase_is(EmailPhase::Retrying), WAIT).await;
    let rs = retrying.status.clone().unwrap();
    assert!(rs.next_attempt_time.is_some());
    assert!(
        rs.error.as_deref().unwrap_or_default().contains("421"),
        "{rs:?}"
    );
    assert_eq!(
        condition(&retrying, "Reconciling").map(|c| c.0),
        Some("True".into())
    );

    let sent = wait_for(&emails, "flaky", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(sent.status.as_ref().unwrap().attempts, Some(2));
    assert_eq!(mock.calls(), 2);
    op.stop().await;
}

#[tokio::test]
async fn a_429_with_retry_after_waits_as_long_as_the_provider_asks() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "ratelimited").await;
    mock.script([Reply::Status(
        429,
        r#"{"message":"Too Many Attempts."}"#.into(),
        vec![("retry-after".into(), "2".into())],
    )]);
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(&ns, &email_yaml("busy", "Busy", "")).await;
    wait_for(&emails, "busy", phase_is(EmailPhase::Sent), WAIT).await;
    let times = mock.call_times();
    assert_eq!(times.len(), 2);
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(1900) && gap < Duration::from_secs(6),
        "second attempt after {gap:?}"
    );
    op.stop().await;
}

#[tokio::test]
async fn a_permanent_error_fails_at_once_with_the_providers_message() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "rejected").await;
    mock.script([Reply::Status(
        422,
        r#"{"message":"The from.email domain must be verified in your account.","errors":{"from.email":["The from.email domain must be verified in your account."]}}"#.into(),
        vec![],
    )]);
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(&ns, &email_yaml("unverified", "Hi", ""))
        .await;
    let failed = wait_for(&emails, "unverified", phase_is(EmailPhase::Failed), WAIT).await;
    let error = failed
        .status
        .as_ref()
        .unwrap()
        .error
        .clone()
        .unwrap_or_default();
    assert!(error.contains("must be verified"), "{error}");
    assert_eq!(
        condition(&failed, "Stalled").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(
        condition(&failed, "Ready").map(|c| c.0),
        Some("False".into())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mock.calls(), 1);
    op.stop().await;
}

#[tokio::test]
async fn an_intent_without_outcome_becomes_unknown_and_only_a_retry_token_sends_again() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "crashed").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);

    // Dry run first: learn the delivery hash the operator computes, without sending.
    // The annotation is part of the first apply: adding it by a later patch raced the
    // running operator, which could send before the patch landed.
    let op = Operator::start(client.clone(), &ns);
    let dry_run = email_yaml("receipt", "Receipt", "").replace(
        "  name: receipt\n",
        "  name: receipt\n  annotations: {kmailops.io/dry-run: \"true\"}\n",
    );
    env.apply_yaml(&ns, &dry_run).await;
    let previewed = wait_for(&emails, "receipt", phase_is(EmailPhase::Previewed), WAIT).await;
    op.stop().await;
    assert_eq!(mock.calls(), 0);
    let hash = previewed.status.unwrap().delivery_hash.unwrap();

    // What a crash mid-call leaves behind: the claim, and no outcome.
    let ledger: Api<EmailDelivery> = Api::namespaced(client.clone(), &ns);
    let mut entry = EmailDelivery::new(
        &kmailops::ledger::entry_name("receipt", &hash),
        EmailDeliverySpec {
            email_name: "receipt".into(),
            email_uid: "gone".into(),
            delivery_hash: hash.clone(),
            sender_config: format!("{ns}/mailersend"),
            recipient_count: 1,
        },
    );
    entry.metadata.labels = Some(BTreeMap::from([(
        kmailops::ledger::EMAIL_LABEL.to_string(),
        "receipt".to_string(),
    )]));
    ledger.create(&PostParams::default(), &entry).await.unwrap();
    emails
        .patch(
            "receipt",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"kmailops.io/dry-run": null}}}),
            ),
        )
        .await
        .unwrap();

    let op = Operator::start(client.clone(), &ns);
    let unknown = wait_for(&emails, "receipt", phase_is(EmailPhase::Unknown), WAIT).await;
    assert_eq!(
        condition(&unknown, "Stalled"),
        Some(("True".into(), "OutcomeUnknown".into()))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mock.calls(),
        0,
        "an interrupted send is never resent on its own"
    );

    emails
        .patch(
            "receipt",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"kmailops.io/retry": "2026-11-21-1"}}})),
        )
        .await
        .unwrap();
    let sent = wait_for(&emails, "receipt", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(
        sent.status.as_ref().unwrap().last_handled_retry.as_deref(),
        Some("2026-11-21-1")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(deliveries(&client, &ns).await.len(), 2);
    op.stop().await;
}

#[tokio::test]
async fn send_at_in_the_future_schedules_and_not_after_in_the_past_expires() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "timing").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(4);
    env.apply_yaml(
        &ns,
        &email_yaml("later", "Later", &format!("  sendAt: \"{at}\"")),
    )
    .await;
    env.apply_yaml(
        &ns,
        &email_yaml("stale", "Stale", "  notAfter: \"2020-01-01T00:00:00Z\""),
    )
    .await;
    let scheduled = wait_for(&emails, "later", phase_is(EmailPhase::Scheduled), WAIT).await;
    assert_eq!(
        condition(&scheduled, "Ready"),
        Some(("True".into(), "Scheduled".into()))
    );
    assert_eq!(mock.calls(), 0);
    let expired = wait_for(&emails, "stale", phase_is(EmailPhase::Expired), WAIT).await;
    assert_eq!(
        condition(&expired, "Ready"),
        Some(("True".into(), "Expired".into()))
    );

    wait_for(&emails, "later", phase_is(EmailPhase::Sent), WAIT).await;
    assert!(jiff::Timestamp::now() >= at);
    assert_eq!(mock.calls(), 1, "only the scheduled Email was sent");
    op.stop().await;
}

#[tokio::test]
async fn two_controllers_over_fifty_emails_send_exactly_fifty_messages() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "two-ops").await;
    mock.script((0..50).map(|_| Reply::Slow(Duration::from_millis(50))));
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let a = Operator::start(client.clone(), &ns);
    let b = Operator::start(env.client(), &ns);

    let mut yaml = String::new();
    for i in 0..50 {
        yaml.push_str("---\n");
        yaml.push_str(&email_yaml(
            &format!("bulk-{i:02}"),
            &format!("Bulk {i}"),
            "",
        ));
    }
    env.apply_yaml(&ns, &yaml).await;
    for i in 0..50 {
        wait_for(
            &emails,
            &format!("bulk-{i:02}"),
            phase_is(EmailPhase::Sent),
            Duration::from_secs(90),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mock.calls(), 50);
    assert_eq!(deliveries(&client, &ns).await.len(), 50);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_missing_secret_is_named_in_status_and_creating_it_sends_without_restart() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("missing-secret").await;
    let mock = MockMailerSend::start().await;
    let client = env.client();
    env.apply_yaml(&ns, &sender_yaml("mailersend", &mock.base_url, ""))
        .await;
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(&ns, &email_yaml("hello", "Hello", "")).await;
    let failed = wait_for(&emails, "hello", phase_is(EmailPhase::Failed), WAIT).await;
    let error = failed
        .status
        .as_ref()
        .unwrap()
        .error
        .clone()
        .unwrap_or_default();
    assert!(
        error.contains(&format!("Secret {ns}/mailersend-token")),
        "{error}"
    );
    assert!(error.contains("create it"), "{error}");
    assert_eq!(ready_reason(&failed).as_deref(), Some("SecretNotFound"));
    assert_eq!(mock.calls(), 0);

    secret(&client, &ns, "mailersend-token", "token", "test-token").await;
    wait_for(&emails, "hello", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 1);
    op.stop().await;
}

#[tokio::test]
async fn sender_selection_problems_name_the_fix() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "selection").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    // A second default in the same namespace makes the choice ambiguous.
    env.apply_yaml(&ns, &sender_yaml("second", &mock.base_url, ""))
        .await;
    let op = Operator::start(client.clone(), &ns);

    env.apply_yaml(&ns, &email_yaml("ambiguous", "A", "")).await;
    env.apply_yaml(
        &ns,
        &email_yaml("unknown-sender", "B", "  senderConfigRef: {name: nope}"),
    )
    .await;
    let a = wait_for(&emails, "ambiguous", phase_is(EmailPhase::Failed), WAIT).await;
    assert_eq!(ready_reason(&a).as_deref(), Some("AmbiguousDefault"));
    assert!(
        a.status
            .unwrap()
            .error
            .unwrap()
            .contains(&format!("{ns}/second"))
    );
    let b = wait_for(
        &emails,
        "unknown-sender",
        phase_is(EmailPhase::Failed),
        WAIT,
    )
    .await;
    assert_eq!(ready_reason(&b).as_deref(), Some("SenderNotFound"));
    assert!(
        b.status
            .unwrap()
            .error
            .unwrap()
            .contains("spec.senderConfigRef")
    );

    // Fixing the cause resumes delivery without a restart.
    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), &ns);
    senders
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&emails, "ambiguous", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 1);
    op.stop().await;
}

#[tokio::test]
async fn a_stop_waits_only_for_the_call_under_way_and_a_delivery_in_line_gives_up_and_sends_after_restart()
 {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "stop-in-line").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    // One send slot, so a second delivery waits in line behind a slow call; the claim outlives
    // the slow call (which is no timeout).
    let settings = || kmailops::context::Settings {
        sends: kmailops::send_slots::SlotLimits {
            total: 1,
            per_sender: 1,
            per_namespace: 1,
        },
        claim_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    const SLOW: Duration = Duration::from_secs(5);
    mock.script([Reply::Status(
        429,
        r#"{"message":"Too Many Attempts."}"#.into(),
        vec![("retry-after".into(), "2".into())],
    )]);
    mock.always(Reply::Slow(SLOW));
    let op = Operator::start_with(client.clone(), &ns, settings());

    // "waits" is refused once and waits 2 s for its next attempt; meanwhile "calling" takes the
    // slot for a slow call, so when "waits" comes back it is in line behind it.
    env.apply_yaml(&ns, &email_yaml("waits", "Waits", "")).await;
    wait_for(&emails, "waits", phase_is(EmailPhase::Retrying), WAIT).await;
    let first = mock.call_times()[0];
    env.apply_yaml(&ns, &email_yaml("calling", "Calling", ""))
        .await;
    let deadline = Instant::now() + WAIT;
    while mock.calls() < 2 {
        assert!(Instant::now() < deadline, "the slow call never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slow_call = mock.call_times()[1];
    // In line since about first + 2 s; the slow call runs until slow_call + SLOW.
    let stop_at = (first + Duration::from_millis(3000)).max(slow_call + Duration::from_secs(1));
    tokio::time::sleep_until(stop_at.into()).await;
    assert!(
        Instant::now() < slow_call + SLOW - Duration::from_millis(500),
        "the test machine is too slow for this timing"
    );

    let stopping = Instant::now();
    op.stop().await;
    let took = stopping.elapsed();
    let call_left = (slow_call + SLOW).saturating_duration_since(stopping);
    // The stop waits for the call under way (its outcome is recorded), not for the delivery in
    // line, which must not start another provider call once stopping began.
    assert!(
        took < call_left + Duration::from_millis(2500),
        "stopping took {took:?}; the call under way had {call_left:?} left"
    );
    assert_eq!(
        mock.calls(),
        2,
        "a provider call was started after stopping began"
    );
    // No claim is left that no call used: the successor would take it for an interrupted send.
    for d in deliveries(&client, &ns).await {
        let state = kmailops::ledger::state(&d);
        assert!(
            !matches!(state, kmailops::ledger::EntryState::InFlight { .. }),
            "{} is left claimed: {state:?}",
            d.name_any()
        );
    }
    let calling = emails.get("calling").await.unwrap();
    assert_eq!(
        calling.status.and_then(|s| s.phase),
        Some(EmailPhase::Sent),
        "the call under way recorded its outcome"
    );

    // The successor sends what was waiting, once; nothing is sent twice.
    mock.always(Reply::Accepted);
    let op = Operator::start(client.clone(), &ns);
    let waits = wait_for(&emails, "waits", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(waits.status.unwrap().attempts, Some(2));
    let subjects: Vec<String> = mock
        .accepted()
        .iter()
        .map(|(_, b)| b["subject"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects.contains(&"Waits".to_string()) && subjects.contains(&"Calling".to_string()));
    op.stop().await;
}

#[tokio::test]
async fn an_unused_claim_of_a_later_attempt_is_handed_back_and_the_entry_waits_again() {
    use kmailops::ledger::{self, Claim, EntryState, NewEntry};
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("withdraw-next").await;
    let api: Api<EmailDelivery> = Api::namespaced(env.client(), &ns);
    let hash = "ab".repeat(32);
    let new = NewEntry {
        namespace: &ns,
        email_name: "receipt",
        email_uid: "uid-1",
        delivery_hash: &hash,
        key: &hash,
        sender_config: "shop/mailersend",
        recipient_count: 1,
        retry_token: None,
    };
    let ttl = Duration::from_secs(60);
    let Claim::Won(entry) = ledger::claim_new(&api, new, "test-a", ttl).await.unwrap() else {
        panic!("the entry existed");
    };
    let name = entry.name_any();
    // Attempt 1 ended with a transient error; attempt 2 is claimed and never made.
    let waiting = kmailops::api::EmailDeliveryStatus {
        phase: Some(DeliveryPhase::Sending),
        attempts: Some(1),
        error: Some("503".into()),
        ..Default::default()
    };
    ledger::record(&api, &name, &waiting).await.unwrap();
    // The retention sweep marked it while its Email was briefly gone.
    let mark = serde_json::json!({"metadata": {"annotations": {"kmailops.io/orphaned-since": "2026-01-01T00:00:00Z"}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&mark))
        .await
        .unwrap();
    let recorded = api.get(&name).await.unwrap();
    assert!(
        ledger::claim_next(&api, &recorded, 2, "test-a", ttl)
            .await
            .unwrap()
    );
    let claimed = api.get(&name).await.unwrap();
    assert!(matches!(
        ledger::state(&claimed),
        EntryState::InFlight { attempt: 2, .. }
    ));
    // Its Email is back and sending: the mark of its absence goes.
    assert_eq!(
        claimed.annotations().get("kmailops.io/orphaned-since"),
        None
    );

    // Guarded like a claim: a stale copy changes nothing.
    assert!(!ledger::withdraw_next(&api, &recorded).await.unwrap());
    assert!(ledger::withdraw_next(&api, &claimed).await.unwrap());
    let back = api.get(&name).await.unwrap();
    assert_eq!(
        ledger::state(&back),
        EntryState::Waiting {
            attempts: 1,
            next_attempt: None
        }
    );
    // The history stays, and the next claimer may make attempt 2.
    assert_eq!(back.status.unwrap().error.as_deref(), Some("503"));
    let again = api.get(&name).await.unwrap();
    assert!(
        ledger::claim_next(&api, &again, 2, "test-b", ttl)
            .await
            .unwrap()
    );
}
