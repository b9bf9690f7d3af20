//! The delivery hash: one SHA-256 over everything a recipient gets, so "same hash" means
//! "same message" and the operator can promise one send per content.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{AttachmentData, Mailbox};

/// Bumped whenever the encoding below changes, so an old hash can never collide with a new
/// encoding of different content.
const ENCODING_VERSION: u32 = 1;

/// What enters the hash. Serialized as JSON: strings are escaped and fields delimited, so no
/// two different messages encode to the same bytes (unlike plain concatenation), and the
/// `BTreeMap` keeps header order independent of how the manifest listed them.
#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    sender: &'a str,
    from: MailboxRef<'a>,
    reply_to: Option<MailboxRef<'a>>,
    to: Vec<MailboxRef<'a>>,
    cc: Vec<MailboxRef<'a>>,
    bcc: Vec<MailboxRef<'a>>,
    subject: &'a str,
    text: Option<&'a str>,
    html: Option<&'a str>,
    headers: &'a BTreeMap<String, String>,
    tags: &'a [String],
    attachments: Vec<AttachmentRef<'a>>,
}

#[derive(Serialize)]
struct MailboxRef<'a> {
    name: Option<&'a str>,
    address: &'a str,
}

#[derive(Serialize)]
struct AttachmentRef<'a> {
    filename: &'a str,
    content_type: &'a str,
    sha256: String,
}

impl<'a> From<&'a Mailbox> for MailboxRef<'a> {
    fn from(m: &'a Mailbox) -> Self {
        MailboxRef {
            name: m.name.as_deref(),
            address: &m.address,
        }
    }
}

/// Everything that identifies one delivery.
pub(crate) struct HashInput<'a> {
    pub sender_identity: &'a str,
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    pub to: &'a [Mailbox],
    pub cc: &'a [Mailbox],
    pub bcc: &'a [Mailbox],
    pub subject: &'a str,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
    pub headers: &'a BTreeMap<String, String>,
    pub tags: &'a [String],
    pub attachments: &'a [AttachmentData],
}

fn list(ms: &[Mailbox]) -> Vec<MailboxRef<'_>> {
    ms.iter().map(Into::into).collect()
}

/// Hex SHA-256 of the canonical encoding of `input`.
pub(crate) fn delivery_hash(input: &HashInput<'_>) -> String {
    let canonical = Canonical {
        v: ENCODING_VERSION,
        sender: input.sender_identity,
        from: input.from.into(),
        reply_to: input.reply_to.map(Into::into),
        to: list(input.to),
        cc: list(input.cc),
        bcc: list(input.bcc),
        subject: input.subject,
        text: input.text,
        html: input.html,
        headers: input.headers,
        tags: input.tags,
        attachments: input
            .attachments
            .iter()
            .map(|a| AttachmentRef {
                filename: &a.filename,
                content_type: &a.content_type,
                sha256: hex::encode(Sha256::digest(&a.content)),
            })
            .collect(),
    };
    // Serializing borrowed strings and maps into a Vec cannot fail; fall back to the Debug
    // form of the error only so this stays panic-free.
    let bytes = serde_json::to_vec(&canonical).unwrap_or_else(|e| format!("{e:?}").into_bytes());
    hex::encode(Sha256::digest(bytes))
}

/// A Message-ID that is the same for every attempt at the same content, so a resend after an
/// ambiguous failure threads with the first copy in most mail clients.
pub(crate) fn message_id(hash: &str, from: &Mailbox) -> String {
    let short = hash.get(..32).unwrap_or(hash);
    format!("<{short}@{}>", from.domain())
}
