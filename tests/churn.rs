//! GitOps churn as a property: random sequences (seeded, printed, reproducible) of what Argo CD,
//! Flux, people and the cluster do to Emails, against a real API server, the operator and a
//! local SendGrid-compatible server, and after each sequence the invariants of api.md:
//!
//! - every message the provider took was claimed first by an EmailDelivery of its Email (the
//!   delivery key in its `custom_args` names the Email, content and retry token);
//! - under `Never` the provider takes at most one message per Email name and retry token; under
//!   `OnChange` at most one per Email name, content and retry token;
//! - every Email comes to rest once the churn stops and the provider answers again;
//! - a new retry token on an Email resting in `Unknown` or `Failed` sends it exactly once more,
//!   and applying that token again (also after an operator restart) sends nothing; on a `Sent`
//!   Email a new token sends nothing (api.md: a token asks for one more attempt after `Failed`
//!   or `Unknown`; docs/email.md: a token set while an Email is `Sent` is ignored);
//! - status and ledger agree: a `Sent` Email's `messageId` is that of a `Sent` EmailDelivery
//!   of its name, and every `Sent` EmailDelivery names a message the provider took.
//!
//! Steps: server-side apply (as `kustomize-controller`) of one of two contents, replace
//! (delete + create by the same apply, Argo CD `Replace=true,Force=true`), delete + apply (prune
//! and re-add), label and annotation churn (Argo CD tracking), a dry run switched on and off, a
//! retry token set to a new value, removed, or set back to an earlier one (in Git, so through
//! the same apply), an operator restart and an operator killed mid-work (its task aborted, as
//! `kill -9`), an API server restart (its process stopped and started on the same etcd, as a
//! control-plane restart: every connection and watch breaks), and the provider answering 202,
//! 503 (nothing taken), 500 after taking the message, slowly, or not within the call's time
//! limit (a timeout after the hand-over).
//!
//! The API server is the test's own (`scripts/k8s-testenv.sh` in `target/testenv-churn`, ports
//! `KMAILOPS_CHURN_API_PORT` / `KMAILOPS_CHURN_ETCD_PORT`, default 26643 / 23990), started and
//! stopped here, so restarting it disturbs no other test. `CHURN_API_RESTARTS=0`, or testenv
//! binaries that are not installed, runs on the server of the other tests instead (KUBECONFIG
//! or target/testenv) without API server restarts, and says so.
//!
//! `CHURN_SEQUENCES` (default 2) sequences of `CHURN_STEPS` (default 14) steps; `CHURN_SEED`
//! replays one run. scripts/test.sh runs the default (fixed seeds, about a minute); run long
//! ones on demand, with new seeds: `CHURN_SEQUENCES=50 cargo test --test churn`. Sequences that
//! kill the operator race its sends, so a seed replays the steps, not always their timing.
//!
//! Not covered here: retry tokens on EmailSenderConfigs (tests/sender_retry.rs), and a
//! restart of etcd itself.

#[path = "support/mock_sendgrid.rs"]
mod mock_sendgrid;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use mock_sendgrid::{Inject, MockSendGrid};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::TestEnv;
use support::operator::*;

use kmailops::api::{DeliveryPhase, Email, EmailDelivery, EmailPhase};
use kmailops::context::Settings;
use kmailops::message::delivery_key;
use kmailops::provider::sendgrid::DELIVERY_KEY_ARG;

const NAMES: [&str; 3] = ["churn-a", "churn-b", "churn-c"];
/// The seed of the short run when neither `CHURN_SEED` nor `CHURN_SEQUENCES` is set.
const DEFAULT_SEED: u64 = 20_261_130;
const KEY: &str = "SG.churn-test-key";
const RETRY: &str = "kmailops.io/retry";
const RETRY_TOKEN: &str = "kmailops.io/retry-token";
/// A claim whose process was killed turns Unknown soon, so a sequence comes to rest; a provider
/// call is cut off after 0.8 of it (2.4 s), which the "timeout" answer outlasts.
const CLAIM_TTL: Duration = Duration::from_secs(3);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sender_yaml(base_url: &str) -> String {
    format!(
        r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata:
  name: sendgrid
spec:
  default: true
  sender:
    address: shop@example.com
    name: Example Shop
  sendgrid:
    apiKeySecretRef: {{name: sendgrid, key: apiKey}}
    baseUrl: {base_url}
  retry: {{maxAttempts: 4, initialBackoff: 1s, maxBackoff: 4s}}
"#
    )
}

fn email(name: &str, policy: &str, content: u8, labels: &str, annotations: &str) -> Email {
    let yaml = format!(
        r#"apiVersion: kmailops.io/v1alpha1
kind: Email
metadata:
  name: {name}
  labels: {{{labels}}}
  annotations: {{{annotations}}}
spec:
  to: ["Ada Lovelace <ada@example.org>"]
  subject: "{name} content {content}"
  text: "Hello Ada"
  resendPolicy: {policy}
"#
    );
    serde_yaml::from_str(&yaml).unwrap()
}

/// What the Git side wants for one Email at a point of the sequence.
#[derive(Clone, Debug)]
struct Desired {
    policy: &'static str,
    content: u8,
    dry_run: bool,
    tracking: bool,
    token: Option<String>,
    /// Every token this Email's manifest has carried.
    tokens_used: Vec<String>,
}

impl Desired {
    fn object(&self, name: &str) -> Email {
        let labels = if self.tracking {
            "app.kubernetes.io/instance: shop"
        } else {
            ""
        };
        let mut annotations = Vec::new();
        if self.tracking {
            annotations.push(format!(
                "argocd.argoproj.io/tracking-id: \"shop:kmailops.io/Email:x/{name}\""
            ));
        }
        if self.dry_run {
            annotations.push("kmailops.io/dry-run: \"true\"".into());
        }
        if let Some(token) = &self.token {
            annotations.push(format!("{RETRY}: \"{token}\""));
        }
        email(
            name,
            self.policy,
            self.content,
            labels,
            &annotations.join(", "),
        )
    }
}

/// Runs an API call again while the API server is away (a restart step, or the moments after
/// it when its custom resources answer 429 or 503); any other error fails the test.
async fn retrying<T, F, Fut>(what: &str, call: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match call().await {
            Ok(v) => return v,
            Err(kube::Error::Api(s))
                if !(s.code == 429 || s.code >= 500) || tokio::time::Instant::now() > deadline =>
            {
                panic!("{what}: {s:?}")
            }
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn apply(emails: &Api<Email>, name: &str, desired: &Desired) {
    let pp = PatchParams::apply("kustomize-controller").force();
    let patch = Patch::Apply(desired.object(name));
    retrying(&format!("apply {name}"), || emails.patch(name, &pp, &patch)).await;
}

async fn delete(emails: &Api<Email>, name: &str) {
    let _ = emails.delete(name, &DeleteParams::default()).await;
    // Gone (no finalizers on Emails), so the next create is a new object.
    for _ in 0..100 {
        if retrying("get", || emails.get_opt(name)).await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} was not deleted");
}

fn resting(e: &Email) -> bool {
    let Some(s) = e.status.as_ref() else {
        return false;
    };
    s.observed_generation == e.metadata.generation
        && matches!(
            s.phase,
            Some(
                EmailPhase::Sent
                    | EmailPhase::Previewed
                    | EmailPhase::Failed
                    | EmailPhase::Unknown
                    | EmailPhase::Expired
            )
        )
}

fn phase(e: &Email) -> Option<EmailPhase> {
    e.status.as_ref().and_then(|s| s.phase)
}

/// The test's own API server (see the module docs), stopped when dropped.
struct OwnServer {
    dir: PathBuf,
    api_port: u16,
    etcd_port: u16,
}

impl OwnServer {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/k8s-testenv.sh")
    }

    /// Started when the testenv binaries are installed and `CHURN_API_RESTARTS` is not 0.
    async fn start() -> Option<OwnServer> {
        if std::env::var("CHURN_API_RESTARTS").as_deref() == Ok("0") {
            return None;
        }
        let cache = std::env::var_os("KMAILOPS_TESTENV_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/kmailops-testenv")
            });
        if !cache.join("bin/apiextensions-apiserver").exists() {
            return None;
        }
        let server = OwnServer {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testenv-churn"),
            api_port: env_number("KMAILOPS_CHURN_API_PORT", 26643) as u16,
            etcd_port: env_number("KMAILOPS_CHURN_ETCD_PORT", 23990) as u16,
        };
        server.run("start").await;
        Some(server)
    }

    fn command(&self, what: &str) -> std::process::Command {
        let mut c = std::process::Command::new(Self::script());
        c.arg(what)
            .env("KMAILOPS_TESTENV_DIR", &self.dir)
            .env("KMAILOPS_TESTENV_API_PORT", self.api_port.to_string())
            .env("KMAILOPS_TESTENV_ETCD_PORT", self.etcd_port.to_string());
        c
    }

    /// Runs a subcommand of the script without blocking the runtime the operator runs on.
    async fn run(&self, what: &str) {
        let status = tokio::process::Command::from(self.command(what))
            .status()
            .await
            .unwrap_or_else(|e| panic!("scripts/k8s-testenv.sh {what}: {e}"));
        assert!(status.success(), "scripts/k8s-testenv.sh {what}: {status}");
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.command("stop").status();
    }
}

/// The Emails, once all of them rest for their current generation, and none in a dry run.
async fn wait_resting(emails: &Api<Email>, context: &dyn Fn() -> String) -> Vec<Email> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let lp = ListParams::default();
        let list = retrying("list Emails", || emails.list(&lp)).await.items;
        // Calm has no dry run left in Git: a Previewed Email has yet to see that.
        if list.len() == NAMES.len()
            && list
                .iter()
                .all(|e| resting(e) && phase(e) != Some(EmailPhase::Previewed))
        {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Emails did not come to rest: {:?}\n{}",
            list.iter()
                .map(|e| {
                    let s = e.status.clone().unwrap_or_default();
                    format!(
                        "{}: {:?} generation {:?} observed {:?} reason {:?} annotations {:?}",
                        e.name_any(),
                        s.phase,
                        e.metadata.generation,
                        s.observed_generation,
                        ready_reason(e),
                        e.metadata
                            .annotations
                            .as_ref()
                            .map(|a| a.keys().cloned().collect::<Vec<_>>()),
                    )
                })
                .collect::<Vec<_>>(),
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One message the provider took, as the ledger explains it.
#[derive(Clone, Debug)]
struct Taken {
    id: String,
    email: String,
    hash: String,
    token: Option<String>,
}

/// Every message the provider took, each explained by the EmailDelivery whose delivery key it
/// carries; a message no EmailDelivery explains fails the test.
fn explain(
    ns: &str,
    mock: &MockSendGrid,
    ledger: &[EmailDelivery],
    context: &dyn Fn() -> String,
) -> Vec<Taken> {
    let keys: BTreeMap<String, Taken> = ledger
        .iter()
        .map(|d| {
            let token = d.annotations().get(RETRY_TOKEN).cloned();
            let key = delivery_key(
                ns,
                &d.spec.email_name,
                &d.spec.delivery_hash,
                token.as_deref(),
            );
            let taken = Taken {
                id: String::new(),
                email: d.spec.email_name.clone(),
                hash: d.spec.delivery_hash.clone(),
                token,
            };
            (key, taken)
        })
        .collect();
    mock.accepted()
        .into_iter()
        .map(|(id, body)| {
            let key = body["custom_args"][DELIVERY_KEY_ARG]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let Some(t) = keys.get(&key) else {
                panic!(
                    "the provider took message {id} ({}) that no EmailDelivery claimed\n{}",
                    body["subject"],
                    context()
                )
            };
            Taken { id, ..t.clone() }
        })
        .collect()
}

async fn run_sequence(env: &TestEnv, server: Option<&OwnServer>, seed: u64, steps: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let client = env.client();
    let ns = env.unique_namespace("churn").await;
    let mock = MockSendGrid::start(KEY).await;
    secret(&client, &ns, "sendgrid", "apiKey", KEY).await;
    env.apply_yaml(&ns, &sender_yaml(&mock.url)).await;
    let settings = || Settings {
        claim_ttl: CLAIM_TTL,
        ..Settings::default()
    };
    let mut operator = Some(Operator::start_with(client.clone(), &ns, settings()));
    let emails: Api<Email> = Api::namespaced(client.clone(), &ns);

    let mut log = Vec::new();
    let mut desired: BTreeMap<&str, Desired> = BTreeMap::new();
    let mut next_token = 0u32;
    for name in NAMES {
        let d = Desired {
            policy: if rng.random_bool(0.5) {
                "Never"
            } else {
                "OnChange"
            },
            content: 0,
            dry_run: false,
            tracking: false,
            token: None,
            tokens_used: Vec::new(),
        };
        apply(&emails, name, &d).await;
        log.push(format!("create {name} (resendPolicy {})", d.policy));
        desired.insert(name, d);
    }
    for _ in 0..steps {
        let name = NAMES[rng.random_range(0..NAMES.len())];
        let step = rng.random_range(0..12u8);
        let d = desired.get_mut(name).unwrap();
        let what = match step {
            0 => {
                d.content = 1 - d.content;
                apply(&emails, name, d).await;
                format!("apply {name} content {}", d.content)
            }
            1 => {
                apply(&emails, name, d).await;
                format!("re-apply {name}")
            }
            2 => {
                // Created by the same apply, so the applier keeps owning every field (a
                // later apply without the dry-run annotation removes it, as in Git).
                delete(&emails, name).await;
                apply(&emails, name, d).await;
                format!("replace --force {name}")
            }
            3 => {
                delete(&emails, name).await;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
                apply(&emails, name, d).await;
                format!("prune and re-add {name}")
            }
            4 => {
                d.tracking = !d.tracking;
                apply(&emails, name, d).await;
                format!("tracking metadata {} on {name}", d.tracking)
            }
            5 => {
                d.dry_run = !d.dry_run;
                apply(&emails, name, d).await;
                format!("dry run {} on {name}", d.dry_run)
            }
            6 => {
                if let Some(op) = operator.take() {
                    op.stop().await;
                }
                operator = Some(Operator::start_with(client.clone(), &ns, settings()));
                "operator restart".to_string()
            }
            7 => {
                // Dropping aborts the task: no graceful shutdown, as kill -9.
                drop(operator.take());
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
                operator = Some(Operator::start_with(client.clone(), &ns, settings()));
                "operator killed and started".to_string()
            }
            8 => {
                let how = match rng.random_range(0..4u8) {
                    0 | 1 => {
                        next_token += 1;
                        d.token = Some(format!("t{next_token}"));
                        "new"
                    }
                    2 => {
                        d.token = None;
                        "removed"
                    }
                    _ => {
                        d.token = d
                            .tokens_used
                            .get(rng.random_range(0..d.tokens_used.len().max(1)))
                            .cloned();
                        "back to an earlier one"
                    }
                };
                if let Some(t) = &d.token
                    && !d.tokens_used.contains(t)
                {
                    d.tokens_used.push(t.clone());
                }
                apply(&emails, name, d).await;
                format!("retry token {how} on {name}: {:?}", d.token)
            }
            9 if server.is_some() => {
                server.unwrap().run("restart-apiserver").await;
                "API server restart".to_string()
            }
            _ => {
                let (inject, label) = match rng.random_range(0..5u8) {
                    0 => (None, "202"),
                    1 => (
                        Some(Inject::Raw(
                            503,
                            r#"{"errors":[{"message":"service unavailable"}]}"#.into(),
                            vec![],
                        )),
                        "503",
                    ),
                    2 => (Some(Inject::AcceptThenFail), "500 after taking it"),
                    3 => (Some(Inject::Stall(Duration::from_millis(800))), "slow 202"),
                    _ => (
                        Some(Inject::Stall(CLAIM_TTL + Duration::from_secs(1))),
                        "no answer in time",
                    ),
                };
                mock.always(inject);
                format!("provider answers {label}")
            }
        };
        log.push(what);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..250))).await;
    }

    // Calm: the provider answers, an operator runs, Git drops the dry runs; everything must
    // come to rest for its current generation.
    mock.always(None);
    if operator.is_none() {
        operator = Some(Operator::start_with(client.clone(), &ns, settings()));
    }
    for (name, d) in desired.iter_mut() {
        if d.dry_run {
            d.dry_run = false;
            apply(&emails, name, d).await;
            log.push(format!("calm: dry run false on {name}"));
        }
    }
    let context = |log: &[String]| {
        format!(
            "seed {seed} (CHURN_SEED={seed} replays it), steps:\n  {}",
            log.join("\n  ")
        )
    };
    let rested = wait_resting(&emails, &|| context(&log)).await;

    // A new token: exactly one more message for an Email resting in Unknown or Failed, none for
    // a Sent one; the same token applied again, also after an operator restart, sends nothing.
    let ledger = deliveries(&client, &ns).await;
    let before = explain(&ns, &mock, &ledger, &|| context(&log));
    let mut asked = Vec::new();
    for e in &rested {
        let name = e.name_any();
        let d = desired.get_mut(name.as_str()).unwrap();
        next_token += 1;
        let token = format!("t{next_token}");
        d.token = Some(token.clone());
        d.tokens_used.push(token.clone());
        apply(&emails, &name, d).await;
        log.push(format!(
            "calm: new retry token {token} on {name} ({:?})",
            phase(e)
        ));
        asked.push((name, phase(e), token));
    }
    // Annotations do not move the generation: give the operator time to see the new tokens
    // before waiting for rest again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_resting(&emails, &|| context(&log)).await;
    if let Some(op) = operator.take() {
        op.stop().await;
    }
    for name in NAMES {
        apply(&emails, name, &desired[name]).await;
    }
    operator = Some(Operator::start_with(client.clone(), &ns, settings()));
    log.push("calm: the same tokens applied again, operator restarted".into());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rested = wait_resting(&emails, &|| context(&log)).await;
    let ledger = deliveries(&client, &ns).await;
    let taken = explain(&ns, &mock, &ledger, &|| context(&log));
    for (name, was, token) in &asked {
        let more: Vec<&Taken> = taken
            .iter()
            .filter(|t| t.email == *name && t.token.as_deref() == Some(token))
            .collect();
        let now = rested.iter().find(|e| e.name_any() == *name).unwrap();
        match was {
            Some(EmailPhase::Unknown | EmailPhase::Failed) => {
                assert_eq!(
                    more.len(),
                    1,
                    "{name} rested {was:?}; the new token {token} sent {} messages: {more:?}\n{}",
                    more.len(),
                    context(&log)
                );
                assert_eq!(
                    phase(now),
                    Some(EmailPhase::Sent),
                    "{name} after its token {token}\n{}",
                    context(&log)
                );
            }
            _ => {
                assert!(
                    more.is_empty(),
                    "{name} rested {was:?}; the token {token} sent {more:?}\n{}",
                    context(&log)
                );
                assert_eq!(phase(now), *was, "{name}\n{}", context(&log));
            }
        }
    }
    assert_eq!(
        taken.len(),
        before.len()
            + asked
                .iter()
                .filter(|(_, was, _)| matches!(was, Some(EmailPhase::Unknown | EmailPhase::Failed)))
                .count(),
        "messages taken beyond one per new token\n{}",
        context(&log)
    );

    // At most one message per name and token (Never), or per name, content and token (OnChange).
    for name in NAMES {
        let mut seen: BTreeMap<(Option<&str>, Option<&str>), Vec<&str>> = BTreeMap::new();
        let never = desired[name].policy == "Never";
        for t in taken.iter().filter(|t| t.email == name) {
            let content = (!never).then_some(t.hash.as_str());
            seen.entry((content, t.token.as_deref()))
                .or_default()
                .push(&t.id);
        }
        for ((content, token), ids) in seen {
            assert!(
                ids.len() == 1,
                "{name} ({}) was taken {} times for content {content:?} and token {token:?}: {ids:?}\n{}",
                desired[name].policy,
                ids.len(),
                context(&log)
            );
        }
    }

    // Status and ledger agree.
    let taken_ids: Vec<&str> = taken.iter().map(|t| t.id.as_str()).collect();
    for e in &rested {
        let s = e.status.as_ref().unwrap();
        if s.phase == Some(EmailPhase::Sent)
            && let Some(id) = &s.message_id
        {
            assert!(
                ledger.iter().any(|d| d.spec.email_name == e.name_any()
                    && d.status
                        .as_ref()
                        .is_some_and(|ds| ds.phase == Some(DeliveryPhase::Sent)
                            && ds.message_id.as_deref() == Some(id.as_str()))),
                "{} is Sent as {id}, and no Sent EmailDelivery says so\n{}",
                e.name_any(),
                context(&log)
            );
        }
    }
    for d in &ledger {
        if let Some(ds) = d
            .status
            .as_ref()
            .filter(|ds| ds.phase == Some(DeliveryPhase::Sent))
        {
            let id = ds.message_id.as_deref().unwrap_or_default();
            assert!(
                taken_ids.contains(&id),
                "EmailDelivery {} is Sent as {id:?}, which the provider never took\n{}",
                d.name_any(),
                context(&log)
            );
        }
    }
    if let Some(op) = operator.take() {
        op.stop().await;
    }
    let count = |what: &str| log.iter().filter(|l| l.starts_with(what)).count();
    eprintln!(
        "churn seed {seed}: {} steps ({} retry tokens, {} API server restarts, {} operator restarts or kills), {} messages taken, invariants hold",
        log.len(),
        count("retry token") + count("calm: new retry token"),
        count("API server restart"),
        count("operator "),
        taken.len()
    );
}

#[tokio::test]
async fn gitops_churn_keeps_one_message_per_email_and_token_and_every_email_comes_to_rest() {
    init_test_logging();
    let server = OwnServer::start().await;
    let env = match &server {
        Some(s) => TestEnv::at(&s.kubeconfig()).await,
        None => {
            eprintln!(
                "churn: on the shared test server, without API server restarts \
                 (CHURN_API_RESTARTS=0, or no testenv binaries installed)"
            );
            TestEnv::get().await
        }
    };
    let sequences = env_number("CHURN_SEQUENCES", 2);
    let steps = env_number("CHURN_STEPS", 14);
    // The short run of scripts/test.sh replays the same sequences every time (a CI failure
    // is then a change, not luck); a long run on demand draws new seeds.
    let first_seed = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            if std::env::var("CHURN_SEQUENCES").is_ok() {
                rand::random::<u64>()
            } else {
                DEFAULT_SEED
            }
        });
    eprintln!("churn: {sequences} sequences of {steps} steps from seed {first_seed}");
    let started = std::time::Instant::now();
    for i in 0..sequences {
        run_sequence(&env, server.as_ref(), first_seed.wrapping_add(i), steps).await;
    }
    eprintln!("churn: {sequences} sequences in {:.0?}", started.elapsed());
}
