//! The stock `kubectl` against the real API server, the operator and a local
//! MailerSend-compatible server that counts messages, the way people and GitOps tools drive it:
//! `get` (printer columns), `describe` (Events), `explain`, client-side `apply`,
//! `apply --server-side --field-manager=kustomize-controller` (Flux), `replace --force`
//! (Argo CD Replace), `delete` + `apply` (prune and re-add), label and annotation churn
//! (Argo CD tracking). One message per Email under `resendPolicy: Never`, one per content
//! under `OnChange`.
//!
//! On the testenv server kubectl goes through the discovery front of
//! `tests/support/api_proxy.rs` (the server alone serves no discovery); with a `KUBECONFIG`
//! from outside it talks to that cluster directly. kubectl itself comes from
//! `scripts/install-kubectl.sh` (run by `scripts/install-test-deps.sh`).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use kube::Api;
use support::mock_mailersend::MockMailerSend;
use support::operator::*;
use support::{TestEnv, wait_for};

use kmailops::api::{Email, EmailPhase};

/// kubectl pointed at the test server, with a discovery cache of its own.
struct Kubectl {
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    async fn new(env: &TestEnv) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = if env.uses_core_standins() {
            let addr = support::api_proxy::start(env.client(), "127.0.0.1:0".parse().unwrap())
                .await
                .expect("start the discovery front");
            let path = dir.path().join("kubeconfig");
            support::api_proxy::write_kubeconfig(addr, &path).unwrap();
            path
        } else {
            PathBuf::from(std::env::var("KUBECONFIG").expect("KUBECONFIG of the cluster"))
        };
        Kubectl { kubeconfig, dir }
    }

    /// Runs kubectl; panics with its output when it fails.
    async fn run(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_run(args).await;
        assert!(ok, "kubectl {args:?} failed:\n{stderr}\n{stdout}");
        stdout
    }

    async fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let cache = self.dir.path().join("cache");
        let out = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .output()
            .await
            .expect("kubectl on PATH: run scripts/install-kubectl.sh");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Writes `yaml` to a file of this run and returns its path.
    fn file(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        path.display().to_string()
    }
}

fn email(ns: &str, name: &str, subject: &str, policy: &str, metadata_extra: &str) -> String {
    format!(
        r#"apiVersion: kmailops.io/v1alpha1
kind: Email
metadata:
  name: {name}
  namespace: {ns}
{metadata_extra}
spec:
  to: ["Ada Lovelace <ada@example.org>"]
  subject: "{subject}"
  text: "Hello Ada"
  resendPolicy: {policy}
"#
    )
}

/// Waits until the Email named `name` rests in `Sent` for its current generation.
async fn sent(emails: &Api<Email>, name: &str) -> Email {
    wait_for(
        emails,
        name,
        |e: &Email| {
            let s = e.status.as_ref();
            s.and_then(|s| s.phase) == Some(EmailPhase::Sent)
                && s.and_then(|s| s.observed_generation) == e.metadata.generation
        },
        WAIT,
    )
    .await
}

/// The number of messages the provider got, after giving a second send time to show up.
async fn messages(mock: &MockMailerSend) -> usize {
    tokio::time::sleep(Duration::from_millis(300)).await;
    mock.calls()
}

/// Waits until the provider got `n` messages.
async fn wait_calls(mock: &MockMailerSend, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while mock.calls() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} messages, waited for {n}",
            mock.calls()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn uid(e: &Email) -> String {
    e.metadata.uid.clone().unwrap_or_default()
}

#[tokio::test]
async fn kubectl_gets_describes_and_explains_emails_and_senders() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "kubectl-read").await;
    let op = Operator::start(env.client(), &ns);
    let kubectl = Kubectl::new(&env).await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);

    let file = kubectl.file("e.yaml", &email(&ns, "welcome", "Welcome", "Never", ""));
    let out = kubectl.run(&["apply", "-f", &file]).await;
    assert!(out.contains("email.kmailops.io/welcome created"), "{out}");
    sent(&emails, "welcome").await;

    let table = kubectl.run(&["get", "emails", "-n", &ns]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    for column in ["NAME", "PHASE", "TO", "SENDER", "MESSAGE-ID", "AGE"] {
        assert!(header.contains(&column), "no {column} in:\n{table}");
    }
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("welcome") && row.contains(" Sent "),
        "{table}"
    );
    assert!(!table.contains('\u{1b}'), "no colour codes off a terminal");

    let described = kubectl
        .run(&["describe", "email", "welcome", "-n", &ns])
        .await;
    let events = described
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events in:\n{described}"));
    assert!(
        events.contains("Normal") && events.contains("Sent") && events.contains("sent through"),
        "{described}"
    );

    let explained = kubectl.run(&["explain", "email.spec.notAfter"]).await;
    assert!(explained.contains("FIELD: notAfter"), "{explained}");
    assert!(
        explained.contains("Never send after this time"),
        "{explained}"
    );

    let senders = kubectl.run(&["get", "esc", "-A"]).await;
    let line = senders
        .lines()
        .find(|l| l.starts_with(&ns))
        .unwrap_or_else(|| panic!("no sender of {ns} in:\n{senders}"));
    assert!(
        line.contains("mailersend") && line.contains("True"),
        "{senders}"
    );

    // Secrets through the core group, as `kubectl get secret` sees them.
    let secrets = kubectl
        .run(&["get", "secrets", "-n", &ns, "-o", "name"])
        .await;
    assert!(secrets.contains("secret/mailersend-token"), "{secrets}");

    assert_eq!(messages(&mock).await, 1);
    op.stop().await;
}

#[tokio::test]
async fn every_way_kubectl_and_gitops_tools_reapply_an_email_sends_it_once_under_never() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "kubectl-never").await;
    let op = Operator::start(env.client(), &ns);
    let kubectl = Kubectl::new(&env).await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let plain = kubectl.file("plain.yaml", &email(&ns, "notice", "Notice", "Never", ""));

    // Client-side apply, twice: the second is unchanged.
    kubectl.run(&["apply", "-f", &plain]).await;
    let first = sent(&emails, "notice").await;
    let out = kubectl.run(&["apply", "-f", &plain]).await;
    assert!(out.contains("unchanged"), "{out}");
    assert!(
        first
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubectl.kubernetes.io/last-applied-configuration")),
        "client-side apply records last-applied-configuration"
    );

    // Flux: server-side apply with its field manager, then Argo CD tracking labels and
    // annotations coming and going.
    kubectl
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=kustomize-controller",
            "-f",
            &plain,
        ])
        .await;
    let tracked = kubectl.file(
        "tracked.yaml",
        &email(
            &ns,
            "notice",
            "Notice",
            "Never",
            "  labels: {app.kubernetes.io/instance: shop}\n  annotations: {argocd.argoproj.io/tracking-id: \"shop:kmailops.io/Email:ns/notice\"}",
        ),
    );
    kubectl.run(&["apply", "-f", &tracked]).await;
    kubectl
        .run(&["label", "email", "notice", "-n", &ns, "team=ops"])
        .await;
    kubectl
        .run(&["annotate", "email", "notice", "-n", &ns, "note=churn"])
        .await;
    kubectl
        .run(&["label", "email", "notice", "-n", &ns, "team-"])
        .await;
    kubectl.run(&["apply", "-f", &plain]).await;
    sent(&emails, "notice").await;
    assert_eq!(messages(&mock).await, 1, "after apply and metadata churn");

    // Argo CD Replace=true,Force=true: a delete and a create, a new UID.
    kubectl.run(&["replace", "--force", "-f", &plain]).await;
    let replaced = wait_for(
        &emails,
        "notice",
        |e: &Email| {
            uid(e) != uid(&first)
                && e.status.as_ref().and_then(|s| s.phase) == Some(EmailPhase::Sent)
        },
        WAIT,
    )
    .await;
    assert_eq!(
        ready_reason(&replaced).as_deref(),
        Some("RecoveredFromLedger")
    );

    // Prune and re-add.
    kubectl.run(&["delete", "-f", &plain]).await;
    kubectl.run(&["apply", "-f", &plain]).await;
    let readded = wait_for(
        &emails,
        "notice",
        |e: &Email| {
            uid(e) != uid(&replaced)
                && e.status.as_ref().and_then(|s| s.phase) == Some(EmailPhase::Sent)
        },
        WAIT,
    )
    .await;
    assert_eq!(
        ready_reason(&readded).as_deref(),
        Some("RecoveredFromLedger")
    );
    assert_eq!(
        messages(&mock).await,
        1,
        "after replace --force and delete + apply"
    );

    // An edit after Sent is not sent under Never.
    let edited = kubectl.file(
        "edited.yaml",
        &email(&ns, "notice", "Notice (fixed)", "Never", ""),
    );
    kubectl.run(&["apply", "-f", &edited]).await;
    let changed = wait_for(
        &emails,
        "notice",
        |e: &Email| ready_reason(e).as_deref() == Some("ChangedAfterSend"),
        WAIT,
    )
    .await;
    assert_eq!(changed.status.unwrap().phase, Some(EmailPhase::Sent));
    assert_eq!(
        messages(&mock).await,
        1,
        "one message for the Email, whatever happened"
    );
    op.stop().await;
}

#[tokio::test]
async fn under_on_change_kubectl_and_gitops_tools_send_each_content_once() {
    let env = TestEnv::get().await;
    let (ns, mock) = setup(&env, "kubectl-onchange").await;
    let op = Operator::start(env.client(), &ns);
    let kubectl = Kubectl::new(&env).await;
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let a = kubectl.file("a.yaml", &email(&ns, "digest", "Digest A", "OnChange", ""));
    let b = kubectl.file("b.yaml", &email(&ns, "digest", "Digest B", "OnChange", ""));

    kubectl.run(&["apply", "-f", &a]).await;
    sent(&emails, "digest").await;
    kubectl
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=kustomize-controller",
            "-f",
            &a,
        ])
        .await;
    kubectl
        .run(&[
            "label",
            "email",
            "digest",
            "-n",
            &ns,
            "app.kubernetes.io/instance=digest",
        ])
        .await;
    sent(&emails, "digest").await;
    assert_eq!(messages(&mock).await, 1, "content A");

    // New content: sent once, however it arrives.
    kubectl.run(&["apply", "-f", &b]).await;
    sent(&emails, "digest").await;
    wait_calls(&mock, 2).await;
    kubectl.run(&["replace", "--force", "-f", &b]).await;
    sent(&emails, "digest").await;
    kubectl.run(&["delete", "-f", &b]).await;
    kubectl
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=kustomize-controller",
            "-f",
            &b,
        ])
        .await;
    sent(&emails, "digest").await;
    assert_eq!(messages(&mock).await, 2, "content B once");

    // A rollback to A: the ledger remembers A went out.
    kubectl.run(&["apply", "-f", &a]).await;
    let rolled_back = sent(&emails, "digest").await;
    assert_eq!(messages(&mock).await, 2, "A is not sent again");
    assert_eq!(
        rolled_back.spec.subject.as_deref(),
        Some("Digest A"),
        "{rolled_back:?}"
    );
    let subjects: Vec<String> = mock
        .bodies()
        .iter()
        .map(|b| b["subject"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(subjects, ["Digest A", "Digest B"]);
    op.stop().await;
}
