//! Render failures as users read them: a reason for conditions, a message that says where
//! and how to fix it, and the structured location (`status.error` of an EmailTemplate).

use minijinja::ErrorKind;

use super::limits::{FUEL, RECURSION_LIMIT};
use crate::api::TemplateErrorDetail;

/// Reasons of a failed render, for conditions and Events.
pub mod reasons {
    /// Syntax error, undefined variable, missing include, any other template error.
    pub const TEMPLATE_ERROR: &str = "TemplateError";
    /// A declared required variable was not given.
    pub const MISSING_VARIABLES: &str = "MissingVariables";
    /// Too many steps, too deep, or too much output.
    pub const RENDER_LIMIT: &str = "RenderLimitExceeded";
}

/// Why a template did not render.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    /// One of [`reasons`].
    pub reason: &'static str,
    /// The whole story, location first, e.g. `welcome/html line 3, column 9: ...`.
    pub message: String,
    /// The same, structured: what, in which template part, at which line and column.
    pub detail: TemplateErrorDetail,
}

impl RenderError {
    pub fn new(reason: &'static str, detail: TemplateErrorDetail) -> Self {
        let message = match (&detail.template, detail.line, detail.column) {
            (Some(t), Some(l), Some(c)) => format!("{t} line {l}, column {c}: {}", detail.message),
            (Some(t), Some(l), None) => format!("{t} line {l}: {}", detail.message),
            (Some(t), None, _) => format!("{t}: {}", detail.message),
            (None, ..) => detail.message.clone(),
        };
        Self {
            reason,
            message,
            detail,
        }
    }

    /// Adds advice for the caller's situation (e.g. which field to set).
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.detail.message = format!("{}; {hint}", self.detail.message);
        self.message = format!("{}; {hint}", self.message);
        self
    }
}

/// The io error a capped output raises; recognised again in [`from_minijinja`].
#[derive(Debug, thiserror::Error)]
#[error("the output is larger than {0} bytes")]
pub(super) struct OutputTooLarge(pub usize);

/// Turns a minijinja error into a [`RenderError`] located at the innermost template that
/// failed (an error inside an included template names that template, plus where it was
/// included from). `root` is the part being rendered; `source_of` finds a template's
/// source to compute the column.
pub(super) fn from_minijinja(
    err: &minijinja::Error,
    root: &str,
    source_of: &dyn Fn(&str) -> Option<String>,
) -> RenderError {
    // The chain runs from the outermost include to the real failure.
    let mut chain: Vec<&minijinja::Error> = vec![err];
    let mut next = std::error::Error::source(err);
    while let Some(e) = next {
        if let Some(m) = e.downcast_ref::<minijinja::Error>() {
            chain.push(m);
        }
        next = e.source();
    }
    let too_large = chain_has_output_limit(err);
    let inner = chain
        .iter()
        .rev()
        .find(|e| !matches!(e.kind(), ErrorKind::BadInclude))
        .copied()
        .unwrap_or(err);

    let (reason, mut message) = describe(inner, too_large);
    let trail: Vec<String> = chain
        .iter()
        .filter(|e| matches!(e.kind(), ErrorKind::BadInclude))
        .filter_map(|e| Some(format!("{} line {}", e.name()?, e.line()?)))
        .collect();
    if !trail.is_empty() && inner.name() != Some(root) {
        message.push_str(&format!(" (included from {})", trail.join(" <- ")));
    }

    let template = inner.name().unwrap_or(root).to_string();
    let line = if too_large { None } else { inner.line() };
    let column = line.and(inner.range()).and_then(|range| {
        let source = inner
            .template_source()
            .map(str::to_string)
            .or_else(|| source_of(&template))?;
        column_at(&source, range.start)
    });
    RenderError::new(
        reason,
        TemplateErrorDetail {
            message,
            template: Some(template),
            line: line.and_then(|l| i64::try_from(l).ok()),
            column: column.and_then(|c| i64::try_from(c).ok()),
        },
    )
}

fn chain_has_output_limit(err: &minijinja::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<OutputTooLarge>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<OutputTooLarge>().is_some())
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn describe(e: &minijinja::Error, too_large: bool) -> (&'static str, String) {
    let detail = e.detail().unwrap_or_default();
    let what = if detail.is_empty() {
        e.kind().to_string()
    } else {
        format!("{}: {detail}", e.kind())
    };
    match e.kind() {
        ErrorKind::WriteFailure if too_large => (
            reasons::RENDER_LIMIT,
            format!(
                "rendering stopped: {}; look for a loop that repeats a large block",
                output_limit_text(e)
            ),
        ),
        ErrorKind::OutOfFuel => (
            reasons::RENDER_LIMIT,
            format!(
                "rendering stopped after {FUEL} steps; look for a loop over a huge range or a macro that calls itself"
            ),
        ),
        ErrorKind::InvalidOperation if detail.contains("recursion limit") => (
            reasons::RENDER_LIMIT,
            format!(
                "rendering stopped: templates nest deeper than {RECURSION_LIMIT} levels; look for a template that includes or extends itself, or a macro that calls itself"
            ),
        ),
        ErrorKind::UndefinedError => (
            reasons::TEMPLATE_ERROR,
            format!(
                "{what}; pass it in the variables, declare it with a default, or test it with `is defined`"
            ),
        ),
        ErrorKind::TemplateNotFound => (
            reasons::TEMPLATE_ERROR,
            format!(
                "{what}; write `name` (an EmailTemplate of this namespace, same part), `name/html` (a given part), or a built-in path such as `layouts/base.html`"
            ),
        ),
        _ => (reasons::TEMPLATE_ERROR, what),
    }
}

fn output_limit_text(e: &minijinja::Error) -> String {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(limit) = err.downcast_ref::<OutputTooLarge>() {
            return limit.to_string();
        }
        if let Some(limit) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<OutputTooLarge>())
        {
            return limit.to_string();
        }
        next = err.source();
    }
    "the output is too large".to_string()
}

/// 1-based column (in characters) of byte `offset` in `source`.
fn column_at(source: &str, offset: usize) -> Option<usize> {
    let before = source.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some(before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters_from_the_line_start() {
        assert_eq!(column_at("ab\ncd{{ x }}", 5), Some(3));
        assert_eq!(column_at("é{{", 2), Some(2));
        assert_eq!(column_at("abc", 10), None);
    }
}
