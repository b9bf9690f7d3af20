//! The generated CRDs on a real API server: they are accepted and Established, every manifest
//! in `examples/` is accepted as written, the server itself refuses invalid objects (OpenAPI
//! schema and CEL rules) with the messages written in `src/api`, and it fills in the schema
//! defaults, `status.observedGeneration: -1` among them.
//!
//! Invalid objects are sent as `serde_json::json!` bodies through `Api<DynamicObject>`, since
//! the typed structs can not express most of them. Defaults are read from the raw JSON the
//! server returns, never through the typed structs, whose serde defaults would hide a missing
//! schema default.
//!
//! On the testenv server the examples' Secrets go through the harness's Secret stand-in
//! (`support::core_standin`), which converts `stringData` as the real API server does.

mod support;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};

use kmailops::api::{Email, EmailDelivery, EmailSenderConfig, EmailTemplate};
use support::TestEnv;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `Api<DynamicObject>` for a kmailops kind in `ns`: it sends whatever JSON it is given.
fn api<K: Resource<DynamicType = ()>>(env: &TestEnv, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(env.client(), ns, &ApiResource::erase::<K>(&()))
}

/// A K named `name` with `spec` as its spec, however invalid.
fn object<K: Resource<DynamicType = ()>>(name: &str, spec: &Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("a Kubernetes object")
}

/// The CRD that `kmailops::crds::all()` generates for K.
fn generated_crd<K: Resource<DynamicType = ()>>() -> CustomResourceDefinition {
    let kind = K::kind(&());
    kmailops::crds::all()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("kmailops::crds::all() generates no CRD for {kind}"))
}

/// The schema of K's v1alpha1 at a field path as the API server reports it in a cause
/// (`spec.smtp`, `spec.attachments[0]`): `[...]` steps into list items or map values.
fn schema_at<K: Resource<DynamicType = ()>>(field: &str) -> Value {
    let crd = generated_crd::<K>();
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == "v1alpha1")
        .expect("a v1alpha1 version");
    let mut schema = serde_json::to_value(
        &version
            .schema
            .as_ref()
            .expect("a schema")
            .open_api_v3_schema,
    )
    .expect("the schema as JSON");
    for segment in field.split('.') {
        let (name, subscripts) = segment.split_once('[').unwrap_or((segment, ""));
        schema = schema["properties"][name].clone();
        for _ in subscripts.split('[').filter(|s| !s.is_empty()) {
            schema = if schema.get("items").is_some() {
                schema["items"].clone()
            } else {
                schema["additionalProperties"].clone()
            };
        }
        assert!(
            schema.is_object(),
            "the generated {} CRD has no schema at {field}",
            K::kind(&())
        );
    }
    schema
}

/// Asserts that the generated CRD (thus the Rust types in `src/api`) carries a CEL rule with
/// exactly `message` at `field`: the message a refusal is expected to show is the one written
/// in the code, at the place the server reports.
fn assert_crd_has_rule<K: Resource<DynamicType = ()>>(field: &str, message: &str) {
    let schema = schema_at::<K>(field);
    let messages: Vec<&str> = schema["x-kubernetes-validations"]
        .as_array()
        .map(|rules| rules.iter().filter_map(|r| r["message"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        messages.contains(&message),
        "the generated {} CRD has no CEL rule with message {message:?} at {field}; it has {messages:?}",
        K::kind(&())
    );
}

/// The API server's answer to a write that must be refused as invalid: 422, reason `Invalid`,
/// and a cause at `field` whose message contains `message`, which the overall message repeats.
fn assert_invalid<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    field: &str,
    message: &str,
) -> Box<Status> {
    let status = match result {
        Ok(accepted) => panic!(
            "the API server accepted what must be refused ({field}: {message}): {accepted:#?}"
        ),
        Err(kube::Error::Api(status)) => status,
        Err(other) => panic!("expected a 422 from the API server, got: {other}"),
    };
    assert_eq!(status.code, 422, "{status:#?}");
    assert_eq!(status.reason, "Invalid", "{status:#?}");
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c.field == field && c.message.contains(message)),
        "no cause at {field} saying {message:?}: {causes:#?}"
    );
    assert!(
        status.message.contains(message),
        "the message does not say {message:?}: {}",
        status.message
    );
    status
}

/// Sends a K with `invalid` as its spec and asserts the refusal (see [`assert_invalid`]). First,
/// the same object with `valid` as its spec must pass a dry-run create: the refusal then comes
/// from the difference between the two alone.
async fn assert_spec_refused<K: Resource<DynamicType = ()>>(
    api: &Api<DynamicObject>,
    valid: &Value,
    invalid: &Value,
    field: &str,
    message: &str,
) -> Box<Status> {
    let name = "under-test";
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    if let Err(e) = api.create(&dry_run, &object::<K>(name, valid)).await {
        panic!(
            "the valid counterpart of the invalid {} was refused, so the test proves nothing: {e}\n{valid:#}",
            K::kind(&())
        );
    }
    let result = api
        .create(&PostParams::default(), &object::<K>(name, invalid))
        .await;
    assert_invalid(result, field, message)
}

/// [`assert_spec_refused`] for a CEL rule: also checks that `message` is the rule's own, as
/// generated from `src/api`.
async fn assert_rule_refuses<K: Resource<DynamicType = ()>>(
    api: &Api<DynamicObject>,
    valid: &Value,
    invalid: &Value,
    field: &str,
    message: &str,
) {
    assert_crd_has_rule::<K>(field, message);
    assert_spec_refused::<K>(api, valid, invalid, field, message).await;
}

/// Creates a K and returns what the server stored, as raw JSON.
async fn create<K: Resource<DynamicType = ()>>(
    api: &Api<DynamicObject>,
    name: &str,
    spec: &Value,
) -> Value {
    let created = api
        .create(&PostParams::default(), &object::<K>(name, spec))
        .await
        .unwrap_or_else(|e| panic!("creating {} {name}: {e}\n{spec:#}", K::kind(&())));
    serde_json::to_value(created).expect("the object as JSON")
}

/// A valid MailerSend sender.
fn mailersend_sender() -> Value {
    json!({
        "sender": { "address": "orders@shop.example.com" },
        "mailersend": { "apiTokenSecretRef": { "name": "mailersend-token", "key": "token" } },
    })
}

/// A valid SMTP sender without AUTH.
fn smtp_sender() -> Value {
    json!({
        "sender": { "address": "orders@shop.example.com" },
        "smtp": { "host": "smtp.example.com" },
    })
}

/// A valid Email with literal content.
fn email() -> Value {
    json!({
        "to": ["Ada Lovelace <ada@example.org>"],
        "subject": "Your order has shipped",
        "text": "It is on its way.",
    })
}

/// A valid EmailDelivery spec.
fn delivery() -> Value {
    json!({
        "emailName": "order-10045-shipped",
        "emailUID": "5f0c7a52-3c1e-4b8e-9d51-0d6a8f4a1b2c",
        "deliveryHash": "ab".repeat(32),
        "senderConfig": "shop/mailersend",
        "recipientCount": 1,
    })
}

/// A valid EmailTemplate spec.
fn template() -> Value {
    json!({ "subject": "Hello {{ name }}", "text": "Hi {{ name }}." })
}

/// Every `*.yaml` under `examples/`, at any depth, sorted.
fn example_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|ext| ext == "yaml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        &mut files,
    );
    files.sort();
    assert!(!files.is_empty(), "examples/ holds no *.yaml");
    files
}

/// The documents of a YAML stream as JSON, empty ones skipped.
fn yaml_documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| serde_yaml::Value::deserialize(document).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("YAML that is JSON"))
        .collect()
}

/// One example file applied with `apply_yaml` into a fresh namespace.
struct AppliedExample {
    file: String,
    namespace: String,
    documents: Vec<Value>,
    applied: Vec<DynamicObject>,
}

async fn apply_example(env: &TestEnv, path: &Path) -> AppliedExample {
    let file = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string();
    let yaml = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {file}: {e}"));
    let documents = yaml_documents(&yaml);
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let namespace = env.unique_namespace(&format!("example-{stem}")).await;
    let applied = env.apply_yaml(&namespace, &yaml).await;
    assert_eq!(
        applied.len(),
        documents.len(),
        "{file}: not every document was applied"
    );
    AppliedExample {
        file,
        namespace,
        documents,
        applied,
    }
}

/// Asserts that everything in `expected` is in `actual` with the same value; `actual` may hold
/// more (server defaults, metadata).
fn assert_contains(actual: &Value, expected: &Value, path: &str, file: &str) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let child = format!("{path}.{key}");
                match have.get(key) {
                    Some(found) => assert_contains(found, value, &child, file),
                    None => panic!("{file}: {child} was dropped by the API server"),
                }
            }
        }
        (Value::Array(want), Value::Array(have)) => {
            assert_eq!(have.len(), want.len(), "{file}: {path} changed length");
            for (i, (w, h)) in want.iter().zip(have).enumerate() {
                assert_contains(h, w, &format!("{path}[{i}]"), file);
            }
        }
        _ => assert_eq!(actual, expected, "{file}: {path} reads back differently"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The CRDs themselves
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_generated_crd_is_established_and_serves_v1alpha1_with_the_status_subresource() {
    let env = TestEnv::get().await; // installs kmailops::crds::all(), panicking on a refusal
    let ns = env.unique_namespace("crds-served").await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    let generated = kmailops::crds::all();
    let mut kinds: Vec<String> = generated
        .iter()
        .map(|c| c.spec.names.kind.clone())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Email",
            "EmailDelivery",
            "EmailSenderConfig",
            "EmailTemplate"
        ]
    );

    for crd in generated {
        let name = crd.metadata.name.clone().expect("a CRD has a name");
        let live = crds
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name} is not on the server: {e}"));
        let status = live.status.as_ref().expect("a CRD status");
        for condition in ["NamesAccepted", "Established"] {
            let found = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == condition);
            assert_eq!(
                found.map(|c| c.status.as_str()),
                Some("True"),
                "{name}: condition {condition}: {found:#?}"
            );
        }
        let accepted = status
            .accepted_names
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no accepted names"));
        assert_eq!(accepted.kind, crd.spec.names.kind, "{name}");
        assert_eq!(accepted.plural, crd.spec.names.plural, "{name}");
        assert!(
            status
                .stored_versions
                .iter()
                .flatten()
                .any(|v| v == "v1alpha1"),
            "{name}: stored versions {:?}",
            status.stored_versions
        );

        assert_eq!(live.spec.scope, "Namespaced", "{name}");
        let version = live
            .spec
            .versions
            .iter()
            .find(|v| v.name == "v1alpha1")
            .unwrap_or_else(|| panic!("{name} has no v1alpha1"));
        assert!(version.served, "{name}: v1alpha1 is not served");
        assert!(
            version.storage,
            "{name}: v1alpha1 is not the storage version"
        );
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            "{name}: v1alpha1 has no status subresource"
        );

        // Served: the kind's endpoint answers.
        let resource = ApiResource {
            group: crd.spec.group.clone(),
            version: "v1alpha1".into(),
            api_version: format!("{}/v1alpha1", crd.spec.group),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        };
        Api::<DynamicObject>::namespaced_with(env.client(), &ns, &resource)
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing {name} at v1alpha1: {e}"));
    }
}

/// With the status subresource, a create can not set status, whatever the manifest says (a
/// GitOps tool can not fake a Sent Email), and the schema default fills in observedGeneration.
#[tokio::test]
async fn a_fresh_object_of_every_kind_reads_back_with_observed_generation_minus_one() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-observed-generation").await;
    let fake_status = json!({ "observedGeneration": 7, "phase": "Sent" });

    for (kind, api, spec) in [
        (
            "EmailSenderConfig",
            api::<EmailSenderConfig>(&env, &ns),
            mailersend_sender(),
        ),
        ("EmailTemplate", api::<EmailTemplate>(&env, &ns), template()),
        ("Email", api::<Email>(&env, &ns), email()),
        ("EmailDelivery", api::<EmailDelivery>(&env, &ns), delivery()),
    ] {
        let body: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kmailops.io/v1alpha1",
            "kind": kind,
            "metadata": { "name": "fresh" },
            "spec": spec,
            "status": fake_status,
        }))
        .expect("a Kubernetes object");
        api.create(&PostParams::default(), &body)
            .await
            .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
        // What a reader (Flux, Argo CD, kubectl) gets, not only the create's answer.
        let read = api.get("fresh").await.expect("reading it back");
        assert_eq!(
            read.data["status"],
            json!({ "observedGeneration": -1 }),
            "{kind}: {:#}",
            read.data
        );
        assert_eq!(read.metadata.generation, Some(1), "{kind}");
    }

    // And the typed view the operator uses agrees.
    let emails: Api<Email> = Api::namespaced(env.client(), &ns);
    let email = emails.get("fresh").await.expect("Email as typed");
    assert_eq!(
        email.status.and_then(|s| s.observed_generation),
        Some(-1),
        "typed Email status"
    );
}

#[tokio::test]
async fn sender_defaults_are_filled_in_by_the_api_server() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-sender-defaults").await;
    let senders = api::<EmailSenderConfig>(&env, &ns);

    let smtp = create::<EmailSenderConfig>(&senders, "smtp", &smtp_sender()).await;
    let spec = &smtp["spec"];
    assert_eq!(
        spec["retry"],
        json!({ "maxDuration": "30m", "initialBackoff": "5s", "maxBackoff": "10m" }),
        "no attempt cap by default: maxDuration bounds the retries"
    );
    assert_eq!(spec["smtp"]["tls"], "StartTLS");
    assert_eq!(spec["smtp"]["insecureSkipVerify"], false);
    assert_eq!(
        spec["smtp"].get("port"),
        None,
        "no port default: it follows tls"
    );
    assert_eq!(
        spec["healthCheck"],
        json!({ "interval": "5m", "unhealthyInterval": "30s", "timeout": "10s" })
    );
    assert_eq!(spec["allowedNamespaces"], json!({ "from": "Same" }));
    assert_eq!(spec["default"], false);
    assert_eq!(spec["disabled"], false);

    // A partly written object gets the rest of its fields defaulted.
    let mut partial = smtp_sender();
    partial["retry"] = json!({ "maxAttempts": 3 });
    partial["healthCheck"] = json!({ "interval": "1m" });
    partial["allowedNamespaces"] = json!({});
    let partial = create::<EmailSenderConfig>(&senders, "partial", &partial).await;
    assert_eq!(
        partial["spec"]["retry"],
        json!({ "maxAttempts": 3, "maxDuration": "30m", "initialBackoff": "5s", "maxBackoff": "10m" })
    );
    assert_eq!(
        partial["spec"]["healthCheck"],
        json!({ "interval": "1m", "unhealthyInterval": "30s", "timeout": "10s" })
    );
    assert_eq!(
        partial["spec"]["allowedNamespaces"],
        json!({ "from": "Same" })
    );

    let mailersend = create::<EmailSenderConfig>(&senders, "ms", &mailersend_sender()).await;
    assert_eq!(
        mailersend["spec"]["mailersend"]["baseUrl"],
        "https://api.mailersend.com/v1"
    );

    let mailgun = json!({
        "sender": { "address": "news@mg.example.com" },
        "mailgun": {
            "domain": "mg.example.com",
            "apiKeySecretRef": { "name": "mailgun-key", "key": "api-key" },
        },
    });
    let mailgun = create::<EmailSenderConfig>(&senders, "mg", &mailgun).await;
    assert_eq!(mailgun["spec"]["mailgun"]["region"], "US");
    assert_eq!(mailgun["spec"]["mailgun"].get("baseUrl"), None);
}

#[tokio::test]
async fn email_and_template_defaults_are_filled_in_by_the_api_server() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-email-defaults").await;

    let email = create::<Email>(&api::<Email>(&env, &ns), "plain", &email()).await;
    assert_eq!(email["spec"]["resendPolicy"], "Never");
    assert_eq!(email["status"]["observedGeneration"], -1);

    let mut with_variables = template();
    with_variables["variables"] = json!([{ "name": "name" }]);
    let template =
        create::<EmailTemplate>(&api::<EmailTemplate>(&env, &ns), "hello", &with_variables).await;
    assert_eq!(
        template["spec"]["allowedNamespaces"],
        json!({ "from": "Same" })
    );
    assert_eq!(template["spec"]["variables"][0]["required"], false);
}

// ---------------------------------------------------------------------------------------------
// 2. The examples
// ---------------------------------------------------------------------------------------------

/// Every document of every example is accepted by `apply_yaml` (server-side apply, which also
/// refuses fields the schema does not declare), and reads back with everything it says:
/// nothing pruned, nothing rewritten.
#[tokio::test]
async fn every_example_manifest_is_accepted_as_written() {
    let env = TestEnv::get().await;
    let mut kinds_seen = Vec::new();
    for path in example_files() {
        let example = apply_example(&env, &path).await;
        for (document, applied) in example.documents.iter().zip(&example.applied) {
            let kind = document["kind"].as_str().unwrap_or_default();
            let name = document["metadata"]["name"].as_str().unwrap_or_default();
            let file = &example.file;
            assert_eq!(applied.name_any(), name, "{file}");
            assert_eq!(
                applied.namespace().as_deref(),
                Some(example.namespace.as_str()),
                "{file}"
            );
            let types = applied.types.as_ref().expect("apiVersion and kind");
            assert_eq!(types.kind, kind, "{file}");
            if !types.api_version.starts_with("kmailops.io/") {
                continue; // the Secrets: see the test below
            }
            let mut expected = document.clone();
            expected["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("namespace"); // apply_yaml puts the object in its own namespace
            let actual = serde_json::to_value(applied).expect("the object as JSON");
            assert_contains(&actual, &expected, "", &format!("{file} ({kind} {name})"));
            assert_eq!(
                actual["status"]["observedGeneration"], -1,
                "{file}: {kind} {name}"
            );
            kinds_seen.push(kind.to_string());
        }
    }
    kinds_seen.sort();
    kinds_seen.dedup();
    assert_eq!(
        kinds_seen,
        ["Email", "EmailSenderConfig", "EmailTemplate"],
        "the examples should show every user-written kind"
    );
}

/// The examples write Secrets with `stringData`, as users do; they read back decoded in `data`.
#[tokio::test]
async fn secrets_from_the_examples_read_back_with_their_string_data_decoded() {
    let env = TestEnv::get().await;
    let mut checked = Vec::new();
    for path in example_files() {
        let example = apply_example(&env, &path).await;
        let secrets: Api<Secret> = Api::namespaced(env.client(), &example.namespace);
        for document in example.documents.iter().filter(|d| d["kind"] == "Secret") {
            let name = document["metadata"]["name"].as_str().expect("a name");
            let string_data = document["stringData"]
                .as_object()
                .unwrap_or_else(|| panic!("{}: Secret {name} has no stringData", example.file));
            let read = secrets
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("{}: reading Secret {name}: {e}", example.file));
            assert_eq!(read.string_data, None, "stringData is write-only");
            let data = read.data.unwrap_or_default();
            for (key, value) in string_data {
                let value = value.as_str().expect("stringData values are strings");
                let stored = data
                    .get(key)
                    .unwrap_or_else(|| panic!("{}: Secret {name} has no data.{key}", example.file));
                assert_eq!(
                    String::from_utf8_lossy(&stored.0),
                    value,
                    "{}: Secret {name} key {key}",
                    example.file
                );
                checked.push(format!("{name}/{key}"));
            }
        }
    }
    assert!(
        !checked.is_empty(),
        "the examples hold no Secret with stringData to check"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. What the API server refuses: EmailSenderConfig
// ---------------------------------------------------------------------------------------------

const ONE_PROVIDER: &str =
    "exactly one of mailersend, mailgun, smtp, ses, sendgrid, postmark or resend must be set";

#[tokio::test]
async fn a_sender_with_two_providers_is_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-two-providers").await;
    let mut two = mailersend_sender();
    two["smtp"] = json!({ "host": "smtp.example.com" });
    assert_rule_refuses::<EmailSenderConfig>(
        &api::<EmailSenderConfig>(&env, &ns),
        &mailersend_sender(),
        &two,
        "spec",
        ONE_PROVIDER,
    )
    .await;
}

#[tokio::test]
async fn a_sender_with_no_provider_is_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-no-provider").await;
    let none = json!({ "sender": { "address": "orders@shop.example.com" } });
    assert_rule_refuses::<EmailSenderConfig>(
        &api::<EmailSenderConfig>(&env, &ns),
        &mailersend_sender(),
        &none,
        "spec",
        ONE_PROVIDER,
    )
    .await;
}

/// Helm and Kustomize often render an unused block as `null`; that is not a second provider.
#[tokio::test]
async fn a_sender_with_a_second_provider_set_to_null_is_accepted() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-null-provider").await;
    let mut spec = smtp_sender();
    spec["mailgun"] = Value::Null;
    spec["mailersend"] = Value::Null;
    let stored =
        create::<EmailSenderConfig>(&api::<EmailSenderConfig>(&env, &ns), "s", &spec).await;
    assert_eq!(stored["spec"]["smtp"]["host"], "smtp.example.com");
}

const SMTP_AUTH_PAIR: &str = "smtp.username and smtp.passwordSecretRef must be set together";

#[tokio::test]
async fn an_smtp_username_without_password_secret_ref_is_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-smtp-auth").await;
    let senders = api::<EmailSenderConfig>(&env, &ns);
    let mut with_auth = smtp_sender();
    with_auth["smtp"]["username"] = json!("kmailops");
    with_auth["smtp"]["passwordSecretRef"] = json!({ "name": "smtp", "key": "password" });

    let mut username_only = with_auth.clone();
    username_only["smtp"]
        .as_object_mut()
        .unwrap()
        .remove("passwordSecretRef");
    assert_rule_refuses::<EmailSenderConfig>(
        &senders,
        &with_auth,
        &username_only,
        "spec.smtp",
        SMTP_AUTH_PAIR,
    )
    .await;

    let mut password_only = with_auth.clone();
    password_only["smtp"]
        .as_object_mut()
        .unwrap()
        .remove("username");
    assert_rule_refuses::<EmailSenderConfig>(
        &senders,
        &with_auth,
        &password_only,
        "spec.smtp",
        SMTP_AUTH_PAIR,
    )
    .await;
}

#[tokio::test]
async fn an_smtp_port_outside_1_to_65535_is_rejected_by_the_schema() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-smtp-port").await;
    let senders = api::<EmailSenderConfig>(&env, &ns);
    let mut highest = smtp_sender();
    highest["smtp"]["port"] = json!(65535);

    let mut too_high = smtp_sender();
    too_high["smtp"]["port"] = json!(70000);
    assert_spec_refused::<EmailSenderConfig>(
        &senders,
        &highest,
        &too_high,
        "spec.smtp.port",
        "should be less than or equal to 65535",
    )
    .await;

    let mut zero = smtp_sender();
    zero["smtp"]["port"] = json!(0);
    assert_spec_refused::<EmailSenderConfig>(
        &senders,
        &highest,
        &zero,
        "spec.smtp.port",
        "should be greater than or equal to 1",
    )
    .await;
}

const SELECTOR_ONLY_WITH_SELECTOR: &str =
    "allowedNamespaces.selector is required when from is Selector, and only allowed then";

#[tokio::test]
async fn allowed_namespaces_from_same_with_a_selector_is_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-allowed-namespaces").await;
    let selector = json!({ "matchLabels": { "team": "marketing" } });

    let senders = api::<EmailSenderConfig>(&env, &ns);
    let mut valid = mailersend_sender();
    valid["allowedNamespaces"] = json!({ "from": "Selector", "selector": selector });
    let mut same_with_selector = mailersend_sender();
    same_with_selector["allowedNamespaces"] = json!({ "from": "Same", "selector": selector });
    assert_rule_refuses::<EmailSenderConfig>(
        &senders,
        &valid,
        &same_with_selector,
        "spec.allowedNamespaces",
        SELECTOR_ONLY_WITH_SELECTOR,
    )
    .await;
    let mut selector_without_one = mailersend_sender();
    selector_without_one["allowedNamespaces"] = json!({ "from": "Selector" });
    assert_rule_refuses::<EmailSenderConfig>(
        &senders,
        &valid,
        &selector_without_one,
        "spec.allowedNamespaces",
        SELECTOR_ONLY_WITH_SELECTOR,
    )
    .await;

    // EmailTemplate shares the type, and the rule.
    let templates = api::<EmailTemplate>(&env, &ns);
    let mut valid = template();
    valid["allowedNamespaces"] = json!({ "from": "All" });
    let mut all_with_selector = template();
    all_with_selector["allowedNamespaces"] = json!({ "from": "All", "selector": selector });
    assert_rule_refuses::<EmailTemplate>(
        &templates,
        &valid,
        &all_with_selector,
        "spec.allowedNamespaces",
        SELECTOR_ONLY_WITH_SELECTOR,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. What the API server refuses: Email
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_email_without_recipients_is_rejected() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-no-recipients").await;
    let mut none = email();
    none["to"] = json!([]);
    assert_spec_refused::<Email>(
        &api::<Email>(&env, &ns),
        &email(),
        &none,
        "spec.to",
        "should have at least 1 items",
    )
    .await;
}

#[tokio::test]
async fn an_email_with_51_recipients_is_rejected_and_50_are_accepted() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-51-recipients").await;
    let recipients =
        |n: usize| -> Vec<String> { (0..n).map(|i| format!("user{i}@example.org")).collect() };
    let mut fifty = email();
    fifty["to"] = json!(recipients(50));
    let mut fifty_one = email();
    fifty_one["to"] = json!(recipients(51));
    assert_spec_refused::<Email>(
        &api::<Email>(&env, &ns),
        &fifty,
        &fifty_one,
        "spec.to",
        "must have at most 50 items",
    )
    .await;
}

#[tokio::test]
async fn an_email_without_text_html_or_template_is_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-no-content").await;
    let mut empty = email();
    empty.as_object_mut().unwrap().remove("text");
    assert_rule_refuses::<Email>(
        &api::<Email>(&env, &ns),
        &email(),
        &empty,
        "spec",
        "an Email needs content: set text, html, or templateRef",
    )
    .await;
}

#[tokio::test]
async fn a_subject_with_cr_or_lf_is_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-subject-crlf").await;
    let emails = api::<Email>(&env, &ns);
    for subject in [
        "Hello\r\nBcc: everyone@example.org",
        "Hello\nthere",
        "Hello\rthere",
    ] {
        let mut injected = email();
        injected["subject"] = json!(subject);
        assert_rule_refuses::<Email>(
            &emails,
            &email(),
            &injected,
            "spec.subject",
            "subject must not contain CR or LF",
        )
        .await;
    }
}

const RESERVED_HEADERS: &str = "headers must not set From, To, Cc, Bcc, Subject, Reply-To, Sender, Date, Message-ID, MIME-Version, Content-Type, Content-Transfer-Encoding or Return-Path: use the Email's own fields";

#[tokio::test]
async fn a_header_named_from_is_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-header-from").await;
    let emails = api::<Email>(&env, &ns);
    let mut valid = email();
    valid["headers"] = json!({ "X-Campaign": "spring" });
    for name in ["From", "from", "Reply-TO"] {
        let mut reserved = email();
        reserved["headers"] = json!({ "X-Campaign": "spring", name: "ceo@example.com" });
        assert_rule_refuses::<Email>(&emails, &valid, &reserved, "spec.headers", RESERVED_HEADERS)
            .await;
    }
}

#[tokio::test]
async fn a_header_value_with_a_newline_is_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-header-value").await;
    let emails = api::<Email>(&env, &ns);
    let mut valid = email();
    valid["headers"] = json!({ "X-Campaign": "spring" });
    for value in [
        "spring\r\nBcc: everyone@example.org",
        "spring\nsale",
        "a\rb",
    ] {
        let mut injected = email();
        injected["headers"] = json!({ "X-Campaign": value });
        assert_rule_refuses::<Email>(
            &emails,
            &valid,
            &injected,
            "spec.headers",
            "header values must not contain CR or LF",
        )
        .await;
    }
}

#[tokio::test]
async fn an_unknown_resend_policy_is_rejected_by_the_schema() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-resend-policy").await;
    let emails = api::<Email>(&env, &ns);
    let mut on_change = email();
    on_change["resendPolicy"] = json!("OnChange");
    let mut always = email();
    always["resendPolicy"] = json!("Always");
    let status = assert_spec_refused::<Email>(
        &emails,
        &on_change,
        &always,
        "spec.resendPolicy",
        "Unsupported value: \"Always\"",
    )
    .await;
    assert!(
        status.message.contains(r#""Never", "OnChange""#),
        "the refusal lists the supported values: {}",
        status.message
    );
}

const ONE_ATTACHMENT_SOURCE: &str =
    "an attachment needs exactly one of secretKeyRef or configMapKeyRef";

#[tokio::test]
async fn an_attachment_with_both_secret_and_configmap_refs_is_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-attachment").await;
    let emails = api::<Email>(&env, &ns);
    let secret_ref = json!({ "name": "invoices", "key": "10045.pdf" });
    let config_map_ref = json!({ "name": "terms", "key": "terms.pdf" });

    let mut valid = email();
    valid["attachments"] = json!([
        { "filename": "invoice.pdf", "secretKeyRef": secret_ref },
        { "filename": "terms.pdf", "configMapKeyRef": config_map_ref },
    ]);
    let mut both = email();
    both["attachments"] = json!([
        { "filename": "invoice.pdf", "secretKeyRef": secret_ref, "configMapKeyRef": config_map_ref },
    ]);
    assert_rule_refuses::<Email>(
        &emails,
        &valid,
        &both,
        "spec.attachments[0]",
        ONE_ATTACHMENT_SOURCE,
    )
    .await;

    let mut neither = email();
    neither["attachments"] = json!([
        { "filename": "invoice.pdf", "secretKeyRef": secret_ref },
        { "filename": "empty.pdf" },
    ]);
    assert_rule_refuses::<Email>(
        &emails,
        &valid,
        &neither,
        "spec.attachments[1]",
        ONE_ATTACHMENT_SOURCE,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. What the API server refuses: EmailDelivery
// ---------------------------------------------------------------------------------------------

const DELIVERY_IMMUTABLE: &str = "EmailDelivery spec is immutable";

/// The ledger entry is the proof of a send: once written, its spec can not be rewritten, while
/// the operator can still record the outcome in status and tools can still label it.
#[tokio::test]
async fn an_update_that_changes_an_email_delivery_spec_is_rejected_as_immutable() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-delivery-immutable").await;
    let deliveries = api::<EmailDelivery>(&env, &ns);
    assert_crd_has_rule::<EmailDelivery>("spec", DELIVERY_IMMUTABLE);
    let name = "order-10045-shipped-abababababababab";
    let created = deliveries
        .create(
            &PostParams::default(),
            &object::<EmailDelivery>(name, &delivery()),
        )
        .await
        .expect("creating the EmailDelivery");

    // A merge patch of the spec.
    let patch = json!({ "spec": { "senderConfig": "shop/smtp-relay" } });
    let result = deliveries
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    assert_invalid(result, "spec", DELIVERY_IMMUTABLE);

    // A full replace with another hash.
    let mut replaced = created.clone();
    replaced.data["spec"]["deliveryHash"] = json!("cd".repeat(32));
    let result = deliveries
        .replace(name, &PostParams::default(), &replaced)
        .await;
    assert_invalid(result, "spec", DELIVERY_IMMUTABLE);

    // Still writable: status (the outcome) and metadata.
    let status = json!({ "status": { "phase": "Sent", "messageId": "m-1", "attempts": 1 } });
    deliveries
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the outcome can be recorded in status");
    let labels = json!({ "metadata": { "labels": { "audit": "seen" } } });
    deliveries
        .patch(name, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("labels can be added");
    // Re-sending the same spec (an apply of an unchanged object) is not a change.
    let unchanged = json!({ "spec": delivery() });
    deliveries
        .patch(name, &PatchParams::default(), &Patch::Merge(&unchanged))
        .await
        .expect("an unchanged spec is accepted");

    let read = deliveries.get(name).await.expect("reading it back");
    assert_eq!(read.data["spec"], delivery());
    assert_eq!(read.data["status"]["phase"], "Sent");
    assert_eq!(read.labels().get("audit").map(String::as_str), Some("seen"));
}

#[tokio::test]
async fn health_check_intervals_below_their_floors_are_rejected_with_the_rule_message() {
    let env = TestEnv::get().await;
    let ns = env.unique_namespace("crds-health-floor").await;
    let api = api::<EmailSenderConfig>(&env, &ns);
    let mut at_floor = mailersend_sender();
    at_floor["healthCheck"] = json!({ "interval": "30s", "unhealthyInterval": "10s" });
    let mut fast = at_floor.clone();
    fast["healthCheck"]["interval"] = json!("5s");
    assert_rule_refuses::<EmailSenderConfig>(
        &api,
        &at_floor,
        &fast,
        "spec.healthCheck.interval",
        "healthCheck.interval must be at least 30s",
    )
    .await;
    let mut fast_unhealthy = at_floor.clone();
    fast_unhealthy["healthCheck"]["unhealthyInterval"] = json!("999ms");
    assert_rule_refuses::<EmailSenderConfig>(
        &api,
        &at_floor,
        &fast_unhealthy,
        "spec.healthCheck.unhealthyInterval",
        "healthCheck.unhealthyInterval must be at least 10s",
    )
    .await;
}
