//! Kubernetes manifests read from files, for the commands that work without a cluster
//! (`send`, `check`, and later `render` and `validate`): multi-document YAML, typed by
//! apiVersion and kind, each object remembering the file and document it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api::{Email, EmailSenderConfig, EmailTemplate};

/// One object and where it came from.
#[derive(Clone, Debug)]
pub struct Manifest<T> {
    /// `file.yaml (document 2)`, for messages.
    pub source: String,
    pub namespace: String,
    pub name: String,
    pub object: T,
}

impl<T> Manifest<T> {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything the files held, by kind.
#[derive(Clone, Debug, Default)]
pub struct ManifestSet {
    pub emails: Vec<Manifest<Email>>,
    pub sender_configs: Vec<Manifest<EmailSenderConfig>>,
    pub templates: Vec<Manifest<EmailTemplate>>,
    pub secrets: Vec<Manifest<Secret>>,
    pub config_maps: Vec<Manifest<ConfigMap>>,
    /// Objects of other kinds (`source: apiVersion kind name`); kept so `validate` can
    /// mention them, ignored by everything else.
    pub ignored: Vec<String>,
}

/// A file that could not be read or understood; always names the file and document.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    #[error("{kind} {key} is defined twice: in {first} and in {second}")]
    Duplicate {
        kind: &'static str,
        key: String,
        first: String,
        second: String,
    },
}

/// A missing object or key, phrased for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize, Default)]
struct ObjectMeta {
    #[serde(default)]
    metadata: Meta,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

impl ManifestSet {
    /// Reads files, folders (their `*.yaml`, `*.yml` and `*.json`, sorted), or `-` for
    /// standard input. Objects without a namespace get `default_namespace`, as kubectl does.
    pub fn load(paths: &[PathBuf], default_namespace: &str) -> Result<Self, ManifestError> {
        let mut set = ManifestSet::default();
        for path in paths {
            for file in expand(path)? {
                let text = read(&file)?;
                set.add_str(&text, &file.display().to_string(), default_namespace)?;
            }
        }
        Ok(set)
    }

    /// Adds every document of one YAML (or JSON) text; `file` names it in errors.
    pub fn add_str(
        &mut self,
        text: &str,
        file: &str,
        default_namespace: &str,
    ) -> Result<(), ManifestError> {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let source = format!("{file} (document {})", i + 1);
            let value =
                serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError::Invalid {
                    location: source.clone(),
                    message: format!("not valid YAML: {e}"),
                })?;
            self.add_value(value, &source, default_namespace)?;
        }
        Ok(())
    }

    /// Adds one parsed document; `source` names it in errors (`file (document 2)`).
    pub fn add_value(
        &mut self,
        value: serde_yaml::Value,
        source: &str,
        default_namespace: &str,
    ) -> Result<(), ManifestError> {
        if value.is_null() {
            return Ok(()); // an empty document, e.g. after a trailing `---`
        }
        let invalid = |message: String| ManifestError::Invalid {
            location: source.to_string(),
            message,
        };
        let meta: TypeMeta = serde_yaml::from_value(value.clone())
            .map_err(|e| invalid(format!("not a Kubernetes object: {e}")))?;
        if meta.api_version.is_empty() || meta.kind.is_empty() {
            return Err(invalid("has no apiVersion or kind".into()));
        }
        if meta.kind == "List" {
            let items = value
                .get("items")
                .and_then(serde_yaml::Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                self.add_value(item, &format!("{source} item {}", i + 1), default_namespace)?;
            }
            return Ok(());
        }
        let kmailops = format!("{}/{}", crate::api::GROUP, crate::api::VERSION);
        let api = meta.api_version.as_str();
        match (api, meta.kind.as_str()) {
            (a, "Email") if a == kmailops => {
                let m = typed(value, source, default_namespace)?;
                push(&mut self.emails, "Email", m)
            }
            (a, "EmailSenderConfig") if a == kmailops => {
                let m = typed(value, source, default_namespace)?;
                push(&mut self.sender_configs, "EmailSenderConfig", m)
            }
            (a, "EmailTemplate") if a == kmailops => {
                let m = typed(value, source, default_namespace)?;
                push(&mut self.templates, "EmailTemplate", m)
            }
            ("v1", "Secret") => {
                let m = typed(value, source, default_namespace)?;
                push(&mut self.secrets, "Secret", m)
            }
            ("v1", "ConfigMap") => {
                let m = typed(value, source, default_namespace)?;
                push(&mut self.config_maps, "ConfigMap", m)
            }
            (_, kind) => {
                let name = serde_yaml::from_value::<ObjectMeta>(value)
                    .ok()
                    .and_then(|m| m.metadata.name)
                    .unwrap_or_default();
                self.ignored.push(format!("{source}: {api} {kind} {name}"));
                Ok(())
            }
        }
    }

    /// The bytes of a Secret key; `stringData` wins over `data`, as the API server merges it.
    pub fn secret_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Vec<u8>, LookupError> {
        let secret = find(&self.secrets, namespace, name).ok_or_else(|| {
            LookupError(format!(
                "Secret {namespace}/{name} is not in the given files"
            ))
        })?;
        let s = &secret.object;
        if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.as_bytes().to_vec());
        }
        if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.0.clone());
        }
        Err(LookupError(format!(
            "Secret {namespace}/{name} ({}) has no key `{key}`; it has: {}",
            secret.source,
            keys(
                s.string_data
                    .iter()
                    .flat_map(BTreeMap::keys)
                    .chain(s.data.iter().flat_map(BTreeMap::keys))
            )
        )))
    }

    /// The bytes of a ConfigMap key, from `data` or `binaryData`.
    pub fn config_map_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Vec<u8>, LookupError> {
        let cm = find(&self.config_maps, namespace, name).ok_or_else(|| {
            LookupError(format!(
                "ConfigMap {namespace}/{name} is not in the given files"
            ))
        })?;
        let c = &cm.object;
        if let Some(v) = c.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.as_bytes().to_vec());
        }
        if let Some(v) = c.binary_data.as_ref().and_then(|d| d.get(key)) {
            return Ok(v.0.clone());
        }
        Err(LookupError(format!(
            "ConfigMap {namespace}/{name} ({}) has no key `{key}`; it has: {}",
            cm.source,
            keys(
                c.data
                    .iter()
                    .flat_map(BTreeMap::keys)
                    .chain(c.binary_data.iter().flat_map(BTreeMap::keys))
            )
        )))
    }

    pub fn sender_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&Manifest<EmailSenderConfig>> {
        find(&self.sender_configs, namespace, name)
    }

    pub fn template(&self, namespace: &str, name: &str) -> Option<&Manifest<EmailTemplate>> {
        find(&self.templates, namespace, name)
    }
}

fn keys<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&str> = keys.map(String::as_str).collect();
    if all.is_empty() {
        "no keys".to_string()
    } else {
        all.join(", ")
    }
}

/// Finds by namespace and name.
pub fn find<'a, T>(
    list: &'a [Manifest<T>],
    namespace: &str,
    name: &str,
) -> Option<&'a Manifest<T>> {
    list.iter()
        .find(|m| m.namespace == namespace && m.name == name)
}

fn typed<T: DeserializeOwned>(
    value: serde_yaml::Value,
    source: &str,
    default_namespace: &str,
) -> Result<Manifest<T>, ManifestError> {
    let invalid = |message: String| ManifestError::Invalid {
        location: source.to_string(),
        message,
    };
    let meta: ObjectMeta = serde_yaml::from_value(value.clone()).unwrap_or_default();
    let name = meta
        .metadata
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("has no metadata.name".into()))?;
    let namespace = meta
        .metadata
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_namespace.to_string());
    let object = serde_yaml::from_value(value).map_err(|e| invalid(format!("{name}: {e}")))?;
    Ok(Manifest {
        source: source.to_string(),
        namespace,
        name,
        object,
    })
}

fn push<T>(
    list: &mut Vec<Manifest<T>>,
    kind: &'static str,
    m: Manifest<T>,
) -> Result<(), ManifestError> {
    if let Some(first) = find(list, &m.namespace, &m.name) {
        return Err(ManifestError::Duplicate {
            kind,
            key: m.key(),
            first: first.source.clone(),
            second: m.source,
        });
    }
    list.push(m);
    Ok(())
}

/// Every manifest file (`*.yaml`, `*.yml`, `*.json`) under `dir`, in sub-folders too, sorted;
/// hidden entries (`.git`, ...) are skipped. For `validate` and `render -R`.
pub fn files_recursive(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let mut out = Vec::new();
    walk(dir, &mut out, 0)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), ManifestError> {
    // Deep enough for any repository layout; stops symlink cycles.
    const MAX_DEPTH: usize = 32;
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let read_err = |source| ManifestError::Read {
        path: dir.display().to_string(),
        source,
    };
    if !dir.is_dir() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out, depth + 1)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn expand(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: path.display().to_string(),
        source,
    };
    if path.as_os_str() == "-" || !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        let manifest = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if manifest && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<String, ManifestError> {
    let err = |source| ManifestError::Read {
        path: path.display().to_string(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(err)?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(err)
}

impl fmt::Display for ManifestSet {
    /// A one-line inventory, e.g. for `validate`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} Email, {} EmailSenderConfig, {} EmailTemplate, {} Secret, {} ConfigMap, {} other",
            self.emails.len(),
            self.sender_configs.len(),
            self.templates.len(),
            self.secrets.len(),
            self.config_maps.len(),
            self.ignored.len()
        )
    }
}

#[cfg(test)]
mod tests;
