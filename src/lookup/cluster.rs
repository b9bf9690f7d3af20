//! The lookup sources of the operator: the watch caches, the Secrets something names (see
//! [`super::secret_cache`]), and the ConfigMaps an Email's attachments name (not watched: read
//! when an Email needs them).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::api::{Attachment, EmailSenderConfig, EmailSenderConfigSpec};
use crate::provider::required_secrets;

use super::secret_cache::{SecretCache, SecretView};
use super::{Found, Senders, Values};

impl Senders for Store<EmailSenderConfig> {
    fn sender(&self, namespace: &str, name: &str) -> Option<Arc<EmailSenderConfig>> {
        self.get(&ObjectRef::new(name).within(namespace))
    }

    fn all(&self) -> Vec<Arc<EmailSenderConfig>> {
        self.state()
    }
}

/// The Secrets and ConfigMaps one reconcile reads, fetched before the (synchronous) lookups
/// run: the Secrets from the [`SecretCache`], the ConfigMaps an Email's attachments name from
/// the API server. A lookup of anything not fetched finds nothing.
#[derive(Default)]
pub struct ClusterValues {
    /// (namespace, name) -> the Secret, or `None` when it does not exist.
    secrets: BTreeMap<(String, String), Option<SecretView>>,
    /// (namespace, name) -> the ConfigMap, or `None` when it does not exist.
    config_maps: BTreeMap<(String, String), Option<ConfigMap>>,
}

impl ClusterValues {
    /// The Secrets a sender's credentials name (they live in the sender's namespace).
    pub async fn add_sender(
        &mut self,
        cache: &SecretCache,
        namespace: &str,
        spec: &EmailSenderConfigSpec,
    ) -> Result<(), kube::Error> {
        for (_, r) in required_secrets(spec) {
            self.add_secret(cache, namespace, &r.name).await?;
        }
        Ok(())
    }

    /// The Secrets and ConfigMaps that `attachments` of an Email in `namespace` name.
    pub async fn add_attachments(
        &mut self,
        cache: &SecretCache,
        client: &Client,
        namespace: &str,
        attachments: &[Attachment],
    ) -> Result<(), kube::Error> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        for a in attachments {
            if let Some(r) = &a.secret_key_ref {
                self.add_secret(cache, namespace, &r.name).await?;
            }
            if let Some(r) = &a.config_map_key_ref
                && let Entry::Vacant(slot) = self
                    .config_maps
                    .entry((namespace.to_string(), r.name.clone()))
            {
                slot.insert(api.get_opt(&r.name).await?);
            }
        }
        Ok(())
    }

    async fn add_secret(
        &mut self,
        cache: &SecretCache,
        namespace: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        if let Entry::Vacant(slot) = self
            .secrets
            .entry((namespace.to_string(), name.to_string()))
        {
            slot.insert(cache.get(namespace, name).await?);
        }
        Ok(())
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<&SecretView> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))?
            .as_ref()
    }
}

impl Values for ClusterValues {
    fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Found {
        let Some(secret) = self.secret(namespace, name) else {
            return Found::NoObject;
        };
        match secret.data.get(key) {
            Some(bytes) => Found::Value(bytes.0.clone()),
            None => Found::NoKey,
        }
    }

    fn secret_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.secret(namespace, name)?.version.clone()
    }

    fn secret_attachable(&self, namespace: &str, name: &str) -> bool {
        self.secret(namespace, name).is_some_and(|s| s.attachable)
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
