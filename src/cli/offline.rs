//! What the offline commands share: picking objects from manifest files and resolving them
//! the way the operator does (sender selection, Secrets, attachments, templates), without a
//! cluster.

use anyhow::{Context, anyhow, bail};

use crate::api::EmailSpec;
use crate::api::{Email, EmailSenderConfig, NamespacesFrom};
use crate::email::content::{TemplateUse, render_content, resolve_template};
use crate::manifests::{Manifest, ManifestSet};
use crate::message::RenderedContent;
use crate::message::{AttachmentData, guess_content_type};
use crate::provider::Credentials;
use crate::template::{Builtins, TemplateSet};

/// Finds one object by `name` or `namespace/name`; with no selector, the only one there is.
pub(crate) fn pick<'a, T>(
    list: &'a [Manifest<T>],
    kind: &str,
    selector: Option<&str>,
    flag: &str,
) -> anyhow::Result<&'a Manifest<T>> {
    let names = || {
        list.iter()
            .map(Manifest::key)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(selector) = selector else {
        return match list {
            [only] => Ok(only),
            [] => bail!("the files hold no {kind}"),
            _ => bail!(
                "the files hold {} {kind}s ({}); choose one with {flag}",
                list.len(),
                names()
            ),
        };
    };
    let matches: Vec<&Manifest<T>> = match selector.split_once('/') {
        Some((ns, name)) => list
            .iter()
            .filter(|m| m.namespace == ns && m.name == name)
            .collect(),
        None => list.iter().filter(|m| m.name == selector).collect(),
    };
    match matches.as_slice() {
        [only] => Ok(only),
        [] => bail!("no {kind} `{selector}` in the files (found: {})", names()),
        _ => bail!("{kind} `{selector}` exists in several namespaces; write namespace/name"),
    }
}

/// True when `config` admits Emails from `namespace`. Namespace labels are not in the
/// files, so a `Selector` is trusted with a warning instead of being evaluated.
fn admits(
    config: &Manifest<EmailSenderConfig>,
    namespace: &str,
    warnings: &mut Vec<String>,
) -> bool {
    if config.namespace == namespace {
        return true;
    }
    match config.object.spec.allowed_namespaces.from {
        NamespacesFrom::Same => false,
        NamespacesFrom::All => true,
        NamespacesFrom::Selector => {
            warnings.push(format!(
                "EmailSenderConfig {} admits namespaces by label selector, which can not be checked offline; assuming {namespace} matches",
                config.key()
            ));
            true
        }
    }
}

/// The sender an Email uses: its senderConfigRef, else the one default config in its
/// namespace, else the one default elsewhere that admits its namespace.
pub(crate) fn resolve_sender<'a>(
    set: &'a ManifestSet,
    email: &Manifest<Email>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<&'a Manifest<EmailSenderConfig>> {
    let ns = email.namespace.as_str();
    let config = if let Some(r) = &email.object.spec.sender_config_ref {
        let target_ns = r.namespace.as_deref().unwrap_or(ns);
        let config = set.sender_config(target_ns, &r.name).ok_or_else(|| {
            anyhow!(
                "spec.senderConfigRef: EmailSenderConfig {target_ns}/{} is not in the given files",
                r.name
            )
        })?;
        if !admits(config, ns, warnings) {
            bail!(
                "spec.senderConfigRef: EmailSenderConfig {} does not admit Emails from namespace {ns} (NotAllowed); set its allowedNamespaces",
                config.key()
            );
        }
        config
    } else {
        let defaults = |same: bool| -> Vec<&'a Manifest<EmailSenderConfig>> {
            set.sender_configs
                .iter()
                .filter(|c| c.object.spec.default && (c.namespace == ns) == same)
                .collect()
        };
        let local = defaults(true);
        let candidates = if local.is_empty() {
            let mut scratch = Vec::new();
            let elsewhere: Vec<_> = defaults(false)
                .into_iter()
                .filter(|c| admits(c, ns, &mut scratch))
                .collect();
            warnings.extend(scratch);
            elsewhere
        } else {
            local
        };
        match candidates.as_slice() {
            [one] => *one,
            [] => bail!(
                "the Email names no senderConfigRef and the files hold no `default: true` EmailSenderConfig for namespace {ns}"
            ),
            many => bail!(
                "AmbiguousDefault: {} EmailSenderConfigs are `default: true` for namespace {ns} ({}); set spec.senderConfigRef",
                many.len(),
                many.iter().map(|c| c.key()).collect::<Vec<_>>().join(", ")
            ),
        }
    };
    if config.object.spec.disabled {
        bail!("EmailSenderConfig {} is disabled", config.key());
    }
    Ok(config)
}

/// The config's credentials from its Secret (always in the config's own namespace).
pub(crate) fn credentials(
    set: &ManifestSet,
    config: &Manifest<EmailSenderConfig>,
) -> anyhow::Result<Credentials> {
    // Every Secret the config references (SES has two).
    crate::provider::load_credentials(
        &config.object.spec,
        |field, secret_ref| {
            set.secret_value(&config.namespace, &secret_ref.name, &secret_ref.key)
                .with_context(|| format!("EmailSenderConfig {} {field}", config.key()))
        },
        |field, _| {
            anyhow!(
                "EmailSenderConfig {} {field}: the Secret value is not UTF-8 text",
                config.key()
            )
        },
    )
}

/// The Email's attachments, read from Secrets and ConfigMaps of its namespace.
pub(crate) fn attachments(
    set: &ManifestSet,
    email: &Manifest<Email>,
) -> anyhow::Result<Vec<AttachmentData>> {
    let ns = email.namespace.as_str();
    email
        .object
        .spec
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let field = format!("spec.attachments[{i}]");
            let content = match (&a.secret_key_ref, &a.config_map_key_ref) {
                (Some(s), None) => set.secret_value(ns, &s.name, &s.key),
                (None, Some(c)) => set.config_map_value(ns, &c.name, &c.key),
                _ => bail!("{field}: set exactly one of secretKeyRef or configMapKeyRef"),
            }
            .with_context(|| field.clone())?;
            Ok(AttachmentData {
                filename: a.filename.clone(),
                content_type: a
                    .content_type
                    .clone()
                    .unwrap_or_else(|| guess_content_type(&a.filename).to_string()),
                content,
            })
        })
        .collect()
}

/// The built-in templates for the offline commands: `--templates-dir`, else `./templates`
/// when it exists, else none.
pub(crate) fn builtins(dir: Option<std::path::PathBuf>) -> anyhow::Result<Builtins> {
    match crate::template::builtins::folder(dir) {
        Some(dir) => Builtins::load(&dir)
            .with_context(|| format!("loading the built-in templates from {}", dir.display())),
        None => Ok(Builtins::default()),
    }
}

/// The content of `email` (with `spec`, which may carry extra variables) as the operator
/// renders it: from its EmailTemplate in the files, or literally.
pub(crate) fn content(
    set: &ManifestSet,
    email: &Manifest<Email>,
    spec: &EmailSpec,
    builtins: Builtins,
    warnings: &mut Vec<String>,
) -> anyhow::Result<RenderedContent> {
    let notes = std::cell::RefCell::new(Vec::new());
    let templates = std::sync::Arc::new(template_set(set));
    let template = resolve_template(spec, &email.namespace, &*templates, &|t| {
        template_admits(t, &email.namespace, &mut notes.borrow_mut())
    })
    .map_err(|p| anyhow!("Email {}: {p}", email.key()))?;
    warnings.extend(notes.into_inner());
    render_content(
        spec,
        template.as_ref(),
        templates,
        std::sync::Arc::new(builtins),
    )
    .map_err(|p| anyhow!("Email {}: {p}", email.key()))
}

/// The EmailTemplates of the files, by the namespace they were read into.
pub(crate) fn template_set(set: &ManifestSet) -> TemplateSet {
    let mut out = TemplateSet::default();
    for m in &set.templates {
        out.insert(&m.namespace, &m.name, m.object.clone());
    }
    out
}

/// True when a template admits Emails from `namespace`; like senders, a `Selector` can not
/// be evaluated offline and is trusted with a warning.
pub(crate) fn template_admits(
    t: &TemplateUse,
    namespace: &str,
    warnings: &mut Vec<String>,
) -> bool {
    if t.namespace == namespace {
        return true;
    }
    match t.template.spec.allowed_namespaces.from {
        NamespacesFrom::Same => false,
        NamespacesFrom::All => true,
        NamespacesFrom::Selector => {
            warnings.push(format!(
                "EmailTemplate {} admits namespaces by label selector, which can not be checked offline; assuming {namespace} matches",
                t.key()
            ));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{RenderedContent, build_message};

    fn examples() -> ManifestSet {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let folders = ["senders", "emails", "templates"].map(|f| root.join(f));
        ManifestSet::load(&folders, "default").expect("the shipped examples load")
    }

    #[test]
    fn the_shipped_plain_example_resolves_its_sender_and_builds_a_message() {
        let set = examples();
        let email = pick(
            &set.emails,
            "Email",
            Some("shop/maintenance-notice-2026-12"),
            "--email",
        )
        .expect("example Email");
        let mut warnings = Vec::new();
        let config = resolve_sender(&set, email, &mut warnings).expect("a default sender");
        let credentials = credentials(&set, config).expect("the example Secret");
        assert!(credentials.secret.is_some());
        let spec = &email.object.spec;
        let content = RenderedContent {
            subject: spec.subject.clone().unwrap_or_default(),
            text: spec.text.clone(),
            html: spec.html.clone(),
        };
        let msg = build_message(spec, &config.object.spec, &config.key(), content, vec![])
            .expect("the example is a valid message");
        assert_eq!(msg.to[0].address, "ops@shop.example.com");
    }
}
