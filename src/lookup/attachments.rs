//! An Email's attachments, from Secrets and ConfigMaps of the Email's own namespace. A Secret
//! must carry `kmailops.io/attachable: "true"`. The size
//! limit is the message's ([`crate::message::MAX_ATTACHMENT_BYTES`]); reading stops as soon as
//! it is passed, so a huge attachment is never held whole.

use crate::api::Attachment;
use crate::message::{AttachmentData, MAX_ATTACHMENT_BYTES, guess_content_type};
use crate::problem::{Problem, reasons};

use super::secret_cache::ATTACHABLE_LABEL;
use super::{Found, Values};

/// Reads every attachment. A missing object or key is a [`Problem`] naming the field.
pub fn load(
    namespace: &str,
    specs: &[Attachment],
    values: &dyn Values,
) -> Result<Vec<AttachmentData>, Problem> {
    let mut out = Vec::with_capacity(specs.len());
    let mut total = 0usize;
    for (i, spec) in specs.iter().enumerate() {
        let field = format!("spec.attachments[{i}]");
        let (kind, found, name, key) = match (&spec.secret_key_ref, &spec.config_map_key_ref) {
            (Some(r), None) => (
                "Secret",
                values.secret_key(namespace, &r.name, &r.key),
                &r.name,
                &r.key,
            ),
            (None, Some(r)) => (
                "ConfigMap",
                values.config_map_key(namespace, &r.name, &r.key),
                &r.name,
                &r.key,
            ),
            _ => {
                return Err(Problem::new(
                    reasons::INVALID_SPEC,
                    format!("{field}: set exactly one of secretKeyRef or configMapKeyRef"),
                ));
            }
        };
        if kind == "Secret"
            && found != Found::NoObject
            && !values.secret_attachable(namespace, name)
        {
            return Err(Problem::new(
                reasons::ATTACHMENT_NOT_ALLOWED,
                format!(
                    "{field}: Secret {namespace}/{name} is not marked attachable: label it {ATTACHABLE_LABEL}=true if its keys may be mailed out (the label keeps API tokens and other Secrets of the namespace from being attached)"
                ),
            ));
        }
        let content = match found {
            Found::Value(v) => v,
            Found::NoObject => {
                return Err(Problem::new(
                    reasons::ATTACHMENT_NOT_FOUND,
                    format!(
                        "{field}: {kind} {namespace}/{name} does not exist: create it, or fix the reference"
                    ),
                ));
            }
            Found::NoKey => {
                return Err(Problem::new(
                    reasons::ATTACHMENT_NOT_FOUND,
                    format!(
                        "{field}: {kind} {namespace}/{name} has no key '{key}': add it, or fix the key"
                    ),
                ));
            }
        };
        total = total.saturating_add(content.len());
        if total > MAX_ATTACHMENT_BYTES {
            return Err(Problem::new(
                reasons::INVALID_SPEC,
                format!(
                    "spec.attachments: together larger than {} MiB, which providers refuse: attach fewer or smaller files",
                    MAX_ATTACHMENT_BYTES / (1024 * 1024)
                ),
            ));
        }
        out.push(AttachmentData {
            filename: spec.filename.clone(),
            content_type: spec
                .content_type
                .clone()
                .unwrap_or_else(|| guess_content_type(&spec.filename).to_string()),
            content,
        });
    }
    Ok(out)
}
