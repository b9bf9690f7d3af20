//! Leader election on the Lease stand-in of the real API server: two replicas, one leader.
//! Once with two replicas inside this test process (own clients and identities), once with two
//! `kmailops run` processes that reach the server through the loopback proxy of
//! tests/support/api_proxy.rs (the testenv server serves Secrets only through the shim), the
//! leader stopped by SIGTERM or killed (SIGKILL); both processes serve their probes and
//! `kmailops_leader` throughout.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use support::mock_mailersend::Reply;
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailDelivery, EmailPhase};
use kmailops::ledger::CLAIMED_BY;

async fn claimers(api: &Api<EmailDelivery>) -> BTreeSet<String> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|d| d.metadata.annotations.as_ref()?.get(CLAIMED_BY).cloned())
        .collect()
}

#[tokio::test]
async fn only_the_leader_sends_and_a_standby_finishes_the_batch_when_the_leader_stops() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "leader").await;
    mock.always(Reply::Slow(Duration::from_millis(500)));
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let ledger: Api<EmailDelivery> = Api::namespaced(client.clone(), &ns);

    let first = Operator::start_replica(env.client(), &ns);
    // Let the first replica take the Lease before the second one starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = Operator::start_replica(env.client(), &ns);

    let mut yaml = String::new();
    for i in 0..40 {
        yaml.push_str("---\n");
        yaml.push_str(&email_yaml(
            &format!("batch-{i:02}"),
            &format!("Batch {i}"),
            "",
        ));
    }
    env.apply_yaml(&ns, &yaml).await;

    // Mid-batch: some sent, not all.
    let deadline = std::time::Instant::now() + WAIT;
    while mock.calls() < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "the leader did not start sending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = claimers(&ledger).await;
    assert_eq!(
        before.len(),
        1,
        "only the leader claims deliveries: {before:?}"
    );
    assert!(before.contains(&first.identity), "the first replica leads");
    assert!(mock.calls() < 40, "stopped too late to be mid-batch");

    // Stop the leader the way SIGTERM does: its sends in flight finish and are recorded.
    let first_identity = first.identity.clone();
    first.stop().await;

    for i in 0..40 {
        wait_for(
            &emails,
            &format!("batch-{i:02}"),
            phase_is(EmailPhase::Sent),
            Duration::from_secs(90),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mock.calls(), 40, "every Email sent exactly once");
    let after = claimers(&ledger).await;
    assert_eq!(
        after,
        BTreeSet::from([first_identity, second.identity.clone()])
    );
    assert_eq!(
        ledger
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        40
    );
    second.stop().await;
}

/// One `kmailops run` process, talking to the test API server through the loopback proxy,
/// serving its probes and metrics on `addr`.
struct Process {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Process {
    fn start(kubeconfig: &std::path::Path, ns: &str, log: &std::path::Path) -> Self {
        let addr = free_addr();
        let log = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kmailops"))
            .args([
                "run",
                "--namespace",
                ns,
                "--metrics-addr",
                &addr.to_string(),
            ])
            .args([
                "--leader-election-namespace",
                ns,
                "--max-concurrent-sends",
                "4",
                // A claim of a killed leader lapses after this; Emails it had in flight are
                // then marked Unknown by the new leader.
                "--claim-ttl",
                "10s",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kmailops run");
        Self { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The status code of `path` on this process's endpoint (None: no answer).
    async fn probe(&self, path: &str) -> Option<u16> {
        let resp = reqwest::get(format!("http://{}{path}", self.addr))
            .await
            .ok()?;
        Some(resp.status().as_u16())
    }

    async fn metrics(&self) -> Option<String> {
        let resp = reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .ok()?;
        resp.text().await.ok()
    }

    /// `kmailops_leader` as this process reports it.
    async fn leader_gauge(&self) -> Option<f64> {
        let text = self.metrics().await?;
        text.lines()
            .find(|l| l.starts_with("kmailops_leader "))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Waits until `/healthz` and `/readyz` answer 200.
    async fn wait_ready(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.probe("/healthz").await == Some(200) && self.probe("/readyz").await == Some(200)
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process {} did not turn ready within {within:?}",
                self.pid()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until this process reports `kmailops_leader 1`; returns when that was seen.
    async fn wait_leading(&self, within: Duration) -> std::time::Instant {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.leader_gauge().await == Some(1.0) {
                return std::time::Instant::now();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process {} did not lead within {within:?}",
                self.pid()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, as Kubernetes stops a pod; waits (without blocking the runtime, which also
    /// serves the mock provider) for the exit.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kmailops did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a lost node or an OOM kill ends a pod: nothing is finished or released.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two `kmailops run` processes, the first of them leading, a batch of 30 Emails applied and
/// the leader mid-batch. Both processes answer their probes, and `kmailops_leader` says which
/// one leads.
struct TwoProcesses {
    mock: support::mock_mailersend::MockMailerSend,
    emails: Api<Email>,
    ledger: Api<EmailDelivery>,
    first: Process,
    second: Process,
    _dir: tempfile::TempDir,
}

async fn two_processes_mid_batch(env: &TestEnv, prefix: &str) -> TwoProcesses {
    kmailops::provider::http::install_crypto_provider();
    let (ns, mock) = setup(env, prefix).await;
    // Slow enough that the batch takes seconds (4 calls at once), so the leader is stopped
    // mid-batch even on a busy machine.
    mock.always(Reply::Slow(Duration::from_millis(800)));
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let ledger: Api<EmailDelivery> = Api::namespaced(client.clone(), &ns);

    let dir = tempfile::tempdir().unwrap();
    let addr = support::api_proxy::start(env.client(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    support::api_proxy::write_kubeconfig(addr, &kubeconfig).unwrap();

    let first = Process::start(&kubeconfig, &ns, &dir.path().join("first.log"));
    let deadline = std::time::Instant::now() + WAIT;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &ns);
    // The first process holds the Lease before the second one starts.
    loop {
        let holder = leases
            .get_opt("kmailops-leader")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity);
        if holder.is_some_and(|h| h.contains(&first.pid().to_string())) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first process never led"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = Process::start(&kubeconfig, &ns, &dir.path().join("second.log"));

    // The standby serves its probes and is ready: a rolling update can go on.
    first.wait_ready(WAIT).await;
    second.wait_ready(WAIT).await;
    first.wait_leading(WAIT).await;
    assert_eq!(
        second.leader_gauge().await,
        Some(0.0),
        "the standby says so"
    );

    let mut yaml = String::new();
    for i in 0..30 {
        yaml.push_str("---\n");
        yaml.push_str(&email_yaml(
            &format!("proc-{i:02}"),
            &format!("Proc {i}"),
            "",
        ));
    }
    env.apply_yaml(&ns, &yaml).await;
    while mock.calls() < 6 {
        assert!(
            std::time::Instant::now() < deadline + WAIT,
            "the leader did not start sending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(mock.calls() < 30, "stopped too late to be mid-batch");
    let only_first = claimers(&ledger).await;
    assert_eq!(
        only_first.len(),
        1,
        "only the leader claims: {only_first:?}"
    );
    assert!(
        only_first
            .iter()
            .any(|c| c.contains(&first.pid().to_string()))
    );
    // Mid-batch, still exactly one leader, and both ready.
    assert_eq!(first.leader_gauge().await, Some(1.0));
    assert_eq!(second.leader_gauge().await, Some(0.0));
    assert_eq!(second.probe("/readyz").await, Some(200));
    assert_eq!(first.probe("/readyz").await, Some(200));
    TwoProcesses {
        mock,
        emails,
        ledger,
        first,
        second,
        _dir: dir,
    }
}

/// How many provider calls each subject got.
fn calls_per_subject(mock: &support::mock_mailersend::MockMailerSend) -> BTreeMap<String, usize> {
    let mut calls = BTreeMap::new();
    for body in mock.bodies() {
        let subject = body["subject"].as_str().unwrap_or_default().to_string();
        *calls.entry(subject).or_default() += 1;
    }
    calls
}

#[tokio::test]
async fn two_operator_processes_hand_over_on_sigterm_within_seconds_without_sending_anything_twice()
{
    let env = TestEnv::get().await;
    let TwoProcesses {
        mock,
        emails,
        ledger,
        first,
        second,
        ..
    } = two_processes_mid_batch(&env, "leader-procs").await;

    let status = first.terminate().await;
    let exited = std::time::Instant::now();
    assert!(
        status.success(),
        "a SIGTERM'd leader exits cleanly: {status:?}"
    );
    // The Lease was released: the standby leads within seconds, not after the lease duration.
    let led = second.wait_leading(WAIT).await;
    assert!(
        // Well under the 15 s Lease duration, with room for a loaded CI machine.
        led - exited < Duration::from_secs(10),
        "the standby took {:?} to lead after the leader released the Lease",
        led - exited
    );

    for i in 0..30 {
        wait_for(
            &emails,
            &format!("proc-{i:02}"),
            phase_is(EmailPhase::Sent),
            Duration::from_secs(90),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mock.calls(), 30, "every Email sent exactly once");
    assert!(calls_per_subject(&mock).values().all(|n| *n == 1));
    let all = claimers(&ledger).await;
    assert_eq!(all.len(), 2, "the standby took over the rest: {all:?}");
    assert!(all.iter().any(|c| c.contains(&second.pid().to_string())));
    assert_eq!(second.probe("/readyz").await, Some(200));
    let _ = second.terminate().await;
}

#[tokio::test]
async fn after_a_kill_9_of_the_leader_the_standby_leads_once_the_lease_lapses_and_sends_the_rest_once()
 {
    let env = TestEnv::get().await;
    let TwoProcesses {
        mock,
        emails,
        first,
        second,
        ..
    } = two_processes_mid_batch(&env, "leader-kill").await;

    let killed_at = std::time::Instant::now();
    first.kill();
    // Nobody released the Lease: the standby waits for it to lapse (15 s), then leads.
    let led = second.wait_leading(Duration::from_secs(40)).await;
    assert!(
        led - killed_at > Duration::from_secs(3),
        "the standby cannot lead before the Lease lapses"
    );
    second.wait_ready(WAIT).await;

    // Every Email comes to rest: Sent, or Unknown when the killed leader had its call in
    // flight (the message may be out; a person decides with kmailops.io/retry).
    let mut unknown = Vec::new();
    for i in 0..30 {
        let name = format!("proc-{i:02}");
        let e = wait_for(
            &emails,
            &name,
            |e: &Email| {
                matches!(
                    e.status.as_ref().and_then(|s| s.phase),
                    Some(EmailPhase::Sent) | Some(EmailPhase::Unknown)
                )
            },
            Duration::from_secs(90),
        )
        .await;
        if e.status.and_then(|s| s.phase) == Some(EmailPhase::Unknown) {
            unknown.push(format!("Proc {i}"));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = calls_per_subject(&mock);
    assert!(
        calls.values().all(|n| *n == 1),
        "nothing was sent twice: {calls:?}"
    );
    for i in 0..30 {
        let subject = format!("Proc {i}");
        if !unknown.contains(&subject) {
            assert_eq!(calls.get(&subject), Some(&1), "{subject} was sent once");
        }
    }
    // Only what the killed leader had claimed can be Unknown (at most its concurrency).
    assert!(unknown.len() <= 8, "{unknown:?}");

    // The new leader counted each of them as a failed Email, by reason.
    let text = second.metrics().await.unwrap();
    let counted: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("kmailops_emails_failed_total{")
                && l.contains("reason=\"OutcomeUnknown\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, unknown.len() as f64, "{unknown:?}: {text}");
    eprintln!(
        "after kill -9: {} Unknown, counted {counted}",
        unknown.len()
    );
    let _ = second.terminate().await;
}
