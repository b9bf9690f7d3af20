//! `EmailTemplate`: reusable minijinja sources for subject and bodies.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AllowedNamespaces, Preview, any_value, free_form_object};

/// Subject and bodies written in minijinja (Jinja2 syntax). Rendering is strict: a variable
/// that is neither passed nor defaulted is an error naming it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kmailops.io",
    version = "v1alpha1",
    kind = "EmailTemplate",
    namespaced,
    status = "EmailTemplateStatus",
    shortname = "et",
    category = "kmailops",
    derive = "PartialEq",
    doc = "EmailTemplate holds minijinja sources for an email's subject, text and HTML bodies.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Subject",
        type_ = "string",
        json_path = ".status.preview.subject",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.text) || has(self.html)")
    .message("at least one of text or html must be set"))]
pub struct EmailTemplateSpec {
    /// Subject template, e.g. `Welcome, {{ name }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub subject: Option<String>,
    /// Plain-text body template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1048576))]
    pub text: Option<String>,
    /// HTML body template; values are HTML-escaped automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1048576))]
    pub html: Option<String>,
    /// Declared inputs: a missing required variable is an error that names it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub variables: Vec<TemplateVariable>,
    /// Sample variables rendered into `status.preview`, so authors see the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub preview_variables: Option<BTreeMap<String, serde_json::Value>>,
    /// Which namespaces' Emails may use this template. Default: only its own.
    #[serde(default)]
    pub allowed_namespaces: AllowedNamespaces,
}

/// One declared template input.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TemplateVariable {
    /// Variable name as used in the template.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// An Email that does not provide it fails with an error naming the variable.
    #[serde(default)]
    pub required: bool,
    /// Value used when the Email does not provide one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub default: Option<serde_json::Value>,
    /// What the variable means, for template users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

/// Where rendering failed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateErrorDetail {
    /// What is wrong and how to fix it.
    pub message: String,
    /// The template (part) where the error is, e.g. `welcome/html`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// 1-based line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    /// 1-based column, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<i64>,
}

/// Observed state of an EmailTemplate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailTemplateStatus {
    /// The generation this status describes; -1 until the operator has looked at the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = -1))]
    pub observed_generation: Option<i64>,
    /// `Ready`: the template parses and renders with previewVariables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The template rendered with previewVariables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
    /// Where parsing or rendering failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TemplateErrorDetail>,
}
