//! The transitions where "one message per Email" used to break, each against the real API
//! server, the operator and a local MailerSend-compatible server that counts calls:
//! a dry run on a Sent Email, an Unknown Email whose sender or content changes, a delete and
//! re-create during a send, long names, a lost claim answer, a preview without credentials,
//! and the CLI and the operator given the same manifests.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use support::mock_mailersend::{MockMailerSend, Reply};
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailDelivery, EmailDeliverySpec, EmailPhase, EmailSenderConfig};
use kmailops::context::Settings;
use kmailops::ledger::delete_unless_changed;

fn annotate(key: &str, value: Option<&str>) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {key: value}}})
}

async fn patch(emails: &Api<Email>, name: &str, body: serde_json::Value) {
    emails
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .unwrap_or_else(|e| panic!("patching Email {name}: {e}"));
}

async fn warnings(env: &TestEnv, ns: &str, reason: &str) -> usize {
    let events: Api<K8sEvent> = Api::namespaced(env.client(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
        .count()
}

fn with_dry_run(yaml: &str, name: &str) -> String {
    yaml.replace(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  annotations: {{kmailops.io/dry-run: \"true\"}}\n"),
    )
}

fn preview_subject(e: &Email) -> Option<&str> {
    e.status
        .as_ref()
        .and_then(|s| s.preview.as_ref())
        .and_then(|p| p.subject.as_deref())
}

/// Stays so for a while: polls `secs` seconds and fails at the first moment it is not.
async fn stays(emails: &Api<Email>, name: &str, ok: impl Fn(&Email) -> bool, secs: u64) {
    for _ in 0..secs * 4 {
        let e = emails.get(name).await.unwrap();
        assert!(ok(&e), "{name} changed: {:#?}", e.status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_dry_run_added_with_an_edit_of_a_sent_email_previews_it_and_never_sends_it() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "dry-run-sent").await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let op = Operator::start(env.client(), &ns);

    env.apply_yaml(&ns, &email_yaml("notice", "First", ""))
        .await;
    let sent = wait_for(&emails, "notice", phase_is(EmailPhase::Sent), WAIT).await;
    let sent_status = sent.status.clone().unwrap();

    // One commit: new content and the dry-run annotation.
    env.apply_yaml(
        &ns,
        &with_dry_run(&email_yaml("notice", "Second", ""), "notice"),
    )
    .await;
    let previewed = wait_for(
        &emails,
        "notice",
        |e| preview_subject(e) == Some("Second"),
        WAIT,
    )
    .await;
    let s = previewed.status.clone().unwrap();
    assert_eq!(s.phase, Some(EmailPhase::Sent), "a dry run keeps Sent");
    assert_eq!(s.message_id, sent_status.message_id);
    assert_eq!(s.sent_time, sent_status.sent_time);

    // Git drops the annotation: under Never the new content is not sent.
    env.apply_yaml(&ns, &email_yaml("notice", "Second", ""))
        .await;
    let changed = wait_for(
        &emails,
        "notice",
        |e| ready_reason(e).as_deref() == Some("ChangedAfterSend"),
        WAIT,
    )
    .await;
    assert_eq!(changed.status.unwrap().message_id, sent_status.message_id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mock.calls(), 1, "one message under resendPolicy: Never");
    assert_eq!(deliveries(&env.client(), &ns).await.len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn an_unknown_email_is_not_resent_when_its_sender_fails_over_or_it_is_edited_only_on_a_token()
{
    let env = TestEnv::get().await;
    let (ns, primary) = setup(&env, "unknown-stays").await;
    let fallback = MockMailerSend::start().await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    // Calls are cut off (and ambiguous) after 80% of the claim time.
    let settings = Settings {
        claim_ttl: Duration::from_secs(2),
        ..Settings::default()
    };
    let op = Operator::start_with(env.client(), &ns, settings);

    primary.script([Reply::Slow(Duration::from_secs(4))]);
    env.apply_yaml(&ns, &email_yaml("receipt", "Receipt", ""))
        .await;
    let unknown = wait_for(&emails, "receipt", phase_is(EmailPhase::Unknown), WAIT).await;
    assert_eq!(primary.calls(), 1);

    // The primary is disabled in favour of a working fallback...
    let fallback_sender =
        sender_yaml("backup", &fallback.base_url, "").replace("  default: true\n", "");
    env.apply_yaml(&ns, &fallback_sender).await;
    env.apply_yaml(
        &ns,
        &sender_yaml(
            "mailersend",
            &primary.base_url,
            "  disabled: true\n  fallback: [backup]",
        ),
    )
    .await;
    // ...and the Email is edited.
    env.apply_yaml(&ns, &email_yaml("receipt", "Receipt (corrected)", ""))
        .await;
    let edited_generation = emails.get("receipt").await.unwrap().metadata.generation;
    wait_for(
        &emails,
        "receipt",
        |e| e.status.as_ref().and_then(|s| s.observed_generation) == edited_generation,
        WAIT,
    )
    .await;
    stays(&emails, "receipt", phase_is(EmailPhase::Unknown), 3).await;
    assert_eq!(fallback.calls(), 0, "Unknown moves only on a retry token");
    assert_eq!(primary.calls(), 1);
    assert_eq!(
        emails
            .get("receipt")
            .await
            .unwrap()
            .status
            .unwrap()
            .delivery_hash,
        unknown.status.unwrap().delivery_hash
    );

    // A person asks: one more attempt, through the fallback.
    patch(&emails, "receipt", annotate("kmailops.io/retry", Some("1"))).await;
    let sent = wait_for(&emails, "receipt", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(
        sent.status.unwrap().sender_config.as_deref(),
        Some(&*format!("{ns}/backup"))
    );
    assert_eq!((primary.calls(), fallback.calls()), (1, 1));
    op.stop().await;
}

#[tokio::test]
async fn an_email_deleted_and_re_created_with_other_content_during_its_send_says_so_and_sends_once()
{
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "recreate-mid-send").await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let op = Operator::start(env.client(), &ns);

    mock.script([Reply::Slow(Duration::from_secs(3))]);
    env.apply_yaml(&ns, &email_yaml("offer", "Old offer", ""))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while mock.calls() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no provider call");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Argo CD Replace while the provider call is under way.
    emails
        .delete("offer", &DeleteParams::default())
        .await
        .unwrap();
    env.apply_yaml(&ns, &email_yaml("offer", "New offer", ""))
        .await;
    let new_uid = emails.get("offer").await.unwrap().uid();

    let settled = wait_for(
        &emails,
        "offer",
        |e| ready_reason(e).as_deref() == Some("ChangedAfterSend"),
        WAIT,
    )
    .await;
    assert_eq!(settled.uid(), new_uid);
    assert_eq!(settled.status.unwrap().phase, Some(EmailPhase::Sent));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mock.calls(), 1, "the new content is not sent under Never");
    assert_eq!(mock.bodies()[0]["subject"], "Old offer");
    assert!(
        warnings(&env, &ns, "ChangedAfterSend").await >= 1,
        "a Warning Event says the new content was not sent"
    );
    op.stop().await;
}

#[tokio::test]
async fn two_long_email_names_that_share_their_start_are_both_delivered() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "long-names").await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let op = Operator::start(env.client(), &ns);

    let stem = "a".repeat(240);
    let (first, second) = (format!("{stem}-first"), format!("{stem}-second"));
    for name in [&first, &second] {
        env.apply_yaml(&ns, &email_yaml(name, "Same content", ""))
            .await;
    }
    for name in [&first, &second] {
        let sent = wait_for(&emails, name, phase_is(EmailPhase::Sent), WAIT).await;
        assert_eq!(ready_reason(&sent).as_deref(), Some("Sent"), "{name}");
    }
    assert_eq!(mock.calls(), 2);
    let ledger = deliveries(&env.client(), &ns).await;
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|d| d.name_any().len() <= 253));
    op.stop().await;
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_used_by_its_own_process_and_sends_once() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "lost-claim").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);

    // Learn the delivery hash from a dry run.
    let op = Operator::start(client.clone(), &ns);
    env.apply_yaml(
        &ns,
        &with_dry_run(&email_yaml("order", "Order", ""), "order"),
    )
    .await;
    let previewed = wait_for(&emails, "order", phase_is(EmailPhase::Previewed), WAIT).await;
    op.stop().await;
    let hash = previewed.status.unwrap().delivery_hash.unwrap();

    // What the API server holds after a create whose answer never arrived: our claim.
    let me = "test-lost-claim-answer";
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
    let ledger: Api<EmailDelivery> = Api::namespaced(client.clone(), &ns);
    let mut entry = EmailDelivery::new(
        &kmailops::ledger::entry_name("order", &hash),
        EmailDeliverySpec {
            email_name: "order".into(),
            email_uid: previewed.metadata.uid.clone().unwrap(),
            delivery_hash: hash.clone(),
            sender_config: format!("{ns}/mailersend"),
            recipient_count: 1,
        },
    );
    entry.metadata.labels = Some(BTreeMap::from([(
        kmailops::ledger::EMAIL_LABEL.to_string(),
        "order".to_string(),
    )]));
    entry.metadata.annotations = Some(BTreeMap::from([
        (kmailops::ledger::CLAIMED_BY.to_string(), me.to_string()),
        (kmailops::ledger::CLAIM_ATTEMPT.to_string(), "1".to_string()),
        (
            kmailops::ledger::CLAIM_EXPIRES.to_string(),
            expires.to_string(),
        ),
    ]));
    ledger.create(&PostParams::default(), &entry).await.unwrap();

    // The same process goes on: the claim is its own, and nothing was sent for it.
    let settings = Settings {
        instance_id: me.to_string(),
        ..Settings::default()
    };
    let op = Operator::start_with(client.clone(), &ns, settings);
    patch(&emails, "order", annotate("kmailops.io/dry-run", None)).await;
    let sent = wait_for(&emails, "order", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(sent.status.unwrap().delivery_hash.as_deref(), Some(&*hash));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(deliveries(&client, &ns).await.len(), 1);
    op.stop().await;
}

#[tokio::test]
async fn a_preview_needs_no_credentials_and_shows_recipients_sender_and_attachments() {
    let env = TestEnv::get().await;
    init_test_logging();
    let ns = env.unique_namespace("preview-no-secret").await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    // The sender's token Secret does not exist yet; the attachment's does.
    env.apply_yaml(&ns, &sender_yaml("mailersend", "http://127.0.0.1:9/v1", ""))
        .await;
    env.apply_yaml(
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: terms\n  labels: {kmailops.io/attachable: \"true\"}\ndata: {terms.txt: VGVybXMgYW5kIGNvbmRpdGlvbnM=}\n",
    )
    .await;
    let op = Operator::start(env.client(), &ns);

    let extra = "  cc: [\"Bob <bob@example.org>\"]\n  attachments:\n  - {filename: terms.txt, secretKeyRef: {name: terms, key: terms.txt}}";
    env.apply_yaml(
        &ns,
        &with_dry_run(&email_yaml("welcome", "Welcome", extra), "welcome"),
    )
    .await;
    let previewed = wait_for(&emails, "welcome", phase_is(EmailPhase::Previewed), WAIT).await;
    let preview = previewed.status.clone().unwrap().preview.unwrap();
    assert_eq!(preview.subject.as_deref(), Some("Welcome"));
    assert_eq!(preview.text.as_deref(), Some("Hello Ada"));
    assert_eq!(preview.to, ["Ada Lovelace <ada@example.org>"]);
    assert_eq!(preview.cc, ["Bob <bob@example.org>"]);
    assert_eq!(
        preview.sender.as_deref(),
        Some(&*format!("{ns}/mailersend"))
    );
    assert_eq!(
        preview.from.as_deref(),
        Some("Example Shop <shop@example.com>")
    );
    assert_eq!(preview.attachments.len(), 1);
    assert_eq!(preview.attachments[0].filename, "terms.txt");
    assert_eq!(preview.attachments[0].size, 20);
    let sender_ready = previewed
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "SenderReady")
        .cloned()
        .expect("a SenderReady condition");
    assert_eq!(sender_ready.status, "False");
    assert_eq!(sender_ready.reason, "SecretNotFound");
    assert!(
        sender_ready.message.contains("mailersend-token"),
        "names the Secret: {}",
        sender_ready.message
    );
    op.stop().await;
}

/// What `kmailops validate` and `kmailops send` say of the manifests in `dir`.
async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kmailops"))
        .args(args)
        .env_remove("KMAILOPS_TEMPLATES_DIR")
        .output()
        .await
        .expect("run kmailops");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_and_the_operator_fail_over_from_a_disabled_primary_and_name_a_missing_fallback() {
    let env = TestEnv::get().await;
    let (ns, primary) = setup(&env, "cli-agrees").await;
    let fallback = MockMailerSend::start().await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let senders: Api<EmailSenderConfig> = Api::namespaced(env.client(), &ns);

    let manifests = format!(
        "{}\n---\n{}\n---\n{}\n---\n{}",
        sender_yaml(
            "mailersend",
            &primary.base_url,
            "  disabled: true\n  fallback: [backup, nowhere]"
        ),
        sender_yaml("backup", &fallback.base_url, "").replace("  default: true\n", ""),
        email_yaml("welcome", "Welcome", ""),
        // base64 of "test-token"
        "apiVersion: v1\nkind: Secret\nmetadata: {name: mailersend-token}\ndata: {token: dGVzdC10b2tlbg==}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.yaml");
    std::fs::write(&file, &manifests).unwrap();
    let file = file.display().to_string();

    // validate: the missing fallback is an error; the disabled primary is not.
    let (ok, out, err) = cli(&["validate", "-n", &ns, &file]).await;
    assert!(!ok, "stdout: {out}\nstderr: {err}");
    let problems: Vec<&str> = out.lines().collect();
    assert_eq!(problems.len(), 1, "{out}");
    assert!(problems[0].contains("spec.fallback[1]") && problems[0].contains("FallbackNotFound"));
    assert!(err.contains("is skipped"), "{err}");

    // send: through the fallback, as the operator does.
    let (ok, out, err) = cli(&["send", "-n", &ns, "-f", &file]).await;
    assert!(ok, "stdout: {out}\nstderr: {err}");
    assert!(err.contains(&format!("through {ns}/backup")), "{err}");
    assert_eq!((primary.calls(), fallback.calls()), (0, 1));

    // The operator, given the same manifests.
    env.apply_yaml(&ns, &manifests).await;
    let op = Operator::start(env.client(), &ns);
    let sent = wait_for(&emails, "welcome", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(
        sent.status.unwrap().sender_config.as_deref(),
        Some(&*format!("{ns}/backup"))
    );
    assert_eq!((primary.calls(), fallback.calls()), (0, 2));
    let named = wait_for(
        &senders,
        "mailersend",
        |s| {
            s.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "FallbackNotFound")
            })
        },
        WAIT,
    )
    .await;
    let ready = named
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(ready.message.contains("nowhere"), "{}", ready.message);
    op.stop().await;
}

#[tokio::test]
async fn under_on_change_a_dry_run_of_new_content_previews_it_and_its_removal_sends_it_once() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "dry-run-onchange").await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let op = Operator::start(env.client(), &ns);
    let policy = "  resendPolicy: OnChange";

    env.apply_yaml(&ns, &email_yaml("digest", "Week 1", policy))
        .await;
    let first = wait_for(&emails, "digest", phase_is(EmailPhase::Sent), WAIT).await;
    env.apply_yaml(
        &ns,
        &with_dry_run(&email_yaml("digest", "Week 2", policy), "digest"),
    )
    .await;
    let previewed = wait_for(
        &emails,
        "digest",
        |e| preview_subject(e) == Some("Week 2"),
        WAIT,
    )
    .await;
    assert_eq!(
        previewed.status.as_ref().unwrap().message_id,
        first.status.as_ref().unwrap().message_id
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mock.calls(), 1, "nothing sent during the dry run");

    patch(&emails, "digest", annotate("kmailops.io/dry-run", None)).await;
    let second = wait_for(
        &emails,
        "digest",
        |e| {
            e.status.as_ref().and_then(|s| s.message_id.as_deref())
                != first.status.as_ref().unwrap().message_id.as_deref()
                && phase_is(EmailPhase::Sent)(e)
        },
        WAIT,
    )
    .await;
    assert_eq!(mock.bodies()[1]["subject"], "Week 2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mock.calls(), 2, "the new content once");
    assert_eq!(
        emails.get("digest").await.unwrap().status,
        second.status,
        "and then nothing more"
    );
    op.stop().await;
}

#[tokio::test]
async fn the_cli_applies_the_operators_attachment_limit() {
    // 16 MiB in one Secret: more than the 15 MiB all attachments of one Email may hold.
    // (The API server's object limit keeps such a Secret out of a cluster; the operator reads
    // attachments through the same code, `lookup::attachments`, with the same limit.)
    let big = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        vec![b'x'; 16 * 1024 * 1024],
    );
    let manifests = format!(
        "{}\n---\n{}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: mailersend-token}}\ndata: {{token: dGVzdC10b2tlbg==}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: report, labels: {{kmailops.io/attachable: \"true\"}}}}\ndata: {{report.pdf: {big}}}\n",
        sender_yaml("mailersend", "http://127.0.0.1:9/v1", ""),
        email_yaml(
            "monthly",
            "Report",
            "  attachments:\n  - {filename: report.pdf, secretKeyRef: {name: report, key: report.pdf}}"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.yaml");
    std::fs::write(&file, &manifests).unwrap();
    let file = file.display().to_string();
    for args in [
        vec!["validate", file.as_str()],
        vec!["send", "-f", file.as_str()],
    ] {
        let (ok, out, err) = cli(&args).await;
        assert!(!ok, "{args:?} must fail");
        assert!(
            format!("{out}{err}").contains("together larger than 15 MiB"),
            "{args:?}: stdout: {out}\nstderr: {err}"
        );
    }
}

/// The sweep deletes an expired entry only as it read it: an entry written between the read and
/// the delete (its Email re-created and sent again at that moment) is kept.
#[tokio::test]
async fn an_expired_entry_written_since_the_sweep_read_it_is_kept() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("retention-race").await;
    let ledger: Api<EmailDelivery> = Api::namespaced(env.client(), &ns);
    let hash = "0123456789abcdef".repeat(4);
    let name = kmailops::ledger::entry_name("welcome", &hash);
    let entry = EmailDelivery::new(
        &name,
        EmailDeliverySpec {
            email_name: "welcome".into(),
            email_uid: "0b5e7a8c-0000-4000-8000-000000000000".into(),
            delivery_hash: hash.clone(),
            sender_config: format!("{ns}/mailersend"),
            recipient_count: 1,
        },
    );
    ledger.create(&PostParams::default(), &entry).await.unwrap();
    let read = ledger.get_metadata(&name).await.unwrap().metadata;
    // Written after the read: a claim would bump its version the same way.
    let touch = serde_json::json!({"metadata": {"labels": {"example.org/touched": "1"}}});
    ledger
        .patch(&name, &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    assert!(!delete_unless_changed(&ledger, &name, &read).await.unwrap());
    assert!(ledger.get_opt(&name).await.unwrap().is_some(), "deleted");

    let read = ledger.get_metadata(&name).await.unwrap().metadata;
    assert!(delete_unless_changed(&ledger, &name, &read).await.unwrap());
    assert!(ledger.get_opt(&name).await.unwrap().is_none(), "kept");
    // Gone already: nothing to do, and no error.
    assert!(!delete_unless_changed(&ledger, &name, &read).await.unwrap());
}

/// The ledger's retention, as its first sweep after a start does it: an entry whose Email is
/// gone is marked, one marked longer ago than `--delivery-retention` is deleted, and one whose
/// Email came back loses its mark. The operator keeps no copy of the entries, only an index of
/// them (`ledger::index`): this is what the sweep reads of it.
#[tokio::test]
async fn the_retention_sweep_marks_deletes_and_unmarks_ledger_entries_by_their_email() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "retention").await;
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let ledger: Api<EmailDelivery> = Api::namespaced(client.clone(), &ns);

    let op = Operator::start(client.clone(), &ns);
    env.apply_yaml(&ns, &email_yaml("kept", "Kept", "")).await;
    let sent = wait_for(&emails, "kept", phase_is(EmailPhase::Sent), WAIT).await;
    op.stop().await;
    let hash = sent.status.unwrap().delivery_hash.unwrap();
    let kept_entry = deliveries(&client, &ns).await[0].name_any();

    // The kept Email's entry carries a mark from when it was briefly gone.
    let mark = |since: Option<&str>| serde_json::json!({"metadata": {"annotations": {"kmailops.io/orphaned-since": since}}});
    ledger
        .patch(
            &kept_entry,
            &PatchParams::default(),
            &Patch::Merge(mark(Some("2026-01-01T00:00:00Z"))),
        )
        .await
        .unwrap();
    // An Email our types reject (an offset of +99:00): the operator's cache leaves it out, but
    // it exists, so its entry must stay although it carries an old mark.
    env.apply_yaml(&ns, &email_yaml("broken", "Broken", UNREADABLE_SEND_AT))
        .await;
    // Two entries whose Emails are gone: one marked two days ago, one not marked yet.
    let two_days_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48)).to_string();
    for (email, since) in [
        ("gone-long-ago", Some(two_days_ago.as_str())),
        ("gone-just-now", None),
        ("broken", Some(two_days_ago.as_str())),
    ] {
        let mut entry = EmailDelivery::new(
            &kmailops::ledger::entry_name(email, &hash),
            EmailDeliverySpec {
                email_name: email.into(),
                email_uid: "0b5e7a8c-0000-4000-8000-000000000000".into(),
                delivery_hash: hash.clone(),
                sender_config: format!("{ns}/mailersend"),
                recipient_count: 1,
            },
        );
        if let Some(since) = since {
            entry.metadata.annotations = Some(BTreeMap::from([(
                "kmailops.io/orphaned-since".to_string(),
                since.to_string(),
            )]));
        }
        ledger.create(&PostParams::default(), &entry).await.unwrap();
    }

    let settings = Settings {
        delivery_retention: Duration::from_secs(24 * 3600),
        ..Settings::default()
    };
    let op = Operator::start_with(client.clone(), &ns, settings);
    let orphaned_since = |name: &str, entries: &[EmailDelivery]| {
        entries
            .iter()
            .find(|e| e.name_any() == name)
            .map(|e| e.annotations().get("kmailops.io/orphaned-since").cloned())
    };
    let long_ago = kmailops::ledger::entry_name("gone-long-ago", &hash);
    let just_now = kmailops::ledger::entry_name("gone-just-now", &hash);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let entries = deliveries(&client, &ns).await;
        let swept = orphaned_since(&long_ago, &entries).is_none()
            && matches!(orphaned_since(&just_now, &entries), Some(Some(_)))
            && orphaned_since(&kept_entry, &entries) == Some(None);
        if swept {
            let since: jiff::Timestamp = orphaned_since(&just_now, &entries)
                .flatten()
                .unwrap()
                .parse()
                .expect("the mark is a timestamp");
            assert!(
                (jiff::Timestamp::now() - since).get_seconds() < 60,
                "{since}"
            );
            let broken = kmailops::ledger::entry_name("broken", &hash);
            assert_eq!(
                orphaned_since(&broken, &entries),
                Some(Some(two_days_ago.clone())),
                "the entry of an Email that exists is kept, whatever its mark says"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first sweep did not do its work: {:?}",
            entries
                .iter()
                .map(|e| (
                    e.name_any(),
                    e.annotations().get("kmailops.io/orphaned-since").cloned()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The kept Email stays Sent, once.
    assert_eq!(mock.calls(), 1);
    op.stop().await;
}
