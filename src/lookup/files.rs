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
        if !self
            .secrets
            .iter()
            .any(|s| s.namespace == namespace && s.name == name)
        {
            return Found::NoObject;
        }
        match self.secret_value(namespace, name, key) {
            Ok(v) => Found::Value(v),
            Err(_) => Found::NoKey,
        }
    }

    fn secret_version(&self, _namespace: &str, _name: &str) -> Option<String> {
        None
    }

    fn config_map_key(&self, namespace: &str, name: &str, key: &str) -> Found {
        if !self
            .config_maps
            .iter()
            .any(|c| c.namespace == namespace && c.name == name)
        {
            return Found::NoObject;
        }
        match self.config_map_value(namespace, name, key) {
            Ok(v) => Found::Value(v),
            Err(_) => Found::NoKey,
        }
    }
}
