//! Mailgun: `POST /v3/{domain}/messages` as multipart form with HTTP Basic `api:<key>`;
//! health via `GET /v4/domains/{domain}`.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde::Deserialize;

use super::http::{self, Reply, describe_body};
use super::lookup::{self, LookupAnswer, Recall};
use super::{ConfigError, HealthReport, Provider, SecretValue, SendError, SendReceipt, reason};
use crate::api::ProviderKind;
use crate::api::sender_config::MailgunSpec;
use crate::message::OutgoingMessage;

/// Mailgun keeps at most three `o:tag` values per message.
const MAX_TAGS: usize = 3;
/// The user variable (`v:<name>`) that carries the delivery key; Mailgun returns it in
/// events as `user-variables`.
pub const DELIVERY_KEY_VARIABLE: &str = "kmailops-delivery-key";

/// A Mailgun sending domain.
pub struct Mailgun {
    base: String,
    domain: String,
    key: SecretValue,
    http: reqwest::Client,
}

impl Mailgun {
    pub fn new(
        spec: &MailgunSpec,
        key: SecretValue,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let base = match &spec.base_url {
            Some(url) => super::base_url("spec.mailgun.baseUrl", url, "https://api.mailgun.net")?,
            None => spec.region.base_url().to_string(),
        };
        let domain = spec.domain.trim().to_string();
        // The domain becomes a URL path segment: only host-name characters are safe there.
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(ConfigError::new(
                "spec.mailgun.domain",
                format!("`{}` is not a domain name like mg.example.com", spec.domain),
            ));
        }
        Ok(Mailgun {
            base,
            domain,
            key,
            http,
        })
    }

    fn form(&self, msg: &OutgoingMessage) -> Result<(Form, Vec<String>), SendError> {
        let mut form = Form::new().text("from", msg.from.to_string());
        for (field, list) in [("to", &msg.to), ("cc", &msg.cc), ("bcc", &msg.bcc)] {
            for m in list {
                form = form.text(field, m.to_string());
            }
        }
        form = form.text("subject", msg.subject.clone());
        if let Some(text) = &msg.text {
            form = form.text("text", text.clone());
        }
        if let Some(html) = &msg.html {
            form = form.text("html", html.clone());
        }
        if let Some(reply_to) = &msg.reply_to {
            form = form.text("h:Reply-To", reply_to.to_string());
        }
        form = form.text("h:Message-Id", msg.message_id.clone());
        if let Some(key) = &msg.delivery_key {
            form = form.text(format!("v:{DELIVERY_KEY_VARIABLE}"), key.clone());
        }
        for (name, value) in &msg.headers {
            form = form.text(format!("h:{name}"), value.clone());
        }
        let mut warnings = Vec::new();
        for tag in msg.tags.iter().take(MAX_TAGS) {
            form = form.text("o:tag", tag.clone());
        }
        if msg.tags.len() > MAX_TAGS {
            warnings.push(format!(
                "Mailgun keeps at most {MAX_TAGS} tags; not sent: {}",
                msg.tags[MAX_TAGS..].join(", ")
            ));
        }
        for a in &msg.attachments {
            let part = Part::bytes(a.content.clone())
                .file_name(a.filename.clone())
                .mime_str(&a.content_type)
                .map_err(|e| {
                    SendError::permanent(format!(
                        "attachment {}: content type `{}` is not valid: {e}",
                        a.filename, a.content_type
                    ))
                })?;
            form = form.part("attachment", part);
        }
        Ok((form, warnings))
    }
}

#[derive(Deserialize, Default)]
struct MessageBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Mailgun's `message`, or the raw body (its 401 says just `Forbidden`, not JSON).
fn explain(reply: &Reply) -> String {
    serde_json::from_str::<MessageBody>(&reply.body)
        .ok()
        .and_then(|b| b.message)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| describe_body(&reply.body))
}

fn refused(reply: &Reply) -> SendError {
    let status = reply.status;
    let said = explain(reply);
    let text = format!("Mailgun answered {status}: {said}");
    let err = match status {
        401 | 403 => SendError::permanent(format!(
            "{text}; check the API key in spec.mailgun.apiKeySecretRef, the domain and the region"
        ))
        .with_auth(),
        429 => {
            let now = jiff::Timestamp::now();
            let retry_after = http::retry_after_in_text(&said, now)
                .or_else(|| http::retry_after(&reply.headers, now));
            SendError::transient(text).with_retry_after(retry_after)
        }
        408 | 421 => SendError::transient(text),
        500..=599 => SendError::ambiguous(format!(
            "{text}; Mailgun may still have sent the message, so it is not resent automatically"
        )),
        _ => SendError::permanent(text),
    };
    err.with_status(status)
}

/// A page of `GET /v3/{domain}/events`: `{"items": [...], "paging": {"next": "<url>", ...}}`.
#[derive(Deserialize)]
struct EventPage {
    #[serde(default)]
    items: Vec<Event>,
    #[serde(default)]
    paging: Paging,
}

#[derive(Deserialize, Default)]
struct Paging {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    event: String,
    #[serde(default, rename = "user-variables")]
    user_variables: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    message: EventMessage,
}

#[derive(Deserialize, Default)]
struct EventMessage {
    #[serde(default)]
    headers: serde_json::Map<String, serde_json::Value>,
}

/// Mailgun returns at most 300 events a page.
const EVENTS_LIMIT: &str = "300";
/// Pages followed at most for one message (one message has a handful of events).
const MAX_EVENT_PAGES: usize = 5;

impl Mailgun {
    /// The first event of `msg` (by Message-ID, and carrying its delivery key) that says
    /// Mailgun accepted it.
    async fn find_event(
        &self,
        msg: &OutgoingMessage,
        key: &str,
        timeout: Duration,
    ) -> Result<Option<String>, LookupAnswer> {
        let id = msg.message_id.trim_start_matches('<').trim_end_matches('>');
        let url = reqwest::Url::parse_with_params(
            &format!("{}/v3/{}/events", self.base, self.domain),
            [("message-id", id), ("limit", EVENTS_LIMIT)],
        )
        .map_err(|e| LookupAnswer::Failed(format!("the events URL is not valid: {e}")))?;
        let mut req = self.http.get(url);
        for _ in 0..MAX_EVENT_PAGES {
            let reply = lookup::ask(
                req.basic_auth("api", Some(self.key.expose()))
                    .timeout(timeout),
                "Mailgun",
            )
            .await?;
            if !(200..300).contains(&reply.status) {
                let hint = match reply.status {
                    401 | 403 => {
                        "; the key must be allowed to read events (a domain sending key is not)"
                    }
                    _ => "",
                };
                return Err(LookupAnswer::Failed(format!(
                    "Mailgun's events answered {}: {}{hint}",
                    reply.status,
                    explain(&reply)
                )));
            }
            let page: EventPage = serde_json::from_str(&reply.body).map_err(|_| {
                LookupAnswer::Failed(format!(
                    "Mailgun's events answered {} with {}",
                    reply.status,
                    describe_body(&reply.body)
                ))
            })?;
            if page.items.is_empty() {
                return Ok(None);
            }
            let ours = page.items.iter().find(|e| {
                e.event != "rejected"
                    && e.user_variables
                        .get(DELIVERY_KEY_VARIABLE)
                        .and_then(|v| v.as_str())
                        == Some(key)
            });
            if let Some(e) = ours {
                let id = e
                    .message
                    .headers
                    .get("message-id")
                    .and_then(|v| v.as_str())
                    .map(|id| format!("<{}>", id.trim_start_matches('<').trim_end_matches('>')))
                    .unwrap_or_else(|| msg.message_id.clone());
                return Ok(Some(id));
            }
            // Only pages of this same API are followed: the link comes from the server.
            match page.paging.next {
                Some(next) if next.starts_with(&self.base) => req = self.http.get(next),
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

#[derive(Deserialize)]
struct DomainReply {
    domain: DomainInfo,
}

#[derive(Deserialize)]
struct DomainInfo {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    is_disabled: bool,
}

#[async_trait::async_trait]
impl Provider for Mailgun {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Mailgun
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
        let (form, mut warnings) = self.form(msg)?;
        let req = self
            .http
            .post(format!("{}/v3/{}/messages", self.base, self.domain))
            .basic_auth("api", Some(self.key.expose()))
            .multipart(form);
        let reply = http::send(req, "Mailgun").await?;
        if !(200..300).contains(&reply.status) {
            return Err(refused(&reply));
        }
        let id = serde_json::from_str::<MessageBody>(&reply.body)
            .ok()
            .and_then(|b| b.id)
            .filter(|id| !id.trim().is_empty());
        let message_id = id.unwrap_or_else(|| {
            warnings
                .push("Mailgun returned no message id; recorded our own Message-ID instead".into());
            msg.message_id.clone()
        });
        Ok(SendReceipt {
            message_id,
            warnings,
        })
    }

    fn recall(&self) -> Recall {
        Recall::of(crate::api::ProviderKind::Mailgun)
    }

    /// Mailgun's events of the message's Message-ID, checked for its delivery key. Events
    /// arrive late: the caller trusts "absent" only after the sender's settling time.
    async fn look_up(&self, msg: &OutgoingMessage, timeout: Duration) -> LookupAnswer {
        let Some(key) = msg.delivery_key.as_deref() else {
            return LookupAnswer::Failed("the message has no delivery key to search by".into());
        };
        match self.find_event(msg, key, timeout).await {
            Ok(Some(message_id)) => LookupAnswer::Found { message_id },
            Ok(None) => LookupAnswer::Absent,
            Err(failed) => failed,
        }
    }

    async fn check_health(&self, timeout: Duration) -> HealthReport {
        let req = self
            .http
            .get(format!("{}/v4/domains/{}", self.base, self.domain))
            .basic_auth("api", Some(self.key.expose()))
            .timeout(timeout);
        let reply = match http::probe(req, "Mailgun").await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        let domain = &self.domain;
        let text = format!("Mailgun answered {}: {}", reply.status, explain(&reply));
        match reply.status {
            200..=299 => match serde_json::from_str::<DomainReply>(&reply.body) {
                Ok(DomainReply { domain: info }) if info.is_disabled => HealthReport::unhealthy(
                    reason::DOMAIN_DISABLED,
                    format!("Mailgun has disabled the domain {domain}"),
                ),
                Ok(DomainReply { domain: info }) => match info.state.as_deref() {
                    Some("active") => HealthReport::healthy(format!("domain {domain} is active")),
                    Some("unverified") => HealthReport::unhealthy(
                        reason::DOMAIN_UNVERIFIED,
                        format!(
                            "domain {domain} is not verified: add the DNS records Mailgun shows for it"
                        ),
                    ),
                    Some("disabled") => HealthReport::unhealthy(
                        reason::DOMAIN_DISABLED,
                        format!("Mailgun has disabled the domain {domain}"),
                    ),
                    other => HealthReport::unknown(
                        reason::UNEXPECTED_RESPONSE,
                        format!(
                            "domain {domain} is in state {other:?}, which kmailops does not know"
                        ),
                    ),
                },
                Err(e) => HealthReport::unknown(
                    reason::UNEXPECTED_RESPONSE,
                    format!(
                        "could not read Mailgun's domain answer ({e}): {}",
                        describe_body(&reply.body)
                    ),
                ),
            },
            // A domain sending key can send but may not read the domain, and an invalid key
            // gets the same answer: say we can not tell, never "healthy".
            401 | 403 => HealthReport::unknown(
                reason::CHECK_NOT_PERMITTED,
                format!(
                    "{text}; the key may read domain {domain} only if it is an account key (a sending key can send but not check), or it is invalid"
                ),
            ),
            404 => HealthReport::unhealthy(
                reason::DOMAIN_NOT_FOUND,
                format!("{text}; check spec.mailgun.domain and spec.mailgun.region"),
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

    fn spec(yaml: &str) -> MailgunSpec {
        serde_yaml::from_str(yaml).expect("mailgun spec")
    }

    fn base_of(yaml: &str) -> String {
        Mailgun::new(
            &spec(yaml),
            SecretValue::new("key-1234"),
            crate::provider::http_client(),
        )
        .expect("valid")
        .base
    }

    #[test]
    fn the_region_picks_the_base_url_unless_base_url_overrides_it() {
        let refs = "apiKeySecretRef: {name: s, key: k}";
        assert_eq!(
            base_of(&format!("{{domain: d.example.com, {refs}}}")),
            "https://api.mailgun.net"
        );
        assert_eq!(
            base_of(&format!("{{domain: d.example.com, region: EU, {refs}}}")),
            "https://api.eu.mailgun.net"
        );
        assert_eq!(
            base_of(&format!(
                "{{domain: d.example.com, region: EU, baseUrl: 'http://proxy.local:8080/', {refs}}}"
            )),
            "http://proxy.local:8080"
        );
    }
}
