//! The RFC 5322 / MIME form of an [`OutgoingMessage`], built with lettre.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, MultiPart, SinglePart};

use crate::message::{Mailbox, OutgoingMessage, fold};
use crate::provider::SendError;

fn mailbox(m: &Mailbox) -> Result<lettre::message::Mailbox, SendError> {
    let address = m.address.parse::<lettre::Address>().map_err(|e| {
        SendError::permanent(format!(
            "`{}` is not a valid address for SMTP: {e}",
            m.address
        ))
    })?;
    Ok(lettre::message::Mailbox::new(m.name.clone(), address))
}

/// lettre folds header values at spaces only, so a value with a longer space-free run would
/// leave a line over RFC 5322's 998 characters (and servers refuse the message). Such values
/// go out as encoded-words, which split anywhere and decode to the same text.
fn header_value(name: HeaderName, value: &str) -> HeaderValue {
    if fold::has_unfoldable_run(&name, value) {
        let encoded = fold::encoded_words(value);
        HeaderValue::dangerous_new_pre_encoded(name, value.to_string(), encoded)
    } else {
        HeaderValue::new(name, value.to_string())
    }
}

/// text + html become multipart/alternative; attachments wrap that in multipart/mixed.
/// Bcc recipients are in the envelope only (lettre drops the header).
pub(super) fn build(msg: &OutgoingMessage) -> Result<lettre::Message, SendError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        SendError::permanent(format!("could not build the message ({what}): {e}"))
    };
    let mut b = lettre::Message::builder()
        .from(mailbox(&msg.from)?)
        .raw_header(header_value(
            HeaderName::new_from_ascii_str("Subject"),
            &msg.subject,
        ))
        .message_id(Some(msg.message_id.clone()));
    if let Some(r) = &msg.reply_to {
        b = b.reply_to(mailbox(r)?);
    }
    for m in &msg.to {
        b = b.to(mailbox(m)?);
    }
    for m in &msg.cc {
        b = b.cc(mailbox(m)?);
    }
    for m in &msg.bcc {
        b = b.bcc(mailbox(m)?);
    }
    for (name, value) in &msg.headers {
        let header = HeaderName::new_from_ascii(name.clone())
            .map_err(|e| invalid(&format!("header {name}"), &e))?;
        b = b.raw_header(header_value(header, value));
    }

    enum Body {
        Single(SinglePart),
        Multi(MultiPart),
    }
    let body = match (&msg.text, &msg.html) {
        (Some(t), Some(h)) => Body::Multi(MultiPart::alternative_plain_html(t.clone(), h.clone())),
        (Some(t), None) => Body::Single(SinglePart::plain(t.clone())),
        (None, Some(h)) => Body::Single(SinglePart::html(h.clone())),
        (None, None) => Body::Single(SinglePart::plain(String::new())),
    };
    if msg.attachments.is_empty() {
        return match body {
            Body::Single(p) => b.singlepart(p),
            Body::Multi(p) => b.multipart(p),
        }
        .map_err(|e| invalid("headers", &e));
    }
    let mut mixed = match body {
        Body::Single(p) => MultiPart::mixed().singlepart(p),
        Body::Multi(p) => MultiPart::mixed().multipart(p),
    };
    for a in &msg.attachments {
        let ct = ContentType::parse(&a.content_type)
            .map_err(|e| invalid(&format!("content type of {}", a.filename), &e))?;
        mixed = mixed.singlepart(Attachment::new(a.filename.clone()).body(a.content.clone(), ct));
    }
    b.multipart(mixed).map_err(|e| invalid("headers", &e))
}
