//! Rendering an EmailTemplate: declared variables (defaults, required ones), then each
//! wanted part through the bounded engine.

use std::collections::BTreeMap;

use minijinja::value::{Serde, Value};

use super::engine::render_part;
use super::error::{RenderError, reasons};
use super::isolation::Place;
use super::library::{Library, part_source};
use super::names::Part;
use crate::api::{EmailTemplateSpec, TemplateErrorDetail};
use crate::message::RenderedContent;

/// Template input as written in an Email's `variables` or a template's `previewVariables`.
pub type Variables = BTreeMap<String, serde_json::Value>;

/// The values a render sees: each declared default, overridden by what is given. Values
/// that are given but not declared pass through (declaring is documentation, not a filter).
/// Errors with the names of required variables that are neither given nor defaulted.
pub fn variables(
    spec: &EmailTemplateSpec,
    given: Option<&Variables>,
) -> Result<Variables, Vec<String>> {
    let mut values: Variables = spec
        .variables
        .iter()
        .filter_map(|v| Some((v.name.clone(), v.default.clone()?)))
        .collect();
    if let Some(given) = given {
        values.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let missing: Vec<String> = spec
        .variables
        .iter()
        .filter(|v| v.required && !values.contains_key(&v.name))
        .map(|v| v.name.clone())
        .collect();
    if missing.is_empty() {
        Ok(values)
    } else {
        Err(missing)
    }
}

/// Renders the `wanted` parts of EmailTemplate `name` (in `library`'s namespace). Parts
/// the template lacks stay empty (`subject` is then `""`); a part not wanted is not even
/// parsed, so an Email that overrides a broken part still renders.
///
/// Runs in a render worker when the process chose workers (see [`super::isolation`]), which
/// blocks the calling thread until the worker answers (at most the render budget).
pub fn render(
    library: &Library,
    name: &str,
    spec: &EmailTemplateSpec,
    given: Option<&Variables>,
    wanted: &[Part],
) -> Result<RenderedContent, RenderError> {
    match super::isolation::place()? {
        Place::Worker(pool) => pool.render(library, name, spec, given, wanted),
        Place::Here => render_here(library, name, spec, given, wanted),
    }
}

/// [`render`] in this thread.
pub fn render_here(
    library: &Library,
    name: &str,
    spec: &EmailTemplateSpec,
    given: Option<&Variables>,
    wanted: &[Part],
) -> Result<RenderedContent, RenderError> {
    let values = variables(spec, given).map_err(|missing| {
        let list = missing
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ");
        RenderError::new(
            reasons::MISSING_VARIABLES,
            TemplateErrorDetail {
                message: format!("required variable(s) not given: {list}"),
                template: Some(name.to_string()),
                line: None,
                column: None,
            },
        )
    })?;
    let context = Value::from(Serde(&values));
    let mut out = RenderedContent::default();
    for &part in wanted {
        let Some(source) = part_source(spec, part) else {
            continue;
        };
        let rendered = render_part(library, name, part, source, &context)?;
        match part {
            Part::Subject => out.subject = rendered.trim().to_string(),
            Part::Text => out.text = Some(rendered),
            Part::Html => out.html = Some(rendered),
        }
    }
    Ok(out)
}
