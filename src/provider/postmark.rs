//! Postmark: `POST /email` with a JSON body and the `X-Postmark-Server-Token` header; health
//! via `GET /server`.
//!
//! Postmark answers refusals with HTTP 422 and an `ErrorCode` that says what went wrong, so
//! classification reads the code, not the status alone.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::http::{self, Reply, describe_body};
use super::limits::{self, RecipientLimits};
use super::lookup::{self, LookupAnswer, Recall};
use super::{ConfigError, HealthReport, Provider, SecretValue, SendError, SendReceipt, reason};
use crate::api::ProviderKind;
use crate::api::sender_config::{POSTMARK_BASE_URL, PostmarkSpec};
use crate::message::{Mailbox, OutgoingMessage};

/// Postmark takes at most 50 recipients (To, Cc and Bcc together) a message.
pub const MAX_RECIPIENTS: usize = 50;
/// Postmark refuses messages above 10 MB, attachments included.
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// The `Metadata` key that carries the delivery key (Postmark keys are at most 20 characters).
pub const DELIVERY_KEY_METADATA: &str = "kmailops-delivery";

const HEADER: &str = "X-Postmark-Server-Token";

/// A Postmark server (Postmark's unit of sending, with its own token).
pub struct Postmark {
    base: String,
    token: SecretValue,
    stream: String,
    http: reqwest::Client,
}

impl Postmark {
    pub fn new(
        spec: &PostmarkSpec,
        token: SecretValue,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let base = super::base_url(
            "spec.postmark.baseUrl",
            spec.base_url.as_deref().unwrap_or(POSTMARK_BASE_URL),
            POSTMARK_BASE_URL,
        )?;
        let stream = spec.message_stream.trim().to_string();
        if stream.is_empty() {
            return Err(ConfigError::new(
                "spec.postmark.messageStream",
                "name a message stream, e.g. outbound",
            ));
        }
        Ok(Postmark {
            base,
            token,
            stream,
            http,
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Header<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Attachment<'a> {
    name: &'a str,
    content: String,
    content_type: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EmailBody<'a> {
    from: String,
    to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bcc: Option<String>,
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html_body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<Header<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<Attachment<'a>>,
    message_stream: &'a str,
}

/// Postmark's address lists are one comma-separated string.
fn joined(ms: &[Mailbox]) -> Option<String> {
    (!ms.is_empty()).then(|| {
        ms.iter()
            .map(Mailbox::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

impl Postmark {
    fn body<'a>(&'a self, msg: &'a OutgoingMessage, warnings: &mut Vec<String>) -> EmailBody<'a> {
        if msg.tags.len() > 1 {
            warnings.push(format!(
                "Postmark keeps one tag per message; sent `{}`, not: {}",
                msg.tags[0],
                msg.tags[1..].join(", ")
            ));
        }
        let mut metadata = BTreeMap::new();
        if let Some(key) = &msg.delivery_key {
            metadata.insert(DELIVERY_KEY_METADATA, key.as_str());
        }
        EmailBody {
            from: msg.from.to_string(),
            to: joined(&msg.to).unwrap_or_default(),
            cc: joined(&msg.cc),
            bcc: joined(&msg.bcc),
            subject: &msg.subject,
            text_body: msg.text.as_deref(),
            html_body: msg.html.as_deref(),
            reply_to: msg.reply_to.as_ref().map(Mailbox::to_string),
            tag: msg.tags.first().map(String::as_str),
            metadata,
            headers: msg
                .headers
                .iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            attachments: msg
                .attachments
                .iter()
                .map(|a| Attachment {
                    name: &a.filename,
                    content: STANDARD.encode(&a.content),
                    content_type: &a.content_type,
                })
                .collect(),
            message_stream: &self.stream,
        }
    }
}

/// `{"ErrorCode": 406, "Message": "..."}`
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "MessageID")]
    message_id: Option<String>,
}

fn answer(reply: &Reply) -> Answer {
    serde_json::from_str(&reply.body).unwrap_or_default()
}

fn explain(reply: &Reply) -> String {
    let a = answer(reply);
    match (a.error_code, a.message) {
        (Some(code), Some(message)) => format!("ErrorCode {code}: {message}"),
        (None, Some(message)) => message,
        _ => describe_body(&reply.body),
    }
}

const CHECK_TOKEN: &str = "check the server token in spec.postmark.serverTokenSecretRef";

fn refused(reply: &Reply) -> SendError {
    let status = reply.status;
    let code = answer(reply).error_code;
    let text = format!("Postmark answered {status}: {}", explain(reply));
    let err = match (status, code) {
        (401, _) | (_, Some(10)) => {
            SendError::permanent(format!("{text}; {CHECK_TOKEN}")).with_auth()
        }
        // The account or server can not send (out of credits, pending approval, sending
        // disabled): the sender's fault, so fail over like an auth error.
        (_, Some(405 | 412 | 413)) => SendError::permanent(format!(
            "{text}; this Postmark account or server may not send now"
        ))
        .with_auth(),
        (_, Some(406)) => SendError::permanent(format!(
            "{text}; Postmark suppresses this recipient (hard bounce, spam complaint or manual suppression) and never retries it"
        )),
        (429, _) | (_, Some(429)) => SendError::transient(format!("{text}; rate limit reached"))
            .with_retry_after(http::retry_after(&reply.headers, jiff::Timestamp::now())),
        (403, _) => SendError::permanent(text).with_auth(),
        (408 | 421, _) => SendError::transient(text),
        (500..=599, _) => SendError::ambiguous(format!(
            "{text}; Postmark may still have sent the message, so it is not resent automatically"
        )),
        _ => SendError::permanent(text),
    };
    err.with_status(status)
}

/// `GET /messages/outbound`: `{"TotalCount": 1, "Messages": [{"MessageID", "Metadata", ...}]}`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SearchReply {
    #[serde(default)]
    messages: Vec<Found>,
}

#[derive(Deserialize)]
struct Found {
    #[serde(default, rename = "MessageID")]
    message_id: Option<String>,
    #[serde(default, rename = "Metadata")]
    metadata: BTreeMap<String, serde_json::Value>,
}

/// How many matches one search asks for: the filter is exact, one is enough, a few show a
/// duplicate sent by something else.
const SEARCH_COUNT: u32 = 10;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Server {
    #[serde(default)]
    name: Option<String>,
}

#[async_trait::async_trait]
impl Provider for Postmark {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Postmark
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
        limits::recipients(
            "Postmark",
            msg,
            RecipientLimits {
                total: Some(MAX_RECIPIENTS),
                to: None,
            },
        )?;
        limits::size("Postmark", msg, MAX_BYTES)?;
        let mut warnings = Vec::new();
        let body = self.body(msg, &mut warnings);
        let req = self
            .http
            .post(format!("{}/email", self.base))
            .header(HEADER, self.token.expose())
            .header("Accept", "application/json")
            .json(&body);
        let reply = http::send(req, "Postmark").await?;
        if !(200..300).contains(&reply.status) {
            return Err(refused(&reply));
        }
        let a = answer(&reply);
        if a.error_code.is_some_and(|c| c != 0) {
            return Err(refused(&reply));
        }
        let message_id = a
            .message_id
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| {
                warnings.push(
                    "Postmark returned no MessageID; recorded our own Message-ID instead".into(),
                );
                msg.message_id.clone()
            });
        Ok(SendReceipt {
            message_id,
            warnings,
        })
    }

    fn recall(&self) -> Recall {
        Recall::of(crate::api::ProviderKind::Postmark)
    }

    /// Postmark's outbound message search, filtered by the delivery key in the metadata.
    async fn look_up(&self, msg: &OutgoingMessage, timeout: Duration) -> LookupAnswer {
        let Some(key) = msg.delivery_key.as_deref() else {
            return LookupAnswer::Failed("the message has no delivery key to search by".into());
        };
        let count = SEARCH_COUNT.to_string();
        let filter = format!("metadata_{DELIVERY_KEY_METADATA}");
        let url = match reqwest::Url::parse_with_params(
            &format!("{}/messages/outbound", self.base),
            [
                ("count", count.as_str()),
                ("offset", "0"),
                (filter.as_str(), key),
            ],
        ) {
            Ok(url) => url,
            Err(e) => return LookupAnswer::Failed(format!("the search URL is not valid: {e}")),
        };
        let req = self
            .http
            .get(url)
            .header(HEADER, self.token.expose())
            .header("Accept", "application/json")
            .timeout(timeout);
        let reply = match lookup::ask(req, "Postmark").await {
            Ok(reply) => reply,
            Err(failed) => return failed,
        };
        if !(200..300).contains(&reply.status) {
            let hint = match (reply.status, answer(&reply).error_code) {
                (401, _) | (_, Some(10)) => format!("; {CHECK_TOKEN}"),
                _ => String::new(),
            };
            return LookupAnswer::Failed(format!(
                "Postmark's message search answered {}: {}{hint}",
                reply.status,
                explain(&reply)
            ));
        }
        let Ok(found) = serde_json::from_str::<SearchReply>(&reply.body) else {
            return LookupAnswer::Failed(format!(
                "Postmark's message search answered {} with {}",
                reply.status,
                describe_body(&reply.body)
            ));
        };
        // Only a message that carries our key counts, whatever else the server matched.
        let ours = found.messages.into_iter().find(|m| {
            m.metadata
                .get(DELIVERY_KEY_METADATA)
                .and_then(|v| v.as_str())
                == Some(key)
        });
        match ours
            .and_then(|m| m.message_id)
            .filter(|id| !id.trim().is_empty())
        {
            Some(message_id) => LookupAnswer::Found { message_id },
            None => LookupAnswer::Absent,
        }
    }

    async fn check_health(&self, timeout: Duration) -> HealthReport {
        let req = self
            .http
            .get(format!("{}/server", self.base))
            .header(HEADER, self.token.expose())
            .header("Accept", "application/json")
            .timeout(timeout);
        let reply = match http::probe(req, "Postmark").await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        let text = format!("Postmark answered {}: {}", reply.status, explain(&reply));
        let code = answer(&reply).error_code;
        match (reply.status, code) {
            (200..=299, _) => {
                let name = serde_json::from_str::<Server>(&reply.body)
                    .ok()
                    .and_then(|s| s.name)
                    .unwrap_or_else(|| "?".into());
                HealthReport::healthy(format!(
                    "the server token was accepted (server `{name}`, message stream `{}`)",
                    self.stream
                ))
            }
            (401, _) | (_, Some(10)) => {
                HealthReport::unhealthy(reason::AUTH_FAILED, format!("{text}; {CHECK_TOKEN}"))
            }
            (_, Some(412 | 413)) => HealthReport::unhealthy(reason::PROVIDER_ERROR, text),
            (429, _) | (_, Some(429)) => HealthReport::unknown(reason::RATE_LIMITED, text),
            (500..=599, _) => HealthReport::unhealthy(reason::PROVIDER_ERROR, text),
            _ => HealthReport::unknown(reason::UNEXPECTED_RESPONSE, text),
        }
    }
}
