//! What a render may read: the EmailTemplates of one namespace and the built-ins.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::runtime::reflector::{ObjectRef, Store};

use super::builtins::Builtins;
use super::names::Part;
use super::names::{Target, target};
use crate::api::{EmailTemplate, EmailTemplateSpec};

/// Where EmailTemplates are looked up: the controller's cache, or objects read from files.
pub trait TemplateLookup: Send + Sync {
    fn template(&self, namespace: &str, name: &str) -> Option<Arc<EmailTemplate>>;
}

impl TemplateLookup for Store<EmailTemplate> {
    fn template(&self, namespace: &str, name: &str) -> Option<Arc<EmailTemplate>> {
        self.get(&ObjectRef::new(name).within(namespace))
    }
}

/// EmailTemplates held in memory, e.g. read from manifest files.
#[derive(Clone, Debug, Default)]
pub struct TemplateSet(BTreeMap<(String, String), Arc<EmailTemplate>>);

impl TemplateSet {
    pub fn insert(&mut self, namespace: &str, name: &str, template: EmailTemplate) {
        self.0.insert(
            (namespace.to_string(), name.to_string()),
            Arc::new(template),
        );
    }
}

impl TemplateLookup for TemplateSet {
    fn template(&self, namespace: &str, name: &str) -> Option<Arc<EmailTemplate>> {
        self.0
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

/// The sources visible to templates of one namespace. Cheap to clone: the minijinja loader
/// holds one.
#[derive(Clone)]
pub struct Library {
    namespace: String,
    sources: Sources,
}

#[derive(Clone)]
enum Sources {
    /// Looked up here: the cluster's cache (or the files) and the built-ins, with the admission
    /// rule applied.
    Here {
        templates: Arc<dyn TemplateLookup>,
        builtins: Arc<Builtins>,
        admit: Option<Admit>,
    },
    /// Asked of someone else, who applies the admission rule: a render worker asks the
    /// operator (see [`super::worker`]).
    Asked(Fetch),
}

/// Answers a joined name with its source (see [`Library::source`]).
pub type Fetch = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Whether a template may be included or extended by the render at hand (see
/// [`Library::admitting`]).
/// It is given the template and the namespace it lives in.
pub type Admit = Arc<dyn Fn(&str, &EmailTemplate) -> bool + Send + Sync>;

impl Library {
    pub fn new(
        namespace: impl Into<String>,
        templates: Arc<dyn TemplateLookup>,
        builtins: Arc<Builtins>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            sources: Sources::Here {
                templates,
                builtins,
                admit: None,
            },
        }
    }

    /// A library whose every source is fetched by `fetch`, which decides what exists and
    /// what is admitted.
    pub fn asking(namespace: impl Into<String>, fetch: Fetch) -> Self {
        Self {
            namespace: namespace.into(),
            sources: Sources::Asked(fetch),
        }
    }

    /// Only templates that `admit` accepts can be included or extended. A shared template
    /// renders for Emails of other namespaces; an `{% include %}` by a variable would otherwise
    /// reach every template of the shared namespace, also those shared with nobody. A template
    /// not admitted reads as one that does not exist, so nothing tells the two apart.
    pub fn admitting(mut self, admit: Admit) -> Self {
        if let Sources::Here { admit: a, .. } = &mut self.sources {
            *a = Some(admit);
        }
        self
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The source behind a joined name (see [`super::names`]), if it exists.
    pub fn source(&self, name: &str) -> Option<String> {
        let (templates, builtins, admit) = match &self.sources {
            Sources::Here {
                templates,
                builtins,
                admit,
            } => (templates, builtins, admit),
            Sources::Asked(fetch) => return fetch(name),
        };
        match target(name) {
            Target::Template { name, part } => {
                let t = templates.template(&self.namespace, name)?;
                if let Some(admit) = admit
                    && !admit(&self.namespace, &t)
                {
                    return None;
                }
                part_source(&t.spec, part).map(str::to_string)
            }
            Target::Builtin(path) => builtins.get(path).map(str::to_string),
            Target::Bare(_) => None,
        }
    }
}

/// The source of one part, if the template has it.
pub fn part_source(spec: &EmailTemplateSpec, part: Part) -> Option<&str> {
    match part {
        Part::Subject => spec.subject.as_deref(),
        Part::Text => spec.text.as_deref(),
        Part::Html => spec.html.as_deref(),
    }
}
