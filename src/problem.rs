//! A reason an Email can not be sent as it is. Problems end in status (`Failed`, `Stalled`)
//! with a message that names the field and the fix; the watches bring the Email back when the
//! cause is fixed (a Secret created, a sender added), so nothing polls.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// CamelCase reason for conditions and Events, e.g. `SenderNotFound`.
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// Reasons used by the Email reconciler.
pub mod reasons {
    pub const SENDER_NOT_FOUND: &str = "SenderNotFound";
    pub const NO_SENDER: &str = "NoSenderConfig";
    pub const AMBIGUOUS_DEFAULT: &str = "AmbiguousDefault";
    pub const NOT_ALLOWED: &str = "NotAllowed";
    pub const SENDER_UNAVAILABLE: &str = "SenderUnavailable";
    /// Every sender that could send is unhealthy: the Email waits (Retrying) for one to
    /// recover, within the sender's `retry.maxDuration`.
    pub const SENDER_UNHEALTHY: &str = "SenderUnhealthy";
    pub const SENDER_INVALID: &str = "SenderInvalid";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const ATTACHMENT_NOT_FOUND: &str = "AttachmentNotFound";
    /// An attachment names a Secret without the `kmailops.io/attachable: "true"` label.
    pub const ATTACHMENT_NOT_ALLOWED: &str = "AttachmentNotAllowed";
    pub const TEMPLATE_ERROR: &str = "TemplateError";
    pub const TEMPLATE_NOT_FOUND: &str = "TemplateNotFound";
}
