//! Reads a sender's credentials from the Secret in the sender's own namespace.

use crate::api::EmailSenderConfigSpec;

use super::{Found, Values};

pub use crate::provider::Loaded;

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

/// Loads what `spec` needs from the Secrets of `namespace` (the config's own; every
/// reference: SES has two). A config that needs no Secret (SMTP without AUTH) gets empty
/// credentials.
pub fn load(
    spec: &EmailSenderConfigSpec,
    namespace: &str,
    values: &dyn Values,
) -> Result<Loaded, CredentialsError> {
    let mut versions = Vec::new();
    let credentials = crate::provider::load_credentials(
        spec,
        |field, reference| {
            let (name, key) = (&reference.name, &reference.key);
            match values.secret_key(namespace, name, key) {
                Found::Value(v) => {
                    versions.push(values.secret_version(namespace, name).unwrap_or_default());
                    Ok(v)
                }
                Found::NoObject => Err(CredentialsError::SecretNotFound {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                    field,
                }),
                Found::NoKey => Err(CredentialsError::KeyNotFound {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                    key: key.clone(),
                    field,
                }),
            }
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
