//! Types shared by several kinds: references, namespace admission, previews, and the
//! schema helpers that keep every CRD structural.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key of a Secret. The Secret is always read from the namespace of the object that holds
/// this reference, never from another one, so referencing an object across namespaces can
/// not expose that namespace's Secrets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's `data`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A key of a ConfigMap in the referencing object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the ConfigMap's `data` or `binaryData`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to another kmailops object, by name and optionally namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the object; defaults to the namespace of the referencing object. An object
    /// in another namespace is only usable when its `allowedNamespaces` admits this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Which namespaces may reference an object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NamespacesFrom {
    /// Only the object's own namespace.
    #[default]
    Same,
    /// Every namespace.
    All,
    /// Namespaces whose labels match `selector`.
    Selector,
}

/// Who may reference this object from another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = kube::core::Rule::new(
    "self.from == 'Selector' ? has(self.selector) : !has(self.selector)"
).message("allowedNamespaces.selector is required when from is Selector, and only allowed then"))]
pub struct AllowedNamespaces {
    /// `Same` (default), `All`, or `Selector`.
    #[serde(default)]
    pub from: NamespacesFrom,
    /// Label selector for namespaces; only with `from: Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What an Email or a template renders to, as shown in status. Bodies are truncated to a
/// bounded size so a large message never bloats the object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Preview {
    /// Rendered subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Rendered plain-text body (truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Rendered HTML body (truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

/// Schema for a free-form JSON object (template variables). Structural schemas need an explicit
/// type plus `x-kubernetes-preserve-unknown-fields`, which schemars can not infer from
/// `serde_json::Value`.
pub fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Schema for any JSON value (a variable's default may be a string, number, list or object).
pub fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A Go-style duration such as `30s`, `5m` or `1h30m`: the format Kubernetes users know from
/// other controllers.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// CEL: the string holds no line break. Mail headers are line-oriented, so a CR or LF in an
/// address, subject or header would let one field inject others.
pub const NO_LINE_BREAKS: &str = "!self.contains('\\r') && !self.contains('\\n')";
