//! The structural checks the API server makes before any controller sees an object, done
//! on a file: unknown fields (a typo like `subjetc:` would otherwise be dropped silently),
//! required fields, enums, lengths and counts, read from the generated CRD schema itself.
//! CEL rules and patterns are left to the typed checks and the API server.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// The `openAPIV3Schema` of a kmailops kind, if `kind` is one.
pub fn for_kind(kind: &str) -> Option<JSONSchemaProps> {
    crate::crds::all()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .and_then(|crd| crd.spec.versions.into_iter().next())
        .and_then(|v| v.schema)
        .and_then(|s| s.open_api_v3_schema)
}

/// Problems of `object` against its kind's schema, each as `field: what is wrong`. The
/// `status` is the operator's to write and is not checked.
pub fn check(object: &Value, schema: &JSONSchemaProps) -> Vec<String> {
    let mut out = Vec::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    let props = schema.properties.as_ref();
    for (key, value) in map {
        // Every object has these; the API server checks metadata itself.
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
            continue;
        }
        match props.and_then(|p| p.get(key)) {
            Some(s) => walk(value, s, key, &mut out),
            None => out.push(format!("{key}: unknown field")),
        }
    }
    for r in schema.required.iter().flatten() {
        if !map.contains_key(r) {
            out.push(format!("{r}: required field is missing"));
        }
    }
    out
}

fn walk(value: &Value, s: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    if s.x_kubernetes_int_or_string == Some(true) {
        return;
    }
    if let Some(t) = s.type_.as_deref()
        && !type_matches(t, value)
    {
        out.push(format!(
            "{path}: expected {}, got {}",
            article(t),
            kind_of(value)
        ));
        return;
    }
    if let Some(allowed) = &s.enum_
        && !allowed.iter().any(|a| a.0 == *value)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.0.to_string()).collect();
        out.push(format!("{path}: {value} is not one of {}", list.join(", ")));
    }
    match value {
        Value::Object(map) => object(map, s, path, out),
        Value::Array(items) => {
            bounds(path, items.len(), s.min_items, s.max_items, "items", out);
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &s.items {
                for (i, v) in items.iter().enumerate() {
                    walk(v, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::String(text) => bounds(
            path,
            text.chars().count(),
            s.min_length,
            s.max_length,
            "characters",
            out,
        ),
        Value::Number(n) => {
            if let (Some(min), Some(v)) = (s.minimum, n.as_f64())
                && v < min
            {
                out.push(format!("{path}: {n} is less than the minimum {min}"));
            }
            if let (Some(max), Some(v)) = (s.maximum, n.as_f64())
                && v > max
            {
                out.push(format!("{path}: {n} is more than the maximum {max}"));
            }
        }
        _ => {}
    }
}

fn object(
    map: &serde_json::Map<String, Value>,
    s: &JSONSchemaProps,
    path: &str,
    out: &mut Vec<String>,
) {
    bounds(
        path,
        map.len(),
        s.min_properties,
        s.max_properties,
        "entries",
        out,
    );
    let preserve = s.x_kubernetes_preserve_unknown_fields == Some(true);
    for (key, v) in map {
        let child = format!("{path}.{key}");
        match (
            s.properties.as_ref().and_then(|p| p.get(key)),
            &s.additional_properties,
        ) {
            (Some(p), _) => walk(v, p, &child, out),
            (None, Some(JSONSchemaPropsOrBool::Schema(p))) => walk(v, p, &child, out),
            (None, Some(JSONSchemaPropsOrBool::Bool(true))) => {}
            (None, _) if preserve => {}
            (None, _) => out.push(format!("{child}: unknown field")),
        }
    }
    for r in s.required.iter().flatten() {
        if !map.contains_key(r) {
            out.push(format!("{path}.{r}: required field is missing"));
        }
    }
}

fn bounds(
    path: &str,
    n: usize,
    min: Option<i64>,
    max: Option<i64>,
    unit: &str,
    out: &mut Vec<String>,
) {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    if let Some(min) = min
        && n < min
    {
        out.push(format!("{path}: has {n} {unit}, at least {min} needed"));
    }
    if let Some(max) = max
        && n > max
    {
        out.push(format!("{path}: has {n} {unit}, at most {max} allowed"));
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn article(t: &str) -> String {
    match t {
        "object" | "array" | "integer" => format!("an {t}"),
        _ => format!("a {t}"),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_missing_required_ones_enums_and_limits_are_reported() {
        let schema = for_kind("Email").unwrap();
        let email = json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": "Email",
            "metadata": {"name": "x"},
            "spec": {
                "subjetc": "typo",
                "text": "hi",
                "to": [],
                "resendPolicy": "Sometimes",
                "variables": {"anything": {"goes": 1}}
            }
        });
        let problems = check(&email, &schema);
        assert!(
            problems.contains(&"spec.subjetc: unknown field".to_string()),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("spec.to: has 0 items, at least 1")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("spec.resendPolicy: \"Sometimes\" is not one of")),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn a_valid_object_has_no_problems() {
        let schema = for_kind("EmailTemplate").unwrap();
        let t = json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": "EmailTemplate",
            "metadata": {"name": "x"},
            "spec": {"text": "hi", "variables": [{"name": "a", "default": [1, 2]}], "previewVariables": {"a": {"b": 1}}}
        });
        assert_eq!(check(&t, &schema), Vec::<String>::new());
    }
}
