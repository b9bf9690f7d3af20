//! Tells the owner of a rejected object what is wrong with it: the field and the fix, in its
//! status (written as a raw merge patch, since the typed object cannot be built) and in a
//! Warning Event. Values are never quoted back: a rejected field may hold an address or a
//! secret, and statuses and Events are read by more people than the object's author.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use tokio::sync::mpsc;

use crate::api::{Email, EmailSenderConfig, EmailTemplate, FIELD_MANAGER};
use crate::context::Context;

use super::Rejected;

/// Reason of the conditions and the Event.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// Reports each rejected object once per generation, until `rejected` closes.
pub async fn run(ctx: Arc<Context>, mut rejected: mpsc::UnboundedReceiver<Rejected>) {
    let (client, events) = (&ctx.client, &ctx.events);
    // (kind, namespace, name) -> the generation last reported.
    let mut reported: HashMap<(&'static str, String, String), Option<i64>> = HashMap::new();
    while let Some(r) = rejected.recv().await {
        let resource = match r.kind {
            "Email" => ApiResource::erase::<Email>(&()),
            "EmailTemplate" => ApiResource::erase::<EmailTemplate>(&()),
            "EmailSenderConfig" => ApiResource::erase::<EmailSenderConfig>(&()),
            _ => continue,
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &r.namespace, &resource);
        let key = (r.kind, r.namespace.clone(), r.name.clone());
        let object = match api.get_opt(&r.name).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                reported.remove(&key);
                continue;
            }
            Err(e) => {
                tracing::warn!(kind = r.kind, object = %format!("{}/{}", r.namespace, r.name), error = %redact(&e.to_string()), "could not read a rejected object to report it");
                continue;
            }
        };
        let generation = object.metadata.generation;
        if reported.get(&key) == Some(&generation) {
            continue;
        }
        let problem = why(r.kind, &object);
        let message = format!(
            "{problem}. The API server accepted it, but kmailops cannot read it, so it is not acted on: fix the field in the manifest"
        );
        let patch = status_patch(r.kind, generation, &message);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        if let Err(e) = api
            .patch_status(&r.name, &params, &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(kind = r.kind, object = %format!("{}/{}", r.namespace, r.name), error = %redact(&e.to_string()), "could not write the status of a rejected object");
            continue;
        }
        let regarding = ObjectReference {
            api_version: Some(resource.api_version.clone()),
            kind: Some(r.kind.to_string()),
            name: Some(r.name.clone()),
            namespace: Some(r.namespace.clone()),
            uid: object.metadata.uid.clone(),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: INVALID_SPEC.into(),
            note: Some(crate::conditions::truncate(&message, 1024)),
            action: "Validate".into(),
            secondary: None,
        };
        if let Err(e) = events.publish(&event, &regarding).await {
            tracing::warn!(kind = r.kind, object = %format!("{}/{}", r.namespace, r.name), error = %e, "could not publish Event InvalidSpec");
        }
        reported.insert(key, generation);
    }
}

/// What is wrong, naming the field: the typed parse again, with the path it failed at.
pub fn why(kind: &str, object: &DynamicObject) -> String {
    if let Some(note) = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(super::depth::REJECTED))
    {
        return note.clone();
    }
    let value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return redact(&e.to_string()),
    };
    let result = match kind {
        "Email" => path_error::<Email>(value),
        "EmailTemplate" => path_error::<EmailTemplate>(value),
        _ => path_error::<EmailSenderConfig>(value),
    };
    result.unwrap_or_else(|| "the object does not match the kmailops types".into())
}

fn path_error<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> Option<String> {
    match serde_path_to_error::deserialize::<_, K>(value) {
        Ok(_) => None,
        Err(e) => Some(format!("{}: {}", e.path(), redact(&e.inner().to_string()))),
    }
}

/// Serde quotes the values it could not take (`invalid value: string "..."`); those may be
/// addresses or secrets, so every quoted part is cut out.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match (c, quoted) {
            ('"', false) => {
                quoted = true;
                out.push_str("\"…");
            }
            ('"', true) => {
                quoted = false;
                out.push('"');
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

/// The status of a rejected object: `Ready=False`/`Stalled=True` with reason `InvalidSpec`,
/// and for an Email `phase: Failed` with the message as its `error`.
fn status_patch(kind: &str, generation: Option<i64>, message: &str) -> serde_json::Value {
    let now = jiff::Timestamp::now().to_string();
    let condition = |type_: &str, status: &str| {
        serde_json::json!({
            "type": type_, "status": status, "reason": INVALID_SPEC, "message": message,
            "observedGeneration": generation, "lastTransitionTime": now,
        })
    };
    let conditions = vec![
        condition("Ready", "False"),
        condition("Reconciling", "False"),
        condition("Stalled", "True"),
    ];
    let mut status = serde_json::json!({
        "observedGeneration": generation,
        "conditions": conditions,
    });
    if kind == "Email" {
        status["phase"] = "Failed".into();
        status["error"] = message.into();
    }
    serde_json::json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_named_and_no_value_is_quoted_back() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "kmailops.io/v1alpha1", "kind": "Email",
            "metadata": {"name": "welcome", "namespace": "shop"},
            "spec": {"to": ["ada@example.org"], "subject": "s", "text": "t",
                     "sendAt": "2026-12-01T10:00:00+99:00"},
        }))
        .unwrap();
        let why = why("Email", &object);
        assert!(why.starts_with("spec.sendAt: "), "{why}");
        assert!(!why.contains("+99:00"), "{why}");
    }

    #[test]
    fn quoted_parts_are_cut_out() {
        assert_eq!(
            redact(r#"invalid type: string "ada@example.org", expected a list"#),
            r#"invalid type: string "…", expected a list"#
        );
    }

    #[test]
    fn an_email_fails_and_other_kinds_are_not_ready() {
        let email = status_patch("Email", Some(3), "m");
        assert_eq!(email["status"]["phase"], "Failed");
        assert_eq!(email["status"]["conditions"][0]["reason"], INVALID_SPEC);
        assert_eq!(email["status"]["observedGeneration"], 3);
        let sender = status_patch("EmailSenderConfig", Some(1), "m");
        assert!(sender["status"].get("phase").is_none());
        assert_eq!(sender["status"]["conditions"][2]["type"], "Stalled");
    }
}
