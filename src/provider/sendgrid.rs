//! SendGrid v3: `POST /v3/mail/send` with a JSON body and a Bearer key; health via
//! `GET /v3/scopes`, which must include `mail.send`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::http::{self, Reply, describe_body};
use super::limits::{self, RecipientLimits};
use super::{ConfigError, HealthReport, Provider, SecretValue, SendError, SendReceipt, reason};
use crate::api::ProviderKind;
use crate::api::sender_config::SendGridSpec;
use crate::message::{Mailbox, OutgoingMessage};

/// SendGrid takes at most 1,000 recipients a request.
pub const MAX_RECIPIENTS: usize = 1000;
/// SendGrid refuses requests above 30 MB.
pub const MAX_BYTES: usize = 30 * 1024 * 1024;
/// The `custom_args` key that carries the delivery key.
pub const DELIVERY_KEY_ARG: &str = "kmailops_delivery_key";
/// SendGrid keeps at most 10 categories, each up to 255 characters.
const MAX_CATEGORIES: usize = 10;

/// A SendGrid account (or subuser) API key.
pub struct SendGrid {
    base: String,
    key: SecretValue,
    http: reqwest::Client,
}

impl SendGrid {
    pub fn new(
        spec: &SendGridSpec,
        key: SecretValue,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let base = match &spec.base_url {
            Some(url) => super::base_url("spec.sendgrid.baseUrl", url, "https://api.sendgrid.com")?,
            None => spec.region.base_url().to_string(),
        };
        Ok(SendGrid { base, key, http })
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

fn list(ms: &[Mailbox]) -> Vec<Address<'_>> {
    ms.iter().map(Address::from).collect()
}

#[derive(Serialize)]
struct Personalization<'a> {
    to: Vec<Address<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cc: Vec<Address<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bcc: Vec<Address<'a>>,
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
struct Attachment<'a> {
    content: String,
    filename: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    disposition: &'static str,
}

#[derive(Serialize)]
struct MailBody<'a> {
    personalizations: Vec<Personalization<'a>>,
    from: Address<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<Address<'a>>,
    subject: &'a str,
    content: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<Attachment<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    categories: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    custom_args: BTreeMap<&'a str, &'a str>,
}

/// SendGrid refuses a request that names one address twice (across to, cc and bcc).
fn check_unique(msg: &OutgoingMessage) -> Result<(), SendError> {
    let mut seen = BTreeSet::new();
    for m in msg.to.iter().chain(&msg.cc).chain(&msg.bcc) {
        if !seen.insert(m.address.to_ascii_lowercase()) {
            return Err(SendError::permanent(format!(
                "SendGrid takes each address once per message, across to, cc and bcc; {} appears twice",
                m.address
            )));
        }
    }
    Ok(())
}

fn body(msg: &OutgoingMessage) -> MailBody<'_> {
    // text/plain must come before text/html.
    let mut content = Vec::new();
    if let Some(text) = &msg.text {
        content.push(Content {
            kind: "text/plain",
            value: text,
        });
    }
    if let Some(html) = &msg.html {
        content.push(Content {
            kind: "text/html",
            value: html,
        });
    }
    let mut custom_args = BTreeMap::new();
    if let Some(key) = &msg.delivery_key {
        custom_args.insert(DELIVERY_KEY_ARG, key.as_str());
    }
    MailBody {
        personalizations: vec![Personalization {
            to: list(&msg.to),
            cc: list(&msg.cc),
            bcc: list(&msg.bcc),
        }],
        from: (&msg.from).into(),
        reply_to: msg.reply_to.as_ref().map(Into::into),
        subject: &msg.subject,
        content,
        attachments: msg
            .attachments
            .iter()
            .map(|a| Attachment {
                content: STANDARD.encode(&a.content),
                filename: &a.filename,
                kind: &a.content_type,
                disposition: "attachment",
            })
            .collect(),
        categories: &msg.tags[..msg.tags.len().min(MAX_CATEGORIES)],
        headers: msg
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        custom_args,
    }
}

/// `{"errors": [{"message": "...", "field": "...", "help": "..."}]}`
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<FieldError>,
}

#[derive(Deserialize)]
struct FieldError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    field: Option<String>,
}

/// Every entry of `errors[]`, with its field, or the raw body.
fn explain(reply: &Reply) -> String {
    let parsed: ErrorBody = serde_json::from_str(&reply.body).unwrap_or_default();
    let all: Vec<String> = parsed
        .errors
        .iter()
        .filter_map(|e| {
            let message = e.message.as_deref()?;
            Some(match e.field.as_deref().filter(|f| !f.is_empty()) {
                Some(field) => format!("{field}: {message}"),
                None => message.to_string(),
            })
        })
        .collect();
    if all.is_empty() {
        describe_body(&reply.body)
    } else {
        all.join("; ")
    }
}

/// `X-RateLimit-Reset` is a Unix time in seconds; `Retry-After` is honoured when present.
fn rate_limit_wait(reply: &Reply, now: jiff::Timestamp) -> Option<Duration> {
    http::retry_after(&reply.headers, now).or_else(|| {
        let reset: i64 = reply
            .headers
            .get("x-ratelimit-reset")?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(Duration::from_secs(
            u64::try_from(reset.saturating_sub(now.as_second())).unwrap_or(0),
        ))
    })
}

fn refused(reply: &Reply) -> SendError {
    let status = reply.status;
    let text = format!("SendGrid answered {status}: {}", explain(reply));
    let err = match status {
        401 | 403 => SendError::permanent(format!(
            "{text}; check the API key in spec.sendgrid.apiKeySecretRef, its mail.send permission, the region, and that the From address is a verified sender"
        ))
        .with_auth(),
        429 => SendError::transient(format!("{text}; rate limit reached"))
            .with_retry_after(rate_limit_wait(reply, jiff::Timestamp::now())),
        408 | 421 => SendError::transient(text),
        500..=599 => SendError::ambiguous(format!(
            "{text}; SendGrid may still have sent the message, so it is not resent automatically"
        )),
        _ => SendError::permanent(text),
    };
    err.with_status(status)
}

#[derive(Deserialize)]
struct Scopes {
    #[serde(default)]
    scopes: Vec<String>,
}

#[async_trait::async_trait]
impl Provider for SendGrid {
    fn kind(&self) -> ProviderKind {
        ProviderKind::SendGrid
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
        limits::recipients(
            "SendGrid",
            msg,
            RecipientLimits {
                total: Some(MAX_RECIPIENTS),
                to: None,
            },
        )?;
        check_unique(msg)?;
        limits::size("SendGrid", msg, MAX_BYTES)?;
        let mut warnings = Vec::new();
        if msg.tags.len() > MAX_CATEGORIES {
            warnings.push(format!(
                "SendGrid keeps at most {MAX_CATEGORIES} categories; not sent: {}",
                msg.tags[MAX_CATEGORIES..].join(", ")
            ));
        }
        let req = self
            .http
            .post(format!("{}/v3/mail/send", self.base))
            .bearer_auth(self.key.expose())
            .json(&body(msg));
        let reply = http::send(req, "SendGrid").await?;
        if !(200..300).contains(&reply.status) {
            return Err(refused(&reply));
        }
        if reply.status == 200 {
            // 200 instead of 202 is sandbox mode: validated, nothing sent.
            warnings.push(
                "SendGrid answered 200 (sandbox mode): the request was valid but nothing was sent"
                    .into(),
            );
        }
        let id = reply
            .headers
            .get("x-message-id")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let message_id = match id {
            Some(id) => id.to_string(),
            None => {
                warnings.push(
                    "SendGrid returned no X-Message-Id; recorded our own Message-ID instead".into(),
                );
                msg.message_id.clone()
            }
        };
        Ok(SendReceipt {
            message_id,
            warnings,
        })
    }

    async fn check_health(&self, timeout: Duration) -> HealthReport {
        let req = self
            .http
            .get(format!("{}/v3/scopes", self.base))
            .bearer_auth(self.key.expose())
            .timeout(timeout);
        let reply = match http::probe(req, "SendGrid").await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        let text = format!("SendGrid answered {}: {}", reply.status, explain(&reply));
        match reply.status {
            200..=299 => match serde_json::from_str::<Scopes>(&reply.body) {
                Ok(s) if s.scopes.iter().any(|s| s == "mail.send") => {
                    HealthReport::healthy("the API key was accepted and has the mail.send scope")
                }
                Ok(_) => HealthReport::unhealthy(
                    reason::AUTH_FAILED,
                    "the API key was accepted but lacks the mail.send scope: give it Mail Send access",
                ),
                Err(e) => HealthReport::unknown(
                    reason::UNEXPECTED_RESPONSE,
                    format!(
                        "could not read SendGrid's scopes ({e}): {}",
                        describe_body(&reply.body)
                    ),
                ),
            },
            401 => HealthReport::unhealthy(
                reason::AUTH_FAILED,
                format!(
                    "{text}; check the API key in spec.sendgrid.apiKeySecretRef and the region"
                ),
            ),
            403 => HealthReport::unknown(
                reason::CHECK_NOT_PERMITTED,
                format!("{text}; the key may not read its scopes"),
            ),
            429 => HealthReport::unknown(reason::RATE_LIMITED, text),
            500..=599 => HealthReport::unhealthy(reason::PROVIDER_ERROR, text),
            _ => HealthReport::unknown(reason::UNEXPECTED_RESPONSE, text),
        }
    }
}
