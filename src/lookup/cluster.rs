//! The lookup sources of the operator: the watch caches, plus the ConfigMaps an Email's
//! attachments name (not watched: read when an Email needs them).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::api::{Attachment, EmailSenderConfig};

use super::{Found, Senders, Values};

impl Senders for Store<EmailSenderConfig> {
    fn sender(&self, namespace: &str, name: &str) -> Option<Arc<EmailSenderConfig>> {
        self.get(&ObjectRef::new(name).within(namespace))
    }

    fn all(&self) -> Vec<Arc<EmailSenderConfig>> {
        self.state()
    }
}

/// Secrets from the cache and the ConfigMaps fetched for one Email.
pub struct ClusterValues<'a> {
    pub secrets: &'a Store<Secret>,
    /// (namespace, name) -> the ConfigMap, or `None` when it does not exist.
    pub config_maps: BTreeMap<(String, String), Option<ConfigMap>>,
}

impl<'a> ClusterValues<'a> {
    /// Secrets only (a sender's credentials).
    pub fn secrets(secrets: &'a Store<Secret>) -> Self {
        Self {
            secrets,
            config_maps: BTreeMap::new(),
        }
    }

    /// Secrets, and the ConfigMaps that `attachments` of an Email in `namespace` name, read
    /// from the API server.
    pub async fn for_attachments(
        secrets: &'a Store<Secret>,
        client: &Client,
        namespace: &str,
        attachments: &[Attachment],
    ) -> Result<Self, kube::Error> {
        let mut config_maps = BTreeMap::new();
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        for r in attachments
            .iter()
            .filter_map(|a| a.config_map_key_ref.as_ref())
        {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                config_maps.entry((namespace.to_string(), r.name.clone()))
            {
                slot.insert(api.get_opt(&r.name).await?);
            }
        }
        Ok(Self {
            secrets,
            config_maps,
        })
    }
}

impl Values for ClusterValues<'_> {
    fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Found {
        let Some(secret) = self.secrets.get(&ObjectRef::new(name).within(namespace)) else {
            return Found::NoObject;
        };
        match secret.data.as_ref().and_then(|d| d.get(key)) {
            Some(bytes) => Found::Value(bytes.0.clone()),
            None => Found::NoKey,
        }
    }

    fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secrets
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|s| s.metadata.resource_version.clone())
    }

    fn config_map_key(&self, namespace: &str, name: &str, key: &str) -> Found {
        let Some(Some(cm)) = self
            .config_maps
            .get(&(namespace.to_string(), name.to_string()))
        else {
            return Found::NoObject;
        };
        let text = cm.data.as_ref().and_then(|d| d.get(key));
        let binary = cm.binary_data.as_ref().and_then(|d| d.get(key));
        match (text, binary) {
            (Some(t), _) => Found::Value(t.as_bytes().to_vec()),
            (None, Some(b)) => Found::Value(b.0.clone()),
            (None, None) => Found::NoKey,
        }
    }
}
