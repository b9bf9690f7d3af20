//! The manual in `docs/` keeps up with the code: every field of every CRD is described on its
//! kind's page, every condition reason the code defines is explained in the troubleshooting
//! tables, and every metric the operator registers is listed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every property path of a CRD schema below `spec` and `status`, written as the docs write
/// them: `spec.smtp.tls`, `spec.attachments[].filename`. The insides of standard Kubernetes
/// types (LabelSelector, Condition), list items themselves (`spec.to[]`; the list is
/// described) and the values of free-form maps are left out.
fn property_paths(schema: &Value, path: &str, out: &mut BTreeSet<String>) {
    if !path.is_empty() && !path.ends_with("[]") {
        out.insert(path.to_string());
    }
    if path.ends_with(".selector") || path.ends_with("conditions[]") {
        return;
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if path.is_empty() && !matches!(name.as_str(), "spec" | "status") {
                continue;
            }
            property_paths(sub, &child, out);
        }
    }
    if let Some(items) = schema.get("items") {
        property_paths(items, &format!("{path}[]"), out);
    }
}

fn crd_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "four CRDs");
    files
}

#[test]
fn every_crd_field_is_described_on_its_kinds_page() {
    for file in crd_files() {
        let crd: Value = serde_yaml::from_str(&read(&file)).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
        let page_path = repo()
            .join("docs")
            .join(format!("{}.md", kind.to_lowercase()));
        let page = read(&page_path);
        let mut paths = BTreeSet::new();
        property_paths(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            "",
            &mut paths,
        );
        assert!(paths.len() > 10, "{kind}: schema walk found too little");
        let missing: Vec<&String> = paths
            .iter()
            .filter(|p| p.as_str() != "spec" && p.as_str() != "status")
            .filter(|p| !page.contains(&format!("`{p}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "{} does not describe these {kind} fields (write each as `path` in a table): {missing:?}",
            page_path.display()
        );
    }
}

#[test]
fn the_docs_name_no_field_the_crds_do_not_have() {
    for file in crd_files() {
        let crd: Value = serde_yaml::from_str(&read(&file)).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
        let page_path = repo()
            .join("docs")
            .join(format!("{}.md", kind.to_lowercase()));
        let page = read(&page_path);
        let mut paths = BTreeSet::new();
        property_paths(
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            "",
            &mut paths,
        );
        // Field rows of the tables: lines starting with "| `spec." or "| `status.".
        for line in page.lines() {
            let Some(rest) = line
                .strip_prefix("| `")
                .filter(|r| r.starts_with("spec.") || r.starts_with("status."))
            else {
                continue;
            };
            let field = rest.split('`').next().unwrap_or_default();
            assert!(
                paths.contains(field),
                "{} describes `{field}`, which the {kind} CRD does not have",
                page_path.display()
            );
        }
    }
}

/// String constants inside `mod reason { ... }` / `mod reasons { ... }` blocks, and the
/// strings `fn reason(...)` returns, anywhere in `src/`.
fn reasons_in_source() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("src"), &mut files);
    let mut out = BTreeSet::new();
    for file in files {
        let text = read(&file);
        let mut depth_at_start: Option<usize> = None;
        let mut depth = 0usize;
        for line in text.lines() {
            let trimmed = line.trim_start();
            let starts_block = (trimmed.starts_with("pub mod reason")
                || trimmed.starts_with("mod reason")
                || trimmed.starts_with("pub fn reason(")
                || trimmed.starts_with("fn reason("))
                && line.contains('{');
            if starts_block && depth_at_start.is_none() {
                depth_at_start = Some(depth);
            }
            if depth_at_start.is_some() {
                for literal in line.split('"').skip(1).step_by(2) {
                    let is_reason = !literal.is_empty()
                        && literal.chars().next().unwrap().is_ascii_uppercase()
                        && literal.chars().all(|c| c.is_ascii_alphanumeric());
                    if is_reason {
                        out.insert(literal.to_string());
                    }
                }
            }
            depth += line.matches('{').count();
            depth = depth.saturating_sub(line.matches('}').count());
            if let Some(start) = depth_at_start
                && depth <= start
                && !starts_block
            {
                depth_at_start = None;
            }
        }
    }
    out
}

#[test]
fn every_condition_reason_the_code_defines_is_explained_in_troubleshooting() {
    let reasons = reasons_in_source();
    for expected in [
        "SenderNotFound",
        "OutcomeUnknown",
        "SecretNotFound",
        "AuthFailed",
    ] {
        assert!(
            reasons.contains(expected),
            "the reason scan should find {expected}: {reasons:?}"
        );
    }
    let page = read(&repo().join("docs/operations.md"));
    let troubleshooting = page
        .split("## Troubleshooting")
        .nth(1)
        .expect("docs/operations.md has a Troubleshooting section");
    let missing: Vec<&String> = reasons
        .iter()
        .filter(|r| !troubleshooting.contains(&format!("`{r}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md#troubleshooting does not explain these reasons: {missing:?}"
    );
}

#[test]
fn every_metric_the_operator_registers_is_listed() {
    let page = read(&repo().join("docs/operations.md"));
    let metrics = repo().join("src/metrics.rs");
    let names: Vec<String> = if metrics.exists() {
        let text = read(&metrics);
        text.split(".register(")
            .skip(1)
            .filter_map(|rest| rest.split('"').nth(1).map(str::to_string))
            .collect()
    } else {
        Vec::new()
    };
    // The contract's names (api.md), whether or not the code registers them yet.
    let contract = [
        "emails_sent",
        "emails_failed",
        "send_duration_seconds",
        "sender_health_checks",
        "sender_health_check_duration_seconds",
        "sender_status",
        "reconcile_duration_seconds",
        "reconcile_errors",
    ];
    for name in names.iter().map(String::as_str).chain(contract) {
        assert!(
            page.contains(&format!("`kmailops_{name}")),
            "docs/operations.md does not list the metric kmailops_{name}"
        );
    }
}
