//! Resend: `POST /emails` with a JSON body, a Bearer key and an `Idempotency-Key`; health via
//! `GET /domains`.
//!
//! Every attempt at one delivery carries the same `Idempotency-Key` (the message's delivery
//! key, else its delivery hash). Resend keeps a key for 24 hours and answers a repeat with the
//! first answer without sending again, so a 5xx or a timeout after hand-over is safe to retry
//! here, unlike with the other HTTP providers.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::http::{self, Reply, describe_body};
use super::limits::{self, RecipientLimits};
use super::lookup::Recall;
use super::{
    ConfigError, ErrorClass, HealthReport, Provider, SecretValue, SendError, SendReceipt, reason,
};
use crate::api::ProviderKind;
use crate::api::sender_config::{RESEND_BASE_URL, ResendSpec};
use crate::message::{Mailbox, OutgoingMessage};

/// Resend takes at most 50 addresses in `to`.
pub const MAX_TO: usize = 50;
/// Resend refuses emails above 40 MB, attachments base64-encoded.
pub const MAX_BYTES: usize = 40 * 1024 * 1024;

/// A Resend account.
pub struct Resend {
    base: String,
    key: SecretValue,
    http: reqwest::Client,
    /// The From address's domain, looked up in the health check.
    sender_domain: String,
}

impl Resend {
    pub fn new(
        spec: &ResendSpec,
        sender_address: &str,
        key: SecretValue,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let base = super::base_url(
            "spec.resend.baseUrl",
            spec.base_url.as_deref().unwrap_or(RESEND_BASE_URL),
            RESEND_BASE_URL,
        )?;
        let sender_domain = sender_address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        Ok(Resend {
            base,
            key,
            http,
            sender_domain,
        })
    }
}

#[derive(Serialize)]
struct Attachment<'a> {
    filename: &'a str,
    content: String,
    content_type: &'a str,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
struct Tag {
    name: String,
    value: String,
}

#[derive(Serialize)]
struct EmailBody<'a> {
    from: String,
    to: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cc: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bcc: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<String>,
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<Attachment<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<Tag>,
}

fn strings(ms: &[Mailbox]) -> Vec<String> {
    ms.iter().map(Mailbox::to_string).collect()
}

/// Resend tags are name/value pairs of ASCII letters, digits, `_` and `-`. A tag
/// `name:value` (or `name=value`) becomes that pair; a plain tag becomes `{tag: "true"}`.
/// Other characters become `_`, with a warning.
fn tags(msg: &OutgoingMessage, warnings: &mut Vec<String>) -> Vec<Tag> {
    let mut fixed = Vec::new();
    let out = msg
        .tags
        .iter()
        .map(|tag| {
            let (name, value) = tag.split_once([':', '=']).unwrap_or((tag.as_str(), "true"));
            let clean = |s: &str| limits::ascii_tag(s).unwrap_or_else(|| s.to_string());
            let t = Tag {
                name: clean(name),
                value: clean(value),
            };
            if limits::ascii_tag(name).is_some() || limits::ascii_tag(value).is_some() {
                fixed.push(format!("`{tag}` as {}={}", t.name, t.value));
            }
            t
        })
        .collect();
    if !fixed.is_empty() {
        warnings.push(format!(
            "Resend tags take only ASCII letters, digits, _ and -; sent {}",
            fixed.join(", ")
        ));
    }
    out
}

fn body<'a>(msg: &'a OutgoingMessage, warnings: &mut Vec<String>) -> EmailBody<'a> {
    EmailBody {
        from: msg.from.to_string(),
        to: strings(&msg.to),
        cc: strings(&msg.cc),
        bcc: strings(&msg.bcc),
        reply_to: msg.reply_to.as_ref().map(Mailbox::to_string),
        subject: &msg.subject,
        text: msg.text.as_deref(),
        html: msg.html.as_deref(),
        headers: msg
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        attachments: msg
            .attachments
            .iter()
            .map(|a| Attachment {
                filename: &a.filename,
                content: STANDARD.encode(&a.content),
                content_type: &a.content_type,
            })
            .collect(),
        tags: tags(msg, warnings),
    }
}

/// The key every attempt at this delivery sends.
pub fn idempotency_key(msg: &OutgoingMessage) -> &str {
    msg.delivery_key.as_deref().unwrap_or(&msg.delivery_hash)
}

/// `{"statusCode": 422, "name": "validation_error", "message": "..."}`
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn error_body(reply: &Reply) -> ErrorBody {
    serde_json::from_str(&reply.body).unwrap_or_default()
}

fn explain(reply: &Reply) -> String {
    let parsed = error_body(reply);
    match (parsed.name, parsed.message) {
        (Some(name), Some(message)) => format!("{name}: {message}"),
        (None, Some(message)) => message,
        _ => describe_body(&reply.body),
    }
}

const SAFE_RETRY: &str =
    "safe to retry: Resend sends at most once per Idempotency-Key within 24 hours";

fn refused(reply: &Reply) -> SendError {
    let status = reply.status;
    let name = error_body(reply).name.unwrap_or_default();
    let text = format!("Resend answered {status}: {}", explain(reply));
    let err = match (status, name.as_str()) {
        (401 | 403, _) => SendError::permanent(format!(
            "{text}; check the API key in spec.resend.apiKeySecretRef, its permission to send, and that the From domain is verified in Resend"
        ))
        .with_auth(),
        (409, "concurrent_idempotent_requests") => SendError::transient(format!(
            "{text}; an earlier attempt at this delivery is still in flight"
        ))
        .with_retry_after(Some(Duration::from_secs(1))),
        (409, _) => SendError::permanent(format!(
            "{text}; Resend saw this delivery's Idempotency-Key with other content in the last 24 hours"
        )),
        (429, _) => {
            let now = jiff::Timestamp::now();
            let retry_after = http::retry_after(&reply.headers, now).or_else(|| {
                reply
                    .headers
                    .get("ratelimit-reset")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
            });
            SendError::transient(format!("{text}; rate limit or quota reached"))
                .with_retry_after(retry_after)
        }
        (408 | 500..=599, _) => SendError::transient(format!("{text}; {SAFE_RETRY}")),
        _ => SendError::permanent(text),
    };
    // A 5xx or 408 may come after Resend took the message, and a concurrent request with
    // this key means an earlier attempt is still being handled: retried only because the
    // key makes a repeat harmless, never a reason to send through another sender.
    let may_be_accepted = matches!(
        (status, name.as_str()),
        (408 | 500..=599, _) | (409, "concurrent_idempotent_requests")
    );
    SendError {
        may_be_accepted,
        ..err.with_status(status)
    }
}

#[derive(Deserialize)]
struct Sent {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct Domains {
    #[serde(default)]
    data: Vec<Domain>,
}

#[derive(Deserialize)]
struct Domain {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
}

#[async_trait::async_trait]
impl Provider for Resend {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Resend
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
        limits::recipients(
            "Resend",
            msg,
            RecipientLimits {
                total: None,
                to: Some(MAX_TO),
            },
        )?;
        limits::size("Resend", msg, MAX_BYTES)?;
        let mut warnings = Vec::new();
        let body = body(msg, &mut warnings);
        let req = self
            .http
            .post(format!("{}/emails", self.base))
            .bearer_auth(self.key.expose())
            .header("Idempotency-Key", idempotency_key(msg))
            .json(&body);
        let reply = match http::send(req, "Resend").await {
            Ok(reply) => reply,
            // The key makes a repeat harmless, so "may have been accepted" is retryable here.
            Err(e) if e.class == ErrorClass::Ambiguous => {
                return Err(SendError {
                    class: ErrorClass::Transient,
                    may_be_accepted: true,
                    message: format!(
                        "{}; {SAFE_RETRY}",
                        e.message.replace(", so it is not resent automatically", "")
                    ),
                    ..e
                });
            }
            Err(e) => return Err(e),
        };
        if !(200..300).contains(&reply.status) {
            return Err(refused(&reply));
        }
        let id = serde_json::from_str::<Sent>(&reply.body)
            .ok()
            .and_then(|s| s.id)
            .filter(|id| !id.trim().is_empty());
        let message_id = id.unwrap_or_else(|| {
            warnings
                .push("Resend returned no email id; recorded our own Message-ID instead".into());
            msg.message_id.clone()
        });
        Ok(SendReceipt {
            message_id,
            warnings,
        })
    }

    fn recall(&self) -> Recall {
        Recall::of(crate::api::ProviderKind::Resend)
    }

    async fn check_health(&self, timeout: Duration) -> HealthReport {
        let req = self
            .http
            .get(format!("{}/domains", self.base))
            .bearer_auth(self.key.expose())
            .timeout(timeout);
        let reply = match http::probe(req, "Resend").await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        let text = format!("Resend answered {}: {}", reply.status, explain(&reply));
        let name = error_body(&reply).name.unwrap_or_default();
        let domain = &self.sender_domain;
        match reply.status {
            200..=299 => {
                let Ok(list) = serde_json::from_str::<Domains>(&reply.body) else {
                    return HealthReport::unknown(
                        reason::UNEXPECTED_RESPONSE,
                        format!(
                            "could not read Resend's domain list: {}",
                            describe_body(&reply.body)
                        ),
                    );
                };
                match list
                    .data
                    .iter()
                    .find(|d| d.name.eq_ignore_ascii_case(domain))
                {
                    Some(d) if d.status == "verified" => HealthReport::healthy(format!(
                        "the API key was accepted and domain {domain} is verified"
                    )),
                    Some(d) => HealthReport::unhealthy(
                        reason::DOMAIN_UNVERIFIED,
                        format!(
                            "domain {domain} is `{}` in Resend, not verified: add the DNS records Resend shows for it",
                            d.status
                        ),
                    ),
                    None => HealthReport::unhealthy(
                        reason::DOMAIN_NOT_FOUND,
                        format!(
                            "the API key was accepted, but the account has no domain {domain} (the From address's domain): add and verify it in Resend"
                        ),
                    ),
                }
            }
            // A key with "sending access" only may send but not list domains.
            401 if name == "restricted_api_key" => HealthReport::unknown(
                reason::CHECK_NOT_PERMITTED,
                format!(
                    "{text}; a sending-only key can send but not list domains, so the check can not tell whether sending works"
                ),
            ),
            401 | 403 => HealthReport::unhealthy(
                reason::AUTH_FAILED,
                format!("{text}; check the API key in spec.resend.apiKeySecretRef"),
            ),
            429 => HealthReport::unknown(reason::RATE_LIMITED, text),
            500..=599 => HealthReport::unhealthy(reason::PROVIDER_ERROR, text),
            _ => HealthReport::unknown(reason::UNEXPECTED_RESPONSE, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tags_become_true_flags_and_pairs_are_split_and_cleaned() {
        let mut msg = crate::provider::limits::tests_support::message();
        msg.tags = vec!["welcome".into(), "category:order shipped".into()];
        let mut warnings = Vec::new();
        let t = tags(&msg, &mut warnings);
        assert_eq!(
            t,
            vec![
                Tag {
                    name: "welcome".into(),
                    value: "true".into()
                },
                Tag {
                    name: "category".into(),
                    value: "order_shipped".into()
                }
            ]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}
