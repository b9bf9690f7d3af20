//! Which EmailSenderConfigs send an Email, in the order to try them: the same rules for the
//! operator (over its cache) and the offline commands (over manifest files).
//!
//! 1. `spec.senderConfigRef` (namespace defaults to the Email's);
//! 2. else the one `default: true` config in the Email's namespace;
//! 3. else the one `default: true` config elsewhere whose `allowedNamespaces` admits it.
//!
//! Two candidates at one step is an error, never a guess. The result is a chain: the chosen
//! config, then its `fallback` list, leaving out configs that are disabled or whose last
//! health check failed, and naming fallbacks that do not exist. Delivery starts with the first and moves down the chain on auth
//! errors and exhausted retries.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::{EmailSenderConfig, ObjectRef as SpecRef};
use crate::problem::{Problem, reasons};

use super::Senders;

/// The sender chosen for an Email.
#[derive(Clone, Debug)]
pub struct ResolvedSender {
    /// `namespace/name`, as shown in status.
    pub key: String,
    pub namespace: String,
    pub config: Arc<EmailSenderConfig>,
}

impl ResolvedSender {
    pub fn of(config: Arc<EmailSenderConfig>) -> Self {
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

/// Whether a config in `owner_ns` admits Emails of the namespace being resolved for. The
/// operator evaluates `allowedNamespaces` with the namespace's labels; the offline commands,
/// which have no labels, say what they assumed.
pub type Admit<'a> = dyn Fn(&EmailSenderConfig, &str) -> bool + 'a;

/// The senders of an Email, in the order to try them.
#[derive(Clone, Debug)]
pub struct Chain {
    /// Never empty.
    pub senders: Vec<ResolvedSender>,
    /// Configs of the chain left out, with why (`ns/name (disabled)`), for messages.
    pub skipped: Vec<String>,
}

/// Picks the senders for an Email in `email_ns`, in the order to try them.
pub fn resolve(
    email_ns: &str,
    reference: Option<&SpecRef>,
    senders: &dyn Senders,
    admit: &Admit<'_>,
) -> Result<Chain, Problem> {
    let chosen = match reference {
        Some(r) => by_reference(email_ns, r, senders, admit)?,
        None => by_default(email_ns, senders, admit)?,
    };
    usable_chain(chosen, senders)
}

/// Whether resolving for this Email may need the namespace's labels (so the caller reads them
/// only then).
pub fn needs_namespace_labels(senders: &dyn Senders, email_ns: &str) -> bool {
    senders.all().iter().any(|s| {
        s.namespace().as_deref() != Some(email_ns)
            && s.spec.allowed_namespaces.from == crate::api::NamespacesFrom::Selector
    })
}

fn by_reference(
    email_ns: &str,
    r: &SpecRef,
    senders: &dyn Senders,
    admit: &Admit<'_>,
) -> Result<Arc<EmailSenderConfig>, Problem> {
    let ns = r.namespace.as_deref().unwrap_or(email_ns);
    let config = senders.sender(ns, &r.name).ok_or_else(|| {
        Problem::new(
            reasons::SENDER_NOT_FOUND,
            format!(
                "spec.senderConfigRef: EmailSenderConfig {ns}/{} does not exist: create it, or fix spec.senderConfigRef",
                r.name
            ),
        )
    })?;
    if ns != email_ns && !admit(&config, ns) {
        return Err(Problem::new(
            reasons::NOT_ALLOWED,
            format!(
                "spec.senderConfigRef: EmailSenderConfig {ns}/{} does not admit namespace {email_ns}: add it to the config's spec.allowedNamespaces, or use a sender in {email_ns}",
                r.name
            ),
        ));
    }
    Ok(config)
}

fn by_default(
    email_ns: &str,
    senders: &dyn Senders,
    admit: &Admit<'_>,
) -> Result<Arc<EmailSenderConfig>, Problem> {
    let defaults: Vec<Arc<EmailSenderConfig>> = senders
        .all()
        .into_iter()
        .filter(|s| s.spec.default)
        .collect();
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
            owner != email_ns && admit(s, &owner)
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

/// The `fallback` entries of `config` that name no EmailSenderConfig of its namespace.
pub fn missing_fallbacks(config: &EmailSenderConfig, senders: &dyn Senders) -> Vec<String> {
    let ns = config.namespace().unwrap_or_default();
    config
        .spec
        .fallback
        .iter()
        .filter(|name| senders.sender(&ns, name).is_none())
        .cloned()
        .collect()
}

/// The chosen config and its fallbacks (which live in its namespace), without the ones that
/// are disabled, unhealthy or missing.
fn usable_chain(primary: Arc<EmailSenderConfig>, senders: &dyn Senders) -> Result<Chain, Problem> {
    let ns = primary.namespace().unwrap_or_default();
    let mut chain: Vec<ResolvedSender> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut candidates = vec![Some(primary.clone())];
    for name in &primary.spec.fallback {
        match senders.sender(&ns, name) {
            Some(c) => candidates.push(Some(c)),
            None => {
                skipped.push(format!(
                    "{ns}/{name} (FallbackNotFound: no such EmailSenderConfig)"
                ));
                candidates.push(None);
            }
        }
    }
    for candidate in candidates.into_iter().flatten() {
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
    Ok(Chain {
        senders: chain,
        skipped,
    })
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
