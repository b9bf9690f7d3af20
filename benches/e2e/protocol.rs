//! The protocol's own limit on this machine: per Email, exactly the requests the operator must
//! make (create the EmailDelivery, call the provider, apply the EmailDelivery's outcome, write
//! the Email's status, create the Event), at the operator's concurrency and through the same
//! proxy, with no controller around them: no watches, no queue, no decisions. What the
//! operator reaches end to end is compared with this, so the figure says what the controller
//! machinery costs rather than how busy the machine was.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Semaphore;

use kmailops::api::{DeliveryPhase, Email, EmailDelivery, EmailDeliveryStatus, ProviderKind};
use kmailops::events::{EventPublisher, Reporter};
use kmailops::ledger;
use kmailops::message::OutgoingMessage;
use kmailops::provider::Provider;

use crate::{bench_email, percentile};

/// What one round measured.
#[derive(Clone, Debug)]
pub struct ProtocolRound {
    /// Emails per second through the whole chain.
    pub per_s: f64,
    /// One Email's chain, first request to last: median and 99th percentile.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The limit: the best of its rounds (other load only ever lowers a round).
#[derive(Clone, Debug, Default)]
pub struct ProtocolLimit {
    pub rounds: Vec<ProtocolRound>,
}

impl ProtocolLimit {
    pub fn per_s(&self) -> f64 {
        self.rounds.iter().map(|r| r.per_s).fold(f64::NAN, f64::max)
    }
}

/// Everything one round needs.
pub struct Setup<'a> {
    /// The client the operator would use (through the bench proxy).
    pub client: &'a Client,
    /// For creating and deleting the round's Emails, outside the measurement.
    pub direct: &'a Client,
    pub namespace: &'a str,
    pub n: usize,
    /// Emails in progress at once (the operator's reconcile workers).
    pub concurrency: usize,
    /// Provider calls at once (the operator's send slots for one sender).
    pub send_concurrency: usize,
    pub provider: Arc<dyn Provider>,
    pub message: &'a OutgoingMessage,
}

/// One round: `n` fresh Emails (created before the clock starts), then the chain for each.
pub async fn round(s: &Setup<'_>) -> anyhow::Result<ProtocolRound> {
    let emails_api: Api<Email> = Api::namespaced(s.direct.clone(), s.namespace);
    let pp = PostParams::default();
    let emails: Vec<Email> = stream::iter(0..s.n)
        .map(|i| {
            let (api, pp) = (&emails_api, &pp);
            async move {
                api.create(pp, &bench_email(&format!("protocol-{i:05}"), i))
                    .await
            }
        })
        .buffer_unordered(s.concurrency)
        .try_collect()
        .await
        .context("creating the Emails for the protocol limit")?;

    let deliveries: Api<EmailDelivery> = Api::namespaced(s.client.clone(), s.namespace);
    let status_api: Api<Email> = Api::namespaced(s.client.clone(), s.namespace);
    let events = EventPublisher::new(
        s.client.clone(),
        Reporter {
            controller: "kmailops.io/bench".into(),
            instance: "bench-protocol".into(),
        },
    );
    let slots = Semaphore::new(s.send_concurrency);
    let started = Instant::now();
    let mut chains: Vec<Duration> = stream::iter(emails.iter())
        .map(|email| {
            let (deliveries, status_api, events, slots) =
                (&deliveries, &status_api, &events, &slots);
            async move {
                let t = Instant::now();
                one_email(s, email, deliveries, status_api, events, slots).await?;
                Ok::<_, anyhow::Error>(t.elapsed())
            }
        })
        .buffer_unordered(s.concurrency)
        .try_collect()
        .await?;
    let per_s = s.n as f64 / started.elapsed().as_secs_f64();

    // Gone again, so the API server's caches hold only what the end-to-end run makes.
    let direct_deliveries: Api<EmailDelivery> = Api::namespaced(s.direct.clone(), s.namespace);
    direct_deliveries
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .context("deleting the protocol round's EmailDeliveries")?;
    emails_api
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .context("deleting the protocol round's Emails")?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(ProtocolRound {
        per_s,
        p50_ms: ms(percentile(&mut chains, 50.0)),
        p99_ms: ms(percentile(&mut chains, 99.0)),
    })
}

/// The operator's requests for one Email that is sent at the first attempt.
async fn one_email(
    s: &Setup<'_>,
    email: &Email,
    deliveries: &Api<EmailDelivery>,
    status_api: &Api<Email>,
    events: &EventPublisher,
    slots: &Semaphore,
) -> anyhow::Result<()> {
    let name = email.name_any();
    let hash = format!("{:064x}", 0xbe4c_u64);
    let key = ledger::ledger_key(&hash, None);
    let entry_name = ledger::entry_name(&name, &key);
    let claimed = ledger::claim_new(
        deliveries,
        ledger::NewEntry {
            namespace: s.namespace,
            email_name: &name,
            email_uid: email.metadata.uid.as_deref().unwrap_or_default(),
            delivery_hash: &hash,
            key: &key,
            sender_config: "bench-protocol/mailersend",
            recipient_count: 1,
            retry_token: None,
        },
        "bench-protocol",
        Duration::from_secs(300),
    )
    .await
    .with_context(|| format!("claiming {entry_name}"))?;
    let ledger::Claim::Won(entry) = claimed else {
        anyhow::bail!("{entry_name} existed before the protocol round");
    };

    let receipt = {
        let _slot = slots.acquire().await?;
        s.provider
            .send(s.message)
            .await
            .map_err(|e| anyhow::anyhow!("a send to the mock provider failed: {}", e.message))?
    };

    let outcome = EmailDeliveryStatus {
        observed_generation: entry.metadata.generation,
        phase: Some(DeliveryPhase::Sent),
        provider: Some(ProviderKind::MailerSend),
        attempts: Some(1),
        reason: Some(ledger::reasons::SENT.into()),
        message_id: Some(receipt.message_id.clone()),
        sent_time: Some(Time(Timestamp::now())),
        ..Default::default()
    };
    ledger::record(deliveries, &entry_name, &outcome)
        .await
        .with_context(|| format!("recording {entry_name}"))?;

    crate::ceilings::write_status(status_api, email, &receipt.message_id).await?;

    let event = Event {
        type_: EventType::Normal,
        reason: "Sent".into(),
        note: Some(format!(
            "sent through bench-protocol/mailersend as {}",
            receipt.message_id
        )),
        action: "Deliver".into(),
        secondary: None,
    };
    events
        .publish(&event, &email.object_ref(&()))
        .await
        .with_context(|| format!("the Event of Email {name}"))?;
    Ok(())
}
