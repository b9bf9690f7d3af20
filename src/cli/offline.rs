//! What the offline commands share: picking objects from manifest files and resolving them
//! the way the operator does (sender selection, Secrets, attachments, templates), without a
//! cluster.

use std::cell::RefCell;

use anyhow::{Context, anyhow, bail};
use kube::ResourceExt;

use crate::api::{Email, EmailSenderConfig, EmailSpec, NamespacesFrom};
use crate::lookup::content::{
    Selectors, TemplateUse, include_admission, render_content, resolve_template,
};
use crate::lookup::files::FileSenders;
use crate::lookup::senders::{self, Chain, ResolvedSender};
use crate::manifests::{Manifest, ManifestSet};
use crate::message::{AttachmentData, RenderedContent};
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

/// True when a config or template in `owner_ns` admits Emails from `namespace`. Namespace
/// labels are not in the files, so a `Selector` is trusted with a warning instead of being
/// evaluated.
fn admits_offline(
    allowed: &crate::api::AllowedNamespaces,
    kind: &str,
    key: &str,
    owner_ns: &str,
    namespace: &str,
    warnings: &mut Vec<String>,
) -> bool {
    if owner_ns == namespace {
        return true;
    }
    match allowed.from {
        NamespacesFrom::Same => false,
        NamespacesFrom::All => true,
        NamespacesFrom::Selector => {
            warnings.push(format!(
                "{kind} {key} admits namespaces by label selector, which can not be checked offline; assuming {namespace} matches"
            ));
            true
        }
    }
}

/// The senders an Email goes out through, in the order the operator tries them: its
/// senderConfigRef, else the one default config in its namespace, else the one default
/// elsewhere that admits its namespace; then that config's fallbacks, without the disabled
/// or unhealthy ones (the operator's own rules, [`crate::lookup::senders`]).
pub(crate) fn sender_chain(
    set: &ManifestSet,
    email: &Manifest<Email>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Chain> {
    let ns = email.namespace.as_str();
    let notes = RefCell::new(Vec::new());
    let admit = |config: &EmailSenderConfig, owner: &str| {
        let key = format!("{owner}/{}", config.name_any());
        admits_offline(
            &config.spec.allowed_namespaces,
            "EmailSenderConfig",
            &key,
            owner,
            ns,
            &mut notes.borrow_mut(),
        )
    };
    let chain = senders::resolve(
        ns,
        email.object.spec.sender_config_ref.as_ref(),
        &FileSenders::new(set),
        &admit,
        &crate::context::shared_sender_namespaces_default(),
    );
    warnings.extend(notes.into_inner());
    let chain = chain.map_err(|p| anyhow!("{p}"))?;
    for skipped in &chain.skipped {
        warnings.push(format!("EmailSenderConfig {skipped} is skipped"));
    }
    Ok(chain)
}

/// The first sender of the chain whose credentials load, as the operator picks the sender
/// that can send now; with none, the first sender's problem.
pub(crate) fn ready_sender(
    set: &ManifestSet,
    chain: &Chain,
) -> anyhow::Result<(ResolvedSender, Credentials)> {
    let mut first_error = None;
    for sender in &chain.senders {
        match credentials(set, sender) {
            Ok(c) => return Ok((sender.clone(), c)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| anyhow!("no EmailSenderConfig can send")))
}

/// The config's credentials from its Secret (always in the config's own namespace).
pub(crate) fn credentials(
    set: &ManifestSet,
    sender: &ResolvedSender,
) -> anyhow::Result<Credentials> {
    crate::lookup::credentials::load(&sender.config.spec, &sender.namespace, set)
        .map(|loaded| loaded.credentials)
        .map_err(|e| anyhow!("EmailSenderConfig {}: {e}", sender.key))
}

/// The Email's attachments, read from Secrets and ConfigMaps of its namespace, with the
/// operator's limits.
pub(crate) fn attachments(
    set: &ManifestSet,
    email: &Manifest<Email>,
) -> anyhow::Result<Vec<AttachmentData>> {
    crate::lookup::attachments::load(&email.namespace, &email.object.spec.attachments, set)
        .map_err(|p| anyhow!("{p}"))
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
        include_admission(&email.namespace, None, Selectors::AssumeMatch),
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
    admits_offline(
        &t.template.spec.allowed_namespaces,
        "EmailTemplate",
        &t.key(),
        &t.namespace,
        namespace,
        warnings,
    )
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
        let chain = sender_chain(&set, email, &mut warnings).expect("a default sender");
        let (config, credentials) = ready_sender(&set, &chain).expect("the example Secret");
        assert!(credentials.secret.is_some());
        let spec = &email.object.spec;
        let content = RenderedContent {
            subject: spec.subject.clone().unwrap_or_default(),
            text: spec.text.clone(),
            html: spec.html.clone(),
        };
        let msg = build_message(spec, &config.config.spec, &config.key, content, vec![])
            .expect("the example is a valid message");
        assert_eq!(msg.to[0].address, "ops@shop.example.com");
    }
}
