//! Reads a sender's credentials from the Secret in the sender's own namespace.

use crate::api::EmailSenderConfigSpec;
use crate::provider::{Credentials, SecretValue, required_secret};

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

/// Loads what `spec` needs from the Secrets of `namespace` (the config's own). A config that
/// needs no Secret (SMTP without AUTH) gets empty credentials.
pub fn load(
    spec: &EmailSenderConfigSpec,
    namespace: &str,
    values: &dyn Values,
) -> Result<Loaded, CredentialsError> {
    let Some((field, reference)) = required_secret(spec) else {
        return Ok(Loaded {
            credentials: Credentials::default(),
            secret_version: None,
        });
    };
    let (name, key) = (&reference.name, &reference.key);
    let bytes = match values.secret_key(namespace, name, key) {
        Found::Value(v) => v,
        Found::NoObject => {
            return Err(CredentialsError::SecretNotFound {
                namespace: namespace.to_string(),
                name: name.clone(),
                field,
            });
        }
        Found::NoKey => {
            return Err(CredentialsError::KeyNotFound {
                namespace: namespace.to_string(),
                name: name.clone(),
                key: key.clone(),
                field,
            });
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| CredentialsError::NotText {
        namespace: namespace.to_string(),
        name: name.clone(),
        key: key.clone(),
        field,
    })?;
    Ok(Loaded {
        // Tokens pasted into Secrets often carry a trailing newline (`echo` without -n).
        credentials: Credentials {
            secret: Some(SecretValue::new(
                text.trim_end_matches(['\r', '\n']).to_string(),
            )),
        },
        secret_version: values.secret_version(namespace, name),
    })
}
