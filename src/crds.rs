//! The CustomResourceDefinitions, generated from the Rust types in [`crate::api`].
//!
//! Two adjustments are made to what kube-derive produces, both so that GitOps tools read a
//! fresh object correctly: `status` defaults to `{}` so the API server fills in
//! `status.observedGeneration: -1` on every object it returns, and kstatus (Flux) therefore
//! never takes a just-created object for a reconciled one.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use kube::CustomResourceExt;

use crate::api::{Email, EmailDelivery, EmailSenderConfig, EmailTemplate};

/// Every kmailops CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        EmailSenderConfig::crd(),
        EmailTemplate::crd(),
        Email::crd(),
        EmailDelivery::crd(),
    ]
    .into_iter()
    .map(with_status_defaulted)
    .collect()
}

/// The CRDs as one multi-document YAML stream, as `kmailops crds` prints it.
pub fn to_yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds {
        let value =
            serde_json::to_value(crd).map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&sorted_keys(value))?);
    }
    Ok(out)
}

/// Orders every object's keys alphabetically. serde_json keeps insertion order when some crate
/// in the build enables its `preserve_order` feature (test builds do), so without this the
/// YAML would depend on which binary printed it.
fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted_keys).collect())
        }
        other => other,
    }
}

/// The file name `kmailops crds --output-dir` writes a CRD to, e.g. `emails.kmailops.io.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

fn with_status_defaulted(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(status) = schema.properties.as_mut().and_then(|p| p.get_mut("status")) {
            set_empty_object_default(status);
        }
    }
    crd
}

fn set_empty_object_default(props: &mut JSONSchemaProps) {
    props.default = Some(
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
            serde_json::json!({}),
        ),
    );
}
