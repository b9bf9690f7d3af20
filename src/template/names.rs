//! How templates name each other in `{% include %}` and `{% extends %}`.
//!
//! | written                 | resolves to                                                        |
//! |-------------------------|--------------------------------------------------------------------|
//! | `base`                  | EmailTemplate `base` of the same namespace, the same part as the template that names it (`html` from an html part, `text` from a text part) |
//! | `base/html`             | part `html` of EmailTemplate `base` (also `base/text`, `base/subject`) |
//! | `layouts/base.html`     | the built-in file `layouts/base.html` of the operator's templates folder |
//!
//! EmailTemplate names can not contain `/`, so a name with one `/` followed by a part name
//! (`subject`, `text`, `html`) is always an EmailTemplate part, and every other name with a
//! `/` is a built-in file. Built-ins therefore live in sub-folders (`layouts/`, `partials/`);
//! a file at the top of the templates folder can not be named.

use std::fmt;

/// One of the three sources of an EmailTemplate.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Text => "text",
            Part::Html => "html",
        }
    }

    fn parse(s: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a template name points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A part of an EmailTemplate in the namespace being rendered.
    Template { name: &'a str, part: Part },
    /// A file of the built-in templates folder, by its path inside it.
    Builtin(&'a str),
    /// A bare EmailTemplate name whose part is not known (only a parent can tell).
    Bare(&'a str),
}

/// Classifies a (joined) template name.
pub fn target(name: &str) -> Target<'_> {
    match name.split_once('/') {
        None => Target::Bare(name),
        Some((template, rest)) => match Part::parse(rest) {
            Some(part) if !template.is_empty() => Target::Template {
                name: template,
                part,
            },
            _ => Target::Builtin(name),
        },
    }
}

/// The name a template registers under for one of its parts, e.g. `welcome/html`; errors
/// show it, so a user reads which part of which template failed.
pub fn part_name(template: &str, part: Part) -> String {
    format!("{template}/{}", part.as_str())
}

/// Resolves `name` as written inside `parent`: a bare EmailTemplate name takes the part of
/// the template that names it, or `root` (the part being rendered) when a built-in names it.
pub fn join(name: &str, parent: &str, root: Part) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    let part = match target(parent) {
        Target::Template { part, .. } => part,
        _ => root,
    };
    part_name(name, part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_templates_and_other_paths_are_builtins() {
        assert_eq!(
            target("base/html"),
            Target::Template {
                name: "base",
                part: Part::Html
            }
        );
        assert_eq!(
            target("layouts/base.html"),
            Target::Builtin("layouts/base.html")
        );
        assert_eq!(target("a/b/html"), Target::Builtin("a/b/html"));
        assert_eq!(target("/html"), Target::Builtin("/html"));
        assert_eq!(target("base"), Target::Bare("base"));
    }

    #[test]
    fn a_bare_name_takes_the_part_of_its_parent_or_of_the_root() {
        assert_eq!(join("base", "welcome/text", Part::Html), "base/text");
        assert_eq!(join("base", "layouts/base.html", Part::Html), "base/html");
        assert_eq!(
            join("base/subject", "welcome/text", Part::Text),
            "base/subject"
        );
        assert_eq!(
            join("layouts/base.txt", "welcome/text", Part::Text),
            "layouts/base.txt"
        );
    }
}
