//! The lookup sources of the offline commands: the objects of manifest files.

use std::sync::Arc;

use crate::api::EmailSenderConfig;
use crate::manifests::{Manifest, ManifestSet};

use super::{Found, Senders, Values};

/// The EmailSenderConfigs of a set of files, with the namespace each was read into written
/// into its metadata (files often leave it out).
pub struct FileSenders(Vec<Arc<EmailSenderConfig>>);

impl FileSenders {
    pub fn new(set: &ManifestSet) -> Self {
        Self(set.sender_configs.iter().map(with_namespace).collect())
    }
}

fn with_namespace(m: &Manifest<EmailSenderConfig>) -> Arc<EmailSenderConfig> {
    let mut config = m.object.clone();
    config.metadata.namespace = Some(m.namespace.clone());
    config.metadata.name = Some(m.name.clone());
    Arc::new(config)
}

impl Senders for FileSenders {
    fn sender(&self, namespace: &str, name: &str) -> Option<Arc<EmailSenderConfig>> {
        self.0
            .iter()
            .find(|c| {
                c.metadata.namespace.as_deref() == Some(namespace)
                    && c.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }

    fn all(&self) -> Vec<Arc<EmailSenderConfig>> {
        self.0.clone()
    }
}

impl Values for ManifestSet {
    fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Found {
        found(
            crate::manifests::find(&self.secrets, namespace, name).is_some(),
            || self.secret_value(namespace, name, key),
        )
    }

    fn secret_version(&self, _namespace: &str, _name: &str) -> Option<String> {
        None
    }

    fn secret_attachable(&self, namespace: &str, name: &str) -> bool {
        crate::manifests::find(&self.secrets, namespace, name)
            .is_some_and(|m| super::secret_cache::is_attachable(m.object.metadata.labels.as_ref()))
    }

    fn config_map_key(&self, namespace: &str, name: &str, key: &str) -> Found {
        found(
            crate::manifests::find(&self.config_maps, namespace, name).is_some(),
            || self.config_map_value(namespace, name, key),
        )
    }
}

fn found<E>(exists: bool, value: impl FnOnce() -> Result<Vec<u8>, E>) -> Found {
    match (exists, exists.then(value)) {
        (false, _) => Found::NoObject,
        (true, Some(Ok(v))) => Found::Value(v),
        (true, _) => Found::NoKey,
    }
}
