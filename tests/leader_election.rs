//! Leader election on the Lease stand-in of the real API server: two replicas, one leader.
//! Once with two replicas inside this test process (own clients and identities), once with two
//! `kmailops run` processes that reach the server through the loopback proxy of
//! tests/support/api_proxy.rs (the testenv server serves Secrets only through the shim), the
//! leader stopped by SIGTERM.

mod support;

use std::collections::BTreeSet;
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

/// One `kmailops run` process, talking to the test API server through the loopback proxy.
struct Process {
    child: std::process::Child,
}

impl Process {
    fn start(kubeconfig: &std::path::Path, ns: &str, log: &std::path::Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kmailops"))
            .args(["run", "--namespace", ns, "--metrics-addr", "off"])
            .args([
                "--leader-election-namespace",
                ns,
                "--max-concurrent-sends",
                "4",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kmailops run");
        Self { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
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
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_operator_processes_hand_over_on_sigterm_without_sending_anything_twice() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "leader-procs").await;
    mock.always(Reply::Slow(Duration::from_millis(300)));
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
    let only_first = claimers(&ledger).await;
    assert_eq!(
        only_first.len(),
        1,
        "only the leader claims: {only_first:?}"
    );

    let status = first.terminate().await;
    assert!(
        status.success(),
        "a SIGTERM'd leader exits cleanly: {status:?}"
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
    let all = claimers(&ledger).await;
    assert_eq!(all.len(), 2, "the standby took over the rest: {all:?}");
    assert!(all.iter().any(|c| c.contains(&second.pid().to_string())));
    let _ = second.terminate().await;
}
