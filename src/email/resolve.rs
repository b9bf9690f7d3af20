//! Step 1 of the pipeline: which EmailSenderConfig sends this Email.
//!
//! 1. `spec.senderConfigRef` (namespace defaults to the Email's);
//! 2. else the one `default: true` config in the Email's namespace;
//! 3. else the one `default: true` config elsewhere whose `allowedNamespaces` admits it.
//!
//! Two candidates at one step is an error, never a guess. The result is a chain: the chosen
//! config, then its `fallback` list, leaving out configs that are disabled or whose last
//! health check failed. Delivery starts with the first and moves down the chain on auth
//! errors and exhausted retries.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::admission::admits;
use crate::api::{EmailSenderConfig, ObjectRef as SpecRef};

use super::problem::{Problem, reasons};

/// The sender chosen for an Email.
#[derive(Clone, Debug)]
pub struct ResolvedSender {
    /// `namespace/name`, as shown in status.
    pub key: String,
    pub namespace: String,
    pub config: Arc<EmailSenderConfig>,
}

impl ResolvedSender {
    fn of(config: Arc<EmailSenderConfig>) -> Self {
        let namespace = config.namespace().unwrap_or_default();
        Self {
            key: format!("{}/{}", namespace, config.name_any()),
            namespace,
            config,
        }
    }
}

/// Labels of the Email's namespace, needed only when a config admits namespaces by selector.
pub type NamespaceLabels = Option<BTreeMap<String, String>>;

/// Picks the senders for an Email in `email_ns`, in the order to try them. Never empty.
/// `ns_labels` is consulted for Selector rules.
pub fn resolve(
    email_ns: &str,
    reference: Option<&SpecRef>,
    senders: &Store<EmailSenderConfig>,
    ns_labels: &NamespaceLabels,
) -> Result<Vec<ResolvedSender>, Problem> {
    let chosen = match reference {
        Some(r) => by_reference(email_ns, r, senders, ns_labels)?,
        None => by_default(email_ns, senders, ns_labels)?,
    };
    usable_chain(chosen, senders)
}

/// Whether resolving for this Email may need the namespace's labels (so the caller reads them
/// only then).
pub fn needs_namespace_labels(senders: &Store<EmailSenderConfig>, email_ns: &str) -> bool {
    senders.state().iter().any(|s| {
        s.namespace().as_deref() != Some(email_ns)
            && s.spec.allowed_namespaces.from == crate::api::NamespacesFrom::Selector
    })
}

fn by_reference(
    email_ns: &str,
    r: &SpecRef,
    senders: &Store<EmailSenderConfig>,
    ns_labels: &NamespaceLabels,
) -> Result<Arc<EmailSenderConfig>, Problem> {
    let ns = r.namespace.as_deref().unwrap_or(email_ns);
    let config = senders
        .get(&ObjectRef::new(&r.name).within(ns))
        .ok_or_else(|| {
            Problem::new(
                reasons::SENDER_NOT_FOUND,
                format!(
                    "EmailSenderConfig {ns}/{} does not exist: create it, or fix spec.senderConfigRef",
                    r.name
                ),
            )
        })?;
    if !admits(
        &config.spec.allowed_namespaces,
        ns,
        email_ns,
        ns_labels.as_ref(),
    ) {
        return Err(Problem::new(
            reasons::NOT_ALLOWED,
            format!(
                "EmailSenderConfig {ns}/{} does not admit namespace {email_ns}: add it to the config's spec.allowedNamespaces, or use a sender in {email_ns}",
                r.name
            ),
        ));
    }
    Ok(config)
}

fn by_default(
    email_ns: &str,
    senders: &Store<EmailSenderConfig>,
    ns_labels: &NamespaceLabels,
) -> Result<Arc<EmailSenderConfig>, Problem> {
    let defaults: Vec<Arc<EmailSenderConfig>> = senders.state_filter(|s| s.spec.default);
    let local: Vec<_> = defaults
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(email_ns))
        .cloned()
        .collect();
    if let Some(one) = single(local, "in namespace", email_ns)? {
        return Ok(one);
    }
    let elsewhere: Vec<_> = defaults
        .into_iter()
        .filter(|s| {
            let owner = s.namespace().unwrap_or_default();
            owner != email_ns
                && admits(
                    &s.spec.allowed_namespaces,
                    &owner,
                    email_ns,
                    ns_labels.as_ref(),
                )
        })
        .collect();
    single(elsewhere, "admitting namespace", email_ns)?.ok_or_else(|| {
        Problem::new(
            reasons::NO_SENDER,
            format!(
                "no EmailSenderConfig to send through: set spec.senderConfigRef, or mark one config in {email_ns} with default: true"
            ),
        )
    })
}

fn single(
    mut candidates: Vec<Arc<EmailSenderConfig>>,
    scope: &str,
    email_ns: &str,
) -> Result<Option<Arc<EmailSenderConfig>>, Problem> {
    match candidates.len() {
        0 => Ok(None),
        1 => Ok(candidates.pop()),
        _ => {
            let mut names: Vec<String> = candidates
                .iter()
                .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
                .collect();
            names.sort();
            Err(Problem::new(
                reasons::AMBIGUOUS_DEFAULT,
                format!(
                    "more than one default EmailSenderConfig {scope} {email_ns} ({}): keep default: true on one of them, or set spec.senderConfigRef",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The chosen config and its fallbacks (which live in its namespace), without the ones that
/// are disabled or unhealthy.
fn usable_chain(
    primary: Arc<EmailSenderConfig>,
    senders: &Store<EmailSenderConfig>,
) -> Result<Vec<ResolvedSender>, Problem> {
    let ns = primary.namespace().unwrap_or_default();
    let mut chain: Vec<ResolvedSender> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let fallbacks = primary
        .spec
        .fallback
        .iter()
        .filter_map(|name| senders.get(&ObjectRef::new(name).within(&ns)));
    for candidate in std::iter::once(primary.clone()).chain(fallbacks) {
        let resolved = ResolvedSender::of(candidate);
        if chain.iter().any(|c| c.key == resolved.key) {
            continue;
        }
        match unusable(&resolved.config) {
            Some(why) => skipped.push(format!("{} ({why})", resolved.key)),
            None => chain.push(resolved),
        }
    }
    if chain.is_empty() {
        return Err(Problem::new(
            reasons::SENDER_UNAVAILABLE,
            format!(
                "no usable EmailSenderConfig: {}. Enable or fix one of them, or add a working config to spec.fallback of {ns}/{}",
                skipped.join(", "),
                primary.name_any()
            ),
        ));
    }
    Ok(chain)
}

/// Why a config is skipped, if it is.
fn unusable(config: &EmailSenderConfig) -> Option<&'static str> {
    if config.spec.disabled {
        return Some("disabled");
    }
    let unhealthy = config.status.as_ref().is_some_and(|s| {
        crate::conditions::find(&s.conditions, "Healthy").is_some_and(|c| c.status == "False")
    });
    unhealthy.then_some("unhealthy")
}
