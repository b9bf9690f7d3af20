//! `deploy/` is what users install. These tests build it the way users do
//! (`kubectl kustomize deploy/`) and check what matters once it runs in a cluster:
//!
//! - the RBAC grants every API call the operator makes, and nothing else: no wildcards,
//!   Secrets read-only. [`REQUIRED`] lists the calls, read from the code; the source is also
//!   scanned at test time, so a new kind or a new verb in `src/` fails here until the RBAC and
//!   this list follow;
//! - the Deployment runs hardened, with probes on the metrics port;
//! - `deploy/crds/` is exactly what the Rust types generate.
//!
//! kubectl must be on PATH (or named by `KUBECTL`); `scripts/install-kubectl.sh` installs it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const NAMESPACE: &str = "kmailops-system";
const SERVICE_ACCOUNT: &str = "kmailops";
const IMAGE: &str = "ghcr.io/kmailops/kmailops:0.1.0";

/// Every API call the operator process makes: (API group, resource, verbs, where in src/).
/// Granted by the ClusterRole `kmailops`.
const REQUIRED: &[(&str, &str, &[&str], &str)] = &[
    (
        "kmailops.io",
        "emails",
        &["get", "list", "watch"],
        "runtime.rs: the Email watch; tolerant/report.rs: get of an Email our types reject; ledger/retention.rs: get (metadata) of an Email before its entry is marked or deleted",
    ),
    (
        "kmailops.io",
        "emails/status",
        &["patch"],
        "controllers/email/status.rs: write (JSON patch guarded by uid); tolerant/report.rs",
    ),
    (
        "kmailops.io",
        "emaildeliveries",
        &["get", "list", "watch", "create", "patch", "delete"],
        "ledger/mod.rs: claim_new, claim_next, withdraw_new, withdraw_next, list_for_email; controllers/email/act.rs: get; runtime.rs: watcher; ledger/retention.rs: write_step",
    ),
    (
        "kmailops.io",
        "emaildeliveries/status",
        &["patch"],
        "ledger/mod.rs: record, mark_unknown",
    ),
    (
        "kmailops.io",
        "emailsenderconfigs",
        &["get", "list", "watch"],
        "runtime.rs: the sender watch (cache for sender selection, triggers for the sender controller); tolerant/report.rs: get",
    ),
    (
        "kmailops.io",
        "emailsenderconfigs/status",
        &["patch"],
        "controllers/sender.rs: conditions and health (server-side apply); tolerant/report.rs",
    ),
    (
        "kmailops.io",
        "emailtemplates",
        &["get", "list", "watch"],
        "runtime.rs: the EmailTemplate watch (cache for templated Emails, triggers for the EmailTemplate controller); tolerant/report.rs: get",
    ),
    (
        "kmailops.io",
        "emailtemplates/status",
        &["patch"],
        "controllers/template.rs: write_status (server-side apply); tolerant/report.rs",
    ),
    (
        "",
        "secrets",
        &["get", "list", "watch"],
        "runtime.rs: metadata-only watcher; lookup/secret_cache.rs: get of the Secrets senders and attachments name",
    ),
    (
        "",
        "configmaps",
        &["get"],
        "email/attachments.rs: configMapKeyRef",
    ),
    (
        "",
        "namespaces",
        &["get"],
        "email/mod.rs: namespace_labels (allowedNamespaces Selector)",
    ),
    (
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "context.rs: kube Recorder (creates, then patches a repeated Event)",
    ),
];

/// Calls the operator makes in its own namespace only, granted by the Role
/// `kmailops-leader-election`.
const REQUIRED_IN_OWN_NAMESPACE: &[(&str, &str, &[&str], &str)] = &[(
    "coordination.k8s.io",
    "leases",
    &["get", "create", "patch"],
    "leader.rs: kube-lease-manager reads, creates and patches (apply, merge) the Lease",
)];

/// Rust types the source may use with `Api<...>`, and the resource each one is.
/// `None`: used only by commands a person runs with their own kubeconfig (`kmailops crds
/// --apply`), never by the operator's service account.
const KINDS: &[(&str, Option<(&str, &str)>)] = &[
    ("Email", Some(("kmailops.io", "emails"))),
    ("EmailDelivery", Some(("kmailops.io", "emaildeliveries"))),
    // The part of an EmailDelivery the ledger index reads (src/ledger/head.rs), served by the
    // same endpoint.
    ("EntryHead", Some(("kmailops.io", "emaildeliveries"))),
    (
        "EmailSenderConfig",
        Some(("kmailops.io", "emailsenderconfigs")),
    ),
    ("EmailTemplate", Some(("kmailops.io", "emailtemplates"))),
    ("Secret", Some(("", "secrets"))),
    ("ConfigMap", Some(("", "configmaps"))),
    ("Namespace", Some(("", "namespaces"))),
    ("Event", Some(("events.k8s.io", "events"))),
    ("Lease", Some(("coordination.k8s.io", "leases"))),
    ("CustomResourceDefinition", None),
    // Reads and status writes of the kmailops kinds our types reject (src/tolerant), which
    // the rules for those kinds cover.
    ("DynamicObject", None),
];

/// Read verbs; Secrets get no others.
const READ_VERBS: &[&str] = &["get", "list", "watch"];

// ---- rendering ---------------------------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kubectl() -> PathBuf {
    std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// `kubectl kustomize deploy/`, parsed, once per test binary.
fn rendered() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let kubectl = kubectl();
        let out = match Command::new(&kubectl)
            .arg("kustomize")
            .arg(repo().join("deploy"))
            .output()
        {
            Ok(out) => out,
            Err(e) => panic!(
                "could not run `{} kustomize deploy/` ({e}). These tests need kubectl: run \
                 scripts/install-kubectl.sh, or set KUBECTL to its path",
                kubectl.display()
            ),
        };
        assert!(
            out.status.success(),
            "`kubectl kustomize deploy/` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("kustomize prints UTF-8");
        serde_yaml::Deserializer::from_str(&text)
            .map(|doc| {
                let v: Value = serde::Deserialize::deserialize(doc).expect("kustomize prints YAML");
                v
            })
            .filter(|v| !v.is_null())
            .collect()
    })
}

fn objects(kind: &str) -> Vec<&'static Value> {
    rendered().iter().filter(|o| o["kind"] == kind).collect()
}

fn object(kind: &str, name: &str) -> &'static Value {
    rendered()
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/ renders no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// (group, resource, verb) triples a role grants.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("a role has rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.to_string(), resource.to_string(), verb.to_string()));
                }
            }
        }
    }
    out
}

fn triples(list: &[(&str, &str, &[&str], &str)]) -> BTreeSet<(String, String, String)> {
    list.iter()
        .flat_map(|(g, r, verbs, _)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

fn cluster_role() -> &'static Value {
    object("ClusterRole", "kmailops")
}

fn leader_election_role() -> &'static Value {
    object("Role", "kmailops-leader-election")
}

fn deployment() -> &'static Value {
    object("Deployment", "kmailops")
}

fn container() -> &'static Value {
    let containers = deployment()["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "the operator pod has one container");
    &containers[0]
}

// ---- what is installed ---------------------------------------------------------------------

#[test]
fn the_base_installs_the_crds_namespace_rbac_deployment_and_metrics_service() {
    let mut kinds: Vec<(String, String)> = rendered()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_string(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    kinds.sort();
    let mut expected: Vec<(String, String)> = [
        ("ClusterRole", "kmailops"),
        ("ClusterRole", "kmailops-edit"),
        ("ClusterRole", "kmailops-view"),
        ("ClusterRoleBinding", "kmailops"),
        ("CustomResourceDefinition", "emaildeliveries.kmailops.io"),
        ("CustomResourceDefinition", "emails.kmailops.io"),
        ("CustomResourceDefinition", "emailsenderconfigs.kmailops.io"),
        ("CustomResourceDefinition", "emailtemplates.kmailops.io"),
        ("Deployment", "kmailops"),
        ("Namespace", NAMESPACE),
        ("Role", "kmailops-leader-election"),
        ("RoleBinding", "kmailops-leader-election"),
        ("Service", "kmailops-metrics"),
        ("ServiceAccount", SERVICE_ACCOUNT),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    expected.sort();
    assert_eq!(kinds, expected);
}

#[test]
fn every_namespaced_object_lands_in_the_operator_namespace() {
    let cluster_scoped = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    for o in rendered() {
        let kind = o["kind"].as_str().unwrap_or_default();
        let ns = o["metadata"]["namespace"].as_str();
        if cluster_scoped.contains(&kind) {
            assert_eq!(ns, None, "{kind} is cluster-scoped");
        } else {
            assert_eq!(ns, Some(NAMESPACE), "{kind} {}", o["metadata"]["name"]);
        }
    }
}

#[test]
fn deploy_crds_are_exactly_what_the_code_generates() {
    let dir = repo().join("deploy/crds");
    let generated = kmailops::crds::all();
    let mut expected: Vec<String> = generated.iter().map(kmailops::crds::file_name).collect();
    expected.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("deploy/crds exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let fix = "run `cargo run -- crds --output-dir deploy/crds` and commit";
    assert_eq!(on_disk, expected, "deploy/crds/ holds other CRDs: {fix}");
    for crd in &generated {
        let path = dir.join(kmailops::crds::file_name(crd));
        let fresh = kmailops::crds::to_yaml(std::slice::from_ref(crd)).unwrap();
        assert!(
            std::fs::read_to_string(&path).unwrap() == fresh,
            "{} drifted from the Rust types: {fix}",
            path.display()
        );
    }
}

// ---- RBAC ----------------------------------------------------------------------------------

#[test]
fn the_cluster_role_grants_every_api_call_the_operator_makes() {
    let granted = grants(cluster_role());
    let missing: Vec<_> = triples(REQUIRED).difference(&granted).cloned().collect();
    assert!(
        missing.is_empty(),
        "deploy/rbac.yaml ClusterRole kmailops lacks (group, resource, verb): {missing:?}"
    );
    let granted = grants(leader_election_role());
    let missing: Vec<_> = triples(REQUIRED_IN_OWN_NAMESPACE)
        .difference(&granted)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/rbac.yaml Role kmailops-leader-election lacks: {missing:?}"
    );
}

#[test]
fn the_roles_grant_nothing_the_code_does_not_use() {
    let extra: Vec<_> = grants(cluster_role())
        .difference(&triples(REQUIRED))
        .cloned()
        .collect();
    assert!(
        extra.is_empty(),
        "ClusterRole kmailops grants more than the code uses: {extra:?}; remove it, or add the \
         call to REQUIRED with the place in src/ that makes it"
    );
    let extra: Vec<_> = grants(leader_election_role())
        .difference(&triples(REQUIRED_IN_OWN_NAMESPACE))
        .cloned()
        .collect();
    assert!(
        extra.is_empty(),
        "Role kmailops-leader-election grants more: {extra:?}"
    );
    assert_eq!(
        objects("ClusterRole").len() + objects("Role").len(),
        4,
        "no other roles than the operator's two and the users' two"
    );
}

#[test]
fn users_may_read_the_ledger_but_never_write_it_nor_any_status() {
    for name in ["kmailops-view", "kmailops-edit"] {
        let role = object("ClusterRole", name);
        for rule in role["rules"].as_array().unwrap() {
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r.as_str())
                .collect();
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            assert!(
                resources.iter().all(|r| !r.contains('/')),
                "{name} grants a subresource: {resources:?}"
            );
            if resources.contains(&"emaildeliveries") {
                assert!(
                    verbs.iter().all(|v| ["get", "list", "watch"].contains(v)),
                    "{name} may write the ledger: {verbs:?}"
                );
            }
        }
        assert_eq!(
            role["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true",
            "{name} aggregates into edit"
        );
    }
    assert_eq!(
        object("ClusterRole", "kmailops-view")["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
}

#[test]
fn no_rule_uses_a_wildcard_resource_names_or_non_resource_urls() {
    for role in [cluster_role(), leader_election_role()] {
        for rule in role["rules"].as_array().unwrap() {
            for field in ["apiGroups", "resources", "verbs"] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "wildcard in {field} of {rule}"
                );
            }
            assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
            assert!(rule.get("resourceNames").is_none(), "{rule}");
        }
        assert!(role.get("aggregationRule").is_none());
    }
}

#[test]
fn secrets_can_only_be_read() {
    for role in [cluster_role(), leader_election_role()] {
        for (group, resource, verb) in grants(role) {
            if group.is_empty() && resource.starts_with("secrets") {
                assert!(
                    READ_VERBS.contains(&verb.as_str()) && resource == "secrets",
                    "the operator may only read Secrets, but is granted {verb} on {resource}"
                );
            }
        }
    }
}

#[test]
fn the_roles_are_bound_to_the_operator_service_account_only() {
    for (binding, role_kind, role_name) in [
        (
            object("ClusterRoleBinding", "kmailops"),
            "ClusterRole",
            "kmailops",
        ),
        (
            object("RoleBinding", "kmailops-leader-election"),
            "Role",
            "kmailops-leader-election",
        ),
    ] {
        assert_eq!(binding["roleRef"]["kind"], role_kind);
        assert_eq!(binding["roleRef"]["name"], role_name);
        let subjects = binding["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1, "{binding}");
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["name"], SERVICE_ACCOUNT);
        assert_eq!(subjects[0]["namespace"], NAMESPACE);
    }
    assert_eq!(
        deployment()["spec"]["template"]["spec"]["serviceAccountName"],
        SERVICE_ACCOUNT
    );
}

// ---- the RBAC list against the source -------------------------------------------------------

struct SourceFile {
    path: PathBuf,
    /// Code lines, comments dropped.
    code: String,
}

fn source_files() -> Vec<SourceFile> {
    fn walk(dir: &Path, out: &mut Vec<SourceFile>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.push(SourceFile { path, code });
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("src"), &mut out);
    assert!(out.len() > 10, "src/ should hold the operator's source");
    out
}

/// Type names used as `Api<T>`, `Api::<T>`, `api::<T>` (src/controller.rs's helper) or a
/// reflector `store::<T>` in `code`; paths are cut to their last segment, generic
/// parameters (one letter) are skipped.
fn kinds_used(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for pattern in ["Api<", "Api::<", "api::<", "store::<"] {
        for (at, _) in code.match_indices(pattern) {
            let mut rest = &code[at + pattern.len()..];
            // A guarded or metadata-only watch is a watch of the kind inside.
            for wrapper in ["Guarded<", "PartialObjectMeta<"] {
                if let Some(inner) = rest.strip_prefix(wrapper) {
                    rest = inner;
                }
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let name = path.rsplit("::").next().unwrap_or_default();
            if name.len() > 1 {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// API verbs called in `code`, as (verb, on the status subresource). Only method names that
/// mean an API call in this code base are recognised (`.replace(` and `.get(` are too common
/// on strings and maps to tell apart).
fn verbs_used(code: &str) -> BTreeSet<(&'static str, bool)> {
    const CALLS: &[(&str, &[(&str, bool)])] = &[
        (".create(", &[("create", false)]),
        (".patch(", &[("patch", false)]),
        (".patch_metadata(", &[("patch", false)]),
        (".patch_status(", &[("patch", true)]),
        (".replace_status(", &[("update", true)]),
        (".get_status(", &[("get", true)]),
        (".get_opt(", &[("get", false)]),
        (".get_metadata(", &[("get", false)]),
        (".delete(", &[("delete", false)]),
        (".delete_collection(", &[("deletecollection", false)]),
        (".list(", &[("list", false)]),
        (".list_metadata(", &[("list", false)]),
        (".watch(", &[("watch", false)]),
        ("watcher(", &[("list", false), ("watch", false)]),
        ("Controller::new(", &[("list", false), ("watch", false)]),
    ];
    let mut out = BTreeSet::new();
    for (call, verbs) in CALLS {
        if code.contains(call) {
            out.extend(verbs.iter().copied());
        }
    }
    out
}

fn resource_of(kind: &str) -> Option<Option<(&'static str, &'static str)>> {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, r)| *r)
}

fn required_verbs(group: &str, resource: &str) -> BTreeSet<&'static str> {
    REQUIRED
        .iter()
        .chain(REQUIRED_IN_OWN_NAMESPACE)
        .filter(|(g, r, _, _)| *g == group && *r == resource)
        .flat_map(|(_, _, verbs, _)| verbs.iter().copied())
        .collect()
}

#[test]
fn every_kind_the_source_calls_the_api_for_is_in_the_rbac_list() {
    for file in source_files() {
        for kind in kinds_used(&file.code) {
            let resource = resource_of(&kind).unwrap_or_else(|| {
                panic!(
                    "{} uses Api<{kind}>, a kind tests/deploy_manifests.rs does not know: add it to \
                     KINDS, the calls it makes to REQUIRED, and the rule to deploy/rbac.yaml",
                    file.path.display()
                )
            });
            if let Some((group, resource)) = resource {
                assert!(
                    !required_verbs(group, resource).is_empty(),
                    "{} uses Api<{kind}> but REQUIRED grants nothing on {group}/{resource}: add \
                     the calls it makes to REQUIRED and to deploy/rbac.yaml",
                    file.path.display()
                );
            }
        }
    }
}

#[test]
fn every_api_verb_a_source_file_calls_is_granted_on_a_kind_that_file_uses() {
    for file in source_files() {
        let resources: Vec<(&str, &str)> = kinds_used(&file.code)
            .iter()
            .filter_map(|k| resource_of(k).flatten())
            .collect();
        if resources.is_empty() {
            // No operator API use here (or only admin commands such as `kmailops crds --apply`).
            continue;
        }
        for (verb, status) in verbs_used(&file.code) {
            let granted = resources.iter().any(|(group, resource)| {
                let resource = if status {
                    format!("{resource}/status")
                } else {
                    resource.to_string()
                };
                required_verbs(group, &resource).contains(verb)
            });
            assert!(
                granted,
                "{} calls `{verb}`{} on one of {resources:?}, and REQUIRED grants it on none: \
                 add the call to REQUIRED and deploy/rbac.yaml",
                file.path.display(),
                if status { " (status)" } else { "" }
            );
        }
    }
}

#[test]
fn events_are_granted_because_the_operator_publishes_them() {
    let publishes = source_files()
        .iter()
        .any(|f| f.code.contains("EventPublisher::new("));
    assert!(publishes, "src/ no longer creates an EventPublisher");
    let verbs = required_verbs("events.k8s.io", "events");
    assert_eq!(verbs, BTreeSet::from(["create", "patch"]));
}

// ---- the Deployment ------------------------------------------------------------------------

#[test]
fn the_deployment_runs_the_released_image_with_the_run_subcommand_and_its_pod_name() {
    let c = container();
    assert_eq!(c["image"], IMAGE);
    assert_eq!(c["args"], serde_json::json!(["run"]));
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
        "ledger claims and Events name the pod through POD_NAME"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    for part in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][part][resource].is_string(),
                "resources.{part}.{resource} is set"
            );
        }
    }
}

#[test]
fn the_deployment_runs_as_non_root_with_a_read_only_root_and_no_capabilities() {
    let pod = &deployment()["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(pod["securityContext"]["runAsUser"].as_i64().unwrap() > 0);
    assert_ne!(pod["hostNetwork"], true);
    assert_ne!(pod["hostPID"], true);
    let sc = &container()["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_ne!(sc["privileged"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
}

#[test]
fn probes_and_the_service_point_at_the_metrics_port() {
    let c = container();
    let ports = c["ports"].as_array().unwrap();
    let metrics = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a container port named metrics");
    assert_eq!(metrics["containerPort"], 8080);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    let svc = object("Service", "kmailops-metrics");
    let port = &svc["spec"]["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(port["targetPort"], "metrics");
    let selector = svc["spec"]["selector"].as_object().unwrap();
    let labels = &deployment()["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "the Service selects the operator pod by {k}");
    }
}

#[test]
fn the_image_runs_as_the_user_the_deployment_expects_and_ships_the_templates() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let uid = deployment()["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        .as_i64()
        .unwrap();
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim() == format!("USER {uid}:{uid}")),
        "the Dockerfile's USER matches runAsUser {uid}"
    );
    assert!(dockerfile.contains("templates"));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for needed in ["!Cargo.toml", "!Cargo.lock", "!src", "!templates"] {
        assert!(ignore.lines().any(|l| l.trim() == needed), "{needed}");
    }
}

// ---- the GitOps examples -------------------------------------------------------------------

/// Paths in `value` that `schema` does not define (an unknown field is pruned silently by
/// the API server, so a typo in an example would teach users a setting that does nothing).
fn unknown_fields(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                match props.and_then(|p| p.get(key)) {
                    Some(sub) => unknown_fields(child, sub, &child_path, out),
                    None if additional.is_object() => {
                        unknown_fields(child, additional, &child_path, out)
                    }
                    None => out.push(child_path),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unknown_fields(item, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_gitops_examples_use_only_fields_the_crds_define() {
    let schemas: BTreeMap<String, Value> = kmailops::crds::all()
        .into_iter()
        .map(|crd| {
            let schema = serde_json::to_value(
                &crd.spec.versions[0]
                    .schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema,
            )
            .unwrap();
            (crd.spec.names.kind, schema)
        })
        .collect();
    let mut checked = 0;
    for dir in ["flux/apps/senders", "flux/apps/emails"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
                let Some(schema) = obj["kind"].as_str().and_then(|k| schemas.get(k)) else {
                    continue;
                };
                let mut unknown = Vec::new();
                unknown_fields(
                    &obj["spec"],
                    &schema["properties"]["spec"],
                    "spec",
                    &mut unknown,
                );
                assert!(
                    unknown.is_empty(),
                    "{}: fields the CRD does not define: {unknown:?}",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 5,
        "the examples hold senders, a template and Emails"
    );
}
