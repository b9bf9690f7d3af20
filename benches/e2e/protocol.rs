//! The protocol's own limit on this machine: per Email, exactly the requests the operator must
//! make (create the EmailDelivery, call the provider, apply the EmailDelivery's outcome, write
//! the Email's status, create the Event), at the operator's concurrency and through the same
//! proxy, with no controller around them: no watches, no queue, no decisions. What the
//! operator reaches end to end is compared with this, so the figure says what the controller
//! machinery costs rather than how busy the machine was.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Semaphore;

use kmailops::api::{DeliveryPhase, Email, EmailDelivery, EmailDeliveryStatus, ProviderKind};
use kmailops::events::{EventPublisher, Reporter};
use kmailops::ledger;
use kmailops::message::OutgoingMessage;
use kmailops::provider::Provider;

use crate::speed_probe::{Speed, SpeedProbe};
use crate::{bench_email, percentile};

/// What one round measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProtocolRound {
    /// Emails per second through the whole chain.
    pub per_s: f64,
    /// One Email's chain, first request to last: median and 99th percentile.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU the API server and etcd spent per Email during the round.
    pub server_cpu_ms_per_email: f64,
    /// Whether the Emails were created before the clock started.
    pub precreated: bool,
    /// How fast the machine was meanwhile (`speed_probe`).
    #[serde(default)]
    pub speed: Speed,
}

/// The limit: the best of its rounds (other load only ever lowers a round).
#[derive(Clone, Debug, Default)]
pub struct ProtocolLimit {
    pub rounds: Vec<ProtocolRound>,
}

impl ProtocolLimit {
    /// The limit under the end-to-end run's input (creates in the window).
    pub fn per_s(&self) -> f64 {
        self.best(false)
    }

    /// The best round of one kind.
    pub fn best(&self, precreated: bool) -> f64 {
        self.rounds
            .iter()
            .filter(|r| r.precreated == precreated)
            .map(|r| r.per_s)
            .fold(f64::NAN, f64::max)
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
    /// CPU seconds the API server and etcd have used so far.
    pub server_cpu: &'a (dyn Fn() -> f64 + Sync),
}

/// One round, under the same input as the end-to-end run: `n` fresh Emails created at the
/// bench's create concurrency inside the measured window (the end-to-end figure counts from the
/// first create too), a watch of the namespace's Emails like the one the bench times Sent
/// with, and each Email's chain started as soon as it is created.
///
/// `precreated`: the Emails are all created before the clock starts instead (the definition
/// of the limit before session 6, kept as a second figure: it leaves the creates out of the
/// protocol's time but not out of the operator's).
pub async fn round(s: &Setup<'_>, precreated: bool) -> anyhow::Result<ProtocolRound> {
    let emails_api: Api<Email> = Api::namespaced(s.direct.clone(), s.namespace);
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

    let watch = {
        let api = emails_api.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            while stream.next().await.is_some() {}
        })
    };
    // A control, not the limit: PROTOCOL_OPERATOR_WATCHES=1 also opens the operator's two
    // watches (its Emails and EmailDeliveries, through the proxy as it opens them), so a round
    // shows what serving them costs the API server per Email.
    let operator_watches =
        (std::env::var("PROTOCOL_OPERATOR_WATCHES").as_deref() == Ok("1")).then(|| {
            let emails: Api<Email> = Api::namespaced(s.client.clone(), s.namespace);
            let deliveries = deliveries.clone();
            tokio::spawn(async move {
                let emails = watcher(emails, watcher::Config::default()).default_backoff();
                let deliveries = watcher(deliveries, watcher::Config::default()).default_backoff();
                futures::pin_mut!(emails, deliveries);
                loop {
                    tokio::select! {
                        e = emails.next() => if e.is_none() { break },
                        d = deliveries.next() => if d.is_none() { break },
                    }
                }
            })
        });
    // The watch's initial list first, as in the end-to-end run.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (created_tx, created_rx) = tokio::sync::mpsc::channel::<Email>(s.n.max(1));
    let create = async {
        let pp = PostParams::default();
        stream::iter(0..s.n)
            .map(|i| {
                let (api, pp, tx) = (&emails_api, &pp, &created_tx);
                async move {
                    let email = api
                        .create(pp, &bench_email(&format!("protocol-{i:05}"), i))
                        .await?;
                    let _ = tx.send(email).await;
                    Ok::<_, kube::Error>(())
                }
            })
            .buffer_unordered(s.concurrency)
            .try_collect::<Vec<()>>()
            .await
            .context("creating the Emails for the protocol limit")?;
        drop(created_tx);
        Ok::<_, anyhow::Error>(())
    };
    let chains = async {
        stream::unfold(created_rx, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        })
        .map(|email| {
            let (deliveries, status_api, events, slots) =
                (&deliveries, &status_api, &events, &slots);
            async move {
                let t = Instant::now();
                one_email(s, &email, deliveries, status_api, events, slots).await?;
                Ok::<_, anyhow::Error>(t.elapsed())
            }
        })
        .buffer_unordered(s.concurrency)
        .try_collect::<Vec<Duration>>()
        .await
    };
    let (started, server_cpu_before, probe, mut chains) = if precreated {
        create.await?;
        let (started, cpu, probe) = (Instant::now(), (s.server_cpu)(), SpeedProbe::start());
        (started, cpu, probe, chains.await?)
    } else {
        let (started, cpu, probe) = (Instant::now(), (s.server_cpu)(), SpeedProbe::start());
        let (created, chains) = tokio::join!(create, chains);
        created?;
        (started, cpu, probe, chains?)
    };
    let per_s = s.n as f64 / started.elapsed().as_secs_f64();
    let server_cpu_ms_per_email = ((s.server_cpu)() - server_cpu_before) * 1000.0 / s.n as f64;
    let speed = probe.finish();
    watch.abort();
    if let Some(w) = operator_watches {
        w.abort();
    }

    // Gone again, so the API server's caches hold only what the end-to-end run makes. Straight
    // to the API server, and tried again: at N=10000 one collection delete can outlast a
    // connection, and a lost clean-up must not lose the run's report.
    let direct_deliveries: Api<EmailDelivery> = Api::namespaced(s.direct.clone(), s.namespace);
    let direct_emails: Api<Email> = Api::namespaced(s.direct.clone(), s.namespace);
    delete_all(&direct_deliveries)
        .await
        .context("deleting the protocol round's EmailDeliveries")?;
    delete_all(&direct_emails)
        .await
        .context("deleting the protocol round's Emails")?;
    delete_events(s.direct, s.namespace)
        .await
        .context("deleting the protocol round's Events")?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(ProtocolRound {
        per_s,
        p50_ms: ms(percentile(&mut chains, 50.0)),
        p99_ms: ms(percentile(&mut chains, 99.0)),
        server_cpu_ms_per_email,
        precreated,
        speed,
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

/// Deletes every object of `api`, trying up to three times.
pub async fn delete_all<K>(api: &Api<K>) -> Result<(), kube::Error>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned + kube::Resource,
{
    let mut tries = 0;
    loop {
        match api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if tries >= 2 => return Err(e),
            Err(e) => {
                tries += 1;
                eprintln!("[bench] deleting a collection failed ({e}); trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Deletes the Events of `namespace`. Every round leaves one per Email, and the test API
/// server keeps them (a stand-in kind: no event TTL as a real API server has), so without
/// this each round would be served from a larger cache and heap than the one before it,
/// and the later rounds of a run, end to end or protocol, would pay for the earlier ones.
pub async fn delete_events(client: &Client, namespace: &str) -> Result<(), kube::Error> {
    delete_all(&Api::<k8s_openapi::api::events::v1::Event>::namespaced(
        client.clone(),
        namespace,
    ))
    .await
}

// ---- from a process of its own --------------------------------------------------------------

/// Set to a [`ChildRequest`] (JSON), it makes the bench binary run one protocol round and
/// print its [`ProtocolRound`] (JSON) instead of the bench.
pub const CHILD_ENV: &str = "BENCH_PROTOCOL_CHILD";

/// One round for a child process to run.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ChildRequest {
    /// The test server's own kubeconfig (for the creates, the clean-up and the pid files).
    pub kubeconfig: PathBuf,
    /// The kubeconfig the operator is given: through the bench proxy.
    pub proxy_kubeconfig: PathBuf,
    /// The bench sender's manifest (the mock provider's address is in it).
    pub sender: serde_json::Value,
    pub namespace: String,
    pub n: usize,
    pub concurrency: usize,
    pub send_concurrency: usize,
}

/// The round of `request`, run by a new process of this same program. The operator is a
/// process of its own: its requests pay for waking another process, for its own runtime and
/// for crossing to the proxy, which the bench's in-process round does not. This round pays
/// for the same, so what is left between it and the end-to-end run is the controller's.
pub async fn round_in_own_process(request: &ChildRequest) -> anyhow::Result<ProtocolRound> {
    let program = std::env::current_exe().context("the bench's own program")?;
    let output = tokio::process::Command::new(&program)
        .env(CHILD_ENV, serde_json::to_string(request)?)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("starting {}", program.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "the protocol client process failed ({})",
        output.status
    );
    serde_json::from_slice(&output.stdout).context("the protocol client process's answer")
}

/// The child's side of [`round_in_own_process`].
pub async fn child_main(request: &std::ffi::OsStr) -> anyhow::Result<()> {
    kmailops::provider::http::install_crypto_provider();
    let request: ChildRequest = serde_json::from_str(
        request
            .to_str()
            .context("the protocol client's request is not UTF-8")?,
    )
    .context("the protocol client's request")?;
    let direct =
        kube::client::ClientBuilder::try_from(crate::load_config(&request.kubeconfig).await?)?
            .with_layer(&crate::CoreStandInLayer)
            .build();
    let via_proxy = Client::try_from(crate::load_config(&request.proxy_kubeconfig).await?)?;
    let (provider, message) = crate::bench_provider(&request.sender)?;
    let kubeconfig = request.kubeconfig.clone();
    let setup = Setup {
        client: &via_proxy,
        direct: &direct,
        namespace: &request.namespace,
        n: request.n,
        concurrency: request.concurrency,
        send_concurrency: request.send_concurrency,
        provider,
        message: &message,
        server_cpu: &move || crate::testenv_cpu(&kubeconfig).values().sum(),
    };
    let round = round(&setup, false).await?;
    println!("{}", serde_json::to_string(&round)?);
    Ok(())
}
