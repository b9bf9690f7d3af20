//! Exactly once beyond the cluster, end to end against real API servers and local providers
//! that keep what they were sent and answer searches as documented: the same manifests applied
//! to a second, empty API server (a cluster rebuilt from Git) send nothing through Postmark or
//! Resend and report the first cluster's message ids; a Postmark 500 after acceptance and a
//! timeout after the hand-over end `Sent` after a look-up, with one delivery; Mailgun's late
//! events are waited for (a short `lookup.settlingTime`) before a resend.

mod common;
#[path = "support/mock_mailgun.rs"]
mod mock_mailgun;
#[path = "support/mock_postmark.rs"]
mod mock_postmark;
#[path = "support/mock_resend.rs"]
mod mock_resend;
mod support;

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client};
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailPhase};
use kmailops::context::Settings;
use mock_mailgun::MockMailgun;
use mock_postmark::{Inject, MockPostmark, SearchInject};
use mock_resend::MockResend;

const PM_TOKEN: &str = "pm-lookup-3c1d-distinctive";
const RE_KEY: &str = "re_LOOKUP_test_key";

fn postmark_sender(url: &str) -> String {
    postmark_named("postmark", "postmark", url, "")
}

fn resend_sender(url: &str) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {{name: resend}}
spec:
  sender: {{address: shop@example.com}}
  resend:
    apiKeySecretRef: {{name: resend, key: apiKey}}
    baseUrl: {url}
"#
    )
}

fn email(name: &str, sender: &str) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata: {{name: {name}}}
spec:
  senderConfigRef: {{name: {sender}}}
  to: [jane@example.org]
  subject: Order {name}
  text: Your order {name} has shipped.
"#
    )
}

/// Everything a cluster gets from Git (and the Secrets from the secret store).
async fn apply_git(env: &TestEnv, ns: &str, pm: &MockPostmark, re: &MockResend) {
    let client = env.client();
    secret(&client, ns, "postmark", "token", PM_TOKEN).await;
    secret(&client, ns, "resend", "apiKey", RE_KEY).await;
    env.apply_yaml(ns, &postmark_sender(&pm.url)).await;
    env.apply_yaml(ns, &resend_sender(&re.url)).await;
    env.apply_yaml(ns, &email("order-1", "postmark")).await;
    env.apply_yaml(ns, &email("order-2", "resend")).await;
}

async fn sent(client: &Client, ns: &str, name: &str) -> Email {
    let emails: Api<Email> = Api::namespaced(client.clone(), ns);
    wait_for(&emails, name, phase_is(EmailPhase::Sent), WAIT).await
}

fn message_id(e: &Email) -> String {
    e.status
        .as_ref()
        .and_then(|s| s.message_id.clone())
        .unwrap_or_default()
}

async fn event_reasons(client: &Client, ns: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default())
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn a_cluster_rebuilt_from_git_sends_nothing_twice_and_reports_the_first_message_ids() {
    init_test_logging();
    let first = TestEnv::get().await;
    let second = TestEnv::second().await;
    let ns = first.unique_namespace("rebuild").await;
    let pm = MockPostmark::start(PM_TOKEN).await;
    let re = MockResend::start(RE_KEY).await;

    // The first cluster sends both.
    apply_git(&first, &ns, &pm, &re).await;
    let op = Operator::start(first.client(), &ns);
    let pm_first = sent(&first.client(), &ns, "order-1").await;
    let re_first = sent(&first.client(), &ns, "order-2").await;
    op.stop().await;
    assert_eq!((pm.sent().len(), re.sent().len()), (1, 1));
    let searches_before = pm.searches();

    // The cluster is gone; the same Git is applied to an empty one, ledger and all lost.
    let client = second.client();
    apply_git(&second, &ns, &pm, &re).await;
    assert!(deliveries(&client, &ns).await.is_empty(), "a new cluster");
    let op = Operator::start(client.clone(), &ns);
    let pm_again = sent(&client, &ns, "order-1").await;
    let re_again = sent(&client, &ns, "order-2").await;
    op.stop().await;

    assert_eq!(pm.sent().len(), 1, "Postmark got the message a second time");
    assert_eq!(
        re.sent().len(),
        1,
        "Resend delivered the message a second time"
    );
    assert_eq!(message_id(&pm_again), message_id(&pm_first));
    assert_eq!(message_id(&re_again), message_id(&re_first));
    assert_eq!(
        ready_reason(&pm_again).as_deref(),
        Some("RecoveredFromProvider")
    );
    assert_eq!(pm.searches(), searches_before + 1, "one look-up per Email");
    assert!(
        event_reasons(&client, &ns)
            .await
            .iter()
            .any(|r| r == "RecoveredFromProvider")
    );
    // The rebuilt ledger knows it now: a re-created Email recovers from it, asking nobody.
    let recorded = deliveries(&client, &ns).await;
    assert!(
        recorded
            .iter()
            .any(|d| d.status.as_ref().and_then(|s| s.reason.as_deref())
                == Some("RecoveredFromProvider")),
        "{recorded:?}"
    );
}

async fn postmark_only(env: &TestEnv, ns: &str, pm: &MockPostmark, extra: &str) {
    let client = env.client();
    secret(&client, ns, "postmark", "token", PM_TOKEN).await;
    env.apply_yaml(ns, &format!("{}{extra}", postmark_sender(&pm.url)))
        .await;
}

#[tokio::test]
async fn a_postmark_500_after_acceptance_ends_sent_after_a_look_up_with_one_delivery() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("pm-500").await;
    let pm = MockPostmark::start(PM_TOKEN).await;
    postmark_only(&env, &ns, &pm, "").await;
    pm.inject(Inject::AcceptThenFail);
    let addr = free_addr();
    let op = Operator::start_full(env.client(), &ns, Settings::default(), Some(addr));
    env.apply_yaml(&ns, &email("order-3", "postmark")).await;
    let e = sent(&env.client(), &ns, "order-3").await;
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    op.stop().await;
    assert_eq!(pm.sent().len(), 1);
    assert_eq!(ready_reason(&e).as_deref(), Some("RecoveredFromProvider"));
    assert_eq!(message_id(&e), "b7bc2f4a-e38e-4336-af7d-e6c390000001");
    // Two look-ups for this Email: before its first send (absent), after the 500 (found).
    for (result, n) in [("absent", 1), ("found", 1)] {
        let line = format!(
            "kmailops_provider_lookups_total{{provider=\"Postmark\",result=\"{result}\"}} {n}"
        );
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }
}

#[tokio::test]
async fn a_timeout_after_the_hand_over_ends_sent_after_a_look_up_with_one_delivery() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("pm-timeout").await;
    let pm = MockPostmark::start(PM_TOKEN).await;
    postmark_only(&env, &ns, &pm, "").await;
    pm.inject(Inject::AcceptThenStall(Duration::from_secs(20)));
    // Calls are cut off at 80 % of the claim: 1.6 s.
    let settings = Settings {
        claim_ttl: Duration::from_secs(2),
        ..Settings::default()
    };
    let op = Operator::start_with(env.client(), &ns, settings);
    env.apply_yaml(&ns, &email("order-4", "postmark")).await;
    let e = sent(&env.client(), &ns, "order-4").await;
    op.stop().await;
    assert_eq!(pm.sent().len(), 1);
    assert_eq!(ready_reason(&e).as_deref(), Some("RecoveredFromProvider"));
}

#[tokio::test]
async fn a_failed_look_up_never_sends_blind_and_the_email_says_why() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("pm-lookup-down").await;
    let pm = MockPostmark::start(PM_TOKEN).await;
    postmark_only(&env, &ns, &pm, "").await;
    pm.inject_search(SearchInject::Raw(
        503,
        r#"{"ErrorCode":503,"Message":"Service unavailable"}"#.into(),
    ));
    let op = Operator::start(env.client(), &ns);
    env.apply_yaml(&ns, &email("order-5", "postmark")).await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let waiting = wait_for(
        &emails,
        "order-5",
        |e: &Email| ready_reason(e).as_deref() == Some("LookupFailed"),
        WAIT,
    )
    .await;
    assert_eq!(
        waiting.status.as_ref().and_then(|s| s.phase),
        Some(EmailPhase::Retrying)
    );
    assert!(pm.sent().is_empty(), "sent without asking");
    assert!(
        waiting
            .status
            .as_ref()
            .and_then(|s| s.error.clone())
            .is_some_and(|e| e.contains("503")),
        "{:?}",
        waiting.status
    );
    op.stop().await;
}

#[tokio::test]
async fn a_sender_with_look_ups_off_sends_without_asking() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("pm-lookup-off").await;
    let pm = MockPostmark::start(PM_TOKEN).await;
    postmark_only(&env, &ns, &pm, "  lookup: {disabled: true}\n").await;
    let op = Operator::start(env.client(), &ns);
    env.apply_yaml(&ns, &email("order-6", "postmark")).await;
    let e = sent(&env.client(), &ns, "order-6").await;
    op.stop().await;
    assert_eq!(ready_reason(&e).as_deref(), Some("Sent"));
    assert_eq!((pm.sent().len(), pm.searches()), (1, 0));
}

const MG_KEY: &str = "key-mg-settling-51aa-distinctive";

/// The `mailgun` EmailSenderConfig, with `lookup` (a flow mapping, e.g.
/// `{settlingTime: 4s}`) when given.
fn mailgun_yaml(url: &str, lookup: Option<&str>) -> String {
    let lookup = lookup.map_or(String::new(), |l| format!("  lookup: {l}\n"));
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {{name: mailgun}}
spec:
  sender: {{address: shop@mg.example.com}}
  mailgun:
    domain: mg.example.com
    apiKeySecretRef: {{name: mailgun, key: key}}
    baseUrl: {url}
{lookup}"#
    )
}

async fn mailgun_sender(env: &TestEnv, ns: &str, mg: &MockMailgun, settling: &str) {
    secret(&env.client(), ns, "mailgun", "key", MG_KEY).await;
    env.apply_yaml(
        ns,
        &mailgun_yaml(&mg.url, Some(&format!("{{settlingTime: {settling}}}"))),
    )
    .await;
}

/// Waits for the Email to say `reason`, returning how long that took.
async fn reason_seen(client: &Client, ns: &str, name: &str, reason: &str) -> Email {
    let emails: Api<Email> = Api::namespaced(client.clone(), ns);
    wait_for(
        &emails,
        name,
        |e: &Email| ready_reason(e).as_deref() == Some(reason),
        WAIT,
    )
    .await
}

#[tokio::test]
async fn mailgun_absence_is_trusted_only_after_the_settling_time() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("mg-settling").await;
    // The 5xx left nothing behind: absent now, and still absent once the record settled.
    let mg = MockMailgun::start(MG_KEY, "mg.example.com", Duration::ZERO).await;
    mailgun_sender(&env, &ns, &mg, "4s").await;
    mg.inject(mock_mailgun::Inject::Fail);
    let op = Operator::start(env.client(), &ns);
    let started = std::time::Instant::now();
    env.apply_yaml(&ns, &email("order-7", "mailgun")).await;
    let waiting = reason_seen(&env.client(), &ns, "order-7", "AwaitingProviderRecord").await;
    assert_eq!(
        waiting.status.as_ref().and_then(|s| s.phase),
        Some(EmailPhase::Retrying)
    );
    assert!(mg.accepted().is_empty(), "resent before the events settled");
    let e = sent(&env.client(), &ns, "order-7").await;
    op.stop().await;
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "resent {:?} after the 5xx, before the settling time",
        started.elapsed()
    );
    assert_eq!(mg.accepted().len(), 1);
    assert_eq!(ready_reason(&e).as_deref(), Some("Sent"));
    // Before the first send, after the 5xx, once the record settled; not in between.
    assert!(
        mg.event_requests() <= 4,
        "{} look-ups for one Email",
        mg.event_requests()
    );
}

#[tokio::test]
async fn a_mailgun_message_whose_events_arrive_late_is_found_not_sent_again() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("mg-late").await;
    // Accepted, the answer lost, and its event shows 1 s later: the first look-up misses it.
    let mg = MockMailgun::start(MG_KEY, "mg.example.com", Duration::from_secs(1)).await;
    mailgun_sender(&env, &ns, &mg, "3s").await;
    mg.inject(mock_mailgun::Inject::AcceptThenFail);
    let op = Operator::start(env.client(), &ns);
    env.apply_yaml(&ns, &email("order-8", "mailgun")).await;
    reason_seen(&env.client(), &ns, "order-8", "AwaitingProviderRecord").await;
    let e = sent(&env.client(), &ns, "order-8").await;
    op.stop().await;
    assert_eq!(mg.accepted().len(), 1, "sent twice");
    assert_eq!(ready_reason(&e).as_deref(), Some("RecoveredFromProvider"));
    assert_eq!(message_id(&e), format!("<{}>", mg.accepted()[0].message_id));
}

#[tokio::test]
async fn a_postmark_that_keeps_answering_500_is_asked_and_retried_with_backoff_then_sent_once() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("pm-500s").await;
    let pm = MockPostmark::start(PM_TOKEN).await;
    postmark_only(&env, &ns, &pm, "").await;
    // Two 500s that kept nothing: each is looked up, found absent, and sent again after the
    // sender's backoff (1 s, then up to 2 s), not in a loop.
    for _ in 0..2 {
        pm.inject(Inject::Raw(
            500,
            r#"{"ErrorCode":500,"Message":"Internal server error"}"#.into(),
            vec![],
        ));
    }
    let op = Operator::start(env.client(), &ns);
    let started = std::time::Instant::now();
    env.apply_yaml(&ns, &email("order-9", "postmark")).await;
    let e = sent(&env.client(), &ns, "order-9").await;
    op.stop().await;
    assert_eq!((pm.sent().len(), pm.posts()), (1, 3));
    assert_eq!(ready_reason(&e).as_deref(), Some("Sent"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "resent without backoff: {:?}",
        started.elapsed()
    );
    assert_eq!(pm.searches(), 3, "before the send and after each 500");
}

fn postmark_named(name: &str, secret: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {{name: {name}}}
spec:
  sender: {{address: shop@example.com}}
  postmark:
    serverTokenSecretRef: {{name: {secret}, key: token}}
    baseUrl: {url}
  retry: {{initialBackoff: 1s, maxBackoff: 2s}}
{extra}"#
    )
}

const PM2_TOKEN: &str = "pm-fallback-77e0-distinctive";

/// The Git of a chain `primary` (Postmark) -> `postmark-2` -> `mailgun`.
async fn apply_chain(
    env: &TestEnv,
    ns: &str,
    pm: &MockPostmark,
    pm2: &MockPostmark,
    mg: &MockMailgun,
) {
    let client = env.client();
    secret(&client, ns, "postmark", "token", PM_TOKEN).await;
    secret(&client, ns, "postmark-2", "token", PM2_TOKEN).await;
    secret(&client, ns, "mailgun", "key", MG_KEY).await;
    env.apply_yaml(
        ns,
        &postmark_named(
            "primary",
            "postmark",
            &pm.url,
            "  fallback: [postmark-2, mailgun]\n",
        ),
    )
    .await;
    env.apply_yaml(
        ns,
        &postmark_named("postmark-2", "postmark-2", &pm2.url, ""),
    )
    .await;
    env.apply_yaml(ns, &mailgun_yaml(&mg.url, None)).await;
}

fn sent_through(e: &Email) -> String {
    e.status
        .as_ref()
        .and_then(|s| s.sender_config.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_rebuilt_cluster_finds_what_the_old_one_sent_through_a_fallback_and_sends_nothing() {
    init_test_logging();
    let first = TestEnv::get().await;
    let second = TestEnv::second().await;
    let ns = first.unique_namespace("chain").await;
    let pm = MockPostmark::start(PM_TOKEN).await;
    let pm2 = MockPostmark::start(PM2_TOKEN).await;
    let mg = MockMailgun::start(MG_KEY, "mg.example.com", Duration::ZERO).await;

    // The old cluster: the primary refuses its token for both Emails (a fail-over), the
    // second Postmark takes order-a and refuses order-b, which goes out through Mailgun.
    apply_chain(&first, &ns, &pm, &pm2, &mg).await;
    let op = Operator::start(first.client(), &ns);
    pm.inject(Inject::Code(10, "Bad or missing Server API token.".into()));
    first.apply_yaml(&ns, &email("order-a", "primary")).await;
    let a_first = sent(&first.client(), &ns, "order-a").await;
    pm.inject(Inject::Code(10, "Bad or missing Server API token.".into()));
    pm2.inject(Inject::Code(10, "Bad or missing Server API token.".into()));
    first.apply_yaml(&ns, &email("order-b", "primary")).await;
    let b_first = sent(&first.client(), &ns, "order-b").await;
    op.stop().await;
    assert_eq!(sent_through(&a_first), format!("{ns}/postmark-2"));
    assert_eq!(sent_through(&b_first), format!("{ns}/mailgun"));
    assert_eq!(
        (pm.sent().len(), pm2.sent().len(), mg.accepted().len()),
        (0, 1, 1)
    );

    // The rebuilt cluster: same Git, no ledger, the primary takes mail again.
    let client = second.client();
    apply_chain(&second, &ns, &pm, &pm2, &mg).await;
    second.apply_yaml(&ns, &email("order-a", "primary")).await;
    second.apply_yaml(&ns, &email("order-b", "primary")).await;
    let op = Operator::start(client.clone(), &ns);
    let a_again = sent(&client, &ns, "order-a").await;
    let b_again = sent(&client, &ns, "order-b").await;
    op.stop().await;

    assert_eq!(
        (pm.sent().len(), pm2.sent().len(), mg.accepted().len()),
        (0, 1, 1),
        "a message went out a second time"
    );
    for (again, before) in [(&a_again, &a_first), (&b_again, &b_first)] {
        assert_eq!(
            ready_reason(again).as_deref(),
            Some("RecoveredFromProvider")
        );
        assert_eq!(message_id(again), message_id(before));
        assert_eq!(sent_through(again), sent_through(before));
    }
    // The rebuilt ledger records each through the sender that has it.
    let recorded = deliveries(&client, &ns).await;
    let senders: Vec<&str> = recorded
        .iter()
        .map(|d| d.spec.sender_config.as_str())
        .collect();
    assert_eq!(recorded.len(), 2, "{senders:?}");
    assert!(senders.contains(&format!("{ns}/postmark-2").as_str()));
    assert!(senders.contains(&format!("{ns}/mailgun").as_str()));
}

#[tokio::test]
async fn with_settle_first_sends_a_rebuild_right_after_a_mailgun_hand_over_waits_and_finds_it() {
    init_test_logging();
    let first = TestEnv::get().await;
    let second = TestEnv::second().await;
    let ns = first.unique_namespace("mg-settle-first").await;
    // Events show 4 s after acceptance; the sender trusts absence 6 s after the first look-up.
    let mg = MockMailgun::start(MG_KEY, "mg.example.com", Duration::from_secs(4)).await;
    let sender = mailgun_yaml(&mg.url, Some("{settlingTime: 6s, settleFirstSends: true}"));
    for env in [&first, &second] {
        secret(&env.client(), &ns, "mailgun", "key", MG_KEY).await;
        env.apply_yaml(&ns, &sender).await;
    }

    // The old cluster's first send waits too, then goes out.
    let op = Operator::start(first.client(), &ns);
    let started = std::time::Instant::now();
    first.apply_yaml(&ns, &email("order-s", "mailgun")).await;
    let waiting = reason_seen(&first.client(), &ns, "order-s", "AwaitingProviderRecord").await;
    let message = waiting
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("settleFirstSends") && message.contains(&ns),
        "the wait says why and names the sender: {message}"
    );
    assert!(
        waiting
            .status
            .as_ref()
            .is_some_and(|s| s.next_attempt_time.is_some()),
        "the wait says until when"
    );
    let before = sent(&first.client(), &ns, "order-s").await;
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "sent {:?} after the first look-up, before settlingTime",
        started.elapsed()
    );
    // It stops right after the hand-over, and the new cluster starts at once, while the
    // message's event is not out yet.
    second.apply_yaml(&ns, &email("order-s", "mailgun")).await;
    op.stop().await;
    let op = Operator::start(second.client(), &ns);
    reason_seen(&second.client(), &ns, "order-s", "AwaitingProviderRecord").await;
    let after = sent(&second.client(), &ns, "order-s").await;
    op.stop().await;
    assert_eq!(mg.accepted().len(), 1, "sent twice");
    assert_eq!(
        ready_reason(&after).as_deref(),
        Some("RecoveredFromProvider")
    );
    assert_eq!(message_id(&after), message_id(&before));
}

/// A Resend delivery whose answer was lost is repeated on the strength of its idempotency key;
/// when Resend then stays down until the retries run out, the first attempt may still have
/// delivered it, so the Email ends Unknown and its Postmark fallback sends nothing.
#[tokio::test]
async fn a_resend_repeat_that_runs_out_of_retries_never_fails_over_to_a_second_message() {
    init_test_logging();
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("re-doubt").await;
    let pm = MockPostmark::start(PM_TOKEN).await;
    let re = MockResend::start(RE_KEY).await;
    let client = env.client();
    secret(&client, &ns, "postmark", "token", PM_TOKEN).await;
    secret(&client, &ns, "resend", "apiKey", RE_KEY).await;
    env.apply_yaml(&ns, &postmark_sender(&pm.url)).await;
    env.apply_yaml(
        &ns,
        &format!(
            "{}  retry: {{maxAttempts: 3, initialBackoff: 1s, maxBackoff: 1s}}\n  fallback: [postmark]\n",
            resend_sender(&re.url)
        ),
    )
    .await;
    // Accepted, the answer lost; then Resend is down for longer than the retries last.
    re.inject(mock_resend::Inject::AcceptThenFail);
    for _ in 0..20 {
        re.inject(mock_resend::Inject::Outage(503));
    }
    let op = Operator::start(client.clone(), &ns);
    env.apply_yaml(&ns, &email("order-9", "resend")).await;
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    wait_for(
        &emails,
        "order-9",
        |e: &Email| {
            matches!(
                e.status.as_ref().and_then(|s| s.phase),
                Some(EmailPhase::Unknown | EmailPhase::Sent | EmailPhase::Failed)
            ) && re.posts() >= 3
        },
        WAIT,
    )
    .await;
    // Time for a fail-over to show if there were one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let e = emails.get("order-9").await.expect("the Email");
    op.stop().await;
    let entries = deliveries(&client, &ns).await;
    for d in &entries {
        eprintln!("{}: {:?}", d.spec.sender_config, d.status);
    }
    assert_eq!(re.sent().len(), 1, "Resend took the message once");
    assert_eq!(
        pm.sent().len(),
        0,
        "the fallback sent a second message after a repeat on the idempotency key failed"
    );
    let error = e
        .status
        .as_ref()
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(
        error.contains("may have delivered"),
        "status error: {error}"
    );
    assert_eq!(entries.len(), 1, "one delivery, through Resend");
    assert_eq!(
        e.status.as_ref().and_then(|s| s.phase),
        Some(EmailPhase::Unknown)
    );
}
