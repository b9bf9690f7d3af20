//! [`EntryHead`]: the part of an EmailDelivery the ledger index reads, as the EmailDelivery
//! watch parses it.
//!
//! Every entry passes through that watch at least twice (its claim and its outcome), and the
//! index needs three things of it. Parsed as a whole `EmailDelivery`, each event built its
//! managedFields (a tree of JSON maps), labels, annotations and status only to drop them. And
//! one entry our types reject (a status value written by hand) failed the whole list, so the
//! index never filled and the operator never became ready. This type reads the name, namespace,
//! resourceVersion (the watch resumes from it), `spec.emailName` and the sweep's mark, and skips
//! everything else unparsed.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};

use crate::api::EmailDelivery;
use crate::ledger::retention::ORPHANED_SINCE;

/// See the module docs. Its `metadata` holds only name, namespace, resourceVersion and, when
/// set, the `kmailops.io/orphaned-since` annotation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntryHead {
    pub metadata: ObjectMeta,
    /// `spec.emailName`; empty when the object has none.
    pub email_name: String,
}

impl EntryHead {
    pub fn new(namespace: &str, name: &str, email_name: &str) -> Self {
        EntryHead {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            email_name: email_name.into(),
        }
    }

    pub fn orphaned_since(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ORPHANED_SINCE))
            .map(String::as_str)
    }
}

impl Resource for EntryHead {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        EmailDelivery::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        EmailDelivery::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        EmailDelivery::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        EmailDelivery::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Longer than any RFC 3339 timestamp, nanoseconds and offset included.
const MAX_MARK_LEN: usize = 64;

// The wire form: serde skips every field not named here without building it.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: Option<WireSpec>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    annotations: Option<WireAnnotations>,
}

#[derive(Deserialize)]
struct WireAnnotations {
    #[serde(rename = "kmailops.io/orphaned-since")]
    orphaned_since: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    email_name: Option<String>,
}

impl<'de> Deserialize<'de> for EntryHead {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        // The index keeps the mark for every entry; an annotation may be up to 256 KiB. One
        // longer than any timestamp is kept as "" instead: unreadable, as it was, so the sweep
        // replaces it with its own mark.
        let mark = wire
            .metadata
            .annotations
            .and_then(|a| a.orphaned_since)
            .map(|m| {
                if m.len() > MAX_MARK_LEN {
                    String::new()
                } else {
                    m
                }
            });
        Ok(EntryHead {
            metadata: ObjectMeta {
                name: wire.metadata.name,
                namespace: wire.metadata.namespace,
                resource_version: wire.metadata.resource_version,
                annotations: mark.map(|m| [(ORPHANED_SINCE.to_string(), m)].into()),
                ..ObjectMeta::default()
            },
            email_name: wire.spec.and_then(|s| s.email_name).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::retention::{SweepStep, sweep_step};
    use serde_json::json;

    fn entry_json(annotations: serde_json::Value, status: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": "EmailDelivery",
            "metadata": {
                "name": "order-1-ab12",
                "namespace": "shop",
                "uid": "0b5e7a8c-0000-4000-8000-000000000000",
                "resourceVersion": "4711",
                "labels": {"kmailops.io/email": "order-1"},
                "annotations": annotations,
                "managedFields": [{"manager": "kmailops", "operation": "Apply", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:status": {"f:phase": {}}}}],
            },
            "spec": {"emailName": "order-1", "emailUID": "u", "deliveryHash": "h", "senderConfig": "shop/ms", "recipientCount": 1},
            "status": status,
        })
    }

    #[test]
    fn reads_what_the_index_needs_and_nothing_else() {
        let json = entry_json(
            json!({"kmailops.io/claimed-by": "x", "kmailops.io/orphaned-since": "2026-11-21T10:00:00Z"}),
            json!({"phase": "Sent", "messageId": "m"}),
        );
        let head: EntryHead = serde_json::from_value(json).unwrap();
        assert_eq!(head.metadata.name.as_deref(), Some("order-1-ab12"));
        assert_eq!(head.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(head.metadata.resource_version.as_deref(), Some("4711"));
        assert_eq!(head.email_name, "order-1");
        assert_eq!(head.orphaned_since(), Some("2026-11-21T10:00:00Z"));
        // Nothing else is kept: no labels, no other annotation, no managedFields.
        assert!(head.metadata.labels.is_none());
        assert_eq!(head.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        assert!(head.metadata.managed_fields.is_none());
    }

    #[test]
    fn an_entry_our_types_reject_is_still_read() {
        // A status written by hand that the full type rejects (unknown phase, a string count).
        let json = entry_json(
            serde_json::Value::Null,
            json!({"phase": "Bogus", "attempts": "three", "provider": 7}),
        );
        assert!(serde_json::from_value::<EmailDelivery>(json.clone()).is_err());
        let head: EntryHead = serde_json::from_value(json).unwrap();
        assert_eq!(head.email_name, "order-1");
        assert_eq!(head.orphaned_since(), None);
        // No spec at all.
        let head: EntryHead =
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "shop"}}))
                .unwrap();
        assert_eq!(head.email_name, "");
    }

    #[test]
    fn a_mark_longer_than_any_timestamp_is_kept_as_unreadable_not_whole() {
        let huge = "9".repeat(200 * 1024);
        let json = entry_json(json!({ORPHANED_SINCE: huge}), json!({}));
        let head: EntryHead = serde_json::from_value(json).unwrap();
        assert_eq!(head.orphaned_since(), Some(""));
        // Gone, it is re-marked (the huge value replaced); back, the mark is removed.
        let now: jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(
            sweep_step(false, head.orphaned_since(), now, day),
            SweepStep::MarkOrphaned(now)
        );
        assert_eq!(
            sweep_step(true, head.orphaned_since(), now, day),
            SweepStep::Unmark
        );
        // A timestamp with nanoseconds and an offset is kept as written.
        let long_ok = "2026-11-21T10:00:00.123456789+01:00";
        let json = entry_json(json!({ORPHANED_SINCE: long_ok}), json!({}));
        let head: EntryHead = serde_json::from_value(json).unwrap();
        assert_eq!(head.orphaned_since(), Some(long_ok));
    }

    #[test]
    fn is_served_from_the_emaildelivery_endpoint() {
        assert_eq!(
            EntryHead::url_path(&(), Some("shop")),
            EmailDelivery::url_path(&(), Some("shop"))
        );
        assert_eq!(EntryHead::api_version(&()), EmailDelivery::api_version(&()));
        assert_eq!(EntryHead::kind(&()), EmailDelivery::kind(&()));
    }
}
