//! MailerSend: `POST /email` with a JSON body and a Bearer token; health via
//! `GET /api-quota`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::http::{self, Reply, describe_body};
use super::{ConfigError, HealthReport, Provider, SecretValue, SendError, SendReceipt, reason};
use crate::api::ProviderKind;
use crate::message::{Mailbox, OutgoingMessage};

/// The warning type MailerSend uses when every recipient was suppressed: a 202 that
/// delivered nothing.
const ALL_SUPPRESSED: &str = "ALL_SUPPRESSED";

/// A MailerSend account.
pub struct MailerSend {
    base: String,
    token: SecretValue,
    http: reqwest::Client,
}

impl MailerSend {
    pub fn new(
        base_url: &str,
        token: SecretValue,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let base = super::base_url(
            "spec.mailersend.baseUrl",
            base_url,
            "https://api.mailersend.com/v1",
        )?;
        Ok(MailerSend { base, token, http })
    }
}

#[derive(Serialize)]
struct Address<'a> {
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

impl<'a> From<&'a Mailbox> for Address<'a> {
    fn from(m: &'a Mailbox) -> Self {
        Address {
            email: &m.address,
            name: m.name.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct Attachment<'a> {
    content: String,
    filename: &'a str,
    disposition: &'static str,
}

#[derive(Serialize)]
struct Header<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct EmailBody<'a> {
    from: Address<'a>,
    to: Vec<Address<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cc: Vec<Address<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bcc: Vec<Address<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<Address<'a>>,
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<Attachment<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tags: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<Header<'a>>,
}

fn list(ms: &[Mailbox]) -> Vec<Address<'_>> {
    ms.iter().map(Address::from).collect()
}

fn body(msg: &OutgoingMessage) -> EmailBody<'_> {
    EmailBody {
        from: (&msg.from).into(),
        to: list(&msg.to),
        cc: list(&msg.cc),
        bcc: list(&msg.bcc),
        reply_to: msg.reply_to.as_ref().map(Into::into),
        subject: &msg.subject,
        text: msg.text.as_deref(),
        html: msg.html.as_deref(),
        attachments: msg
            .attachments
            .iter()
            .map(|a| Attachment {
                content: STANDARD.encode(&a.content),
                filename: &a.filename,
                disposition: "attachment",
            })
            .collect(),
        tags: &msg.tags,
        headers: msg
            .headers
            .iter()
            .map(|(name, value)| Header { name, value })
            .collect(),
    }
}

/// `{"message": "...", "errors": {"field": ["..."]}}`
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: BTreeMap<String, Vec<String>>,
}

/// The provider's explanation: its message plus every field error, or the raw body.
fn explain(reply: &Reply) -> String {
    let Ok(parsed) = serde_json::from_str::<ErrorBody>(&reply.body) else {
        return describe_body(&reply.body);
    };
    let mut out = parsed.message.unwrap_or_default();
    let fields: Vec<String> = parsed
        .errors
        .iter()
        .map(|(field, errs)| format!("{field}: {}", errs.join(" ")))
        .collect();
    if !fields.is_empty() {
        out.push_str(&format!(" ({})", fields.join("; ")));
    }
    if out.trim().is_empty() {
        describe_body(&reply.body)
    } else {
        out
    }
}

#[derive(Deserialize, Default)]
struct Accepted {
    #[serde(default)]
    warnings: Vec<Warning>,
}

#[derive(Deserialize)]
struct Warning {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    warning: String,
    #[serde(default)]
    recipients: Vec<SuppressedRecipient>,
}

#[derive(Deserialize)]
struct SuppressedRecipient {
    #[serde(default)]
    email: String,
    #[serde(default)]
    reasons: Vec<String>,
}

impl Warning {
    fn describe(&self) -> String {
        let mut out = format!("{}: {}", self.kind, self.warning);
        let who: Vec<String> = self
            .recipients
            .iter()
            .map(|r| format!("{} ({})", r.email, r.reasons.join(", ")))
            .collect();
        if !who.is_empty() {
            out.push_str(&format!(" [{}]", who.join("; ")));
        }
        out
    }
}

fn accepted(reply: &Reply, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
    let id = reply
        .headers
        .get("x-message-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    // An empty 202 is the normal case; a body carries warnings.
    let parsed: Accepted = if reply.body.trim().is_empty() {
        Accepted::default()
    } else {
        serde_json::from_str(&reply.body).unwrap_or_default()
    };
    if let Some(all) = parsed.warnings.iter().find(|w| w.kind == ALL_SUPPRESSED) {
        return Err(SendError::permanent(format!(
            "MailerSend accepted the request but delivered it to nobody, all recipients are suppressed (message id {}): {}",
            id.unwrap_or("none"),
            all.describe()
        ))
        .with_status(reply.status));
    }
    let mut warnings: Vec<String> = parsed.warnings.iter().map(Warning::describe).collect();
    let message_id = match id {
        Some(id) => id.to_string(),
        None => {
            warnings.push(
                "MailerSend returned no X-Message-Id; recorded our own Message-ID instead".into(),
            );
            msg.message_id.clone()
        }
    };
    Ok(SendReceipt {
        message_id,
        warnings,
    })
}

fn refused(reply: &Reply) -> SendError {
    let status = reply.status;
    let text = format!("MailerSend answered {status}: {}", explain(reply));
    let err = match status {
        401 | 403 => SendError::permanent(format!(
            "{text}; check the API token in spec.mailersend.apiTokenSecretRef and its permissions"
        ))
        .with_auth(),
        429 => SendError::transient(format!("{text}; rate limit or daily quota reached"))
            .with_retry_after(http::retry_after(&reply.headers, jiff::Timestamp::now())),
        // 408 and 421 (maintenance) say the request was not taken. A 5xx does not: MailerSend
        // has answered 502 for a message it then delivered, so resending could make a second
        // copy. Such a send ends Unknown (kmailops.io/retry on the Email or the sender sends
        // it once more), the same rule as every provider without an idempotency key.
        408 | 421 => SendError::transient(text),
        500..=599 => SendError::ambiguous(format!(
            "{text}; MailerSend may have accepted the message, so it is not resent automatically"
        )),
        _ => SendError::permanent(text),
    };
    err.with_status(status)
}

#[derive(Deserialize)]
struct Quota {
    quota: Option<i64>,
    remaining: Option<i64>,
    reset: Option<String>,
}

fn quota_report(reply: &Reply) -> HealthReport {
    let Ok(q) = serde_json::from_str::<Quota>(&reply.body) else {
        return HealthReport::healthy("the API token was accepted");
    };
    let reset = q.reset.unwrap_or_else(|| "unknown".into());
    match (q.quota, q.remaining) {
        (Some(quota), Some(0)) => HealthReport::unhealthy(
            reason::QUOTA_EXHAUSTED,
            format!("the daily quota of {quota} requests is used up; it resets at {reset}"),
        ),
        (Some(quota), Some(remaining)) => HealthReport::healthy(format!(
            "the API token was accepted; {remaining} of {quota} requests left, reset at {reset}"
        )),
        _ => HealthReport::healthy("the API token was accepted"),
    }
}

#[async_trait::async_trait]
impl Provider for MailerSend {
    fn kind(&self) -> ProviderKind {
        ProviderKind::MailerSend
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
        let req = self
            .http
            .post(format!("{}/email", self.base))
            .bearer_auth(self.token.expose())
            .json(&body(msg));
        let reply = http::send(req, "MailerSend").await?;
        if (200..300).contains(&reply.status) {
            accepted(&reply, msg)
        } else {
            Err(refused(&reply))
        }
    }

    async fn check_health(&self, timeout: Duration) -> HealthReport {
        let req = self
            .http
            .get(format!("{}/api-quota", self.base))
            .bearer_auth(self.token.expose())
            .timeout(timeout);
        let reply = match http::probe(req, "MailerSend").await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        let text = format!("MailerSend answered {}: {}", reply.status, explain(&reply));
        match reply.status {
            200..=299 => quota_report(&reply),
            401 => HealthReport::unhealthy(
                reason::AUTH_FAILED,
                format!("{text}; check the API token in spec.mailersend.apiTokenSecretRef"),
            ),
            403 => HealthReport::unknown(
                reason::CHECK_NOT_PERMITTED,
                format!(
                    "{text}; the token may not read the quota, so the check can not tell whether sending works"
                ),
            ),
            429 => HealthReport::unknown(reason::RATE_LIMITED, text),
            421 | 500..=599 => HealthReport::unhealthy(reason::PROVIDER_ERROR, text),
            _ => HealthReport::unknown(reason::UNEXPECTED_RESPONSE, text),
        }
    }
}
