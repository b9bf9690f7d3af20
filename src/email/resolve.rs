//! Step 1 of the pipeline: which EmailSenderConfig sends this Email.
//!
//! 1. `spec.senderConfigRef` (namespace defaults to the Email's);
//! 2. else the one `default: true` config in the Email's namespace;
//! 3. else the one `default: true` config elsewhere whose `allowedNamespaces` admits it.
//!
//! Two candidates at one step is an error, never a guess. A disabled config hands over to
//! its `fallback` list in order.

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

/// Picks the sender for an Email in `email_ns`. `ns_labels` is consulted for Selector rules.
pub fn resolve(
    email_ns: &str,
    reference: Option<&SpecRef>,
    senders: &Store<EmailSenderConfig>,
    ns_labels: &NamespaceLabels,
) -> Result<ResolvedSender, Problem> {
    let chosen = match reference {
        Some(r) => by_reference(email_ns, r, senders, ns_labels)?,
        None => by_default(email_ns, senders, ns_labels)?,
    };
    first_enabled(chosen, senders)
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

/// A disabled config hands over to the first enabled config of its `fallback` list (which
/// lives in the same namespace).
fn first_enabled(
    primary: Arc<EmailSenderConfig>,
    senders: &Store<EmailSenderConfig>,
) -> Result<ResolvedSender, Problem> {
    if !primary.spec.disabled {
        return Ok(ResolvedSender::of(primary));
    }
    let ns = primary.namespace().unwrap_or_default();
    for name in &primary.spec.fallback {
        if let Some(candidate) = senders.get(&ObjectRef::new(name).within(&ns))
            && !candidate.spec.disabled
        {
            return Ok(ResolvedSender::of(candidate));
        }
    }
    Err(Problem::new(
        reasons::SENDER_DISABLED,
        format!(
            "EmailSenderConfig {ns}/{} is disabled and no fallback is enabled: enable it, or list an enabled config in its spec.fallback",
            primary.name_any()
        ),
    ))
}
