//! Step 3 of the pipeline: the subject and bodies, from the Email's literal fields.

use crate::api::EmailSpec;
use crate::message::RenderedContent;

use super::problem::{Problem, reasons};

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
