//! Step 2 of the pipeline: attachment contents, from Secrets (cached) and ConfigMaps (read on
//! demand), always in the Email's own namespace.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::Attachment;
use crate::message::AttachmentData;

use super::problem::{Problem, reasons};

/// Upper bound of all attachments of one Email together; providers refuse larger messages
/// (MailerSend and Mailgun at 25 MB including encoding overhead).
pub const MAX_TOTAL_BYTES: usize = 15 * 1024 * 1024;

/// Reads every attachment. A missing object or key is a [`Problem`] naming the field; an API
/// failure is an error to retry.
pub async fn load(
    namespace: &str,
    specs: &[Attachment],
    secrets: &Store<Secret>,
    client: &kube::Client,
) -> Result<Result<Vec<AttachmentData>, Problem>, kube::Error> {
    let mut out = Vec::with_capacity(specs.len());
    let mut total = 0usize;
    for (i, spec) in specs.iter().enumerate() {
        let field = format!("spec.attachments[{i}]");
        let content = if let Some(r) = &spec.secret_key_ref {
            match secrets.get(&ObjectRef::new(&r.name).within(namespace)) {
                None => {
                    return Ok(Err(missing(&field, "Secret", namespace, &r.name)));
                }
                Some(secret) => match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
                    Some(bytes) => bytes.0.clone(),
                    None => {
                        return Ok(Err(missing_key(
                            &field, "Secret", namespace, &r.name, &r.key,
                        )));
                    }
                },
            }
        } else if let Some(r) = &spec.config_map_key_ref {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            match api.get_opt(&r.name).await? {
                None => return Ok(Err(missing(&field, "ConfigMap", namespace, &r.name))),
                Some(cm) => {
                    let text = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&r.key))
                        .map(|s| s.as_bytes().to_vec());
                    let binary = cm
                        .binary_data
                        .as_ref()
                        .and_then(|d| d.get(&r.key))
                        .map(|b| b.0.clone());
                    match text.or(binary) {
                        Some(bytes) => bytes,
                        None => {
                            return Ok(Err(missing_key(
                                &field,
                                "ConfigMap",
                                namespace,
                                &r.name,
                                &r.key,
                            )));
                        }
                    }
                }
            }
        } else {
            return Ok(Err(Problem::new(
                reasons::INVALID_SPEC,
                format!("{field}: set secretKeyRef or configMapKeyRef"),
            )));
        };
        total += content.len();
        if total > MAX_TOTAL_BYTES {
            return Ok(Err(Problem::new(
                reasons::INVALID_SPEC,
                format!(
                    "spec.attachments: together larger than {} MiB, which providers refuse: attach fewer or smaller files",
                    MAX_TOTAL_BYTES / (1024 * 1024)
                ),
            )));
        }
        out.push(AttachmentData {
            filename: spec.filename.clone(),
            content_type: spec
                .content_type
                .clone()
                .unwrap_or_else(|| crate::message::guess_content_type(&spec.filename).to_string()),
            content,
        });
    }
    Ok(Ok(out))
}

fn missing(field: &str, kind: &str, ns: &str, name: &str) -> Problem {
    Problem::new(
        reasons::ATTACHMENT_NOT_FOUND,
        format!("{field}: {kind} {ns}/{name} does not exist: create it, or fix the reference"),
    )
}

fn missing_key(field: &str, kind: &str, ns: &str, name: &str, key: &str) -> Problem {
    Problem::new(
        reasons::ATTACHMENT_NOT_FOUND,
        format!("{field}: {kind} {ns}/{name} has no key '{key}': add it, or fix the key"),
    )
}
