//! The rendered message as shown in `status.preview`, bounded so a large body never bloats
//! the object (etcd objects are limited to about 1.5 MB, and every watcher receives them).

use crate::api::{EmailPreview, PreviewAttachment};
use crate::conditions::truncate;

use super::{AttachmentData, OutgoingMessage, RenderedContent};

/// Bodies in status are cut to this many bytes.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// At most this many recipients of each list are shown (to allows 50, cc and bcc 10).
const MAX_RECIPIENTS: usize = 50;
/// Subjects and addresses are cut to this many bytes.
const MAX_LINE_BYTES: usize = 1024;

/// The preview of a message as a sender would send it.
pub fn of(message: &OutgoingMessage, sender: &str) -> EmailPreview {
    let list = |m: &[super::Mailbox]| {
        m.iter()
            .take(MAX_RECIPIENTS)
            .map(|m| truncate(&m.to_string(), MAX_LINE_BYTES))
            .collect()
    };
    EmailPreview {
        to: list(&message.to),
        cc: list(&message.cc),
        bcc: list(&message.bcc),
        sender: Some(sender.to_string()),
        from: Some(truncate(&message.from.to_string(), MAX_LINE_BYTES)),
        attachments: attachments(&message.attachments),
        ..content(&RenderedContent {
            subject: message.subject.clone(),
            text: message.text.clone(),
            html: message.html.clone(),
        })
    }
}

/// The preview of content whose sender is not known (no sender resolves): the recipients as
/// the Email writes them.
pub fn without_sender(
    content: &RenderedContent,
    to: &[String],
    cc: &[String],
    bcc: &[String],
    attached: &[AttachmentData],
) -> EmailPreview {
    let list = |l: &[String]| {
        l.iter()
            .take(MAX_RECIPIENTS)
            .map(|a| truncate(a, MAX_LINE_BYTES))
            .collect()
    };
    EmailPreview {
        to: list(to),
        cc: list(cc),
        bcc: list(bcc),
        attachments: attachments(attached),
        ..self::content(content)
    }
}

/// Subject and bodies only.
pub fn content(content: &RenderedContent) -> EmailPreview {
    EmailPreview {
        subject: Some(truncate(&content.subject, MAX_LINE_BYTES)),
        text: content.text.as_deref().map(|t| truncate(t, MAX_BODY_BYTES)),
        html: content.html.as_deref().map(|h| truncate(h, MAX_BODY_BYTES)),
        ..EmailPreview::default()
    }
}

fn attachments(attached: &[AttachmentData]) -> Vec<PreviewAttachment> {
    attached
        .iter()
        .map(|a| PreviewAttachment {
            filename: truncate(&a.filename, MAX_LINE_BYTES),
            content_type: Some(a.content_type.clone()),
            size: i64::try_from(a.content.len()).unwrap_or(i64::MAX),
        })
        .collect()
}
