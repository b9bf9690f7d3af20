//! One rendered Email as the providers see it: validated mailboxes, content, headers,
//! attachments, and the delivery hash that makes "send exactly once" checkable.
//!
//! [`build_message`] is pure (no I/O): the controller and `kmailops send` feed it the Email,
//! its resolved sender, the rendered content and the attachment bytes they fetched.

use std::collections::BTreeMap;
use std::fmt;

use crate::api::{EmailSenderConfigSpec, EmailSpec};

mod delivery_key;
pub mod fold;
mod hash;
mod mailbox;
pub mod preview;
mod validate;

pub use delivery_key::delivery_key;
pub use mailbox::{AddressError, Mailbox};
pub use validate::{MAX_ATTACHMENT_BYTES, guess_content_type};

/// A file to attach, already read from its Secret or ConfigMap.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentData {
    /// File name shown to the recipient.
    pub filename: String,
    /// MIME type, e.g. `application/pdf`.
    pub content_type: String,
    /// The bytes.
    pub content: Vec<u8>,
}

impl fmt::Debug for AttachmentData {
    // Attachments can be megabytes; a Debug line that dumps them helps nobody.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentData")
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("bytes", &self.content.len())
            .finish()
    }
}

/// Subject and bodies after template rendering (or taken literally from the Email).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenderedContent {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Everything a provider needs for one send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub attachments: Vec<AttachmentData>,
    /// Hex SHA-256 over what the recipients get (see [`build_message`]).
    pub delivery_hash: String,
    /// `<{first 32 hex of the delivery key, else of the hash}@{sender domain}>`: equal for every
    /// attempt of one delivery, different for two Emails of equal content (mail stores that
    /// deduplicate by Message-ID would drop the second).
    pub message_id: String,
    /// A key computable from Git alone: hash of the Email's namespace, name, delivery hash
    /// and retry token (see [`delivery_key()`]); providers that deduplicate use it.
    pub delivery_key: Option<String>,
}

impl OutgoingMessage {
    /// Ties the message to one delivery of one Email (see [`delivery_key()`]): the key
    /// providers deduplicate by, and the Message-ID derived from it.
    pub fn for_delivery(mut self, namespace: &str, name: &str, retry_token: Option<&str>) -> Self {
        let key = delivery_key(namespace, name, &self.delivery_hash, retry_token);
        self.message_id = hash::message_id(&key, &self.from);
        self.delivery_key = Some(key);
        self
    }
}

/// Why an Email can not become a message; `field` is the path a user fixes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidMessage {
    pub field: String,
    pub message: String,
}

impl InvalidMessage {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidMessage {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Validates and assembles one message. `sender_identity` is the config's `namespace/name`;
/// it enters the delivery hash so the same content through another account is another
/// delivery. Errors name the field (e.g. `spec.to[1]`) and say how to fix it.
///
/// The delivery hash covers sender identity and From, To/Cc/Bcc, Reply-To, subject, text,
/// html, headers, tags and each attachment's name, type and content digest; never metadata
/// (labels, annotations), template variables as such, or the Message-ID.
pub fn build_message(
    email: &EmailSpec,
    sender: &EmailSenderConfigSpec,
    sender_identity: &str,
    content: RenderedContent,
    attachments: Vec<AttachmentData>,
) -> Result<OutgoingMessage, InvalidMessage> {
    let sender_field = |f: &str| format!("EmailSenderConfig {sender_identity} spec.{f}");
    let from = Mailbox::new(sender.sender.name.clone(), &sender.sender.address).map_err(|e| {
        InvalidMessage::new(
            sender_field("sender"),
            format!("the From mailbox {e}; set sender.address to an address like notifications@example.com"),
        )
    })?;
    let reply_to = match (&email.reply_to, &sender.reply_to) {
        (Some(own), _) => Some(validate::mailbox("spec.replyTo".into(), own)?),
        (None, Some(default)) => Some(validate::mailbox(sender_field("replyTo"), default)?),
        (None, None) => None,
    };
    let to = validate::recipients("to", &email.to, 1, validate::MAX_TO)?;
    let cc = validate::recipients("cc", &email.cc, 0, validate::MAX_CC_BCC)?;
    let bcc = validate::recipients("bcc", &email.bcc, 0, validate::MAX_CC_BCC)?;
    let (subject, text, html) = validate::content(content)?;
    validate::headers(&email.headers)?;
    validate::tags(&email.tags)?;
    validate::attachments(&attachments)?;

    let delivery_hash = hash::delivery_hash(&hash::HashInput {
        sender_identity,
        from: &from,
        reply_to: reply_to.as_ref(),
        to: &to,
        cc: &cc,
        bcc: &bcc,
        subject: &subject,
        text: text.as_deref(),
        html: html.as_deref(),
        headers: &email.headers,
        tags: &email.tags,
        attachments: &attachments,
    });
    let message_id = hash::message_id(&delivery_hash, &from);
    Ok(OutgoingMessage {
        from,
        reply_to,
        to,
        cc,
        bcc,
        subject,
        text,
        html,
        headers: email.headers.clone(),
        tags: email.tags.clone(),
        attachments,
        delivery_hash,
        message_id,
        delivery_key: None,
    })
}

#[cfg(test)]
mod tests;
