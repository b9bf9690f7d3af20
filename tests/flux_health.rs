//! The Flux health checks of `flux/clusters/prod/kmailops-senders.yaml`: its `healthCheckExprs`
//! read from the file and evaluated with a CEL interpreter, the way kustomize-controller
//! (Flux v2.5 and later) evaluates them, over senders and templates in the states the operator
//! writes.
//!
//! Flux's rule, modelled by [`flux_verdict`]: an object whose `status.observedGeneration`
//! differs from `metadata.generation` is in progress and no expression runs; otherwise
//! `inProgress`, `failed` and `current` are evaluated in that order and the first that is true
//! decides; none true is in progress; an expression that errors fails the health check.

use std::path::Path;

use cel_interpreter::{Context, Program, Value as Cel};
use serde_json::{Value, json};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Verdict {
    InProgress,
    Failed,
    Current,
}
use Verdict::*;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `healthCheckExprs` entry of the senders layer for `kind`.
fn exprs(kind: &str) -> Value {
    let ks: Value =
        serde_yaml::from_str(&read("flux/clusters/prod/kmailops-senders.yaml")).unwrap();
    ks["spec"]["healthCheckExprs"]
        .as_array()
        .expect("the senders layer has healthCheckExprs")
        .iter()
        .find(|e| e["kind"] == kind && e["apiVersion"] == "kmailops.io/v1alpha1")
        .unwrap_or_else(|| panic!("no healthCheckExprs entry for {kind}"))
        .clone()
}

/// Evaluates one expression with the object's top-level fields as variables; an error is
/// returned as text (Flux fails the health check on it).
fn eval(expr: &str, obj: &Value) -> Result<bool, String> {
    let program = Program::compile(expr).map_err(|e| format!("{expr}: {e}"))?;
    let mut context = Context::default();
    for (name, value) in obj.as_object().unwrap() {
        context
            .add_variable(name.as_str(), value.clone())
            .map_err(|e| e.to_string())?;
    }
    match program.execute(&context) {
        Ok(Cel::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("{expr} gave {other:?}, not a bool")),
        Err(e) => Err(format!("{expr}: {e}")),
    }
}

fn flux_verdict(kind: &str, obj: &Value) -> Verdict {
    let observed = &obj["status"]["observedGeneration"];
    if !observed.is_null() && *observed != obj["metadata"]["generation"] {
        return InProgress;
    }
    let check = exprs(kind);
    for (field, verdict) in [
        ("inProgress", InProgress),
        ("failed", Failed),
        ("current", Current),
    ] {
        if let Some(expr) = check[field].as_str() {
            match eval(expr, obj) {
                Ok(true) => return verdict,
                Ok(false) => {}
                Err(e) => panic!("Flux would fail the health check of {obj}: {e}"),
            }
        }
    }
    InProgress
}

fn condition(type_: &str, status: &str, reason: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": format!("{type_} {reason}"),
        "observedGeneration": 2, "lastTransitionTime": "2025-01-01T00:00:00Z",
    })
}

fn sender(name: &str, conditions: Vec<Value>) -> Value {
    json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "EmailSenderConfig",
        "metadata": {"name": name, "namespace": "shop", "generation": 2},
        "spec": {
            "sender": {"address": "shop@example.com"},
            "mailersend": {"apiTokenSecretRef": {"name": "mailersend", "key": "token"}},
        },
        "status": {"observedGeneration": 2, "provider": "MailerSend", "conditions": conditions},
    })
}

/// A sender as the operator leaves it, by its Ready and Healthy conditions.
fn sender_in(ready: (&str, &str), healthy: Option<(&str, &str)>) -> Value {
    let mut conditions = vec![condition("Ready", ready.0, ready.1)];
    if let Some((status, reason)) = healthy {
        conditions.push(condition("Healthy", status, reason));
    }
    sender("mailersend", conditions)
}

/// The senders layer: Ready when every object is Current, failed when one is Failed, else
/// waiting (and the Emails layer, which depends on it, is not applied).
fn layer(objects: &[(&str, Value)]) -> Verdict {
    let verdicts: Vec<Verdict> = objects.iter().map(|(k, o)| flux_verdict(k, o)).collect();
    if verdicts.contains(&Failed) {
        Failed
    } else if verdicts.iter().all(|v| *v == Current) {
        Current
    } else {
        InProgress
    }
}

#[test]
fn sender_verdicts_follow_ready_and_never_the_providers_health() {
    let table = [
        // (Ready, Healthy, verdict)
        (("True", "Ready"), Some(("True", "CheckPassed")), Current),
        (("True", "Ready"), Some(("False", "AuthFailed")), Current),
        (
            ("True", "Ready"),
            Some(("False", "ProviderUnavailable")),
            Current,
        ),
        (
            ("True", "Ready"),
            Some(("Unknown", "CheckNotPermitted")),
            Current,
        ),
        (("True", "Ready"), None, Current),
        (("True", "Disabled"), Some(("Unknown", "Disabled")), Current),
        // As earlier operator versions wrote a disabled sender.
        (("False", "Disabled"), None, Current),
        (
            ("False", "SecretNotFound"),
            Some(("Unknown", "SecretNotFound")),
            Failed,
        ),
        (("False", "InvalidConfig"), None, Failed),
        (
            ("False", "FallbackNotFound"),
            Some(("True", "CheckPassed")),
            Failed,
        ),
        (("Unknown", "Reconciling"), None, InProgress),
    ];
    for (ready, healthy, want) in table {
        assert_eq!(
            flux_verdict("EmailSenderConfig", &sender_in(ready, healthy)),
            want,
            "Ready={ready:?} Healthy={healthy:?}"
        );
    }
}

#[test]
fn a_sender_is_in_progress_until_the_operator_observes_its_generation_and_writes_ready() {
    let mut defaulted = sender("mailersend", vec![]);
    defaulted["status"] = json!({"observedGeneration": -1});
    assert_eq!(flux_verdict("EmailSenderConfig", &defaulted), InProgress);
    let mut stale = sender_in(("False", "SecretNotFound"), None);
    stale["metadata"]["generation"] = json!(3);
    assert_eq!(flux_verdict("EmailSenderConfig", &stale), InProgress);
    // Observed, but no condition written yet (the schema defaults status to {}).
    let mut observed = sender("mailersend", vec![]);
    observed["status"] = json!({"observedGeneration": 2});
    assert_eq!(flux_verdict("EmailSenderConfig", &observed), InProgress);
}

#[test]
fn an_unhealthy_primary_with_a_healthy_fallback_does_not_hold_the_emails_back() {
    let mut primary = sender(
        "primary",
        vec![
            condition("Ready", "True", "Ready"),
            condition("Healthy", "False", "ProviderUnavailable"),
        ],
    );
    primary["spec"]["fallback"] = json!(["backup"]);
    let backup = sender(
        "backup",
        vec![
            condition("Ready", "True", "Ready"),
            condition("Healthy", "True", "CheckPassed"),
        ],
    );
    assert_eq!(
        layer(&[
            ("EmailSenderConfig", primary),
            ("EmailSenderConfig", backup)
        ]),
        Current
    );
}

#[test]
fn a_disabled_sender_and_its_fallback_let_the_layer_become_ready() {
    let disabled = sender_in(("True", "Disabled"), Some(("Unknown", "Disabled")));
    let backup = sender_in(("True", "Ready"), Some(("True", "CheckPassed")));
    assert_eq!(
        layer(&[
            ("EmailSenderConfig", disabled),
            ("EmailSenderConfig", backup)
        ]),
        Current
    );
}

#[test]
fn a_sender_without_its_secret_fails_the_layer() {
    let broken = sender_in(("False", "SecretNotFound"), None);
    let fine = sender_in(("True", "Ready"), Some(("True", "CheckPassed")));
    assert_eq!(
        layer(&[("EmailSenderConfig", fine), ("EmailSenderConfig", broken)]),
        Failed
    );
}

fn template(conditions: Vec<Value>) -> Value {
    json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "EmailTemplate",
        "metadata": {"name": "order-shipped", "namespace": "shop", "generation": 2},
        "spec": {"subject": "Shipped", "text": "Hello {{ name }}"},
        "status": {"observedGeneration": 2, "conditions": conditions},
    })
}

#[test]
fn template_verdicts_follow_ready() {
    let renders = template(vec![
        condition("Ready", "True", "Rendered"),
        condition("Stalled", "False", "Rendered"),
    ]);
    assert_eq!(flux_verdict("EmailTemplate", &renders), Current);
    let broken = template(vec![
        condition("Ready", "False", "TemplateError"),
        condition("Stalled", "True", "TemplateError"),
    ]);
    assert_eq!(flux_verdict("EmailTemplate", &broken), Failed);
    assert_eq!(flux_verdict("EmailTemplate", &template(vec![])), InProgress);
    let mut defaulted = template(vec![]);
    defaulted["status"] = json!({"observedGeneration": -1});
    assert_eq!(flux_verdict("EmailTemplate", &defaulted), InProgress);
}

#[test]
fn the_layout_states_the_flux_version_its_health_checks_need() {
    let text = read("flux/clusters/prod/kmailops-senders.yaml");
    assert!(text.contains("Flux v2.5 or later"), "{text}");
    assert!(read("flux/README.md").contains("Flux v2.5 or later"));
}
