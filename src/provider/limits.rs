//! Provider limits checked before the call: a message the provider would refuse fails at once
//! with a message that names the limit, instead of with the provider's 4xx after an upload.

use super::SendError;
use crate::message::OutgoingMessage;

/// Recipient limits of one provider.
pub(crate) struct RecipientLimits {
    /// To, Cc and Bcc together.
    pub total: Option<usize>,
    /// To alone.
    pub to: Option<usize>,
}

/// Fails (Permanent) when the message has more recipients than `provider` takes in one call.
pub(crate) fn recipients(
    provider: &str,
    msg: &OutgoingMessage,
    limits: RecipientLimits,
) -> Result<(), SendError> {
    let to = msg.to.len();
    let total = to + msg.cc.len() + msg.bcc.len();
    if let Some(max) = limits.to
        && to > max
    {
        return Err(SendError::permanent(format!(
            "{provider} takes at most {max} To recipients a message, this one has {to}: split the Email"
        )));
    }
    if let Some(max) = limits.total
        && total > max
    {
        return Err(SendError::permanent(format!(
            "{provider} takes at most {max} recipients (To, Cc and Bcc together) a message, this one has {total}: split the Email"
        )));
    }
    Ok(())
}

/// The size of the message as JSON APIs see it: bodies plus base64-encoded attachments.
pub(crate) fn encoded_size(msg: &OutgoingMessage) -> usize {
    let bodies = msg.subject.len()
        + msg.text.as_ref().map_or(0, String::len)
        + msg.html.as_ref().map_or(0, String::len);
    let headers: usize = msg.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    let attachments: usize = msg
        .attachments
        .iter()
        .map(|a| a.content.len().div_ceil(3) * 4 + a.filename.len())
        .sum();
    bodies + headers + attachments
}

/// Fails (Permanent) when the encoded message is larger than `max` bytes.
pub(crate) fn size(provider: &str, msg: &OutgoingMessage, max: usize) -> Result<(), SendError> {
    let size = encoded_size(msg);
    if size > max {
        return Err(SendError::permanent(format!(
            "{provider} takes messages up to {} MB (bodies plus base64-encoded attachments), this one is {:.1} MB: send smaller or fewer attachments",
            max / (1024 * 1024),
            size as f64 / (1024.0 * 1024.0)
        )));
    }
    Ok(())
}

/// Makes a tag fit providers that take only ASCII letters, digits, `_` and `-` (Resend, SES):
/// any other character becomes `_`. `None` when the tag is already valid.
pub(crate) fn ascii_tag(tag: &str) -> Option<String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if tag.chars().all(valid) {
        None
    } else {
        Some(
            tag.chars()
                .map(|c| if valid(c) { c } else { '_' })
                .collect(),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use crate::api::{EmailSenderConfigSpec, EmailSpec};
    use crate::message::{OutgoingMessage, RenderedContent, build_message};

    /// A small valid message for unit tests of the providers.
    pub(crate) fn message() -> OutgoingMessage {
        let sender: EmailSenderConfigSpec = serde_yaml::from_str(
            "{sender: {address: noreply@example.com}, smtp: {host: localhost}}",
        )
        .expect("sender");
        let email: EmailSpec =
            serde_yaml::from_str("{to: [jane@example.org], text: x}").expect("email");
        build_message(
            &email,
            &sender,
            "mail/primary",
            RenderedContent {
                subject: "Hi".into(),
                text: Some("Hello".into()),
                html: None,
            },
            vec![],
        )
        .expect("valid")
    }

    #[test]
    fn too_many_recipients_fail_before_the_call_naming_the_limit() {
        let mut msg = message();
        msg.cc = vec![msg.to[0].clone(); 3];
        let err = super::recipients(
            "X",
            &msg,
            super::RecipientLimits {
                total: Some(3),
                to: None,
            },
        )
        .expect_err("4 > 3");
        assert!(
            err.message.contains("at most 3 recipients"),
            "{}",
            err.message
        );
        assert!(
            super::recipients(
                "X",
                &msg,
                super::RecipientLimits {
                    total: Some(4),
                    to: Some(1),
                },
            )
            .is_ok()
        );
    }

    #[test]
    fn the_size_counts_attachments_base64_encoded() {
        let mut msg = message();
        msg.attachments.push(crate::message::AttachmentData {
            filename: "a.bin".into(),
            content_type: "application/octet-stream".into(),
            content: vec![0; 3000],
        });
        assert!(super::encoded_size(&msg) >= 4000);
        assert!(super::size("X", &msg, 3500).is_err());
        assert!(super::size("X", &msg, 10_000).is_ok());
    }
}
