//! Reads a sender's credentials from the Secret in the sender's own namespace.

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::EmailSenderConfigSpec;
use crate::provider::Credentials;

/// Why credentials could not be loaded. Messages name the Secret, the field that points at it,
/// and the fix; they never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "Secret {namespace}/{name} (from {field}) does not exist: create it, or point {field} at an existing Secret"
    )]
    SecretNotFound {
        namespace: String,
        name: String,
        field: &'static str,
    },
    #[error(
        "Secret {namespace}/{name} (from {field}) has no key '{key}': add the key to the Secret's data, or fix {field}.key"
    )]
    KeyNotFound {
        namespace: String,
        name: String,
        key: String,
        field: &'static str,
    },
    #[error("Secret {namespace}/{name} key '{key}' (from {field}) is not valid UTF-8 text")]
    NotText {
        namespace: String,
        name: String,
        key: String,
        field: &'static str,
    },
}

impl CredentialsError {
    /// Reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialsError::SecretNotFound { .. } => "SecretNotFound",
            CredentialsError::KeyNotFound { .. } => "SecretKeyNotFound",
            CredentialsError::NotText { .. } => "SecretKeyInvalid",
        }
    }
}

/// Loaded credentials plus the Secret's resourceVersion, so a rotated Secret rebuilds the client.
pub struct Loaded {
    pub credentials: Credentials,
    pub secret_version: Option<String>,
}

/// Loads what `spec` needs from the cache of Secrets (every reference: SES has two). A config
/// that needs no Secret (SMTP without AUTH) gets empty credentials.
pub fn load(
    spec: &EmailSenderConfigSpec,
    namespace: &str,
    secrets: &Store<Secret>,
) -> Result<Loaded, CredentialsError> {
    let mut versions = Vec::new();
    let credentials = crate::provider::load_credentials(
        spec,
        |field, reference| {
            let secret = secrets
                .get(&ObjectRef::new(&reference.name).within(namespace))
                .ok_or_else(|| CredentialsError::SecretNotFound {
                    namespace: namespace.to_string(),
                    name: reference.name.clone(),
                    field,
                })?;
            versions.push(secret.metadata.resource_version.clone().unwrap_or_default());
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(&reference.key))
                .map(|b| b.0.clone())
                .ok_or_else(|| CredentialsError::KeyNotFound {
                    namespace: namespace.to_string(),
                    name: reference.name.clone(),
                    key: reference.key.clone(),
                    field,
                })
        },
        |field, reference| CredentialsError::NotText {
            namespace: namespace.to_string(),
            name: reference.name.clone(),
            key: reference.key.clone(),
            field,
        },
    )?;
    Ok(Loaded {
        credentials,
        // A rotated Secret (any of them) rebuilds the client.
        secret_version: (!versions.is_empty()).then(|| versions.join(",")),
    })
}
