//! Leader election on the Lease stand-in of the real API server: two replicas, one leader.
//! The replicas run in this test process with their own clients and identities (the testenv
//! server serves Secrets only through the test client's shim, so the binary itself can not be
//! pointed at it); each is stopped the way SIGTERM stops the binary.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use support::mock_mailersend::Reply;
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailDelivery, EmailPhase};
use kmailops::email::ledger::CLAIMED_BY;

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
    mock.always(Reply::Slow(Duration::from_millis(300)));
    let client = env.client();
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);
    let ledger: Api<EmailDelivery> = Api::namespaced(client.clone(), &ns);

    let first = Operator::start_replica(env.client(), &ns);
    // Let the first replica take the Lease before the second one starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = Operator::start_replica(env.client(), &ns);

    let mut yaml = String::new();
    for i in 0..30 {
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
    assert!(mock.calls() < 30, "stopped too late to be mid-batch");

    // Stop the leader the way SIGTERM does: its sends in flight finish and are recorded.
    let first_identity = first.identity.clone();
    first.stop().await;

    for i in 0..30 {
        wait_for(
            &emails,
            &format!("batch-{i:02}"),
            phase_is(EmailPhase::Sent),
            Duration::from_secs(90),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mock.calls(), 30, "every Email sent exactly once");
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
        30
    );
    second.stop().await;
}
