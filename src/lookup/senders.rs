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

/// Namespaces whose `default: true` senders may serve other namespaces (step 3). A tenant's
/// `default: true` applies to its own namespace only: otherwise any tenant could become every
/// namespace's default sender, or break theirs with `AmbiguousDefault`.
pub type Trusted<'a> = &'a [String];

/// Picks the senders for an Email in `email_ns`, in the order to try them.
pub fn resolve(
    email_ns: &str,
    reference: Option<&SpecRef>,
    senders: &dyn Senders,
    admit: &Admit<'_>,
    trusted: Trusted<'_>,
) -> Result<Chain, Problem> {
    let chosen = chosen(email_ns, reference, senders, admit, trusted)?;
    usable_chain(chosen, senders, email_ns, admit)
}

/// The config an Email names or defaults to (steps 1-3), before its fallbacks and health are
/// looked at.
pub fn chosen(
    email_ns: &str,
    reference: Option<&SpecRef>,
    senders: &dyn Senders,
    admit: &Admit<'_>,
    trusted: Trusted<'_>,
) -> Result<Arc<EmailSenderConfig>, Problem> {
    match reference {
        Some(r) => by_reference(email_ns, r, senders, admit),
        None => by_default(email_ns, senders, admit, trusted),
    }
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
    let found = senders.sender(ns, &r.name);
    if ns != email_ns {
        // Another namespace: "missing" and "not admitted" read the same, so a tenant cannot
        // learn which configs exist in namespaces that do not admit it.
        return found.filter(|config| admit(config, ns)).ok_or_else(|| {
            Problem::new(
                reasons::NOT_ALLOWED,
                format!(
                    "spec.senderConfigRef: EmailSenderConfig {ns}/{} does not exist or does not admit namespace {email_ns}: ask its owners to add {email_ns} to its spec.allowedNamespaces, or use a sender in {email_ns}",
                    r.name
                ),
            )
        });
    }
    found.ok_or_else(|| {
        Problem::new(
            reasons::SENDER_NOT_FOUND,
            format!(
                "spec.senderConfigRef: EmailSenderConfig {ns}/{} does not exist: create it, or fix spec.senderConfigRef",
                r.name
            ),
        )
    })
}

fn by_default(
    email_ns: &str,
    senders: &dyn Senders,
    admit: &Admit<'_>,
    trusted: Trusted<'_>,
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
            owner != email_ns && trusted.contains(&owner) && admit(s, &owner)
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
pub fn usable_chain(
    primary: Arc<EmailSenderConfig>,
    senders: &dyn Senders,
    email_ns: &str,
    admit: &Admit<'_>,
) -> Result<Chain, Problem> {
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
        // A fallback serves the Email only if it admits the Email's namespace itself: the
        // primary's admission does not extend to the configs it falls back to.
        let admitted =
            resolved.namespace == email_ns || admit(&resolved.config, &resolved.namespace);
        match unusable(&resolved.config) {
            Some(why) => skipped.push(format!("{} ({why})", resolved.key)),
            None if !admitted => skipped.push(format!(
                "{} (does not admit namespace {email_ns})",
                resolved.key
            )),
            None => chain.push(resolved),
        }
    }
    if chain.is_empty() {
        // Health comes back by itself; disabled, missing or not admitted does not.
        let recovers = skipped.iter().any(|s| s.ends_with("(unhealthy)"));
        return Err(Problem::new(
            if recovers {
                reasons::SENDER_UNHEALTHY
            } else {
                reasons::SENDER_UNAVAILABLE
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::files::FileSenders;
    use crate::manifests::ManifestSet;

    fn senders(yaml: &str) -> FileSenders {
        let mut set = ManifestSet::default();
        set.add_str(yaml, "test", "default")
            .expect("valid manifests");
        FileSenders::new(&set)
    }

    fn config(ns: &str, name: &str, extra: &str) -> String {
        format!(
            "apiVersion: kmailops.io/v1alpha1\nkind: EmailSenderConfig\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  sender: {{address: a@example.com}}\n  smtp: {{host: mail, port: 25}}\n{extra}\n---\n"
        )
    }

    fn all_namespaces(_: &EmailSenderConfig, _: &str) -> bool {
        true
    }

    #[test]
    fn a_default_elsewhere_serves_other_namespaces_only_from_a_trusted_namespace() {
        let open = "  default: true\n  allowedNamespaces: {from: All}";
        let s = senders(&(config("platform", "shared", open) + &config("tenant-a", "grab", open)));
        let trusted = vec!["platform".to_string()];
        let chain = resolve("shop", None, &s, &all_namespaces, &trusted).unwrap();
        assert_eq!(chain.senders[0].key, "platform/shared");
        // Without trust, no tenant's default reaches another namespace.
        let err = resolve("shop", None, &s, &all_namespaces, &[]).unwrap_err();
        assert_eq!(err.reason, reasons::NO_SENDER);
        // A tenant's default still serves its own namespace.
        let own = resolve("tenant-a", None, &s, &all_namespaces, &trusted).unwrap();
        assert_eq!(own.senders[0].key, "tenant-a/grab");
    }

    #[test]
    fn a_fallback_that_does_not_admit_the_emails_namespace_is_skipped() {
        let s = senders(
            &(config(
                "platform",
                "primary",
                "  disabled: true\n  fallback: [private, open]\n  allowedNamespaces: {from: All}",
            ) + &config("platform", "private", "")
                + &config("platform", "open", "  allowedNamespaces: {from: All}")),
        );
        let admit = |c: &EmailSenderConfig, owner: &str| {
            crate::admission::admits(&c.spec.allowed_namespaces, owner, "shop", None)
        };
        let r = SpecRef {
            name: "primary".into(),
            namespace: Some("platform".into()),
        };
        let chain = resolve("shop", Some(&r), &s, &admit, &[]).unwrap();
        let keys: Vec<&str> = chain.senders.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["platform/open"]);
        assert!(
            chain
                .skipped
                .iter()
                .any(|x| x.contains("platform/private (does not admit"))
        );
    }

    #[test]
    fn a_sender_of_another_namespace_reads_the_same_missing_or_not_admitting() {
        let s = senders(&config("platform", "private", ""));
        let reference = |name: &str| SpecRef {
            name: name.into(),
            namespace: Some("platform".into()),
        };
        let refuse = |_: &EmailSenderConfig, _: &str| false;
        let hidden = resolve("shop", Some(&reference("private")), &s, &refuse, &[]).unwrap_err();
        let missing = resolve("shop", Some(&reference("ghost")), &s, &refuse, &[]).unwrap_err();
        assert_eq!(hidden.reason, missing.reason);
        assert_eq!(
            hidden.message.replace("private", "X"),
            missing.message.replace("ghost", "X")
        );
        // In its own namespace a missing sender is named as missing.
        let own = resolve("platform", Some(&reference("ghost")), &s, &refuse, &[]).unwrap_err();
        assert_eq!(own.reason, reasons::SENDER_NOT_FOUND);
    }
}
