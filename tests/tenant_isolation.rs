//! One tenant's objects must not starve, hijack or read through the shared operator.
//! Each test plays a careless or hostile tenant against the real API server.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use kmailops::api::{Email, EmailPhase, EmailSenderConfig};
use kmailops::context::Settings;
use kmailops::send_slots::SlotLimits;
use support::TestEnv;
use support::mock_mailersend::Reply;
use support::operator::*;
use support::wait_for;

/// An SMTP server that greets, answers EHLO and MAIL, and then never answers RCPT: a sender
/// that looks healthy and holds every send it gets until the command times out.
struct StuckSmtp {
    port: u16,
    /// Sends held right now (a RCPT left unanswered), and the most held at once. Health
    /// checks and idle connections do not count: they never reach RCPT.
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
    recipients_asked: Arc<AtomicUsize>,
}

impl StuckSmtp {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicUsize::new(0));
        let most_open = Arc::new(AtomicUsize::new(0));
        let recipients_asked = Arc::new(AtomicUsize::new(0));
        let (o, m, r) = (open.clone(), most_open.clone(), recipients_asked.clone());
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (o, m, r) = (o.clone(), m.clone(), r.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 stuck.example ESMTP\r\n").await;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250 stuck.example\r\n",
                            "MAIL" | "RSET" | "NOOP" => b"250 OK\r\n",
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                break;
                            }
                            "RCPT" => {
                                r.fetch_add(1, Ordering::SeqCst);
                                let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                                m.fetch_max(now, Ordering::SeqCst);
                                // Never answer; wait for the client to give up.
                                while let Ok(Some(_)) = lines.next_line().await {}
                                o.fetch_sub(1, Ordering::SeqCst);
                                break;
                            }
                            _ => b"502 not here\r\n",
                        };
                        if write.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        StuckSmtp {
            port,
            open,
            most_open,
            recipients_asked,
        }
    }
}

fn stuck_sender_yaml(port: u16) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata:
  name: stuck
spec:
  sender:
    address: noreply@stuck.example
  smtp:
    host: 127.0.0.1
    port: {port}
    tls: None
  retry: {{maxAttempts: 1}}
"#
    )
}

/// The operator's settings with these send-slot caps.
fn with_slots(total: usize, per_sender: usize, per_namespace: usize) -> Settings {
    Settings {
        sends: SlotLimits {
            total,
            per_sender,
            per_namespace,
        },
        ..Settings::default()
    }
}

/// A sender whose server takes every send and never finishes it holds at most its own share
/// of the send slots: Emails through another sender go out at once, however many are stuck.
#[tokio::test]
async fn a_stuck_sender_does_not_starve_other_senders() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "starve").await;
    let stuck = StuckSmtp::start().await;
    env.apply_yaml(&ns, &stuck_sender_yaml(stuck.port)).await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    for i in 0..40 {
        env.apply_yaml(
            &ns,
            &email_yaml(
                &format!("stuck-{i}"),
                "Stuck",
                "  senderConfigRef: {name: stuck}",
            ),
        )
        .await;
    }
    let settings = with_slots(8, 2, 8);
    let op = Operator::start_with(env.client(), &ns, settings);

    // Let the stuck sender take every slot it can.
    let deadline = Instant::now() + WAIT;
    while stuck.open.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    env.apply_yaml(&ns, &email_yaml("urgent", "Password reset", ""))
        .await;
    wait_for(&emails, "urgent", phase_is(EmailPhase::Sent), WAIT).await;
    let took = started.elapsed();
    assert_eq!(mock.calls(), 1);
    assert!(
        took < Duration::from_secs(15),
        "another sender's Email waited {took:?} behind the stuck one"
    );
    assert!(
        stuck.most_open.load(Ordering::SeqCst) <= 2,
        "the stuck sender had {} sends open at once, over its cap of 2",
        stuck.most_open.load(Ordering::SeqCst)
    );
    assert!(stuck.recipients_asked.load(Ordering::SeqCst) >= 1);
    op.stop().await;
}

/// `notAfter` is checked right before the hand-over, not only when the Email is first looked
/// at: an Email that waits for a slot past its `notAfter` is Expired, never sent late.
#[tokio::test]
async fn an_email_waiting_for_a_slot_past_not_after_expires_unsent() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "notafter").await;
    mock.script([Reply::Slow(Duration::from_secs(8))]);
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let settings = with_slots(1, 1, 1);
    let op = Operator::start_with(env.client(), &ns, settings);
    env.apply_yaml(&ns, &email_yaml("slow", "First", "")).await;
    let deadline = Instant::now() + WAIT;
    while mock.calls() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.calls(), 1, "the first send is under way");

    let not_after = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    env.apply_yaml(
        &ns,
        &email_yaml(
            "deadline",
            "Only useful soon",
            &format!(
                "  notAfter: \"{}\"",
                not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
            ),
        ),
    )
    .await;
    wait_for(&emails, "slow", phase_is(EmailPhase::Sent), WAIT).await;
    wait_for(&emails, "deadline", phase_is(EmailPhase::Expired), WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mock.calls(), 1, "nothing went out after notAfter");
    // Its claim, made while it waited in line, was withdrawn: no ledger entry is left that a
    // later reconcile or another replica could take for an interrupted send.
    let deliveries: Api<kmailops::api::EmailDelivery> = Api::namespaced(env.client(), &ns);
    let left: Vec<String> = deliveries
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.spec.email_name == "deadline")
        .map(|d| d.metadata.name.unwrap_or_default())
        .collect();
    assert!(left.is_empty(), "unused claims left behind: {left:?}");
    op.stop().await;
}

/// Emails that find every send slot taken wait their turn: while new Emails keep arriving
/// faster than the provider takes them, the backlog is still sent oldest first. A place that
/// frees is kept for the Email it wakes; before, an Email created meanwhile could take it, and
/// the woken one went to the back of the line again.
#[tokio::test]
async fn a_backlog_is_sent_oldest_first_while_new_emails_keep_arriving() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "fifo").await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    // One sender, as in most clusters: it may use one slot, and the controller's other
    // workers (twice the slots) are free to take new Emails, as with the defaults, where a
    // sender's sends and line take 16 of the 32.
    let settings = with_slots(4, 1, 4);
    let op = Operator::start_with(env.client(), &ns, settings);
    // Started and sending before the stream begins (Emails created before the caches fill
    // arrive together, in no order).
    env.apply_yaml(&ns, &email_yaml("fifo-first", "First", ""))
        .await;
    wait_for(&emails, "fifo-first", phase_is(EmailPhase::Sent), WAIT).await;
    mock.always(Reply::Slow(Duration::from_millis(150)));
    const COUNT: usize = 24;
    // About four arrive for each one the provider takes.
    for i in 0..COUNT {
        env.apply_yaml(
            &ns,
            &email_yaml(&format!("fifo-{i:02}"), &format!("Queued {i:02}"), ""),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for i in 0..COUNT {
        wait_for(
            &emails,
            &format!("fifo-{i:02}"),
            phase_is(EmailPhase::Sent),
            WAIT,
        )
        .await;
    }
    let order: Vec<usize> = mock
        .bodies()
        .iter()
        .skip(1)
        .map(|b| {
            let subject = b["subject"].as_str().unwrap_or_default();
            subject.trim_start_matches("Queued ").parse().unwrap()
        })
        .collect();
    assert_eq!(order.len(), COUNT, "one message per Email: {order:?}");
    // Reconciles of Emails created 40 ms apart may reach the line a little out of order;
    // overtaking beyond that means a waiting Email lost its turn to a newer one.
    let worst = order
        .iter()
        .enumerate()
        .map(|(sent, created)| sent.abs_diff(*created))
        .max()
        .unwrap_or(0);
    assert!(worst <= 2, "sent out of turn by {worst} places: {order:?}");
    op.stop().await;
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn email_reconciles(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("kmailops_reconcile_duration_seconds_count")
                && l.contains("kind=\"Email\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A sender's status changes with every send through it (its last send time) and every health
/// check. Emails waiting elsewhere do not care, so those writes must not wake them: with many
/// Emails waiting, one busy sender would otherwise keep the controller busy re-reading all of
/// them.
#[tokio::test]
async fn a_senders_status_writes_do_not_wake_every_waiting_email() {
    kmailops::provider::http::install_crypto_provider();
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "wake-storm").await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let senders: Api<EmailSenderConfig> = Api::namespaced(env.client(), &ns);
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    let send_at = format!("  sendAt: \"{}\"", later.strftime("%Y-%m-%dT%H:%M:%SZ"));
    for i in 0..30 {
        env.apply_yaml(&ns, &email_yaml(&format!("later-{i}"), "Later", &send_at))
            .await;
    }
    let addr = free_addr();
    let op = Operator::start_full(env.client(), &ns, Settings::default(), Some(addr));
    for i in 0..30 {
        wait_for(
            &emails,
            &format!("later-{i}"),
            phase_is(EmailPhase::Scheduled),
            WAIT,
        )
        .await;
    }
    wait_for(
        &senders,
        "mailersend",
        |s: &EmailSenderConfig| {
            s.status
                .as_ref()
                .is_some_and(|st| !st.conditions.is_empty())
        },
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = email_reconciles(&scrape(addr).await);

    // Ten status writes that change nothing an Email reads (as a send through the sender
    // would: its last send time).
    for i in 0..10 {
        let at = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(i);
        let patch = serde_json::json!({"status": {"lastSendTime": at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}});
        senders
            .patch_status("mailersend", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = email_reconciles(&scrape(addr).await);
    assert_eq!(mock.calls(), 0);
    // Woken per status write, the 30 waiting Emails would take about 300 reconciles.
    let spent = after - before;
    assert!(
        spent < 30.0,
        "{spent} Email reconciles for 10 sender status writes with 30 Emails waiting"
    );
    op.stop().await;
}

/// A Secret of `bytes` random-looking bytes, not referenced by anything.
async fn unrelated_secret(env: &TestEnv, ns: &str, name: &str, bytes: usize) {
    let payload: String = (0..bytes)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    secret(&env.client(), ns, name, "release", &payload).await;
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

/// The operator knows every Secret by its metadata and holds the data of only those that
/// senders and attachments name: unrelated Secrets (Helm releases of up to 1 MB) cost it no
/// memory for their data.
#[tokio::test]
async fn only_referenced_secrets_are_held_with_their_data() {
    kmailops::provider::http::install_crypto_provider();
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "secret-memory").await;
    for i in 0..12 {
        unrelated_secret(
            &env,
            &ns,
            &format!("sh.helm.release.v1.app.v{i}"),
            256 * 1024,
        )
        .await;
    }
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let addr = free_addr();
    let op = Operator::start_full(env.client(), &ns, Settings::default(), Some(addr));
    env.apply_yaml(&ns, &email_yaml("hello", "Hello", "")).await;
    wait_for(&emails, "hello", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 1);
    let held = gauge(&scrape(addr).await, "kmailops_secret_data_bytes");
    assert!(held > 0.0, "the sender's token is held");
    assert!(
        held < 4096.0,
        "{held} bytes of Secret data held with 3 MiB of unrelated Secrets around"
    );

    // A rotated token is read again, at once: the health check (run when the client changes)
    // reports the mock's refusal of the new token.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(env.client(), &ns);
    let senders: Api<EmailSenderConfig> = Api::namespaced(env.client(), &ns);
    let rotate = |token: &str| serde_json::json!({"data": {"token": base64(token)}});
    secrets
        .patch(
            "mailersend-token",
            &PatchParams::default(),
            &Patch::Merge(&rotate("wrong")),
        )
        .await
        .unwrap();
    let healthy =
        |status: &'static str| sender_has(move |c| c.type_ == "Healthy" && c.status == status);
    wait_for(&senders, "mailersend", healthy("False"), WAIT).await;
    secrets
        .patch(
            "mailersend-token",
            &PatchParams::default(),
            &Patch::Merge(&rotate("test-token")),
        )
        .await
        .unwrap();
    wait_for(&senders, "mailersend", healthy("True"), WAIT).await;
    env.apply_yaml(&ns, &email_yaml("after-rotation", "Again", ""))
        .await;
    wait_for(&emails, "after-rotation", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 2);
    let held = gauge(&scrape(addr).await, "kmailops_secret_data_bytes");
    assert!(held < 4096.0, "{held} bytes held after the rotation");
    op.stop().await;
}

/// A namespace's Secrets include its senders' API tokens: an Email may attach only Secrets
/// labelled `kmailops.io/attachable: "true"`, and is told which label is missing.
#[tokio::test]
async fn only_secrets_marked_attachable_can_be_attached() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "attachable").await;
    env.apply_yaml(
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: report\n  labels: {kmailops.io/attachable: \"true\"}\ndata: {report.csv: YSxiCjEsMgo=}\n",
    )
    .await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let op = Operator::start(env.client(), &ns);
    let attach = |name: &str, key: &str| {
        format!(
            "  attachments:\n  - {{filename: f.txt, secretKeyRef: {{name: {name}, key: {key}}}}}"
        )
    };
    env.apply_yaml(
        &ns,
        &email_yaml("steal", "Token", &attach("mailersend-token", "token")),
    )
    .await;
    let refused = wait_for(&emails, "steal", phase_is(EmailPhase::Failed), WAIT).await;
    assert_eq!(
        ready_reason(&refused).as_deref(),
        Some("AttachmentNotAllowed")
    );
    let error = refused
        .status
        .as_ref()
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(error.starts_with("spec.attachments[0]: "), "{error}");
    assert!(error.contains("kmailops.io/attachable"), "{error}");
    assert!(!error.contains("test-token"), "{error}");

    env.apply_yaml(
        &ns,
        &email_yaml("report", "Report", &attach("report", "report.csv")),
    )
    .await;
    wait_for(&emails, "report", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 1, "only the labelled Secret went out");
    op.stop().await;
}

/// With `--allowed-endpoint`, a sender that names another host (an internal service, with a
/// Secret as its Bearer token) is refused before anything connects to it: no health check,
/// no send.
#[tokio::test]
async fn a_sender_aimed_at_a_host_outside_the_allowed_endpoints_is_never_contacted() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "endpoints").await;
    // The "internal service": counts every connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    env.apply_yaml(
        &ns,
        &sender_yaml("internal", &format!("http://localhost:{port}/v1"), "")
            .replace("default: true", "default: false"),
    )
    .await;
    let settings = Settings {
        allowed_endpoints: kmailops::endpoints::AllowedEndpoints::new(["127.0.0.1".to_string()]),
        ..Settings::default()
    };
    let op = Operator::start_with(env.client(), &ns, settings);
    let senders: Api<EmailSenderConfig> = Api::namespaced(env.client(), &ns);
    let refused = wait_for(
        &senders,
        "internal",
        sender_has(|c| c.type_ == "Ready" && c.reason == "EndpointNotAllowed"),
        WAIT,
    )
    .await;
    let ready = refused.status.unwrap();
    let message = &ready
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(
        message.starts_with("spec.mailersend.baseUrl: host localhost"),
        "{message}"
    );

    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    env.apply_yaml(
        &ns,
        &email_yaml("exfiltrate", "Hi", "  senderConfigRef: {name: internal}"),
    )
    .await;
    let failed = wait_for(&emails, "exfiltrate", phase_is(EmailPhase::Failed), WAIT).await;
    let error = failed.status.and_then(|s| s.error).unwrap_or_default();
    assert!(error.contains("allowed"), "{error}");
    // The allowed sender (127.0.0.1) still works.
    env.apply_yaml(&ns, &email_yaml("fine", "Hi", "")).await;
    wait_for(&emails, "fine", phase_is(EmailPhase::Sent), WAIT).await;
    assert_eq!(mock.calls(), 1);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing connected to the refused host"
    );
    op.stop().await;
}

/// A sender aimed at an internal service must not turn the operator into a way to read it:
/// the sender's status names the status code, never the body the service answered.
#[tokio::test]
async fn a_health_check_against_an_internal_service_never_copies_its_answer() {
    let env = TestEnv::get().await;
    let (ns, _mock) = setup(&env, "probe").await;
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "connection failed: postgres://app:db_password=hunter2@db.internal/app",
        )
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    env.apply_yaml(
        &ns,
        &sender_yaml("internal", &format!("http://{addr}/v1"), "")
            .replace("default: true", "default: false"),
    )
    .await;
    let op = Operator::start(env.client(), &ns);
    let senders: Api<EmailSenderConfig> = Api::namespaced(env.client(), &ns);
    let checked = wait_for(
        &senders,
        "internal",
        sender_has(|c| c.type_ == "Healthy" && c.status == "False"),
        WAIT,
    )
    .await;
    let status = serde_json::to_string(&checked.status).unwrap();
    assert!(status.contains("500"), "{status}");
    assert!(!status.contains("hunter2"), "{status}");
    assert!(!status.contains("postgres"), "{status}");
    op.stop().await;
}

/// A predicate on a sender: some condition of its status matches `matches`.
fn sender_has(
    matches: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool,
) -> impl Fn(&EmailSenderConfig) -> bool {
    move |s: &EmailSenderConfig| {
        s.status
            .as_ref()
            .is_some_and(|st| st.conditions.iter().any(&matches))
    }
}
