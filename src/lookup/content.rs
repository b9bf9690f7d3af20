//! Step 3 of the pipeline: the subject and bodies, from the Email's literal fields or
//! rendered from its EmailTemplate (the Email's own subject, text or html override that
//! part of the template, and are taken literally).

use std::sync::Arc;

use kube::runtime::reflector::Store;

use crate::admission::admits;
use crate::api::{EmailSpec, EmailTemplate, NamespacesFrom};
use crate::message::RenderedContent;
use crate::template::{
    Builtins, Library, Part, SharedBuiltins, TemplateLookup, reasons as render_reasons, render,
};

use super::senders::NamespaceLabels;
use crate::problem::{Problem, reasons};

/// The EmailTemplate an Email names, found and admitted.
#[derive(Clone, Debug)]
pub struct TemplateUse {
    pub namespace: String,
    pub name: String,
    pub template: Arc<EmailTemplate>,
}

impl TemplateUse {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The content of an Email: rendered from its template when it names one, else literal.
/// This is what the controller calls; the offline commands use the steps below.
pub fn render_for_email(
    spec: &EmailSpec,
    email_ns: &str,
    templates: &Store<EmailTemplate>,
    builtins: &SharedBuiltins,
    labels: &NamespaceLabels,
) -> Result<RenderedContent, Problem> {
    let admit = |t: &TemplateUse| {
        admits(
            &t.template.spec.allowed_namespaces,
            &t.namespace,
            email_ns,
            labels.as_ref(),
        )
    };
    let template = resolve_template(spec, email_ns, templates, &admit)?;
    render_content(
        spec,
        template.as_ref(),
        Arc::new(templates.clone()),
        builtins.current(),
        include_admission(email_ns, labels.clone(), Selectors::AsLabelled),
    )
}

/// How [`include_admission`] treats a template that admits namespaces by label selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selectors {
    /// Evaluate it against the namespace's labels (the operator).
    AsLabelled,
    /// Assume it matches (the offline commands, which have no labels and say so).
    AssumeMatch,
}

/// Which templates a render for an Email of `email_ns` may include or extend: those of the
/// Email's own namespace, and those elsewhere whose `allowedNamespaces` admits it, exactly
/// as for the `templateRef` itself.
pub fn include_admission(
    email_ns: &str,
    labels: NamespaceLabels,
    selectors: Selectors,
) -> crate::template::library::Admit {
    let email_ns = email_ns.to_string();
    Arc::new(move |owner_ns: &str, t: &EmailTemplate| {
        let allowed = &t.spec.allowed_namespaces;
        owner_ns == email_ns
            || (selectors == Selectors::AssumeMatch && allowed.from == NamespacesFrom::Selector)
            || admits(allowed, owner_ns, &email_ns, labels.as_ref())
    })
}

/// Whether resolving this Email's template may need its namespace's labels (a template in
/// another namespace that admits namespaces by selector), so they are read only then.
pub fn needs_namespace_labels(
    spec: &EmailSpec,
    email_ns: &str,
    templates: &dyn TemplateLookup,
) -> bool {
    let Some(r) = &spec.template_ref else {
        return false;
    };
    let ns = r.namespace.as_deref().unwrap_or(email_ns);
    ns != email_ns
        && templates
            .template(ns, &r.name)
            .is_some_and(|t| t.spec.allowed_namespaces.from == NamespacesFrom::Selector)
}

/// Finds the Email's `templateRef` (namespace defaults to the Email's) and checks that the
/// template admits the Email's namespace. `None` when the Email names no template.
pub fn resolve_template(
    spec: &EmailSpec,
    email_ns: &str,
    templates: &dyn TemplateLookup,
    admit: &dyn Fn(&TemplateUse) -> bool,
) -> Result<Option<TemplateUse>, Problem> {
    let Some(r) = &spec.template_ref else {
        return Ok(None);
    };
    let ns = r.namespace.as_deref().unwrap_or(email_ns);
    let hidden = || {
        // Another namespace: "missing" and "not admitted" read the same, so a tenant cannot
        // learn which templates exist in namespaces that do not admit it.
        Problem::new(
            reasons::NOT_ALLOWED,
            format!(
                "spec.templateRef: EmailTemplate {ns}/{} does not exist or does not admit namespace {email_ns}: ask its owners to add {email_ns} to its spec.allowedNamespaces, or use a template in {email_ns}",
                r.name
            ),
        )
    };
    let template = templates.template(ns, &r.name);
    if ns != email_ns && template.is_none() {
        return Err(hidden());
    }
    let template = template.ok_or_else(|| {
        Problem::new(
            reasons::TEMPLATE_NOT_FOUND,
            format!(
                "EmailTemplate {ns}/{} does not exist: create it, or fix spec.templateRef",
                r.name
            ),
        )
    })?;
    let found = TemplateUse {
        namespace: ns.to_string(),
        name: r.name.clone(),
        template,
    };
    if !admit(&found) {
        return Err(hidden());
    }
    Ok(Some(found))
}

/// The content from a resolved template (or the literal fields when there is none).
/// `templates` and `builtins` serve the template's `{% include %}`s and `{% extends %}`.
pub fn render_content(
    spec: &EmailSpec,
    template: Option<&TemplateUse>,
    templates: Arc<dyn TemplateLookup>,
    builtins: Arc<Builtins>,
    admit: crate::template::library::Admit,
) -> Result<RenderedContent, Problem> {
    let Some(t) = template else {
        return literal(spec);
    };
    // Parts the Email sets itself are not rendered at all: a broken template part that is
    // overridden does not stop the Email.
    let wanted: Vec<Part> = [
        (Part::Subject, spec.subject.is_none()),
        (Part::Text, spec.text.is_none()),
        (Part::Html, spec.html.is_none()),
    ]
    .into_iter()
    .filter_map(|(p, want)| want.then_some(p))
    .collect();
    let library = Library::new(t.namespace.clone(), templates, builtins).admitting(admit);
    let rendered = render(
        &library,
        &t.name,
        &t.template.spec,
        spec.variables.as_ref(),
        &wanted,
    )
    .map_err(|e| {
        // A missing-variables message names the template already; say it once.
        let (reason, message) = if e.reason == render_reasons::MISSING_VARIABLES {
            let e = e.with_hint("set them in the Email's spec.variables");
            (e.reason, e.detail.message)
        } else {
            (e.reason, e.message)
        };
        Problem::new(reason, format!("EmailTemplate {}: {message}", t.key()))
    })?;
    Ok(RenderedContent {
        subject: spec.subject.clone().unwrap_or(rendered.subject),
        text: spec.text.clone().or(rendered.text),
        html: spec.html.clone().or(rendered.html),
    })
}

/// The content of an Email that names no template.
pub fn literal(spec: &EmailSpec) -> Result<RenderedContent, Problem> {
    let subject = spec.subject.clone().unwrap_or_default();
    if subject.trim().is_empty() {
        return Err(Problem::new(
            reasons::INVALID_SPEC,
            "spec.subject is empty: set spec.subject, or use a templateRef whose template has a subject",
        ));
    }
    if spec.text.is_none() && spec.html.is_none() {
        return Err(Problem::new(
            reasons::INVALID_SPEC,
            "the Email has no body: set spec.text or spec.html, or use a templateRef",
        ));
    }
    Ok(RenderedContent {
        subject,
        text: spec.text.clone(),
        html: spec.html.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{AllowedNamespaces, EmailTemplateSpec};
    use crate::template::TemplateSet;

    fn templates() -> TemplateSet {
        let spec: EmailTemplateSpec = serde_json::from_value(json!({
            "subject": "Order {{ id }}",
            "text": "Text {{ id }}",
            "html": "<p>{{ id }}</p>",
            "variables": [{"name": "id", "required": true}]
        }))
        .unwrap();
        let mut set = TemplateSet::default();
        let mut shared = EmailTemplate::new("shared", spec.clone());
        shared.spec.allowed_namespaces = AllowedNamespaces {
            from: NamespacesFrom::All,
            selector: None,
        };
        set.insert("shop", "order", EmailTemplate::new("order", spec));
        set.insert("mail", "shared", shared);
        set
    }

    fn email(template: &str, ns: Option<&str>, extra: serde_json::Value) -> EmailSpec {
        let mut v = json!({"to": ["a@example.org"], "templateRef": {"name": template}});
        if let Some(ns) = ns {
            v["templateRef"]["namespace"] = json!(ns);
        }
        if let serde_json::Value::Object(m) = extra {
            for (k, val) in m {
                v[k] = val;
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn content(spec: &EmailSpec, email_ns: &str) -> Result<RenderedContent, Problem> {
        let set = templates();
        let rules = |t: &TemplateUse| {
            admits(
                &t.template.spec.allowed_namespaces,
                &t.namespace,
                email_ns,
                None,
            )
        };
        let t = resolve_template(spec, email_ns, &set, &rules)?;
        render_content(
            spec,
            t.as_ref(),
            Arc::new(set),
            Arc::new(Builtins::default()),
            include_admission(email_ns, None, Selectors::AsLabelled),
        )
    }

    #[test]
    fn the_emails_own_parts_override_the_template_literally() {
        let spec = email(
            "order",
            None,
            json!({"variables": {"id": 7}, "subject": "Literal {{ id }}"}),
        );
        let c = content(&spec, "shop").unwrap();
        assert_eq!(c.subject, "Literal {{ id }}");
        assert_eq!(c.text.as_deref(), Some("Text 7"));
        assert_eq!(c.html.as_deref(), Some("<p>7</p>"));
    }

    #[test]
    fn a_missing_template_and_a_missing_variable_are_named() {
        let err = content(&email("nope", None, json!({})), "shop").unwrap_err();
        assert_eq!(err.reason, reasons::TEMPLATE_NOT_FOUND);
        assert!(err.message.contains("shop/nope"), "{err}");
        let err = content(&email("order", None, json!({})), "shop").unwrap_err();
        assert_eq!(err.reason, render_reasons::MISSING_VARIABLES);
        assert_eq!(
            err.message,
            "EmailTemplate shop/order: required variable(s) not given: `id`; set them in the Email's spec.variables"
        );
    }

    #[test]
    fn a_template_in_another_namespace_needs_its_allowed_namespaces() {
        let vars = json!({"variables": {"id": 1}});
        let err = content(&email("order", Some("shop"), vars.clone()), "news").unwrap_err();
        assert_eq!(err.reason, reasons::NOT_ALLOWED);
        assert!(err.message.contains("allowedNamespaces"), "{err}");
        let c = content(&email("shared", Some("mail"), vars), "news").unwrap();
        assert_eq!(c.subject, "Order 1");
    }

    #[test]
    fn a_missing_template_and_one_not_shared_read_the_same_from_another_namespace() {
        let vars = json!({"variables": {"id": 1}});
        let hidden = content(&email("order", Some("shop"), vars.clone()), "news").unwrap_err();
        let missing = content(&email("ghost", Some("shop"), vars), "news").unwrap_err();
        assert_eq!(hidden.reason, missing.reason);
        assert_eq!(
            hidden.message.replace("shop/order", "X"),
            missing.message.replace("shop/ghost", "X")
        );
    }

    /// A shared template that includes by a variable must not reach the templates of its
    /// namespace that are shared with nobody.
    #[test]
    fn includes_from_a_shared_template_reach_only_templates_that_admit_the_email() {
        let mut set = templates();
        let spec = |text: &str| -> EmailTemplateSpec {
            serde_json::from_value(json!({"subject": "s", "text": text})).unwrap()
        };
        let mut router = EmailTemplate::new("router", spec("{% include part %}"));
        router.spec.allowed_namespaces.from = NamespacesFrom::All;
        set.insert("mail", "router", router);
        set.insert(
            "mail",
            "internal",
            EmailTemplate::new("internal", spec("payroll secrets")),
        );
        let mut public = EmailTemplate::new("public", spec("public footer"));
        public.spec.allowed_namespaces.from = NamespacesFrom::All;
        set.insert("mail", "public", public);
        let render = |part: &str, email_ns: &str| {
            let spec = email("router", Some("mail"), json!({"variables": {"part": part}}));
            let t = resolve_template(&spec, email_ns, &set, &|_| true)
                .unwrap()
                .unwrap();
            render_content(
                &spec,
                Some(&t),
                Arc::new(set.clone()),
                Arc::new(Builtins::default()),
                include_admission(email_ns, None, Selectors::AsLabelled),
            )
        };
        assert_eq!(
            render("public", "news").unwrap().text.as_deref(),
            Some("public footer")
        );
        let err = render("internal", "news").unwrap_err();
        assert!(!err.message.contains("payroll"), "{err}");
        let missing = render("nothing-here", "news").unwrap_err();
        assert_eq!(
            err.message.replace("internal", "X"),
            missing.message.replace("nothing-here", "X"),
            "not admitted reads as missing"
        );
        // Within its own namespace a template includes whatever it likes.
        assert_eq!(
            render("internal", "mail").unwrap().text.as_deref(),
            Some("payroll secrets")
        );
    }
}
