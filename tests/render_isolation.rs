//! Renders run in memory-capped worker processes (src/template/isolation.rs): a template that
//! builds gigabytes with `*` and `~` fails its own render with `TemplateError` naming the memory
//! limit, and a render past its wall-clock budget has its worker killed. Against the real
//! binary: `kmailops validate` and `kmailops render` on such a file, and `kmailops run` on the
//! test API server (through the loopback proxy of tests/support/api_proxy.rs, which serves the
//! Secret stand-ins), whose memory and other Emails stay unaffected.

mod support;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use support::TestEnv;
use support::operator::*;
use support::wait_for;

use kmailops::api::{Email, EmailPhase, EmailTemplate, EmailTemplateSpec};
use kmailops::template::isolation::{self, Isolation};
use kmailops::template::render::{render, render_here};
use kmailops::template::{Builtins, Library, Part, TemplateSet};

const MEMORY_LIMIT_TEXT: &str = "exceeded the memory limit of 64 MiB a template may use";

/// `'x' * 100000000` (minijinja's own cap is 100 MB), then joined with itself.
const REPEAT: &str = "{% set s = 'x' * 100000000 ~ 'y' %}{% set s = s ~ s %}{{ s | length }}";
/// 40 doublings through a namespace() in a loop: a TiB within a few hundred steps.
const DOUBLING: &str = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
/// Cheap steps, each over a 2 MB string: far past the 10 s budget long before its fuel is out.
const SLOW: &str = "{% set s = 'ab' * 1000000 %}{% for i in range(100000) %}{% if s | replace('a', 'b') | length == 0 %}x{% endif %}{% endfor %}done";

fn template_yaml(name: &str, text: &str) -> String {
    format!(
        "apiVersion: kmailops.io/v1alpha1\nkind: EmailTemplate\nmetadata:\n  name: {name}\nspec:\n  previewVariables: {{who: Ada}}\n  subject: \"Hi {{{{ who }}}}\"\n  text: {}\n",
        serde_json::to_string(text).unwrap()
    )
}

fn templated_email_yaml(name: &str, template: &str) -> String {
    format!(
        "apiVersion: kmailops.io/v1alpha1\nkind: Email\nmetadata:\n  name: {name}\nspec:\n  to: [\"ada@example.org\"]\n  templateRef: {{name: {template}}}\n  variables: {{who: Ada}}\n"
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn kmailops(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kmailops"))
        .args(args)
        .env_remove("KMAILOPS_TEMPLATES_DIR")
        .output()
        .await
        .expect("run kmailops")
}

// ---- the offline commands ----------------------------------------------------------------

fn hostile_files(dir: &Path) {
    let mut yaml = String::new();
    for (name, source) in [("repeat", REPEAT), ("doubling", DOUBLING)] {
        yaml.push_str("---\n");
        yaml.push_str(&template_yaml(name, source));
        yaml.push_str("---\n");
        yaml.push_str(&templated_email_yaml(&format!("to-{name}"), name));
    }
    let yaml = yaml.replace("metadata:\n", "metadata:\n  namespace: t\n");
    std::fs::write(dir.join("hostile.yaml"), yaml).unwrap();
}

#[tokio::test]
async fn validate_and_render_survive_a_template_that_builds_gigabytes() {
    let dir = tempfile::tempdir().unwrap();
    hostile_files(dir.path());
    let path = dir.path().to_str().unwrap();

    let out = kmailops(&["validate", path]).await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for what in [
        "EmailTemplate/repeat: TemplateError: ",
        "EmailTemplate/doubling: TemplateError: ",
        "Email/to-repeat: TemplateError: EmailTemplate t/repeat: ",
        "Email/to-doubling: TemplateError: EmailTemplate t/doubling: ",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no line with {what:?} in:\n{stdout}"));
        assert!(line.contains(MEMORY_LIMIT_TEXT), "{line}");
    }

    let file = dir.path().join("hostile.yaml");
    for email in ["to-repeat", "to-doubling"] {
        let out = kmailops(&["render", "-f", file.to_str().unwrap(), "--email", email]).await;
        assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: Email t/{email}: TemplateError: "))
                && stderr.contains(MEMORY_LIMIT_TEXT),
            "{stderr}"
        );
    }
}

// ---- the operator ------------------------------------------------------------------------

/// One `kmailops run` process watching `ns`, through the loopback proxy.
struct Process {
    child: std::process::Child,
    metrics: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Process {
    async fn start(env: &TestEnv, ns: &str) -> Self {
        Self::start_with(env, ns, &[]).await
    }

    async fn start_with(env: &TestEnv, ns: &str, args: &[&str]) -> Self {
        kmailops::provider::http::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let addr = support::api_proxy::start(env.client(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        support::api_proxy::write_kubeconfig(addr, &kubeconfig).unwrap();
        let log = std::fs::File::create(dir.path().join("operator.log")).unwrap();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kmailops"))
            .args(["run", "--namespace", ns, "--leader-election", "false"])
            .args(["--metrics-addr", &metrics.to_string()])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .env_remove("KMAILOPS_TEMPLATES_DIR")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kmailops run");
        Self {
            child,
            metrics,
            _dir: dir,
        }
    }

    /// Email reconciles so far, from the operator's metrics.
    async fn email_reconciles(&self) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("kmailops_reconcile_duration_seconds_count")
                    && l.contains("kind=\"Email\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A `VmHWM`/`VmRSS` line of /proc/<pid>/status, in KiB.
    fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// The render workers this process has running, with the CPU time (clock ticks) each
    /// has used.
    fn workers(&self) -> Vec<(u32, u64)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command name: state, ppid, ..., utime (14th), stime (15th).
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let fields: Vec<&str> = rest.split(' ').collect();
            if fields.get(1).and_then(|p| p.parse::<u32>().ok()) != Some(self.pid()) {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !text(&cmdline).contains(kmailops::template::worker::COMMAND) {
                continue;
            }
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
            found.push((pid, ticks(11).unwrap_or(0) + ticks(12).unwrap_or(0)));
        }
        found
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn error_of(e: &Email) -> String {
    e.status
        .as_ref()
        .and_then(|s| s.error.clone())
        .unwrap_or_default()
}

const RENDER_LIMIT: &str = "RenderLimitExceeded";

fn template_reason(t: &EmailTemplate) -> Option<&str> {
    t.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.reason.as_str())
}

fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_template_that_builds_gigabytes_fails_its_email_and_the_operator_carries_on() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "render-memory").await;
    let mut operator = Process::start(&env, &ns).await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);

    let mut yaml = String::new();
    for (name, source) in [("repeat", REPEAT), ("doubling", DOUBLING)] {
        yaml.push_str("---\n");
        yaml.push_str(&template_yaml(name, source));
        yaml.push_str("---\n");
        yaml.push_str(&templated_email_yaml(&format!("to-{name}"), name));
    }
    env.apply_yaml(&ns, &yaml).await;
    for email in ["to-repeat", "to-doubling"] {
        let failed = wait_for(&emails, email, phase_is(EmailPhase::Failed), WAIT).await;
        assert_eq!(ready_reason(&failed).as_deref(), Some("TemplateError"));
        assert!(
            error_of(&failed).contains(MEMORY_LIMIT_TEXT),
            "{}",
            error_of(&failed)
        );
    }
    assert!(operator.alive(), "the operator process ended");

    // Another tenant's mail still goes out, templated (so through a worker) and literal.
    env.apply_yaml(
        &ns,
        &format!(
            "{}---\n{}---\n{}",
            template_yaml("fine", "Hello {{ who }}"),
            templated_email_yaml("templated-after", "fine"),
            email_yaml("literal-after", "After", "")
        ),
    )
    .await;
    for email in ["templated-after", "literal-after"] {
        wait_for(&emails, email, phase_is(EmailPhase::Sent), WAIT).await;
    }
    assert_eq!(mock.calls(), 2);
    assert!(operator.alive(), "the operator process ended");

    // Not one of the gigabytes was ever in the operator: its peak stays near its idle size
    // (tens of MiB; the first string alone would be 100 MB).
    let peak = operator.memory_kib("VmHWM:");
    let now = operator.memory_kib("VmRSS:");
    println!("operator RSS now {now} KiB, peak {peak} KiB");
    assert!(peak < 96 * 1024, "operator peak RSS {peak} KiB");
}

#[tokio::test]
async fn a_render_past_its_budget_has_its_worker_killed_and_the_next_render_works() {
    let env = TestEnv::get().await;
    let (ns, _mock) = setup(&env, "render-budget").await;
    let mut operator = Process::start(&env, &ns).await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let templates: Api<EmailTemplate> = Api::namespaced(env.client(), &ns);

    env.apply_yaml(
        &ns,
        &format!(
            "{}---\n{}",
            template_yaml("slow", SLOW),
            templated_email_yaml("to-slow", "slow")
        ),
    )
    .await;
    // The workers busy with it (the Email's render, and the EmailTemplate's own preview),
    // until both have failed.
    let started = Instant::now();
    let mut busy = std::collections::BTreeSet::new();
    let failed = loop {
        // A quarter second of CPU (clock ticks of 10 ms): far more than a small render takes,
        // and reached within the budget even when the machine is busy.
        for (pid, ticks) in operator.workers() {
            if ticks >= 25 {
                busy.insert(pid);
            }
        }
        let e = emails.get("to-slow").await.unwrap();
        let t = templates.get("slow").await.unwrap();
        if phase_is(EmailPhase::Failed)(&e) && template_reason(&t) == Some(RENDER_LIMIT) {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "to-slow did not fail: {:#?}\nslow: {:#?}",
            e.status,
            t.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ready_reason(&failed).as_deref(), Some(RENDER_LIMIT));
    assert!(
        error_of(&failed).contains("rendering took longer than 10s"),
        "{}",
        error_of(&failed)
    );
    assert!(!busy.is_empty(), "no worker was seen rendering");
    // Killed, not left to burn its fuel (that would take minutes).
    let deadline = Instant::now() + Duration::from_secs(5);
    while busy.iter().any(|pid| pid_exists(*pid)) {
        assert!(
            Instant::now() < deadline,
            "workers {busy:?} still run after the budget: {:?}",
            operator.workers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(operator.alive());

    // Not rendered again while nothing it renders changes: not for the echoes of both status
    // writes, nor when the Email is touched or a Secret of its namespace is created (each
    // reconciles the Email, which fails again at once, the same way).
    let reconciles = operator.email_reconciles().await;
    let touch = serde_json::json!({"metadata": {"annotations": {"example.org/touched": "1"}}});
    emails
        .patch("to-slow", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    secret(&env.client(), &ns, "unrelated", "key", "value").await;
    let quiet_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < quiet_until {
        let burning: Vec<_> = operator
            .workers()
            .into_iter()
            .filter(|(_, ticks)| *ticks >= 25)
            .collect();
        assert!(
            burning.is_empty(),
            "the slow template is rendered again: {burning:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        operator.email_reconciles().await > reconciles,
        "the touched Email was not reconciled"
    );
    let again = emails.get("to-slow").await.unwrap();
    assert_eq!(ready_reason(&again).as_deref(), Some(RENDER_LIMIT));
    assert_eq!(error_of(&again), error_of(&failed));

    env.apply_yaml(
        &ns,
        &format!(
            "{}---\n{}",
            template_yaml("fine", "Hello {{ who }}"),
            templated_email_yaml("after", "fine")
        ),
    )
    .await;
    let sent = wait_for(&emails, "after", phase_is(EmailPhase::Sent), WAIT).await;
    let preview = sent.status.and_then(|s| s.preview);
    println!("after: {preview:?}");
}

#[tokio::test]
async fn slow_renders_of_a_namespace_take_two_workers_and_hold_up_none_of_its_other_emails() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "render-share").await;
    // Four reconciles at once (twice the sends): before renders had a share per namespace,
    // four slow Emails waiting for render slots held all of them.
    let mut operator = Process::start_with(&env, &ns, &["--max-concurrent-sends", "2"]).await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);

    // Four slow Emails, each with its own variables (so none fails from another's overrun),
    // then a literal Email.
    let mut yaml = template_yaml("slow", SLOW);
    let slow: Vec<String> = (0..4).map(|i| format!("slow-{i}")).collect();
    for (i, name) in slow.iter().enumerate() {
        yaml.push_str("---\n");
        yaml.push_str(
            &templated_email_yaml(name, "slow").replace("who: Ada", &format!("who: Ada{i}")),
        );
    }
    env.apply_yaml(&ns, &yaml).await;
    let started = Instant::now();
    env.apply_yaml(&ns, &email_yaml("literal", "Literal", ""))
        .await;

    // The literal Email goes out within one render budget (10 s; the margin is for a busy CI
    // machine, with two workers burning both cores), and the namespace never renders on more
    // than two workers at once.
    let mut most_busy = 0;
    let mut literal_sent = None;
    let mut failed = std::collections::BTreeSet::new();
    while failed.len() < slow.len() {
        let busy = operator
            .workers()
            .iter()
            .filter(|(_, ticks)| *ticks >= 25)
            .count();
        most_busy = most_busy.max(busy);
        if literal_sent.is_none()
            && phase_is(EmailPhase::Sent)(&emails.get("literal").await.unwrap())
        {
            literal_sent = Some(started.elapsed());
        }
        for name in &slow {
            if phase_is(EmailPhase::Failed)(&emails.get(name).await.unwrap()) {
                failed.insert(name.clone());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "slow Emails failed so far: {failed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("literal sent after {literal_sent:?}; at most {most_busy} workers busy");
    let literal_sent = literal_sent.expect("the literal Email was not sent");
    assert!(
        literal_sent < Duration::from_secs(8),
        "the literal Email waited {literal_sent:?} behind slow renders"
    );
    assert!(most_busy <= 2, "{most_busy} workers rendered at once");
    assert!(most_busy >= 1, "no worker was seen rendering");
    for name in &slow {
        let e = emails.get(name).await.unwrap();
        assert_eq!(ready_reason(&e).as_deref(), Some(RENDER_LIMIT), "{name}");
    }
    assert_eq!(mock.calls(), 1);
    assert!(operator.alive());
}

// ---- what a render costs ------------------------------------------------------------------

/// Prints (does not assert) the round trip of a small render in a worker against the same
/// render in-process. A debug build; `cargo test --release` for the shipped figure.
#[test]
fn what_one_render_costs_in_a_worker() {
    isolation::choose(Isolation::Workers {
        program: env!("CARGO_BIN_EXE_kmailops").into(),
    });
    let spec: EmailTemplateSpec = serde_json::from_value(serde_json::json!({
        "subject": "Order {{ id }}",
        "text": "{% include 'footer' %}Hello {{ name }}, order {{ id }} shipped.",
        "html": "<p>Hello {{ name }}</p>",
    }))
    .unwrap();
    let footer: EmailTemplateSpec =
        serde_json::from_value(serde_json::json!({"text": "-- the shop\n"})).unwrap();
    let mut set = TemplateSet::default();
    set.insert(
        "shop",
        "footer",
        kmailops::api::EmailTemplate::new("footer", footer),
    );
    let library = Library::new(
        "shop",
        Arc::new(set),
        Arc::new(Builtins::from_files(Vec::<(String, String)>::new())),
    );
    let vars = serde_json::from_value(serde_json::json!({"name": "Ada", "id": 7})).unwrap();
    let parts = Part::ALL;
    // Median and fastest of single renders: the machine may be shared, and a worker that must
    // wait for a free core shows up as a slow round trip.
    let time = |f: &dyn Fn() -> String| {
        let first = f();
        let mut each: Vec<Duration> = (0..300)
            .map(|_| {
                let started = Instant::now();
                assert_eq!(f(), first);
                started.elapsed()
            })
            .collect();
        each.sort();
        ((each[each.len() / 2], each[0]), first)
    };
    let (worker, a) = time(&|| {
        let r = render(&library, "order", &spec, Some(&vars), &parts).unwrap();
        format!("{r:?}")
    });
    let (here, b) = time(&|| {
        let r = render_here(&library, "order", &spec, Some(&vars), &parts).unwrap();
        format!("{r:?}")
    });
    assert_eq!(a, b);
    assert!(a.contains("-- the shop"), "{a}");
    println!(
        "one render (3 parts, one include), median / fastest of 300: in a worker {:?} / {:?}, in-process {:?} / {:?}",
        worker.0, worker.1, here.0, here.1
    );
}

/// A worker reads every include and built-in through the caller's library, so the caller's
/// admission rule decides what a render may read.
#[test]
fn includes_in_a_worker_are_read_through_the_callers_admission() {
    isolation::choose(Isolation::Workers {
        program: env!("CARGO_BIN_EXE_kmailops").into(),
    });
    assert!(isolation::in_workers());
    let page: EmailTemplateSpec = serde_json::from_value(serde_json::json!({
        "text": "{% include 'private' %}|{% include 'partials/sign.txt' %}",
    }))
    .unwrap();
    let private: EmailTemplateSpec =
        serde_json::from_value(serde_json::json!({"text": "private"})).unwrap();
    let mut set = TemplateSet::default();
    set.insert(
        "shop",
        "private",
        kmailops::api::EmailTemplate::new("private", private),
    );
    let builtins = Arc::new(Builtins::from_files([("partials/sign.txt", "signed")]));
    let library = Library::new("shop", Arc::new(set), builtins);

    let open = library.clone().admitting(Arc::new(|_, _| true));
    let out = render(&open, "page", &page, None, &[Part::Text]).unwrap();
    assert_eq!(out.text.as_deref(), Some("private|signed"));

    let closed = library.admitting(Arc::new(|_, t| {
        t.metadata.name.as_deref() != Some("private")
    }));
    let err = render(&closed, "page", &page, None, &[Part::Text]).unwrap_err();
    assert_eq!(err.reason, "TemplateError");
    assert!(err.message.contains("not found"), "{}", err.message);
}

/// A render that overran is not run again with the same inputs: it fails at once, the same
/// way. One of its includes changed is other inputs, and renders.
#[test]
fn an_overrun_is_not_rendered_again_until_what_it_read_changes() {
    isolation::choose(Isolation::Workers {
        program: env!("CARGO_BIN_EXE_kmailops").into(),
    });
    let page: EmailTemplateSpec =
        serde_json::from_value(serde_json::json!({"text": "{% include 'inner' %}"})).unwrap();
    let library_with = |inner: &str| {
        let spec: EmailTemplateSpec =
            serde_json::from_value(serde_json::json!({ "text": inner })).unwrap();
        let mut set = TemplateSet::default();
        set.insert(
            "overrun",
            "inner",
            kmailops::api::EmailTemplate::new("inner", spec),
        );
        Library::new(
            "overrun",
            Arc::new(set),
            Arc::new(Builtins::from_files(Vec::<(String, String)>::new())),
        )
    };
    let render_timed = |library: &Library| {
        let started = Instant::now();
        let out = render(library, "page", &page, None, &[Part::Text]);
        (out, started.elapsed())
    };

    let (first, took) = render_timed(&library_with(SLOW));
    let first = first.unwrap_err();
    assert_eq!(first.reason, RENDER_LIMIT, "{first:?}");
    assert!(took >= Duration::from_secs(10), "{took:?}");

    // The same inputs (a new library with the same sources): the same error, at once.
    let (again, took) = render_timed(&library_with(SLOW));
    assert_eq!(again.unwrap_err(), first);
    assert!(took < Duration::from_secs(2), "rendered again: {took:?}");

    // The include changed: rendered, and it fits now.
    let (fixed, _) = render_timed(&library_with("quick"));
    assert_eq!(fixed.unwrap().text.as_deref(), Some("quick"));
}
