//! The Argo CD health checks in `argocd/health/*.lua`, run in Lua 5.1 (the dialect Argo CD's
//! gopher-lua speaks) against objects shaped the way kmailops writes them, and checked to be
//! embedded verbatim in `argocd/argocd-cm-health.yaml`.
//!
//! Email fixtures get their status from the operator's own code (`email::status::settle`), so
//! a change to the conditions the operator writes shows up here.

use std::path::Path;

use kmailops::api::{Email, EmailPhase, EmailStatus};
use mlua::{Lua, LuaSerdeExt, Table};
use serde_json::{Value, json};

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Argo CD's verdict: (status, message).
fn health(script: &str, obj: &Value) -> (String, String) {
    let lua = Lua::new();
    // Argo CD hands the object over as plain tables; JSON null is nil there.
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    let value = lua.to_value_with(obj, options).unwrap();
    lua.globals().set("obj", value).unwrap();
    let hs: Table = lua
        .load(read(&format!("argocd/health/{script}")))
        .set_name(script)
        .eval()
        .unwrap_or_else(|e| panic!("{script} failed on {obj}: {e}"));
    let status: String = hs.get("status").unwrap();
    let message: Option<String> = hs.get("message").unwrap();
    assert!(
        [
            "Healthy",
            "Progressing",
            "Degraded",
            "Suspended",
            "Missing",
            "Unknown"
        ]
        .contains(&status.as_str()),
        "{script} returned {status}, which Argo CD does not know"
    );
    (status, message.unwrap_or_default())
}

fn status_of(script: &str, obj: &Value) -> String {
    health(script, obj).0
}

// ---- Email ---------------------------------------------------------------------------------

fn new_email(generation: i64) -> Email {
    serde_json::from_value(json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "Email",
        "metadata": {"name": "welcome", "namespace": "shop", "generation": generation},
        "spec": {"to": ["a@example.com"], "subject": "Hi", "text": "Hello"},
    }))
    .unwrap()
}

/// An Email whose status the operator's code settled in `phase`.
fn email_in(phase: EmailPhase, error: Option<&str>) -> Value {
    let mut email = new_email(3);
    let mut status = EmailStatus {
        error: error.map(str::to_string),
        ..Default::default()
    };
    if phase == EmailPhase::Scheduled {
        status.next_attempt_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2030-01-01T09:00:00Z".parse().unwrap(),
        ));
    }
    let message = format!("the Email is {}", phase.as_str());
    kmailops::controllers::email::status::settle(
        &email,
        &mut status,
        phase,
        phase.as_str(),
        &message,
        Vec::new(),
    );
    email.status = Some(status);
    serde_json::to_value(&email).unwrap()
}

#[test]
fn resting_emails_are_healthy() {
    for phase in [EmailPhase::Sent, EmailPhase::Expired, EmailPhase::Previewed] {
        assert!(lets_the_next_wave_go_on(
            "email.lua",
            &email_in(phase, None)
        ));
        let (status, message) = health("email.lua", &email_in(phase, None));
        assert_eq!(status, "Healthy", "{phase:?}");
        assert_eq!(message, format!("the Email is {}", phase.as_str()));
    }
}

/// Argo CD applies the next sync wave only once every resource of the current one is
/// Healthy; Suspended, Progressing and Degraded all hold it.
fn lets_the_next_wave_go_on(script: &str, obj: &Value) -> bool {
    status_of(script, obj) == "Healthy"
}

#[test]
fn a_scheduled_email_is_healthy_with_its_send_time_so_it_holds_no_sync_until_then() {
    let scheduled = email_in(EmailPhase::Scheduled, None);
    let (status, message) = health("email.lua", &scheduled);
    assert_eq!(status, "Healthy");
    assert!(message.contains("2030-01-01T09:00:00Z"), "{message}");
    assert!(lets_the_next_wave_go_on("email.lua", &scheduled));
}

#[test]
fn emails_on_their_way_are_progressing() {
    for phase in [
        EmailPhase::Pending,
        EmailPhase::Sending,
        EmailPhase::Retrying,
    ] {
        assert_eq!(
            status_of("email.lua", &email_in(phase, None)),
            "Progressing",
            "{phase:?}"
        );
    }
    let (_, message) = health(
        "email.lua",
        &email_in(EmailPhase::Retrying, Some("HTTP 503 from MailerSend")),
    );
    assert!(message.contains("HTTP 503 from MailerSend"), "{message}");
}

#[test]
fn failed_and_unknown_emails_are_degraded_with_the_error_as_message() {
    for phase in [EmailPhase::Failed, EmailPhase::Unknown] {
        let (status, message) = health(
            "email.lua",
            &email_in(phase, Some("Secret shop/mailersend does not exist")),
        );
        assert_eq!(status, "Degraded", "{phase:?}");
        assert_eq!(message, "Secret shop/mailersend does not exist");
    }
    let (status, message) = health("email.lua", &email_in(EmailPhase::Failed, None));
    assert_eq!(status, "Degraded");
    assert_eq!(
        message, "the Email is Failed",
        "falls back to the condition"
    );
}

#[test]
fn every_email_phase_has_a_verdict_other_than_unknown() {
    for phase in [
        EmailPhase::Pending,
        EmailPhase::Scheduled,
        EmailPhase::Previewed,
        EmailPhase::Sending,
        EmailPhase::Retrying,
        EmailPhase::Sent,
        EmailPhase::Failed,
        EmailPhase::Unknown,
        EmailPhase::Expired,
    ] {
        assert_ne!(status_of("email.lua", &email_in(phase, None)), "Unknown");
    }
}

#[test]
fn an_email_is_progressing_until_the_operator_observes_its_generation() {
    // Fresh: no status at all, or the schema default of -1.
    let fresh = serde_json::to_value(new_email(1)).unwrap();
    assert_eq!(status_of("email.lua", &fresh), "Progressing");
    let mut defaulted = fresh.clone();
    defaulted["status"] = json!({"observedGeneration": -1});
    assert_eq!(status_of("email.lua", &defaulted), "Progressing");
    // Sent for generation 3, but the spec moved on to generation 4.
    let mut stale = email_in(EmailPhase::Sent, None);
    stale["metadata"]["generation"] = json!(4);
    assert_eq!(status_of("email.lua", &stale), "Progressing");
    // Even a Failed status is not trusted for a newer generation.
    let mut stale_failure = email_in(EmailPhase::Failed, Some("old"));
    stale_failure["metadata"]["generation"] = json!(4);
    assert_eq!(status_of("email.lua", &stale_failure), "Progressing");
}

#[test]
fn an_unrecognised_email_phase_is_unknown_rather_than_healthy() {
    let mut email = email_in(EmailPhase::Sent, None);
    email["status"]["phase"] = json!("Bouncing");
    assert_eq!(status_of("email.lua", &email), "Unknown");
}

// ---- EmailSenderConfig ---------------------------------------------------------------------

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": 2, "lastTransitionTime": "2025-01-01T00:00:00Z",
    })
}

fn sender(conditions: Vec<Value>, disabled: bool) -> Value {
    json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "EmailSenderConfig",
        "metadata": {"name": "mailersend", "namespace": "shop", "generation": 2},
        "spec": {
            "sender": {"address": "shop@example.com"},
            "disabled": disabled,
            "mailersend": {"apiTokenSecretRef": {"name": "mailersend", "key": "token"}},
        },
        "status": {"observedGeneration": 2, "provider": "MailerSend", "conditions": conditions},
    })
}

#[test]
fn a_ready_and_healthy_sender_is_healthy() {
    let s = sender(
        vec![
            condition("Ready", "True", "Ready", "credentials loaded"),
            condition(
                "Healthy",
                "True",
                "CheckPassed",
                "GET /api-quota answered 200",
            ),
        ],
        false,
    );
    assert_eq!(
        health("emailsenderconfig.lua", &s),
        ("Healthy".into(), "GET /api-quota answered 200".into())
    );
}

#[test]
fn a_ready_sender_whose_check_is_not_permitted_stays_healthy_and_says_so() {
    let s = sender(
        vec![
            condition("Ready", "True", "Ready", "credentials loaded"),
            condition(
                "Healthy",
                "Unknown",
                "CheckNotPermitted",
                "the key may send but not read the domain",
            ),
        ],
        false,
    );
    let (status, message) = health("emailsenderconfig.lua", &s);
    assert_eq!(status, "Healthy");
    assert!(message.contains("may send but not read"), "{message}");
}

#[test]
fn a_sender_that_is_not_ready_is_degraded_with_the_reason() {
    let not_ready = sender(
        vec![condition(
            "Ready",
            "False",
            "SecretNotFound",
            "Secret shop/mailersend does not exist",
        )],
        false,
    );
    assert_eq!(
        health("emailsenderconfig.lua", &not_ready),
        (
            "Degraded".into(),
            "Secret shop/mailersend does not exist".into()
        )
    );
    let missing_fallback = sender(
        vec![condition(
            "Ready",
            "False",
            "FallbackNotFound",
            "spec.fallback names backup that do not exist in namespace shop",
        )],
        false,
    );
    assert_eq!(
        status_of("emailsenderconfig.lua", &missing_fallback),
        "Degraded"
    );
}

#[test]
fn a_provider_outage_keeps_a_ready_sender_healthy_and_the_message_says_so() {
    let unhealthy = sender(
        vec![
            condition("Ready", "True", "Ready", "ready to send"),
            condition("Healthy", "False", "AuthFailed", "401 Unauthenticated"),
        ],
        false,
    );
    let (status, message) = health("emailsenderconfig.lua", &unhealthy);
    assert_eq!(status, "Healthy", "an outage must not hold a sync");
    assert!(message.contains("provider is unhealthy"), "{message}");
    assert!(message.contains("401 Unauthenticated"), "{message}");
}

#[test]
fn a_disabled_sender_is_healthy_and_says_it_is_disabled() {
    let s = sender(
        vec![
            condition("Ready", "True", "Disabled", "spec.disabled is true"),
            condition(
                "Healthy",
                "Unknown",
                "Disabled",
                "not checked while disabled",
            ),
        ],
        true,
    );
    let (status, message) = health("emailsenderconfig.lua", &s);
    assert_eq!(status, "Healthy");
    assert!(message.starts_with("Disabled"), "{message}");
    // As earlier versions wrote it: Ready=False, reason Disabled.
    let old = sender(
        vec![condition("Ready", "False", "Disabled", "disabled")],
        true,
    );
    assert_eq!(
        health("emailsenderconfig.lua", &old),
        ("Healthy".into(), message)
    );
}

#[test]
fn sender_verdicts_in_a_sync_wave_follow_ready_and_never_the_providers_health() {
    let table = [
        // (Ready, Healthy, Argo CD health)
        (("True", "Ready"), Some(("True", "CheckPassed")), "Healthy"),
        (("True", "Ready"), Some(("False", "AuthFailed")), "Healthy"),
        (
            ("True", "Ready"),
            Some(("False", "ProviderUnavailable")),
            "Healthy",
        ),
        (
            ("True", "Ready"),
            Some(("Unknown", "CheckNotPermitted")),
            "Healthy",
        ),
        (
            ("True", "Disabled"),
            Some(("Unknown", "Disabled")),
            "Healthy",
        ),
        (("False", "Disabled"), None, "Healthy"),
        (
            ("False", "SecretNotFound"),
            Some(("Unknown", "SecretNotFound")),
            "Degraded",
        ),
        (("False", "InvalidConfig"), None, "Degraded"),
        (
            ("False", "FallbackNotFound"),
            Some(("True", "CheckPassed")),
            "Degraded",
        ),
    ];
    for ((ready, reason), healthy, want) in table {
        let mut conditions = vec![condition("Ready", ready, reason, reason)];
        if let Some((status, reason)) = healthy {
            conditions.push(condition("Healthy", status, reason, reason));
        }
        let s = sender(conditions, reason == "Disabled");
        assert_eq!(
            status_of("emailsenderconfig.lua", &s),
            want,
            "Ready={ready}/{reason} Healthy={healthy:?}"
        );
        assert_eq!(
            lets_the_next_wave_go_on("emailsenderconfig.lua", &s),
            want == "Healthy"
        );
    }
}

#[test]
fn a_disabled_primary_and_an_unhealthy_primary_with_a_fallback_let_the_emails_wave_go_on() {
    let disabled = sender(
        vec![
            condition("Ready", "True", "Disabled", "spec.disabled is true"),
            condition(
                "Healthy",
                "Unknown",
                "Disabled",
                "not checked while disabled",
            ),
        ],
        true,
    );
    let mut unhealthy = sender(
        vec![
            condition("Ready", "True", "Ready", "ready to send"),
            condition("Healthy", "False", "ProviderUnavailable", "HTTP 503"),
        ],
        false,
    );
    unhealthy["spec"]["fallback"] = json!(["backup"]);
    let backup = sender(
        vec![
            condition("Ready", "True", "Ready", "ready to send"),
            condition(
                "Healthy",
                "True",
                "CheckPassed",
                "GET /api-quota answered 200",
            ),
        ],
        false,
    );
    for wave in [[&disabled, &backup], [&unhealthy, &backup]] {
        assert!(
            wave.iter()
                .all(|s| lets_the_next_wave_go_on("emailsenderconfig.lua", s)),
            "{wave:?}"
        );
    }
}

#[test]
fn a_sender_is_progressing_until_observed_and_until_it_has_a_ready_condition() {
    let mut fresh = sender(vec![], false);
    fresh.as_object_mut().unwrap().remove("status");
    assert_eq!(status_of("emailsenderconfig.lua", &fresh), "Progressing");
    let mut defaulted = sender(vec![], false);
    defaulted["status"] = json!({"observedGeneration": -1});
    assert_eq!(
        status_of("emailsenderconfig.lua", &defaulted),
        "Progressing"
    );
    let mut stale = sender(vec![condition("Ready", "True", "Ready", "ok")], false);
    stale["metadata"]["generation"] = json!(3);
    assert_eq!(status_of("emailsenderconfig.lua", &stale), "Progressing");
    let observed_without_ready = sender(vec![], false);
    assert_eq!(
        status_of("emailsenderconfig.lua", &observed_without_ready),
        "Progressing"
    );
}

// ---- EmailTemplate -------------------------------------------------------------------------

fn template(ready: Option<&str>, error: Option<Value>) -> Value {
    let conditions: Vec<Value> = ready
        .map(|s| vec![condition("Ready", s, "Rendered", "renders")])
        .unwrap_or_default();
    let mut status = json!({"observedGeneration": 2, "conditions": conditions});
    if let Some(e) = error {
        status["error"] = e;
    }
    json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "EmailTemplate",
        "metadata": {"name": "order-shipped", "namespace": "shop", "generation": 2},
        "spec": {"subject": "Shipped", "text": "Hello {{ name }}"},
        "status": status,
    })
}

#[test]
fn a_template_that_renders_is_healthy_and_one_that_does_not_is_degraded_with_the_place() {
    assert_eq!(
        status_of("emailtemplate.lua", &template(Some("True"), None)),
        "Healthy"
    );
    let broken = template(
        Some("False"),
        Some(json!({
            "message": "undefined value `name`", "template": "order-shipped/text",
            "line": 3, "column": 7,
        })),
    );
    assert_eq!(
        health("emailtemplate.lua", &broken),
        (
            "Degraded".into(),
            "order-shipped/text:3:7: undefined value `name`".into()
        )
    );
    let without_detail = template(Some("False"), None);
    assert_eq!(
        health("emailtemplate.lua", &without_detail),
        ("Degraded".into(), "renders".into())
    );
}

#[test]
fn a_template_is_progressing_until_observed() {
    let mut fresh = template(None, None);
    fresh.as_object_mut().unwrap().remove("status");
    assert_eq!(status_of("emailtemplate.lua", &fresh), "Progressing");
    let mut stale = template(Some("True"), None);
    stale["metadata"]["generation"] = json!(5);
    assert_eq!(status_of("emailtemplate.lua", &stale), "Progressing");
    assert_eq!(
        status_of("emailtemplate.lua", &template(None, None)),
        "Progressing"
    );
}

// ---- argocd-cm -----------------------------------------------------------------------------

#[test]
fn argocd_cm_embeds_exactly_the_standalone_scripts() {
    let cm: Value = serde_yaml::from_str(&read("argocd/argocd-cm-health.yaml")).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data = cm["data"].as_object().unwrap();
    let expected = [
        ("Email", "email.lua"),
        ("EmailSenderConfig", "emailsenderconfig.lua"),
        ("EmailTemplate", "emailtemplate.lua"),
    ];
    assert_eq!(data.len(), expected.len(), "one health check per kind");
    for (kind, file) in expected {
        let key = format!("resource.customizations.health.kmailops.io_{kind}");
        let embedded = data
            .get(&key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("argocd-cm-health.yaml has no {key}"));
        assert!(
            embedded == read(&format!("argocd/health/{file}")),
            "{key} differs from argocd/health/{file}: embed the file verbatim"
        );
    }
}
