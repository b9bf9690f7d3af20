//! End-to-end benchmark: `kmailops run` (the release binary) against a real API server and a
//! local MailerSend-compatible provider (Postmark-compatible with `BENCH_PROVIDER=postmark`)
//! with a fixed latency. Run it with `scripts/bench.sh`,
//! which builds everything, starts a private test API server and passes:
//!
//! - `BENCH_KUBECONFIG`: kubeconfig of that server (written by `k8s-testenv.sh start`; the
//!   server's certificate and key are in `pki/` next to it)
//! - `KMAILOPS_BIN`: the operator binary to run
//! - `N` (default 2000), `LATENCY_MS` (default 50), `MAX_CONCURRENT_SENDS` (default 16, the
//!   operator's default), `BENCH_OUT` (default `target/bench`)
//!
//! Phases: the API write ceiling, the provider ceiling, the protocol limit (the operator's
//! requests per Email without the operator), N Emails end to end, a restart with those N
//! Emails Sent, the same restart with 100 unrelated Secrets of 512 KiB each in the cluster
//! (Helm keeps releases in Secrets like these; the operator must not hold their data), and an
//! open loop (Emails created at half the protocol limit for `OPEN_LOOP_S` seconds); then the
//! API ceiling and the protocol limit again, a second end-to-end round from the same empty
//! start, and more sets (`SETS`, default 5 in all) alternating which round goes first. Every
//! round starts from an empty namespace: no Emails, ledger entries or Events. Emails/s end to
//! end is the best of its rounds, as the limit is the best of its; the ratio to the limit is
//! the median over the sets of each end-to-end round over the protocol round next to it.
//! Results go to stdout (a table) and `$BENCH_OUT/e2e.json`. With `PAIRS=R`, only paired rounds
//! run instead (see `pairs`), with `KMAILOPS_BIN_B` as a second operator binary.

mod ceilings;
mod gc_trace;
mod mock_provider;
mod pairs;
mod procstat;
mod protocol;
mod proxy;
mod speed_probe;

// The tests' Secret/ConfigMap shim, used as it is so the bench rewrites exactly what the tests
// do. Only its layer is used here, so the rest would be dead code in this crate; `cargo check
// --benches` also builds its unit tests' imports without the tests themselves.
#[allow(dead_code, unused_imports)]
#[path = "../../tests/support/core_standin.rs"]
mod core_standin;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

use kmailops::api::{Email, EmailDelivery, EmailPhase, EmailSenderConfig};
use kmailops::message::{OutgoingMessage, RenderedContent, build_message};
use kmailops::provider::{Credentials, SecretValue, build_provider, http_client};

use core_standin::CoreStandInLayer;
use mock_provider::MockProvider;
use proxy::{Counts, Proxy};

/// Where the operator under test works (it is started with `--namespace bench`).
const NS: &str = "bench";
/// Where the API ceiling is measured: no operator watches it.
const CEILING_NS: &str = "bench-ceiling";
/// Where the protocol limit is measured: no operator watches it either.
const PROTOCOL_NS: &str = "bench-protocol";
const SENDER: &str = "mailersend";
/// Name of the proxy's threads (at most 15 characters: Linux truncates thread names).
const PROXY_THREADS: &str = "bench-proxy";

#[derive(Clone)]
struct Settings {
    n: usize,
    latency: Duration,
    /// `--max-concurrent-sends`: provider calls at once.
    send_concurrency: usize,
    /// Reconciles at once: the operator runs twice as many as it may send (controller.rs).
    reconcile_concurrency: usize,
    /// How long the open-loop run creates Emails (`OPEN_LOOP_S`, 0 skips it).
    open_loop: Duration,
    /// How long the open loop runs at its rate before the Emails it measures
    /// (`OPEN_LOOP_WARMUP_S`): the operator's start (its lists, first health check) is not
    /// the steady stream the figure is about.
    open_loop_warmup: Duration,
    /// Spinning processes scripts/bench.sh runs beside the measurement (`BUSY_CORES`).
    busy_cores: usize,
    /// Paired rounds instead of the whole bench (`PAIRS`, 0: the whole bench); see `pairs`.
    pairs: usize,
    /// Sets of a protocol round and an end-to-end round next to each other in the whole
    /// bench (`SETS`, at least 2); `ratio_to_protocol` is the median of their ratios.
    sets: usize,
    /// A second operator binary for the paired rounds (`KMAILOPS_BIN_B`).
    operator_bin_b: Option<PathBuf>,
    kubeconfig: PathBuf,
    operator_bin: PathBuf,
    out: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v} is not a valid number")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let path = |name: &str| -> anyhow::Result<PathBuf> {
            std::env::var_os(name)
                .map(PathBuf::from)
                .with_context(|| format!("{name} is not set: run this through scripts/bench.sh"))
        };
        let send_concurrency = env_or("MAX_CONCURRENT_SENDS", 16usize)?.max(1);
        Ok(Settings {
            n: env_or("N", 2000usize)?.max(1),
            latency: Duration::from_millis(env_or("LATENCY_MS", 50u64)?),
            send_concurrency,
            reconcile_concurrency: send_concurrency * 2,
            open_loop: Duration::from_secs(env_or("OPEN_LOOP_S", 60u64)?),
            open_loop_warmup: Duration::from_secs(env_or("OPEN_LOOP_WARMUP_S", 10u64)?),
            busy_cores: env_or("BUSY_CORES", 0usize)?,
            pairs: env_or("PAIRS", 0usize)?,
            sets: env_or("SETS", 5usize)?.max(2),
            operator_bin_b: std::env::var_os("KMAILOPS_BIN_B")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            kubeconfig: path("BENCH_KUBECONFIG")?,
            operator_bin: path("KMAILOPS_BIN")?,
            out: std::env::var_os("BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target/bench")),
        })
    }

    /// Bounds every wait, so a broken run ends instead of hanging: generous next to the
    /// slowest rate that would still be worth reporting (10 Emails/s).
    fn deadline(&self) -> Duration {
        Duration::from_secs(120) + Duration::from_millis(100 * self.n as u64)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Started by the bench itself to run one protocol round from a process of its own.
    if let Some(request) = std::env::var_os(protocol::CHILD_ENV) {
        return match protocol::child_main(&request).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("protocol client failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `cargo bench` passes `--bench`; there are no other arguments.
    match run(Settings::from_env()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: anyhow::Result<Settings>) -> anyhow::Result<()> {
    let s = settings?;
    kmailops::provider::http::install_crypto_provider();
    std::fs::create_dir_all(&s.out)?;
    let load_before = procstat::load_average();

    let config = load_config(&s.kubeconfig).await?;
    // The bench's own requests go straight to the server and are not counted.
    let client = ClientBuilder::try_from(config.clone())?
        .with_layer(&CoreStandInLayer)
        .build();
    install_crds(&client).await?;

    let pki = s
        .kubeconfig
        .parent()
        .context("BENCH_KUBECONFIG has no folder")?
        .join("pki");
    // The proxy gets threads of its own, so that its CPU time, which a real deployment would
    // not spend, can be told apart from the rest of this process. The runtime is leaked: it
    // must outlive every use and cannot be dropped inside this async context.
    let proxy_runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(PROXY_THREADS)
            .enable_all()
            .build()?,
    ));
    let proxy = {
        let (config, pki) = (config.clone(), pki.clone());
        // The upstream client is built on the proxy's runtime: kube spawns its workers there.
        proxy_runtime
            .spawn(async move {
                let upstream = ClientBuilder::try_from(config)?
                    .with_layer(&CoreStandInLayer)
                    .build();
                Proxy::start(upstream, &pki.join("server.crt"), &pki.join("server.key")).await
            })
            .await??
    };
    let proxy_kubeconfig = s.out.join("operator.kubeconfig");
    write_proxy_kubeconfig(&s.kubeconfig, proxy.addr, &proxy_kubeconfig)?;
    let via_proxy = Client::try_from(load_config(&proxy_kubeconfig).await?)?;

    let kind = mock_provider::Kind::from_env()?;
    eprintln!("[bench] provider: {} (BENCH_PROVIDER)", kind.name());
    let mock = MockProvider::start(kind, s.latency).await?;

    let ceiling_round = |round: usize| {
        eprintln!(
            "[bench] API write ceiling, round {round}: {} first status writes at concurrency {}",
            s.n, s.reconcile_concurrency
        );
        ceilings::api_round(
            &client,
            &via_proxy,
            CEILING_NS,
            s.n,
            s.reconcile_concurrency,
            round.is_multiple_of(2),
        )
    };
    let mut api = ceilings::ApiCeiling {
        rounds: vec![ceiling_round(1).await?],
    };

    eprintln!(
        "[bench] provider ceiling: {} sends at concurrency {}, {} ms latency",
        s.n,
        s.send_concurrency,
        s.latency.as_millis()
    );
    let (provider, message) = bench_provider(&sender_json(&mock))?;
    let provider_per_s =
        ceilings::provider_sends(provider.clone(), &message, s.n, s.send_concurrency).await?;

    let protocol_setup = protocol::Setup {
        client: &via_proxy,
        direct: &client,
        namespace: PROTOCOL_NS,
        n: s.n,
        concurrency: s.reconcile_concurrency,
        send_concurrency: s.send_concurrency,
        provider,
        message: &message,
        server_cpu: &|| server_cpu(&s),
    };
    if s.pairs > 0 {
        // On demand: paired rounds only, to tell a change from the machine's noise.
        set_up_sender(&client, &mock).await?;
        let child = protocol::ChildRequest {
            kubeconfig: s.kubeconfig.clone(),
            proxy_kubeconfig: proxy_kubeconfig.clone(),
            sender: sender_json(&mock),
            namespace: PROTOCOL_NS.into(),
            n: s.n,
            concurrency: s.reconcile_concurrency,
            send_concurrency: s.send_concurrency,
        };
        let e2e = |settings: &Settings, round: usize| {
            let settings = settings.clone();
            let (client, proxy, mock, kubeconfig) = (&client, &proxy, &mock, &proxy_kubeconfig);
            async move {
                remove_emails_and_ledger(client).await?;
                end_to_end(&settings, client, proxy, mock, kubeconfig, round).await
            }
        };
        return pairs::run(&s, &protocol_setup, &child, e2e).await;
    }
    let protocol_round = |round: usize, precreated: bool| {
        eprintln!(
            "[bench] protocol limit, round {round}: {} Emails{} through create entry, send, record, status, Event at concurrency {}",
            s.n,
            if precreated {
                " (created before the clock)"
            } else {
                ""
            },
            s.reconcile_concurrency
        );
        protocol::round(&protocol_setup, precreated)
    };
    let mut protocol = protocol::ProtocolLimit {
        rounds: vec![protocol_round(1, false).await?],
    };

    eprintln!("[bench] end to end: {} Emails", s.n);
    set_up_sender(&client, &mock).await?;
    let e2e = end_to_end(&s, &client, &proxy, &mock, &proxy_kubeconfig, 1).await?;
    eprintln!("[bench] restart with {} Sent Emails", s.n);
    let first_restart = restart(&s, &proxy, &mock, &proxy_kubeconfig, "operator-2.log").await?;
    eprintln!(
        "[bench] restart with {UNRELATED_SECRETS} unrelated Secrets of {} KiB",
        UNRELATED_SECRET_BYTES / 1024
    );
    create_unrelated_secrets(&client).await?;
    let with_secrets = restart(&s, &proxy, &mock, &proxy_kubeconfig, "operator-3.log").await?;
    // Measured; they would otherwise load the open loop's start (the operator lists them).
    delete_unrelated_secrets(&client).await?;
    // The first round's Events too (its Emails stay: the open loop starts from them, as a
    // restart would), so the open loop is served from the cache the rounds start from.
    protocol::delete_events(&client, NS)
        .await
        .context("deleting the first round's Events")?;
    let open_loop = if s.open_loop.is_zero() {
        None
    } else {
        // Half the limit: a steady stream the operator can keep up with, so the latency
        // measured is what one Email sees, not the length of a queue.
        let rate = protocol.per_s() / 2.0;
        eprintln!(
            "[bench] open loop: {rate:.1} Emails/s for {} s after {} s of warm-up",
            s.open_loop.as_secs(),
            s.open_loop_warmup.as_secs()
        );
        Some(open_loop(&s, &client, &proxy_kubeconfig, rate).await?)
    };
    // A second round at the end: a round that other load on the machine slowed down would
    // make the ceiling too low and the ratio too flattering.
    api.rounds.push(ceiling_round(2).await?);
    protocol.rounds.push(protocol_round(2, false).await?);
    // The end-to-end run a second time, from the same start (no Emails, no ledger), after the
    // second protocol round as the first came after the first: the limit is the best of its
    // rounds, so Emails/s end to end is too. One run against the best of two measured the
    // machine's noise more than the operator (session 10: the same binary gave ratios from
    // 0.75 to 0.91 that way).
    eprintln!("[bench] end to end, round 2: {} Emails", s.n);
    remove_emails_and_ledger(&client).await?;
    let e2e_again = end_to_end(&s, &client, &proxy, &mock, &proxy_kubeconfig, 2).await?;
    // More sets, alternating which round goes first (the third has the end-to-end round
    // first), each pair next to each other. The headline ratio is the median of all sets'
    // ratios: rounds of the same work spread by a fifth on this machine and drift with its
    // hour, and a pair shares its hour (session 12: single best-of-two ratios spread from
    // 0.78 to 1.09 for one binary; session 14: with three sets, one round at its extreme
    // moved the median by a tenth).
    let mut sets = vec![
        PairedSet::new(&protocol.rounds[0], &e2e),
        PairedSet::new(&protocol.rounds[1], &e2e_again),
    ];
    let mut e2e_later = vec![e2e_again];
    for set in 3..=s.sets {
        let e2e_first = set % 2 == 1;
        eprintln!(
            "[bench] set {set} of {}: {}",
            s.sets,
            if e2e_first {
                "end to end, then the protocol"
            } else {
                "the protocol, then end to end"
            }
        );
        let mut protocol_this = None;
        if !e2e_first {
            protocol_this = Some(protocol_round(set, false).await?);
        }
        remove_emails_and_ledger(&client).await?;
        let e2e_this = end_to_end(&s, &client, &proxy, &mock, &proxy_kubeconfig, set).await?;
        let protocol_this = match protocol_this {
            Some(round) => round,
            None => protocol_round(set, false).await?,
        };
        sets.push(PairedSet::new(&protocol_this, &e2e_this));
        protocol.rounds.push(protocol_this);
        e2e_later.push(e2e_this);
    }
    protocol
        .rounds
        .push(protocol_round(s.sets + 1, true).await?);

    let report = Report {
        n: s.n,
        latency_ms: s.latency.as_millis() as u64,
        send_concurrency: s.send_concurrency,
        reconcile_concurrency: s.reconcile_concurrency,
        busy_cores: s.busy_cores,
        api,
        provider_per_s,
        protocol,
        open_loop,
        e2e,
        e2e_later,
        sets,
        restart: first_restart,
        with_secrets,
        load_before,
        load_after: procstat::load_average(),
    };
    report.print();
    let path = s.out.join("e2e.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report.json())? + "\n")?;
    eprintln!("[bench] wrote {}", path.display());
    Ok(())
}

// ---- set-up -------------------------------------------------------------------------------

async fn load_config(path: &Path) -> anyhow::Result<Config> {
    let kubeconfig =
        Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// The server's kubeconfig with the proxy as server: same CA (the proxy shows the server's
/// certificate) and the same client certificate (the proxy does not ask for it).
fn write_proxy_kubeconfig(original: &Path, proxy: SocketAddr, out: &Path) -> anyhow::Result<()> {
    let mut kubeconfig = Kubeconfig::read_from(original)?;
    for cluster in &mut kubeconfig.clusters {
        if let Some(c) = cluster.cluster.as_mut() {
            c.server = Some(format!("https://{proxy}"));
        }
    }
    std::fs::write(out, serde_yaml::to_string(&kubeconfig)?)?;
    Ok(())
}

async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kmailops::crds::all() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("kmailops-bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("installing CRD {name}"))?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not established after 30 s"))??;
    }
    Ok(())
}

/// The provider client and the message of the protocol rounds, from the bench sender's
/// manifest: built as the operator builds them for a bench Email.
pub fn bench_provider(
    sender: &serde_json::Value,
) -> anyhow::Result<(Arc<dyn kmailops::provider::Provider>, OutgoingMessage)> {
    let sender: EmailSenderConfig = serde_json::from_value(sender.clone())?;
    let provider = build_provider(
        &sender.spec,
        Credentials {
            secret: Some(SecretValue::new(mock_provider::TOKEN)),
            ..Credentials::default()
        },
        &http_client(),
    )?;
    let sample = bench_email("ceiling-sample", 0);
    let message = build_message(
        &sample.spec,
        &sender.spec,
        &format!("{NS}/{SENDER}"),
        RenderedContent {
            subject: sample.spec.subject.clone().unwrap_or_default(),
            text: sample.spec.text.clone(),
            html: None,
        },
        Vec::new(),
    )?;
    Ok((provider, message))
}

/// The Secret with the mock's token.
const TOKEN_SECRET: &str = "mailersend-token";

fn sender_json(mock: &MockProvider) -> serde_json::Value {
    let (field, provider) = mock.sender_spec(TOKEN_SECRET);
    let mut sender = json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "EmailSenderConfig",
        "metadata": {"name": SENDER, "namespace": NS},
        "spec": {
            "default": true,
            "sender": {"address": "shop@example.com", "name": "Example Shop"},
        },
    });
    sender["spec"][field] = provider;
    sender
}

/// One Email of the benchmark: literal content, one recipient, the namespace's default sender.
pub fn bench_email(name: &str, i: usize) -> Email {
    serde_json::from_value(json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "Email",
        "metadata": {"name": name},
        "spec": {
            "to": [format!("Reader {i} <reader{i}@example.org>")],
            "subject": format!("Benchmark message {i}"),
            "text": format!("Hello reader {i},\n\nthis message was sent by the kmailops benchmark.\n"),
        },
    }))
    .expect("the bench Email is a valid Email")
}

async fn set_up_sender(client: &Client, mock: &MockProvider) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let mut secret = Secret::default();
    secret.metadata.name = Some(TOKEN_SECRET.into());
    secret.data = Some(BTreeMap::from([(
        "token".to_string(),
        ByteString(mock_provider::TOKEN.as_bytes().to_vec()),
    )]));
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the token Secret")?;
    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), NS);
    let sender: EmailSenderConfig = serde_json::from_value(sender_json(mock))?;
    senders
        .create(&PostParams::default(), &sender)
        .await
        .context("creating the EmailSenderConfig")?;
    Ok(())
}

// ---- the operator process -------------------------------------------------------------------

struct Operator {
    child: tokio::process::Child,
    pid: u32,
    metrics: SocketAddr,
    http: reqwest::Client,
    started: Instant,
}

impl Operator {
    async fn spawn(s: &Settings, kubeconfig: &Path, log: &Path) -> anyhow::Result<Operator> {
        // A free port for /metrics and /readyz (released just before the operator binds it).
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log_file = std::fs::File::create(log)?;
        let started = Instant::now();
        let child = tokio::process::Command::new(&s.operator_bin)
            .args(["run", "--namespace", NS, "--log-format", "json"])
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .arg("--max-concurrent-sends")
            .arg(s.send_concurrency.to_string())
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // A failed bench must not leave an operator running.
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", s.operator_bin.display()))?;
        let pid = child.id().context("the operator exited at once")?;
        if let Some(file) = std::env::var_os("BENCH_OPERATOR_PID_FILE") {
            std::fs::write(file, pid.to_string())?;
        }
        Ok(Operator {
            child,
            pid,
            metrics,
            http: reqwest::Client::new(),
            started,
        })
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.metrics))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    async fn is_ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _)))
    }

    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if self.is_ready().await {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the operator exited before it was ready: {status}");
            }
            if Instant::now() > deadline {
                bail!("the operator was not ready within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A sample of the operator's own metrics: `name{labels}` -> value.
    async fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// The sum of every series of a counter (`name{...} value` lines), 0 when it has none.
    async fn metric_sum(&self, name: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        let prefix = format!("{name}{{");
        Some(
            text.lines()
                .filter_map(|l| l.strip_prefix(&prefix)?.rsplit_once("} "))
                .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
                .sum(),
        )
    }

    /// The operator's CPU seconds, its render workers' included.
    fn cpu_seconds(&self) -> f64 {
        procstat::cpu_seconds_with_children(self.pid).unwrap_or(f64::NAN)
    }

    fn peak_rss_mib(&self) -> f64 {
        procstat::peak_rss_mib(self.pid).unwrap_or(f64::NAN)
    }

    /// SIGTERM, as Kubernetes stops a pod; SIGKILL after 30 s.
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!("[bench] the operator ignored SIGTERM for 30 s; killing it");
                self.child.kill().await?;
            }
        }
        if let Some(file) = std::env::var_os("BENCH_OPERATOR_PID_FILE") {
            let _ = std::fs::remove_file(file);
        }
        Ok(())
    }
}

/// Waits until the proxy has seen no write for `quiet`, at most `max`.
async fn settle(proxy: &Proxy, quiet: Duration, max: Duration) {
    let deadline = Instant::now() + max;
    let writes = || proxy::total(&proxy.counts(), proxy::is_write);
    let (mut last, mut since) = (writes(), Instant::now());
    while Instant::now() < deadline && since.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = writes();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// The operator's look-ups at the provider, by provider and result.
const LOOKUPS: &str = "kmailops_provider_lookups_total";

/// The operator's count of Email reconciles.
const EMAIL_RECONCILES: &str = "kmailops_reconcile_duration_seconds_count{kind=\"Email\"}";

// ---- end to end ------------------------------------------------------------------------------

/// When each Email was first seen Sent, and with which Ready reason.
#[derive(Default)]
struct SentLog {
    at: HashMap<String, (Instant, String)>,
}

fn watch_sent(client: &Client, log: Arc<Mutex<SentLog>>) -> tokio::task::JoinHandle<()> {
    let api: Api<Email> = Api::namespaced(client.clone(), NS);
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let Ok(email) = event else { continue };
            let status = email.status.as_ref();
            if status.and_then(|s| s.phase) != Some(EmailPhase::Sent) {
                continue;
            }
            let reason = status
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.reason.clone())
                .unwrap_or_default();
            log.lock()
                .unwrap()
                .at
                .entry(email.name_any())
                .or_insert((Instant::now(), reason));
        }
    })
}

struct EndToEnd {
    emails_per_s: f64,
    wall_s: f64,
    create_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    sent_reasons: BTreeMap<String, usize>,
    requests: Counts,
    sends: u64,
    health_checks: u64,
    /// Writes the API server counted in the same window, minus the bench's own creates.
    apiserver_writes: Option<u64>,
    peak_rss_mib: f64,
    /// Resident memory when started and idle, before the first Email.
    rss_before_mib: f64,
    /// The operator's CPU seconds from its start, and from the first create, to the last Sent.
    cpu_s: f64,
    cpu_s_window: f64,
    /// Email reconciles during the run per Email (each watch event, requeue and wake-up is one).
    reconciles_per_email: f64,
    /// Look-ups at the provider per Email (`kmailops_provider_lookups_total`).
    lookups_per_email: f64,
    startup: Duration,
    /// CPU seconds of the API server, etcd and this bench process from the first create to
    /// the last Sent.
    other_cpu: BTreeMap<String, f64>,
    /// Share of the machine's CPU time (all cores) that was busy in the same window.
    machine_busy: f64,
    /// How fast the machine was while the Emails were under way (`speed_probe`).
    speed: speed_probe::Speed,
}

/// Every Email, ledger entry and Event of the end-to-end namespace, so that a later round
/// starts as the first did.
async fn remove_emails_and_ledger(client: &Client) -> anyhow::Result<()> {
    protocol::delete_all(&Api::<EmailDelivery>::namespaced(client.clone(), NS))
        .await
        .context("deleting the earlier round's EmailDeliveries")?;
    protocol::delete_all(&Api::<Email>::namespaced(client.clone(), NS))
        .await
        .context("deleting the earlier round's Emails")?;
    protocol::delete_events(client, NS)
        .await
        .context("deleting the earlier round's Events")?;
    Ok(())
}

impl EndToEnd {
    /// CPU the API server and etcd spent per Email in this round.
    fn server_cpu_ms_per_email(&self, n: usize) -> f64 {
        let server: f64 = ["apiserver", "etcd"]
            .iter()
            .filter_map(|k| self.other_cpu.get(*k))
            .sum();
        server * 1000.0 / n as f64
    }

    /// CPU the operator spent per Email during this round's window.
    fn operator_cpu_ms_per_email(&self, n: usize) -> f64 {
        self.cpu_s_window * 1000.0 / n as f64
    }
}

/// One end-to-end round (`round` names its operator log: `operator-1.log` for the first,
/// which the restarts follow, `operator-e2e-2.log` and `-3.log` for the later ones).
async fn end_to_end(
    s: &Settings,
    client: &Client,
    proxy: &Proxy,
    mock: &MockProvider,
    kubeconfig: &Path,
    round: usize,
) -> anyhow::Result<EndToEnd> {
    let log_path = if round == 1 {
        s.out.join("operator-1.log")
    } else {
        s.out.join(format!("operator-e2e-{round}.log"))
    };
    let mut operator = Operator::spawn(s, kubeconfig, &log_path).await?;
    let startup = operator.wait_ready(Duration::from_secs(60)).await?;
    // The sender's first reconcile (health check, status) belongs to start-up, not to the
    // Emails: wait for it, then for quiet.
    let senders: Api<EmailSenderConfig> = Api::namespaced(client.clone(), NS);
    let ready = |c: Option<&EmailSenderConfig>| {
        c.and_then(|c| c.status.as_ref()).is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(senders, SENDER, ready),
    )
    .await
    .context("the EmailSenderConfig did not become Ready within 30 s")??;
    settle(proxy, Duration::from_secs(1), Duration::from_secs(10)).await;

    let log = Arc::new(Mutex::new(SentLog::default()));
    let watch = watch_sent(client, log.clone());
    // Let the watch's initial list finish so no Sent event is missed or timed late.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let requests_before = proxy.counts();
    let calls_before = mock.calls();
    let apiserver_before = apiserver_writes(client).await;
    let cpu_before = operator.cpu_seconds();
    let reconciles_before = operator.metric(EMAIL_RECONCILES).await.unwrap_or(0.0);
    let lookups_before = operator.metric_sum(LOOKUPS).await.unwrap_or(0.0);
    let rss_before = procstat::rss_mib(operator.pid).unwrap_or(f64::NAN);
    let others_before = other_cpu(s);
    let machine_before = procstat::machine_ticks();
    let probe = speed_probe::SpeedProbe::start();

    let api: Api<Email> = Api::namespaced(client.clone(), NS);
    let created: Vec<(String, Instant)> = {
        let started = Instant::now();
        let pp = PostParams::default();
        let created = stream::iter(0..s.n)
            .map(|i| {
                let (api, pp) = (&api, &pp);
                async move {
                    let name = format!("bench-{i:05}");
                    let at = Instant::now();
                    api.create(pp, &bench_email(&name, i)).await?;
                    Ok::<_, kube::Error>((name, at))
                }
            })
            .buffer_unordered(s.reconcile_concurrency)
            .try_collect::<Vec<_>>()
            .await
            .context("creating the Emails")?;
        eprintln!(
            "[bench]   created {} Emails in {:.1} s",
            s.n,
            started.elapsed().as_secs_f64()
        );
        created
    };
    let first_create = created.iter().map(|(_, at)| *at).min().expect("n >= 1");
    let last_create = created.iter().map(|(_, at)| *at).max().expect("n >= 1");

    let deadline = Instant::now() + s.deadline();
    let mut last_report = Instant::now();
    loop {
        let sent = log.lock().unwrap().at.len();
        if sent >= s.n {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {sent} of {} Emails were Sent within {:?}; see {}",
                s.n,
                s.deadline(),
                log_path.display()
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("[bench]   {sent} of {} Sent", s.n);
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // CPU up to the last Sent, as the protocol round's ends with its last chain: the settling
    // below (2 s or more) would otherwise add the API server's and etcd's after-work (a
    // collector cycle finishing) to this round's cost per Email and not to the protocol's.
    let cpu_s = operator.cpu_seconds();
    let machine_after = procstat::machine_ticks();
    let others_after = other_cpu(s);
    let (mut latencies, last_sent, sent_reasons) = {
        let log = log.lock().unwrap();
        let mut reasons = BTreeMap::<String, usize>::new();
        for (_, reason) in log.at.values() {
            *reasons.entry(reason.clone()).or_default() += 1;
        }
        let latencies: Vec<Duration> = created
            .iter()
            .map(|(name, at)| log.at[name].0.saturating_duration_since(*at))
            .collect();
        let last = log.at.values().map(|(t, _)| *t).max().expect("n >= 1");
        (latencies, last, reasons)
    };
    watch.abort();
    let speed = probe.finish();
    let wall = last_sent.duration_since(first_create);

    // Writes that trail the last Sent (the sender's status, Events) still belong to the run.
    settle(proxy, Duration::from_secs(2), Duration::from_secs(20)).await;
    let requests = proxy::delta(&proxy.counts(), &requests_before);
    let calls = mock.calls().since(&calls_before);
    let apiserver_writes = match (apiserver_before, apiserver_writes(client).await) {
        (Some(before), Some(after)) => Some((after - before).saturating_sub(s.n as u64)),
        _ => None,
    };
    let reconciles =
        operator.metric(EMAIL_RECONCILES).await.unwrap_or(f64::NAN) - reconciles_before;
    let lookups = operator.metric_sum(LOOKUPS).await.unwrap_or(f64::NAN) - lookups_before;
    let machine_busy = procstat::share_between(machine_before, machine_after);
    let other_cpu = others_after
        .iter()
        .map(|(k, v)| (k.clone(), v - others_before.get(k).copied().unwrap_or(0.0)))
        .collect();
    let result = EndToEnd {
        emails_per_s: s.n as f64 / wall.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        create_s: last_create.duration_since(first_create).as_secs_f64(),
        p50_ms: percentile(&mut latencies, 50.0).as_secs_f64() * 1000.0,
        p99_ms: percentile(&mut latencies, 99.0).as_secs_f64() * 1000.0,
        max_ms: percentile(&mut latencies, 100.0).as_secs_f64() * 1000.0,
        sent_reasons,
        requests,
        sends: calls.sends,
        health_checks: calls.health_checks,
        apiserver_writes,
        peak_rss_mib: operator.peak_rss_mib(),
        rss_before_mib: rss_before,
        cpu_s,
        cpu_s_window: cpu_s - cpu_before,
        reconciles_per_email: reconciles / s.n as f64,
        lookups_per_email: lookups / s.n as f64,
        startup,
        other_cpu,
        machine_busy,
        speed,
    };
    operator.stop().await?;
    Ok(result)
}

// ---- open loop -------------------------------------------------------------------------------

/// Emails created at a fixed rate, each on its own schedule whatever the earlier ones do (an
/// open loop): the latency from creation to Sent that a user sees under a steady stream.
struct OpenLoop {
    rate_per_s: f64,
    /// Seconds at the rate before the measured Emails.
    warmup_s: u64,
    emails: usize,
    /// Creates that started more than 100 ms after their scheduled time (the bench itself
    /// could not keep the rate).
    late_creates: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The slowest Emails (name, create->Sent ms, created this many seconds after the first
    /// measured Email): where in the run the tail sits.
    slowest: Vec<(String, f64, f64)>,
    /// The API server's collector cycles that overlapped the measured Emails (`gc_trace`).
    server_gc: ServerGc,
}

/// What the API server's collector did while the open loop's measured Emails were under way.
#[derive(Default)]
struct ServerGc {
    cycles: usize,
    /// CPU that requests spent helping the mark, all cycles, ms.
    assist_ms: f64,
    /// The longest cycles: (seconds after the first measured Email, wall ms, assist ms).
    longest: Vec<(f64, f64, f64)>,
}

impl ServerGc {
    /// From the test server's trace (`bench.sh` starts it with `GODEBUG=gctrace=1`); empty
    /// when there is no trace.
    fn between(kubeconfig: &Path, from: std::time::SystemTime, to: std::time::SystemTime) -> Self {
        let (Some(pid), Some(dir)) = (testenv_pid(kubeconfig, "apiserver"), kubeconfig.parent())
        else {
            return ServerGc::default();
        };
        let cycles = gc_trace::cycles_between(&dir.join("apiserver.log"), pid, from, to);
        let offset = |at: std::time::SystemTime| match at.duration_since(from) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        let mut longest: Vec<(f64, f64, f64)> = cycles
            .iter()
            .map(|(at, c)| (offset(*at), c.wall_ms, c.assist_ms))
            .collect();
        longest.sort_by(|a, b| b.1.total_cmp(&a.1));
        longest.truncate(5);
        ServerGc {
            cycles: cycles.len(),
            assist_ms: cycles.iter().map(|(_, c)| c.assist_ms).sum(),
            longest,
        }
    }
}

async fn open_loop(
    s: &Settings,
    client: &Client,
    kubeconfig: &Path,
    rate_per_s: f64,
) -> anyhow::Result<OpenLoop> {
    anyhow::ensure!(
        rate_per_s.is_finite() && rate_per_s > 0.0,
        "no rate for the open loop"
    );
    let mut operator = Operator::spawn(s, kubeconfig, &s.out.join("operator-4.log")).await?;
    operator.wait_ready(Duration::from_secs(60)).await?;
    let log = Arc::new(Mutex::new(SentLog::default()));
    let watch = watch_sent(client, log.clone());
    // The restart's initial list and the watch's own list settle first.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let count = ((s.open_loop.as_secs_f64() * rate_per_s).round() as usize).max(1);
    // The warm-up's Emails come first, at the same rate, and are not measured.
    let warmup = (s.open_loop_warmup.as_secs_f64() * rate_per_s).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate_per_s);
    let api: Api<Email> = Api::namespaced(client.clone(), NS);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..warmup + count {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let api = api.clone();
        creates.spawn(async move {
            let name = if i < warmup {
                format!("warm-{i:05}")
            } else {
                format!("open-{:05}", i - warmup)
            };
            let at = Instant::now();
            let wall = std::time::SystemTime::now();
            let late = tokio::time::Instant::now().duration_since(due) > Duration::from_millis(100);
            api.create(&PostParams::default(), &bench_email(&name, i))
                .await
                .with_context(|| format!("creating Email {name}"))?;
            Ok::<_, anyhow::Error>((name, at, late, wall))
        });
    }
    let mut created = Vec::with_capacity(count);
    while let Some(joined) = creates.join_next().await {
        created.push(joined??);
    }

    let deadline = Instant::now() + s.deadline();
    loop {
        let all_sent = {
            let log = log.lock().unwrap();
            created.iter().all(|(name, ..)| log.at.contains_key(name))
        };
        if all_sent {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the open-loop Emails were not all Sent within {:?}",
                s.deadline()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    let done = std::time::SystemTime::now();
    let measured = || {
        created
            .iter()
            .filter(|(name, ..)| name.starts_with("open-"))
    };
    let first = measured().map(|(.., wall)| *wall).min().unwrap_or(done);
    let mut by_email: Vec<(String, Duration, f64)> = {
        let log = log.lock().unwrap();
        measured()
            .map(|(name, at, _, wall)| {
                let since_first = wall.duration_since(first).unwrap_or_default();
                (
                    name.clone(),
                    log.at[name].0.saturating_duration_since(*at),
                    since_first.as_secs_f64(),
                )
            })
            .collect()
    };
    operator.stop().await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    by_email.sort_by_key(|(_, d, _)| std::cmp::Reverse(*d));
    let slowest = by_email
        .iter()
        .take(10)
        .map(|(n, d, created_s)| (n.clone(), ms(*d), *created_s))
        .collect();
    let mut latencies: Vec<Duration> = by_email.iter().map(|(_, d, _)| *d).collect();
    Ok(OpenLoop {
        rate_per_s,
        warmup_s: s.open_loop_warmup.as_secs(),
        emails: count,
        late_creates: created
            .iter()
            .filter(|(name, _, late, _)| *late && name.starts_with("open-"))
            .count(),
        p50_ms: ms(percentile(&mut latencies, 50.0)),
        p99_ms: ms(percentile(&mut latencies, 99.0)),
        max_ms: ms(percentile(&mut latencies, 100.0)),
        slowest,
        server_gc: ServerGc::between(&s.kubeconfig, first, done),
    })
}

// ---- restart ---------------------------------------------------------------------------------

struct Restart {
    ready: Duration,
    idle: Duration,
    requests: Counts,
    provider_calls: u64,
    sends: u64,
    peak_rss_mib: f64,
    /// Resident memory once idle: the caches full, nothing in flight.
    idle_rss_mib: f64,
    cpu_s: f64,
}

async fn restart(
    s: &Settings,
    proxy: &Proxy,
    mock: &MockProvider,
    kubeconfig: &Path,
    log: &str,
) -> anyhow::Result<Restart> {
    let requests_before = proxy.counts();
    let calls_before = mock.calls();
    let mut operator = Operator::spawn(s, kubeconfig, &s.out.join(log)).await?;
    let ready = operator.wait_ready(Duration::from_secs(60)).await?;

    // Idle: the operator has listed every Email and the process has used no CPU for half a
    // second. Idle time is when that quiet half second began. The list is known done when the
    // Email watch opens (a watcher opens it only after its initial list); counting reconciles
    // no longer tells, as a settled Email's event reconciles nothing (since session 11).
    const QUIET: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + s.deadline();
    let watch_key = ("WATCH".to_string(), "emails".to_string());
    let (mut cpu, mut quiet_since) = (operator.cpu_seconds(), Instant::now());
    let idle = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now_cpu = operator.cpu_seconds();
        if now_cpu > cpu {
            (cpu, quiet_since) = (now_cpu, Instant::now());
        }
        let listed = proxy::delta(&proxy.counts(), &requests_before)
            .get(&watch_key)
            .is_some_and(|t| t.count > 0);
        if listed && quiet_since.elapsed() >= QUIET {
            break quiet_since.duration_since(operator.started);
        }
        if Instant::now() > deadline {
            bail!(
                "the restarted operator was not idle within {:?} (Emails listed: {listed})",
                s.deadline()
            );
        }
    };
    // Anything the restart would still do (a late write, a send) must show in the counts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = proxy::delta(&proxy.counts(), &requests_before);
    let calls = mock.calls().since(&calls_before);
    let result = Restart {
        ready,
        idle,
        requests,
        provider_calls: calls.total(),
        sends: calls.sends,
        peak_rss_mib: operator.peak_rss_mib(),
        idle_rss_mib: procstat::rss_mib(operator.pid).unwrap_or(f64::NAN),
        cpu_s: operator.cpu_seconds(),
    };
    operator.stop().await?;
    Ok(result)
}

/// Secrets no sender or attachment names, and the size of each.
const UNRELATED_SECRETS: usize = 100;
const UNRELATED_SECRET_BYTES: usize = 512 * 1024;

/// Creates the unrelated Secrets, in the namespace the operator watches.
async fn create_unrelated_secrets(client: &Client) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    stream::iter(0..UNRELATED_SECRETS)
        .map(|i| {
            let api = api.clone();
            async move {
                // Different bytes per Secret, as real release data would be.
                let data: Vec<u8> = (0..UNRELATED_SECRET_BYTES)
                    .map(|j| (j.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
                    .collect();
                let mut secret = Secret::default();
                secret.metadata.name = Some(format!("sh.helm.release.v1.app-{i}.v1"));
                secret.data = Some(BTreeMap::from([("release".to_string(), ByteString(data))]));
                api.create(&PostParams::default(), &secret)
                    .await
                    .with_context(|| format!("creating unrelated Secret {i}"))
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Deletes the unrelated Secrets and waits until they are gone.
async fn delete_unrelated_secrets(client: &Client) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    for i in 0..UNRELATED_SECRETS {
        let name = format!("sh.helm.release.v1.app-{i}.v1");
        api.delete(&name, &Default::default())
            .await
            .with_context(|| format!("deleting unrelated Secret {i}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while api
        .get_opt(&format!(
            "sh.helm.release.v1.app-{}.v1",
            UNRELATED_SECRETS - 1
        ))
        .await?
        .is_some()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the unrelated Secrets are not gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

// ---- measurements ----------------------------------------------------------------------------

/// The `p`th percentile (nearest rank) of `values`; sorts them.
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// All writes the API server has counted (`apiserver_request_total`, write verbs).
async fn apiserver_writes(client: &Client) -> Option<u64> {
    let request = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    let mut total = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let verb = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("verb=\""))
            .map(|v| v.trim_end_matches('"'));
        if matches!(
            verb,
            Some("POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION")
        ) {
            total += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    Some(total as u64)
}

/// CPU seconds the API server and etcd have used so far.
fn server_cpu(s: &Settings) -> f64 {
    testenv_cpu(&s.kubeconfig).values().sum()
}

/// CPU seconds so far of the test server's API server and etcd, by name, from the pid files
/// next to its kubeconfig.
pub fn testenv_cpu(kubeconfig: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for name in ["apiserver", "etcd"] {
        if let Some(cpu) = testenv_pid(kubeconfig, name).and_then(procstat::cpu_seconds) {
            out.insert(name.to_string(), cpu);
        }
    }
    out
}

/// The smallest and the largest of `values` (infinities for none).
fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// The pid of the test server's `name` ("apiserver", "etcd"), from its pid file next to the
/// kubeconfig.
fn testenv_pid(kubeconfig: &Path, name: &str) -> Option<u32> {
    let dir = kubeconfig.parent()?;
    std::fs::read_to_string(dir.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// CPU seconds so far of the API server and etcd (from the test server's pid files), of the
/// proxy, and of the rest of this process (the mock provider, the watch, the creates): on a
/// machine this small they share the cores with the operator, so where the time goes is part
/// of the answer.
fn other_cpu(s: &Settings) -> BTreeMap<String, f64> {
    let mut out = testenv_cpu(&s.kubeconfig);
    let proxy = procstat::threads_cpu_seconds(PROXY_THREADS);
    out.insert("bench proxy".to_string(), proxy);
    if let Some(cpu) = procstat::cpu_seconds(std::process::id()) {
        out.insert("bench (mock, watch, creates)".to_string(), cpu - proxy);
    }
    out
}

// ---- the report ------------------------------------------------------------------------------

struct Report {
    n: usize,
    latency_ms: u64,
    send_concurrency: usize,
    reconcile_concurrency: usize,
    busy_cores: usize,
    api: ceilings::ApiCeiling,
    provider_per_s: f64,
    protocol: protocol::ProtocolLimit,
    open_loop: Option<OpenLoop>,
    /// The first end-to-end round: every figure of the run but Emails/s comes from it.
    e2e: EndToEnd,
    /// The later rounds, one per set after the first.
    e2e_later: Vec<EndToEnd>,
    /// Each end-to-end round with the protocol round next to it.
    sets: Vec<PairedSet>,
    restart: Restart,
    /// The same restart with the unrelated Secrets in the cluster.
    with_secrets: Restart,
    load_before: Option<f64>,
    load_after: Option<f64>,
}

/// One end-to-end round and the protocol round run next to it: their ratio is what one
/// hour of the machine says about the operator.
struct PairedSet {
    protocol_per_s: f64,
    e2e_per_s: f64,
    /// The speed probe's cost of its unit of work in each round (`speed_probe`).
    protocol_unit_us: f64,
    e2e_unit_us: f64,
}

impl PairedSet {
    fn new(protocol: &protocol::ProtocolRound, e2e: &EndToEnd) -> Self {
        PairedSet {
            protocol_per_s: protocol.per_s,
            e2e_per_s: e2e.emails_per_s,
            protocol_unit_us: protocol.speed.unit_us,
            e2e_unit_us: e2e.speed.unit_us,
        }
    }

    fn ratio(&self) -> f64 {
        self.e2e_per_s / self.protocol_per_s
    }

    /// The ratio had both rounds run on an equally fast machine: each round's Emails/s
    /// scaled by how fast the probe found the machine in it. A round in which the same
    /// unit of work cost 10 % more CPU is credited with 10 % more Emails/s.
    fn ratio_at_equal_speed(&self) -> f64 {
        self.ratio() * self.e2e_unit_us / self.protocol_unit_us
    }
}

/// The writes the design allows per delivered Email: the EmailDelivery's create, its outcome,
/// the Email's status.
const DESIGN_WRITES_PER_EMAIL: f64 = 3.0;

impl Report {
    fn per_email(&self, count: u64) -> f64 {
        count as f64 / self.n as f64
    }

    fn api_writes_per_email(&self) -> f64 {
        self.per_email(proxy::total(&self.e2e.requests, proxy::is_write))
    }

    /// Writes to kmailops's own kinds: what the design counts (Events are not among them).
    fn kmailops_writes_per_email(&self) -> f64 {
        let own = self
            .e2e
            .requests
            .iter()
            .filter(|((verb, resource), _)| proxy::is_write(verb) && resource.starts_with("email"))
            .map(|(_, t)| t.count)
            .sum();
        self.per_email(own)
    }

    fn api_ceiling_emails_per_s(&self) -> f64 {
        self.api.writes_per_s() / DESIGN_WRITES_PER_EMAIL
    }

    fn ratio(&self) -> f64 {
        self.e2e.emails_per_s / self.api_ceiling_emails_per_s().min(self.provider_per_s)
    }

    /// The ratio with the API ceiling measured through the proxy, the path the operator's
    /// requests take: what the operator makes of the capacity it actually has here.
    fn ratio_via_proxy(&self) -> f64 {
        let api = self.api.writes_per_s_via_proxy() / DESIGN_WRITES_PER_EMAIL;
        self.e2e.emails_per_s / api.min(self.provider_per_s)
    }

    fn e2e_rounds(&self) -> impl Iterator<Item = &EndToEnd> {
        std::iter::once(&self.e2e).chain(&self.e2e_later)
    }

    /// Emails/s end to end: the best of its rounds, as the protocol limit is.
    fn emails_per_s(&self) -> f64 {
        self.e2e_rounds()
            .map(|r| r.emails_per_s)
            .fold(f64::NAN, f64::max)
    }

    /// Emails/s end to end over the protocol's own limit on this machine: what the
    /// controller machinery leaves of what the requests themselves allow. The median over the
    /// paired sets (since session 13).
    fn ratio_to_protocol(&self) -> f64 {
        pairs::median(self.sets.iter().map(PairedSet::ratio).collect())
    }

    /// The same with each set's rounds brought to equal machine speed (the speed probe's):
    /// what is left of the set's ratio when the machine's speed, which moves by more
    /// than the operator's share from one half-minute to the next, is taken out.
    fn ratio_to_protocol_at_equal_speed(&self) -> f64 {
        pairs::median(
            self.sets
                .iter()
                .map(PairedSet::ratio_at_equal_speed)
                .collect(),
        )
    }

    /// The best end-to-end round over the best protocol round (the definition of sessions
    /// 10 to 12).
    fn ratio_to_protocol_best(&self) -> f64 {
        self.emails_per_s() / self.protocol.per_s()
    }

    /// The same with the first end-to-end round alone (the definition before session 10).
    fn ratio_to_protocol_first_round(&self) -> f64 {
        self.e2e.emails_per_s / self.protocol.per_s()
    }

    /// The lowest and the highest share of the machine's time the hypervisor gave to others
    /// in any round.
    fn steal_range(&self) -> (f64, f64) {
        min_max(
            self.e2e_rounds()
                .map(|r| r.speed.steal)
                .chain(self.protocol.rounds.iter().map(|r| r.speed.steal)),
        )
    }

    fn restart_writes(&self) -> u64 {
        proxy::total(&self.restart.requests, proxy::is_write)
    }

    /// The restart's writes to the leader-election Lease: taking the lead (and renewing it)
    /// is what any restart of a replicated operator costs, whatever it then does.
    fn restart_lease_writes(&self) -> u64 {
        self.restart
            .requests
            .iter()
            .filter(|((verb, resource), _)| proxy::is_write(verb) && resource == "leases")
            .map(|(_, t)| t.count)
            .sum()
    }

    fn json(&self) -> serde_json::Value {
        let breakdown = |counts: &Counts| -> serde_json::Value {
            counts
                .iter()
                .map(|((verb, resource), t)| {
                    (
                        format!("{verb} {resource}"),
                        json!({
                            "count": t.count,
                            "non_2xx": t.non_2xx,
                            "mean_upstream_ms": t.upstream.as_secs_f64() * 1000.0 / t.count as f64,
                        }),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let r = |x: f64| (x * 100.0).round() / 100.0;
        let e = &self.e2e;
        // In three parts: one json! this size exceeds the macro recursion limit.
        let ceilings: Vec<serde_json::Value> = self
            .api
            .rounds
            .iter()
            .map(|round| {
                json!({
                    "writes_per_s": r(round.writes_per_s),
                    "writes_per_s_via_proxy": r(round.writes_per_s_via_proxy),
                    "creates_per_s": r(round.creates_per_s),
                    "single_write_p50_ms": r(round.single_p50_ms),
                    "single_write_p50_ms_via_proxy": r(round.single_p50_ms_via_proxy),
                })
            })
            .collect();
        let run = json!({
            "api_requests_per_email": r(self.per_email(proxy::total(&e.requests, |_| true))),
            "kmailops_object_writes_per_email": r(self.kmailops_writes_per_email()),
            "apiserver_counted_writes_per_email": e.apiserver_writes.map(|w| r(self.per_email(w))),
            "wall_s": r(e.wall_s),
            "create_s": r(e.create_s),
            "max_ms": r(e.max_ms),
            "sent_reasons": e.sent_reasons,
            "provider_sends": e.sends,
            "provider_health_checks": e.health_checks,
            "operator_startup_s": r(e.startup.as_secs_f64()),
            "operator_rss_before_first_email_mb": r(e.rss_before_mib),
            "operator_cpu_s_during_run": r(e.cpu_s_window),
            "email_reconciles_per_email": r(e.reconciles_per_email),
            "provider_lookups_per_email": r(e.lookups_per_email),
            "machine_cpu_busy_during_run": r(e.machine_busy),
            "other_cpu_s_during_run": e.other_cpu.iter().map(|(k, v)| (k.clone(), r(*v))).collect::<BTreeMap<_, _>>(),
            "requests": breakdown(&e.requests),
        });
        let restart = json!({
            "ready_s": r(self.restart.ready.as_secs_f64()),
            "idle_s": r(self.restart.idle.as_secs_f64()),
            "provider_sends": self.restart.sends,
            "requests": breakdown(&self.restart.requests),
            "peak_rss_mb": r(self.restart.peak_rss_mib),
            "idle_rss_mb": r(self.restart.idle_rss_mib),
            "cpu_s": r(self.restart.cpu_s),
            "with_unrelated_secrets": {
                "secrets": UNRELATED_SECRETS,
                "secret_kib": UNRELATED_SECRET_BYTES / 1024,
                "peak_rss_mb": r(self.with_secrets.peak_rss_mib),
                "idle_rss_mb": r(self.with_secrets.idle_rss_mib),
            },
        });
        let protocol_rounds: Vec<serde_json::Value> = self
            .protocol
            .rounds
            .iter()
            .map(|round| {
                json!({
                    "emails_per_s": r(round.per_s),
                    "chain_p50_ms": r(round.p50_ms),
                    "chain_p99_ms": r(round.p99_ms),
                    "server_cpu_ms_per_email": r(round.server_cpu_ms_per_email),
                    "emails_created_before_the_clock": round.precreated,
                    "probe_unit_us": r(round.speed.unit_us),
                    "probe_json_us": r(round.speed.json_us),
                    "probe_memory_us": r(round.speed.memory_us),
                    "steal": r(round.speed.steal),
                })
            })
            .collect();
        let open_loop = self.open_loop.as_ref().map(|o| {
            json!({
                "rate_per_s": r(o.rate_per_s),
                "warmup_s": o.warmup_s,
                "emails": o.emails,
                "late_creates": o.late_creates,
                "p50_ms": r(o.p50_ms),
                "p99_ms": r(o.p99_ms),
                "max_ms": r(o.max_ms),
                "slowest": o.slowest.iter().map(|(n, ms, created_s)| json!({"email": n, "ms": r(*ms), "created_s": r(*created_s)})).collect::<Vec<_>>(),
                "api_server_gc": {
                    "cycles": o.server_gc.cycles,
                    "assist_ms": r(o.server_gc.assist_ms),
                    "longest": o.server_gc.longest.iter().map(|(at_s, wall_ms, assist_ms)| json!({"at_s": r(*at_s), "wall_ms": r(*wall_ms), "assist_ms": r(*assist_ms)})).collect::<Vec<_>>(),
                },
            })
        });
        let e2e_rounds: Vec<serde_json::Value> = self
            .e2e_rounds()
            .map(|round| {
                json!({
                    "emails_per_s": r(round.emails_per_s),
                    "wall_s": r(round.wall_s),
                    "p50_ms": r(round.p50_ms),
                    "p99_ms": r(round.p99_ms),
                    "operator_cpu_s_during_run": r(round.cpu_s_window),
                    "operator_cpu_ms_per_email": r(round.operator_cpu_ms_per_email(self.n)),
                    "server_cpu_ms_per_email": r(round.server_cpu_ms_per_email(self.n)),
                    "email_reconciles_per_email": r(round.reconciles_per_email),
                    "provider_sends": round.sends,
                    "machine_cpu_busy": r(round.machine_busy),
                    "probe_unit_us": r(round.speed.unit_us),
                    "probe_json_us": r(round.speed.json_us),
                    "probe_memory_us": r(round.speed.memory_us),
                    "steal": r(round.speed.steal),
                })
            })
            .collect();
        json!({
            "emails_per_s": r(self.emails_per_s()),
            "protocol_limit_per_s": r(self.protocol.per_s()),
            "protocol_limit_precreated_per_s": r(self.protocol.best(true)),
            "ratio_to_protocol": r(self.ratio_to_protocol()),
            "ratio_to_protocol_sets": self.sets.iter().map(|p| r(p.ratio())).collect::<Vec<_>>(),
            "ratio_to_protocol_at_equal_speed": r(self.ratio_to_protocol_at_equal_speed()),
            "ratio_to_protocol_at_equal_speed_sets": self.sets.iter().map(|p| r(p.ratio_at_equal_speed())).collect::<Vec<_>>(),
            "ratio_to_protocol_best": r(self.ratio_to_protocol_best()),
            "ratio_to_protocol_first_round": r(self.ratio_to_protocol_first_round()),
            "open_loop_p99_ms": self.open_loop.as_ref().map(|o| r(o.p99_ms)),
            "server_cpu_ms_per_email": r(self.e2e.server_cpu_ms_per_email(self.n)),
            "api_write_ceiling_per_s": r(self.api.writes_per_s()),
            "provider_ceiling_per_s": r(self.provider_per_s),
            "ratio": r(self.ratio()),
            "api_writes_per_email": r(self.api_writes_per_email()),
            "restart_writes": self.restart_writes(),
            "restart_writes_other_than_lease": self.restart_writes() - self.restart_lease_writes(),
            "restart_provider_calls": self.restart.provider_calls,
            "p50_ms": r(e.p50_ms),
            "p99_ms": r(e.p99_ms),
            "peak_rss_mb": r(e.peak_rss_mib.max(self.restart.peak_rss_mib)),
            "cpu_s": r(e.cpu_s),
            "details": {
                "n": self.n,
                "latency_ms": self.latency_ms,
                "send_concurrency": self.send_concurrency,
                "reconcile_concurrency": self.reconcile_concurrency,
                "busy_cores": self.busy_cores,
                "load_average_before": self.load_before,
                "load_average_after": self.load_after,
                "api_write_ceiling_via_proxy_per_s": r(self.api.writes_per_s_via_proxy()),
                "api_ceiling_rounds": ceilings,
                "protocol_rounds": protocol_rounds,
                "e2e_rounds": e2e_rounds,
                "open_loop": open_loop,
                "run": run,
                "restart": restart,
            },
        })
    }

    fn print(&self) {
        let e = &self.e2e;
        let rows: Vec<(String, String)> = vec![
            (
                "Emails (N) / busy cores beside the bench".into(),
                format!("{} / {}", self.n, self.busy_cores),
            ),
            (
                "provider latency / send concurrency / reconcile concurrency".into(),
                format!(
                    "{} ms / {} / {}",
                    self.latency_ms, self.send_concurrency, self.reconcile_concurrency
                ),
            ),
            (
                "API write ceiling (status SSA)".into(),
                format!(
                    "{:.0} writes/s = {:.0} Emails/s at 3 writes/Email (best of rounds: {})",
                    self.api.writes_per_s(),
                    self.api_ceiling_emails_per_s(),
                    self.api
                        .rounds
                        .iter()
                        .map(|r| format!("{:.0}", r.writes_per_s))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            (
                "  same through the bench proxy".into(),
                format!(
                    "{:.0} writes/s; one write {} ms direct, {} ms via proxy (p50 per round)",
                    self.api.writes_per_s_via_proxy(),
                    self.api
                        .rounds
                        .iter()
                        .map(|r| format!("{:.2}", r.single_p50_ms))
                        .collect::<Vec<_>>()
                        .join("/"),
                    self.api
                        .rounds
                        .iter()
                        .map(|r| format!("{:.2}", r.single_p50_ms_via_proxy))
                        .collect::<Vec<_>>()
                        .join("/"),
                ),
            ),
            (
                "provider ceiling".into(),
                format!("{:.0} sends/s", self.provider_per_s),
            ),
            (
                "end to end".into(),
                format!(
                    "{:.1} Emails/s (best of rounds: {}; round 1: {:.1} s for all, creates took {:.1} s)",
                    self.emails_per_s(),
                    self.e2e_rounds()
                        .map(|r| format!("{:.1}", r.emails_per_s))
                        .collect::<Vec<_>>()
                        .join(", "),
                    e.wall_s,
                    e.create_s
                ),
            ),
            (
                "protocol limit (the requests alone)".into(),
                format!(
                    "{:.1} Emails/s (best of rounds: {}; one Email's chain p50 {} ms)",
                    self.protocol.per_s(),
                    self.protocol
                        .rounds
                        .iter()
                        .filter(|r| !r.precreated)
                        .map(|r| format!("{:.1}", r.per_s))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.protocol
                        .rounds
                        .iter()
                        .filter(|r| !r.precreated)
                        .map(|r| format!("{:.0}", r.p50_ms))
                        .collect::<Vec<_>>()
                        .join("/"),
                ),
            ),
            (
                "  same with the Emails created before the clock".into(),
                format!(
                    "{:.1} Emails/s (the definition before session 6; ratio to it {:.2})",
                    self.protocol.best(true),
                    self.emails_per_s() / self.protocol.best(true)
                ),
            ),
            (
                "ratio to the protocol limit".into(),
                format!(
                    "{:.2} (median of the sets {}; best of each {:.2}; end-to-end round 1 alone {:.2})",
                    self.ratio_to_protocol(),
                    self.sets
                        .iter()
                        .map(|p| format!(
                            "{:.1}/{:.1} = {:.2}",
                            p.e2e_per_s,
                            p.protocol_per_s,
                            p.ratio()
                        ))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.ratio_to_protocol_best(),
                    self.ratio_to_protocol_first_round()
                ),
            ),
            (
                "  at equal machine speed (the speed probe's)".into(),
                format!(
                    "{:.2} (median of the sets {})",
                    self.ratio_to_protocol_at_equal_speed(),
                    self.sets
                        .iter()
                        .map(|p| format!("{:.2}", p.ratio_at_equal_speed()))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ),
            (
                "speed probe, CPU us per unit: end-to-end rounds / protocol rounds".into(),
                format!(
                    "{} / {} (steal {:.1}% to {:.1}% of the machine's time)",
                    self.e2e_rounds()
                        .map(|r| format!("{:.0}", r.speed.unit_us))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.protocol
                        .rounds
                        .iter()
                        .map(|r| format!("{:.0}", r.speed.unit_us))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.steal_range().0 * 100.0,
                    self.steal_range().1 * 100.0,
                ),
            ),
            (
                "API server + etcd CPU per Email: end-to-end rounds / protocol rounds".into(),
                format!(
                    "{} ms / {} ms",
                    self.e2e_rounds()
                        .map(|r| format!("{:.1}", r.server_cpu_ms_per_email(self.n)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.protocol
                        .rounds
                        .iter()
                        .map(|r| format!("{:.1}", r.server_cpu_ms_per_email))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            (
                "open loop: rate / creation -> Sent p50 / p99 / max".into(),
                match &self.open_loop {
                    Some(o) => format!(
                        "{:.1} Emails/s x {} ({} created late) / {:.0} / {:.0} / {:.0} ms",
                        o.rate_per_s, o.emails, o.late_creates, o.p50_ms, o.p99_ms, o.max_ms
                    ),
                    None => "skipped (OPEN_LOOP_S=0)".into(),
                },
            ),
            (
                "  its slowest Emails created at / API server GC cycles in it".into(),
                match &self.open_loop {
                    Some(o) => {
                        let (lo, hi) =
                            min_max(o.slowest.iter().map(|(_, _, created_s)| *created_s));
                        let longest = match o.server_gc.longest.first() {
                            Some((at, wall, assist)) => format!(
                                "; longest at {at:.1} s: {wall:.0} ms, {assist:.0} ms of assists"
                            ),
                            None => String::new(),
                        };
                        format!(
                            "{lo:.1}-{hi:.1} s into it / {} ({:.0} ms of request assists{longest})",
                            o.server_gc.cycles, o.server_gc.assist_ms
                        )
                    }
                    None => "skipped".into(),
                },
            ),
            (
                "ratio to the lower ceiling".into(),
                format!(
                    "{:.2} ({:.2} to the ceilings through the proxy)",
                    self.ratio(),
                    self.ratio_via_proxy()
                ),
            ),
            (
                "creation -> Sent p50 / p99 / max".into(),
                format!("{:.0} / {:.0} / {:.0} ms", e.p50_ms, e.p99_ms, e.max_ms),
            ),
            (
                "API requests / writes per Email".into(),
                format!(
                    "{:.2} / {:.2}, {:.2} to kmailops kinds (API server counted {} writes/Email)",
                    self.per_email(proxy::total(&e.requests, |_| true)),
                    self.api_writes_per_email(),
                    self.kmailops_writes_per_email(),
                    e.apiserver_writes
                        .map(|w| format!("{:.2}", self.per_email(w)))
                        .unwrap_or_else(|| "?".into())
                ),
            ),
            (
                "provider calls".into(),
                format!("{} sends, {} health checks", e.sends, e.health_checks),
            ),
            (
                "Ready reasons when Sent".into(),
                format!("{:?}", e.sent_reasons),
            ),
            (
                "operator peak RSS / CPU (its render workers included)".into(),
                format!(
                    "{:.1} MiB ({:.1} MiB before the first Email) / {:.2} s ({:.2} s during the run)",
                    e.peak_rss_mib, e.rss_before_mib, e.cpu_s, e.cpu_s_window
                ),
            ),
            (
                "Email reconciles / provider look-ups per Email".into(),
                format!("{:.2} / {:.2}", e.reconciles_per_email, e.lookups_per_email),
            ),
            (
                "  CPU of the others during the run".into(),
                e.other_cpu
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.1} s"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "  machine CPU busy during the run".into(),
                format!("{:.0}% of all cores", e.machine_busy * 100.0),
            ),
            (
                "restart: ready / idle".into(),
                format!(
                    "{:.2} s / {:.2} s",
                    self.restart.ready.as_secs_f64(),
                    self.restart.idle.as_secs_f64()
                ),
            ),
            (
                "restart: API writes / provider calls".into(),
                format!(
                    "{} ({} of them to the leader Lease) / {} ({} sends)",
                    self.restart_writes(),
                    self.restart_lease_writes(),
                    self.restart.provider_calls,
                    self.restart.sends
                ),
            ),
            (
                "restart: peak RSS / idle RSS / CPU".into(),
                format!(
                    "{:.1} MiB / {:.1} MiB / {:.2} s",
                    self.restart.peak_rss_mib, self.restart.idle_rss_mib, self.restart.cpu_s
                ),
            ),
            (
                format!(
                    "restart with {UNRELATED_SECRETS} unrelated {} KiB Secrets: peak / idle RSS",
                    UNRELATED_SECRET_BYTES / 1024
                ),
                format!(
                    "{:.1} MiB / {:.1} MiB",
                    self.with_secrets.peak_rss_mib, self.with_secrets.idle_rss_mib
                ),
            ),
            (
                "load average before / after".into(),
                format!(
                    "{} / {}",
                    self.load_before
                        .map(|l| format!("{l:.2}"))
                        .unwrap_or_default(),
                    self.load_after
                        .map(|l| format!("{l:.2}"))
                        .unwrap_or_default()
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        println!();
        for (k, v) in &rows {
            println!("{k:width$}  {v}");
        }
        println!("\nAPI requests of the run, per Email (verb resource: count/N, non-2xx):");
        for ((verb, resource), t) in &e.requests {
            println!(
                "  {verb:>8} {resource:<28} {:>7.3}  {}",
                self.per_email(t.count),
                t.non_2xx
            );
        }
        println!("API requests of the restart (verb resource: count):");
        for ((verb, resource), t) in &self.restart.requests {
            println!("  {verb:>8} {resource:<28} {:>7}", t.count);
        }
    }
}
