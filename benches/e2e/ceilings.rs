//! The two ceilings of this machine, measured with the operator's own kinds of calls and at
//! its concurrency: API writes (server-side apply of an Email's status) and provider sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use kmailops::api::{Email, EmailPhase, EmailStatus, ProviderKind};
use kmailops::context::FIELD_MANAGER;
use kmailops::controllers::email::status;
use kmailops::message::OutgoingMessage;
use kmailops::provider::Provider;

use crate::{bench_email, percentile};

/// What one round of the API ceiling measured.
#[derive(Clone, Debug)]
pub struct ApiRound {
    /// Email creates per second while the objects were made (for reference).
    pub creates_per_s: f64,
    /// Status writes per second straight to the API server.
    pub writes_per_s: f64,
    /// The same through the bench proxy the operator talks to.
    pub writes_per_s_via_proxy: f64,
    /// Median latency of one status write at a time, straight and through the proxy.
    pub single_p50_ms: f64,
    pub single_p50_ms_via_proxy: f64,
}

/// The API ceiling: the best of its rounds. Other load on a shared machine only ever lowers
/// a round, so the best one is the closest to what the machine can do.
#[derive(Clone, Debug)]
pub struct ApiCeiling {
    pub rounds: Vec<ApiRound>,
}

impl ApiCeiling {
    fn best(&self, f: impl Fn(&ApiRound) -> f64) -> f64 {
        self.rounds.iter().map(f).fold(f64::NAN, f64::max)
    }
    pub fn writes_per_s(&self) -> f64 {
        self.best(|r| r.writes_per_s)
    }
    pub fn writes_per_s_via_proxy(&self) -> f64 {
        self.best(|r| r.writes_per_s_via_proxy)
    }
}

/// The status the operator writes when an Email is Sent, for `email`.
fn sent_status(email: &Email, message_id: &str) -> EmailStatus {
    let now = Time(Timestamp::now());
    let mut status = EmailStatus {
        delivery_hash: Some(format!("{:064x}", 0xbe4c_u64)),
        message_id: Some(message_id.to_string()),
        provider: Some(ProviderKind::MailerSend),
        sender_config: Some(format!(
            "{}/mailersend",
            email.namespace().unwrap_or_default()
        )),
        attempts: Some(1),
        last_attempt_time: Some(now.clone()),
        sent_time: Some(now),
        ..Default::default()
    };
    let message = format!("sent through the bench sender as {message_id}");
    status::settle(
        email,
        &mut status,
        EmailPhase::Sent,
        "Sent",
        &message,
        Vec::new(),
    );
    status
}

/// One status write, exactly as `kmailops::controllers::email::status` makes it.
pub async fn write_status(api: &Api<Email>, email: &Email, message_id: &str) -> anyhow::Result<()> {
    let patch = status::status_patch(
        email.metadata.uid.as_deref(),
        &sent_status(email, message_id),
    )
    .context("the status patch")?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch_status(&email.name_any(), &params, &Patch::<()>::Json(patch))
        .await
        .with_context(|| format!("status write of Email {}", email.name_any()))?;
    Ok(())
}

/// Writes each given Email's status once at `concurrency`; returns writes per second.
async fn write_all(api: &Api<Email>, emails: &[&Email], concurrency: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    stream::iter(emails.iter().enumerate())
        .map(|(i, email)| async move { write_status(api, email, &format!("ceiling-{i}")).await })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    Ok(emails.len() as f64 / started.elapsed().as_secs_f64())
}

/// One round: creates `n` Emails in `ns` (which no operator watches) and gives each its first
/// status write, as the operator does, at `concurrency`: every other Email straight to the API
/// server, the rest through the proxy (first-time writes cost more than later ones, so both
/// paths get the same kind). `proxy_first` swaps the order of the two halves between rounds.
/// Then single writes both ways, alternating which goes first, and the Emails are deleted.
pub async fn api_round(
    direct: &Client,
    via_proxy: &Client,
    ns: &str,
    n: usize,
    concurrency: usize,
    proxy_first: bool,
) -> anyhow::Result<ApiRound> {
    let api: Api<Email> = Api::namespaced(direct.clone(), ns);
    let proxy_api: Api<Email> = Api::namespaced(via_proxy.clone(), ns);

    let started = Instant::now();
    let pp = PostParams::default();
    let emails: Vec<Email> = stream::iter(0..n)
        .map(|i| {
            let (api, pp) = (&api, &pp);
            async move {
                api.create(pp, &bench_email(&format!("ceiling-{i:05}"), i))
                    .await
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .context("creating the Emails for the API ceiling")?;
    let creates_per_s = n as f64 / started.elapsed().as_secs_f64();

    // Every other Email straight, the rest through the proxy.
    let straight: Vec<&Email> = emails.iter().step_by(2).collect();
    let proxied: Vec<&Email> = emails.iter().skip(1).step_by(2).collect();
    let (writes_per_s, writes_per_s_via_proxy) = if proxy_first {
        let p = write_all(&proxy_api, &proxied, concurrency).await?;
        (write_all(&api, &straight, concurrency).await?, p)
    } else {
        let d = write_all(&api, &straight, concurrency).await?;
        (d, write_all(&proxy_api, &proxied, concurrency).await?)
    };

    // One write at a time, alternating path and order, so both see the same background load.
    let (mut one_straight, mut one_proxied) = (Vec::new(), Vec::new());
    for (i, email) in emails.iter().take(200).enumerate() {
        for proxy in [i % 2 == 0, i % 2 != 0] {
            let (target, samples) = if proxy {
                (&proxy_api, &mut one_proxied)
            } else {
                (&api, &mut one_straight)
            };
            let t = Instant::now();
            write_status(target, email, &format!("single-{i}-{proxy}")).await?;
            samples.push(t.elapsed());
        }
    }

    // Gone again, so the API server's caches hold only what the end-to-end run makes.
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .context("deleting the ceiling Emails")?;

    Ok(ApiRound {
        creates_per_s,
        writes_per_s,
        writes_per_s_via_proxy,
        single_p50_ms: ms(percentile(&mut one_straight, 50.0)),
        single_p50_ms_via_proxy: ms(percentile(&mut one_proxied, 50.0)),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends `message` `n` times through `provider` at `concurrency`; returns sends per second.
pub async fn provider_sends(
    provider: Arc<dyn Provider>,
    message: &OutgoingMessage,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    stream::iter(0..n)
        .map(|_| {
            let provider = provider.clone();
            async move { provider.send(message).await }
        })
        .buffer_unordered(concurrency)
        .map_err(|e| anyhow::anyhow!("a send to the mock provider failed: {}", e.message))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
