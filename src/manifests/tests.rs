use super::*;

const FILE: &str = r#"
apiVersion: kmailops.io/v1alpha1
kind: EmailSenderConfig
metadata: {name: primary, namespace: mail}
spec:
  sender: {address: noreply@example.com}
  default: true
  mailersend:
    apiTokenSecretRef: {name: mailersend, key: token}
---
apiVersion: v1
kind: Secret
metadata: {name: mailersend, namespace: mail}
stringData: {token: from-string-data}
data: {token: ZnJvbS1kYXRh, other: YmluAP8=}
---
apiVersion: kmailops.io/v1alpha1
kind: Email
metadata: {name: welcome}
spec:
  to: [jane@example.org]
  subject: Hi
  text: Hello
---
apiVersion: v1
kind: ConfigMap
metadata: {name: files}
data: {notes.txt: hello}
binaryData: {logo.png: iVBORw==}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
"#;

fn load() -> ManifestSet {
    let mut set = ManifestSet::default();
    set.add_str(FILE, "bundle.yaml", "default")
        .expect("valid manifests");
    set
}

#[test]
fn documents_are_typed_by_api_version_and_kind() {
    let set = load();
    assert_eq!(set.sender_configs[0].key(), "mail/primary");
    assert_eq!(
        set.emails[0].key(),
        "default/welcome",
        "no namespace: the default applies"
    );
    assert_eq!(set.emails[0].object.spec.to, ["jane@example.org"]);
    assert_eq!(set.emails[0].source, "bundle.yaml (document 3)");
    assert_eq!(
        set.ignored,
        ["bundle.yaml (document 5): apps/v1 Deployment web"]
    );
    assert_eq!(
        set.to_string(),
        "1 Email, 1 EmailSenderConfig, 0 EmailTemplate, 1 Secret, 1 ConfigMap, 1 other"
    );
}

#[test]
fn secret_values_come_from_string_data_first_then_base64_data() {
    let set = load();
    assert_eq!(
        set.secret_value("mail", "mailersend", "token").unwrap(),
        b"from-string-data"
    );
    assert_eq!(
        set.secret_value("mail", "mailersend", "other").unwrap(),
        b"bin\0\xff"
    );
    let err = set
        .secret_value("mail", "mailersend", "nope")
        .unwrap_err()
        .0;
    assert!(
        err.contains("has no key `nope`; it has: token, other, token"),
        "{err}"
    );
    let err = set
        .secret_value("default", "mailersend", "token")
        .unwrap_err()
        .0;
    assert!(
        err.contains("Secret default/mailersend is not in the given files"),
        "{err}"
    );
}

#[test]
fn config_map_values_come_from_data_or_binary_data() {
    let set = load();
    assert_eq!(
        set.config_map_value("default", "files", "notes.txt")
            .unwrap(),
        b"hello"
    );
    assert_eq!(
        set.config_map_value("default", "files", "logo.png")
            .unwrap(),
        b"\x89PNG"
    );
}

#[test]
fn errors_name_the_file_and_document() {
    let mut set = ManifestSet::default();
    let bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: '!!notbase64'}\n";
    let err = set
        .add_str(bad, "secret.yaml", "default")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("secret.yaml (document 1): s: "), "{err}");

    let err = set
        .add_str("---\nkind: Email\n", "x.yaml", "default")
        .unwrap_err()
        .to_string();
    assert_eq!(err, "x.yaml (document 1): has no apiVersion or kind");

    let no_name =
        "apiVersion: kmailops.io/v1alpha1\nkind: Email\nmetadata: {}\nspec: {to: [a@b.co]}\n";
    let err = set
        .add_str(no_name, "y.yaml", "default")
        .unwrap_err()
        .to_string();
    assert_eq!(err, "y.yaml (document 1): has no metadata.name");

    let err = set
        .add_str("a: [", "z.yaml", "default")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("z.yaml (document 1): not valid YAML"),
        "{err}"
    );
}

#[test]
fn an_object_defined_twice_is_an_error_naming_both_places() {
    let mut set = load();
    let err = set
        .add_str(FILE, "copy.yaml", "default")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "EmailSenderConfig mail/primary is defined twice: in bundle.yaml (document 1) and in copy.yaml (document 1)"
    );
}

#[test]
fn a_kubectl_list_contributes_its_items() {
    let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Secret
  metadata: {name: a, namespace: n}
  stringData: {k: v}
"#;
    let mut set = ManifestSet::default();
    set.add_str(list, "list.yaml", "default").expect("list");
    assert_eq!(set.secrets[0].source, "list.yaml (document 1) item 1");
}

#[test]
fn folders_are_read_file_by_file_and_missing_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("b.yaml"), FILE).expect("write");
    std::fs::write(dir.path().join("notes.md"), "not yaml: [").expect("write");
    let set = ManifestSet::load(&[dir.path().to_path_buf()], "default").expect("folder");
    assert_eq!(set.emails.len(), 1);
    let missing = dir.path().join("missing.yaml");
    let err = ManifestSet::load(std::slice::from_ref(&missing), "default")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&missing.display().to_string()), "{err}");
}
