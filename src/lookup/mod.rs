//! What the operator and the offline commands both resolve an Email through: the sender chain
//! (selection, fallbacks, `disabled`, `allowedNamespaces`), credentials, attachments and
//! content. The cluster answers from the watch caches ([`cluster`]), the CLI from manifest
//! files ([`files`]); the rules are the same code for both.

pub mod attachments;
pub mod cluster;
pub mod content;
pub mod credentials;
pub mod files;
pub mod secret_cache;
pub mod senders;

use std::sync::Arc;

use crate::api::EmailSenderConfig;

/// What a lookup of one key of a Secret or ConfigMap found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Value(Vec<u8>),
    NoObject,
    NoKey,
}

/// Where Secret and ConfigMap values come from. Always asked for one namespace's objects:
/// callers never ask across namespaces (a config's Secrets live beside the config, an
/// Email's attachments beside the Email).
pub trait Values {
    fn secret_key(&self, namespace: &str, name: &str, key: &str) -> Found;
    /// The Secret's resourceVersion, so a rotated Secret rebuilds the provider client.
    fn secret_version(&self, namespace: &str, name: &str) -> Option<String>;
    /// Whether the Secret carries `kmailops.io/attachable: "true"`: only such Secrets may be
    /// mailed out as attachments (a namespace's Secrets include its senders' API tokens).
    fn secret_attachable(&self, namespace: &str, name: &str) -> bool;
    fn config_map_key(&self, namespace: &str, name: &str, key: &str) -> Found;
}

/// Where EmailSenderConfigs come from. Objects carry their namespace in their metadata.
pub trait Senders {
    fn sender(&self, namespace: &str, name: &str) -> Option<Arc<EmailSenderConfig>>;
    fn all(&self) -> Vec<Arc<EmailSenderConfig>>;
}
