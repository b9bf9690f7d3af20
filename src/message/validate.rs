//! Checks on an Email's fields that the CRD schema can not (or that must also hold for
//! objects read from files): each error names the field and the fix.

use std::collections::BTreeMap;

use super::{AttachmentData, InvalidMessage, Mailbox, RenderedContent};

pub(super) const MAX_TO: usize = 50;
pub(super) const MAX_CC_BCC: usize = 10;
const MAX_SUBJECT_CHARS: usize = 998;
const MAX_HEADERS: usize = 50;
const MAX_HEADER_NAME: usize = 128;
const MAX_HEADER_VALUE: usize = 998;
const MAX_TAGS: usize = 10;
const MAX_TAG_CHARS: usize = 128;
const MAX_ATTACHMENTS: usize = 20;
/// All attachments of one message together, before encoding. MailerSend and Mailgun refuse
/// messages above 25 MB, and base64 makes 15 MiB about 20 MiB on the wire; failing here gives
/// a clear message instead of a provider's 413 after the upload. The one limit the operator
/// and the offline commands both apply.
pub const MAX_ATTACHMENT_BYTES: usize = 15 * 1024 * 1024;

/// Headers kmailops or the providers set themselves: letting an Email set them would
/// contradict its own fields or break the MIME structure.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "reply-to",
    "sender",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "return-path",
];

pub(super) fn mailbox(field: String, raw: &str) -> Result<Mailbox, InvalidMessage> {
    Mailbox::parse(raw).map_err(|e| {
        InvalidMessage::new(
            field,
            format!("`{raw}` {e}; write `user@example.com` or `Name <user@example.com>`"),
        )
    })
}

pub(super) fn recipients(
    list: &str,
    raw: &[String],
    min: usize,
    max: usize,
) -> Result<Vec<Mailbox>, InvalidMessage> {
    let field = format!("spec.{list}");
    if raw.len() < min {
        return Err(InvalidMessage::new(
            field,
            format!("needs at least {min} recipient"),
        ));
    }
    if raw.len() > max {
        return Err(InvalidMessage::new(
            field,
            format!(
                "has {} recipients, at most {max} are allowed; split the Email",
                raw.len()
            ),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, r)| mailbox(format!("spec.{list}[{i}]"), r))
        .collect()
}

/// Subject and bodies; empty bodies count as absent so `text: ""` does not pass as content.
pub(super) fn content(
    c: RenderedContent,
) -> Result<(String, Option<String>, Option<String>), InvalidMessage> {
    let subject = c.subject.trim().to_string();
    if subject.is_empty() {
        return Err(InvalidMessage::new(
            "spec.subject",
            "is empty; every provider requires a subject: set spec.subject or the template's subject",
        ));
    }
    if subject.contains(['\r', '\n']) {
        return Err(InvalidMessage::new(
            "spec.subject",
            "contains a line break; a subject is one line",
        ));
    }
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(InvalidMessage::new(
            "spec.subject",
            format!("is longer than {MAX_SUBJECT_CHARS} characters"),
        ));
    }
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let (text, html) = (non_empty(c.text), non_empty(c.html));
    if text.is_none() && html.is_none() {
        return Err(InvalidMessage::new(
            "spec.text",
            "the message has no body: set spec.text or spec.html (or a template that renders one)",
        ));
    }
    Ok((subject, text, html))
}

pub(super) fn headers(headers: &BTreeMap<String, String>) -> Result<(), InvalidMessage> {
    if headers.len() > MAX_HEADERS {
        return Err(InvalidMessage::new(
            "spec.headers",
            format!(
                "has {} headers, at most {MAX_HEADERS} are allowed",
                headers.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, value) in headers {
        let field = format!("spec.headers[{name:?}]");
        // Header names are case-insensitive: two that differ only in case would both be
        // hashed, but a provider sends one of them.
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(InvalidMessage::new(
                field,
                "differs from another header only in case, and header names ignore case: keep one of them",
            ));
        }
        let printable = |c: char| c.is_ascii_graphic() && c != ':';
        if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.chars().all(printable) {
            return Err(InvalidMessage::new(
                field,
                format!(
                    "a header name is 1-{MAX_HEADER_NAME} printable ASCII characters without ':' or spaces, e.g. X-Campaign"
                ),
            ));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(InvalidMessage::new(
                field,
                "is set by kmailops from the Email's own fields (from the sender config, to, cc, bcc, subject, replyTo); remove it from headers",
            ));
        }
        if value.contains(['\r', '\n']) || value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(InvalidMessage::new(
                field,
                "the value contains a line break or control character, which could inject headers",
            ));
        }
        if value.len() > MAX_HEADER_VALUE {
            return Err(InvalidMessage::new(
                field,
                format!("the value is longer than {MAX_HEADER_VALUE} bytes"),
            ));
        }
    }
    Ok(())
}

pub(super) fn tags(tags: &[String]) -> Result<(), InvalidMessage> {
    if tags.len() > MAX_TAGS {
        return Err(InvalidMessage::new(
            "spec.tags",
            format!("has {} tags, at most {MAX_TAGS} are allowed", tags.len()),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        let n = tag.chars().count();
        if n == 0 || n > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
            return Err(InvalidMessage::new(
                format!("spec.tags[{i}]"),
                format!("a tag is 1-{MAX_TAG_CHARS} characters without line breaks"),
            ));
        }
    }
    Ok(())
}

pub(super) fn attachments(attachments: &[AttachmentData]) -> Result<(), InvalidMessage> {
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(InvalidMessage::new(
            "spec.attachments",
            format!(
                "has {} attachments, at most {MAX_ATTACHMENTS} are allowed",
                attachments.len()
            ),
        ));
    }
    for (i, a) in attachments.iter().enumerate() {
        let field = format!("spec.attachments[{i}]");
        if a.filename.trim().is_empty()
            || a.filename.contains(['/', '\\'])
            || a.filename.chars().any(char::is_control)
        {
            return Err(InvalidMessage::new(
                format!("{field}.filename"),
                format!(
                    "`{}` is not a plain file name; use a name like report.pdf without '/' or line breaks",
                    a.filename.escape_debug()
                ),
            ));
        }
        if !is_mime_type(&a.content_type) {
            return Err(InvalidMessage::new(
                format!("{field}.contentType"),
                format!(
                    "`{}` is not a MIME type like application/pdf",
                    a.content_type.escape_debug()
                ),
            ));
        }
    }
    let total: usize = attachments.iter().map(|a| a.content.len()).sum();
    if total > MAX_ATTACHMENT_BYTES {
        return Err(InvalidMessage::new(
            "spec.attachments",
            format!(
                "attachments add up to {total} bytes; providers refuse more than {MAX_ATTACHMENT_BYTES}: link to large files instead"
            ),
        ));
    }
    Ok(())
}

/// `type/subtype` with RFC 2045 token characters, optionally followed by `; parameters`.
fn is_mime_type(s: &str) -> bool {
    let essence = s.split(';').next().unwrap_or_default().trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c))
    };
    !s.chars().any(char::is_control)
        && essence
            .split_once('/')
            .is_some_and(|(t, sub)| token(t) && token(sub))
}

/// A MIME type from a file name's extension, for attachments that name none.
pub fn guess_content_type(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" => "text/plain",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "htm" | "html" => "text/html",
        "ics" => "text/calendar",
        "json" => "application/json",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}
