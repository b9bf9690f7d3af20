//! The committed `crds/` folder is what users apply; it must be exactly what the Rust types
//! generate, and the generated CRDs must carry the contract api.md promises.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn crd(plural: &str) -> CustomResourceDefinition {
    kmailops::crds::all()
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .unwrap_or_else(|| panic!("no CRD for {plural}"))
}

fn schema(crd: &CustomResourceDefinition) -> serde_json::Value {
    serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap()
}

#[test]
fn committed_crds_folder_equals_what_the_code_generates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let generated = kmailops::crds::all();
    let mut expected_files: Vec<String> = generated.iter().map(kmailops::crds::file_name).collect();
    expected_files.sort();
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    committed.sort();
    assert_eq!(
        committed, expected_files,
        "crds/ holds other files than the code generates"
    );

    for crd in &generated {
        let path = dir.join(kmailops::crds::file_name(crd));
        let on_disk = std::fs::read_to_string(&path).unwrap();
        let fresh = kmailops::crds::to_yaml(std::slice::from_ref(crd)).unwrap();
        assert!(
            on_disk == fresh,
            "{} drifted from the Rust types: run `cargo run -- crds --output-dir crds` and commit",
            path.display()
        );
    }
}

#[test]
fn every_kind_is_namespaced_with_status_subresource_short_name_and_category() {
    let expected = [
        ("emailsenderconfigs", "EmailSenderConfig", "esc"),
        ("emailtemplates", "EmailTemplate", "et"),
        ("emails", "Email", "em"),
        ("emaildeliveries", "EmailDelivery", "emd"),
    ];
    for (plural, kind, short) in expected {
        let c = crd(plural);
        assert_eq!(c.spec.group, "kmailops.io");
        assert_eq!(c.spec.names.kind, kind);
        assert_eq!(c.spec.scope, "Namespaced");
        assert_eq!(
            c.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        assert_eq!(
            c.spec.names.categories.as_deref(),
            Some(&["kmailops".to_string()][..])
        );
        let v = &c.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }
}

#[test]
fn status_defaults_observed_generation_to_minus_one_and_keys_conditions_by_type() {
    for plural in [
        "emailsenderconfigs",
        "emailtemplates",
        "emails",
        "emaildeliveries",
    ] {
        let s = schema(&crd(plural));
        let status = &s["properties"]["status"];
        assert_eq!(
            status["default"],
            serde_json::json!({}),
            "{plural}: status default"
        );
        assert_eq!(
            status["properties"]["observedGeneration"]["default"], -1,
            "{plural}"
        );
        let conditions = &status["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{plural}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }
}

#[test]
fn printer_columns_match_the_api_contract() {
    let columns = |plural: &str| -> Vec<String> {
        crd(plural).spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.to_uppercase())
            .collect()
    };
    assert_eq!(
        columns("emailsenderconfigs"),
        [
            "DISPLAY-NAME",
            "PROVIDER",
            "SENDER",
            "DEFAULT",
            "READY",
            "HEALTHY",
            "AGE"
        ]
    );
    assert_eq!(
        columns("emails"),
        ["PHASE", "TO", "SENDER", "MESSAGE-ID", "AGE"]
    );
    assert_eq!(
        columns("emaildeliveries"),
        ["EMAIL", "PHASE", "MESSAGE-ID", "SENT", "AGE"]
    );
}

#[test]
fn field_documentation_reaches_kubectl_explain() {
    let s = schema(&crd("emailsenderconfigs"));
    let tls = &s["properties"]["spec"]["properties"]["smtp"]["properties"]["tls"];
    assert!(tls["description"].as_str().unwrap().contains("StartTLS"));
    assert_eq!(tls["default"], "StartTLS");
    assert_eq!(tls["enum"], serde_json::json!(["StartTLS", "TLS", "None"]));
}
