//! Amazon SES v2: `SendEmail` (`POST /v2/email/outbound-emails`) signed with SigV4 (signing
//! name `ses`) over the shared HTTP client; health via `GetAccount` (`GET /v2/email/account`).
//!
//! No AWS SDK: its client retries by itself, and a retry after SES accepted a message is a
//! duplicate. Each call here is exactly one request; retrying is the controller's decision.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::aws_credentials::{AwsCredentials, AwsKeys};
use super::http::{self, Reply, describe_body};
use super::limits::{self, RecipientLimits};
use super::{ConfigError, HealthReport, Provider, SendError, SendReceipt, reason};
use crate::api::ProviderKind;
use crate::api::sender_config::SesSpec;
use crate::message::{Mailbox, OutgoingMessage};

/// SES takes at most 50 recipients (To, Cc and Bcc together) a message.
pub const MAX_RECIPIENTS: usize = 50;
/// SES v2 refuses messages above 40 MB, attachments base64-encoded.
pub const MAX_BYTES: usize = 40 * 1024 * 1024;
/// The `EmailTags` name that carries the delivery key.
pub const DELIVERY_KEY_TAG: &str = "kmailops-delivery-key";
/// SES keeps at most 50 tags a message.
const MAX_TAGS: usize = 50;
/// The SigV4 signing name of SES.
const SIGNING_NAME: &str = "ses";

/// An SES account in one region.
pub struct Ses {
    endpoint: String,
    region: String,
    configuration_set: Option<String>,
    credentials: AwsCredentials,
    http: reqwest::Client,
}

impl Ses {
    pub(crate) fn new(
        spec: &SesSpec,
        credentials: AwsCredentials,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let region = spec.region.trim().to_string();
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ConfigError::new(
                "spec.ses.region",
                format!("`{}` is not an AWS region like eu-west-1", spec.region),
            ));
        }
        let default = format!("https://email.{region}.amazonaws.com");
        let endpoint = super::base_url(
            "spec.ses.endpoint",
            spec.endpoint.as_deref().unwrap_or(&default),
            &default,
        )?;
        Ok(Ses {
            endpoint,
            region,
            configuration_set: spec
                .configuration_set_name
                .clone()
                .filter(|c| !c.trim().is_empty()),
            credentials,
            http,
        })
    }

    /// A request signed with SigV4. The signature covers method, path, `host`,
    /// `content-type`, `x-amz-date` (and `x-amz-security-token`) and the body.
    fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        keys: &AwsKeys,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        let url = format!("{}{path}", self.endpoint);
        let identity = aws_credential_types::Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.expose().to_string(),
            keys.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "kmailops",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SIGNING_NAME)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| SendError::permanent(format!("could not sign the SES request: {e}")))?
            .into();
        let content_type = "application/json";
        let headers = [("content-type", content_type)];
        let signable = SignableRequest::new(
            method.as_str(),
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| SendError::permanent(format!("could not sign the SES request: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| SendError::permanent(format!("could not sign the SES request: {e}")))?
            .into_parts();
        let mut req = self
            .http
            .request(method, &url)
            .header("content-type", content_type)
            .body(body);
        for (name, value) in instructions.headers() {
            req = req.header(name, value);
        }
        Ok(req)
    }
}

/// A mailbox as SES wants it: a non-ASCII display name as an RFC 2047 encoded word.
fn address(m: &Mailbox) -> String {
    match &m.name {
        Some(name) if !name.is_ascii() => format!(
            "=?UTF-8?B?{}?= <{}>",
            STANDARD.encode(name.as_bytes()),
            m.address
        ),
        _ => m.to_string(),
    }
}

fn addresses(ms: &[Mailbox]) -> Vec<String> {
    ms.iter().map(address).collect()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Destination {
    to_addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cc_addresses: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bcc_addresses: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Text<'a> {
    data: &'a str,
    charset: &'static str,
}

fn utf8(data: &str) -> Text<'_> {
    Text {
        data,
        charset: "UTF-8",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<Text<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NameValue<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Attachment<'a> {
    raw_content: String,
    file_name: &'a str,
    content_type: &'a str,
    content_disposition: &'static str,
    content_transfer_encoding: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Simple<'a> {
    subject: Text<'a>,
    body: Body<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<NameValue<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<Attachment<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Content<'a> {
    simple: Simple<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendEmail<'a> {
    from_email_address: String,
    destination: Destination,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reply_to_addresses: Vec<String>,
    content: Content<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    email_tags: Vec<Tag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration_set_name: Option<&'a str>,
}

/// SES tags: `name:value` (or `name=value`) as that pair, a plain tag as `{tag: "true"}`,
/// characters outside ASCII letters, digits, `_` and `-` as `_` (with a warning); the
/// delivery key as `kmailops-delivery-key`.
fn tags(msg: &OutgoingMessage, warnings: &mut Vec<String>) -> Vec<Tag> {
    let clean = |s: &str| limits::ascii_tag(s).unwrap_or_else(|| s.to_string());
    let mut fixed = Vec::new();
    let mut out: Vec<Tag> = msg
        .tags
        .iter()
        .map(|tag| {
            let (name, value) = tag.split_once([':', '=']).unwrap_or((tag.as_str(), "true"));
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
            "SES tags take only ASCII letters, digits, _ and -; sent {}",
            fixed.join(", ")
        ));
    }
    if let Some(key) = &msg.delivery_key {
        out.push(Tag {
            name: DELIVERY_KEY_TAG.into(),
            value: key.clone(),
        });
    }
    out.truncate(MAX_TAGS);
    out
}

impl Ses {
    fn body<'a>(&'a self, msg: &'a OutgoingMessage, warnings: &mut Vec<String>) -> SendEmail<'a> {
        SendEmail {
            from_email_address: address(&msg.from),
            destination: Destination {
                to_addresses: addresses(&msg.to),
                cc_addresses: addresses(&msg.cc),
                bcc_addresses: addresses(&msg.bcc),
            },
            reply_to_addresses: msg.reply_to.iter().map(address).collect(),
            content: Content {
                simple: Simple {
                    subject: utf8(&msg.subject),
                    body: Body {
                        text: msg.text.as_deref().map(utf8),
                        html: msg.html.as_deref().map(utf8),
                    },
                    headers: msg
                        .headers
                        .iter()
                        .map(|(name, value)| NameValue { name, value })
                        .collect(),
                    attachments: msg
                        .attachments
                        .iter()
                        .map(|a| Attachment {
                            raw_content: STANDARD.encode(&a.content),
                            file_name: &a.filename,
                            content_type: &a.content_type,
                            content_disposition: "ATTACHMENT",
                            content_transfer_encoding: "BASE64",
                        })
                        .collect(),
                },
            },
            email_tags: tags(msg, warnings),
            configuration_set_name: self.configuration_set.as_deref(),
        }
    }
}

/// The error type: `x-amzn-ErrorType` (`MessageRejected:http://...` loses its suffix), else
/// the body's `__type` / `code`.
fn error_type(reply: &Reply) -> String {
    #[derive(Deserialize, Default)]
    struct Typed {
        #[serde(default, rename = "__type")]
        kind: Option<String>,
        #[serde(default)]
        code: Option<String>,
    }
    let raw = reply
        .headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            let t: Typed = serde_json::from_str(&reply.body).unwrap_or_default();
            t.kind.or(t.code)
        })
        .unwrap_or_default();
    let raw = raw.split(':').next().unwrap_or_default();
    // `__type` may be namespaced: `com.amazonaws.sesv2#MessageRejected`.
    raw.rsplit('#').next().unwrap_or_default().to_string()
}

fn error_message(reply: &Reply) -> String {
    #[derive(Deserialize, Default)]
    struct Msg {
        #[serde(default)]
        message: Option<String>,
        #[serde(default, rename = "Message")]
        message_upper: Option<String>,
    }
    let m: Msg = serde_json::from_str(&reply.body).unwrap_or_default();
    m.message
        .or(m.message_upper)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| describe_body(&reply.body))
}

fn explain(reply: &Reply) -> String {
    let kind = error_type(reply);
    let message = error_message(reply);
    if kind.is_empty() {
        message
    } else {
        format!("{kind}: {message}")
    }
}

/// Types that say the credentials or their permissions are wrong.
fn is_auth_type(kind: &str) -> bool {
    matches!(
        kind,
        "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "AccessDeniedException"
            | "IncompleteSignature"
            | "InvalidClientTokenId"
            | "MissingAuthenticationToken"
            | "ExpiredTokenException"
            | "ExpiredToken"
    )
}

fn refused(reply: &Reply, source: &str) -> SendError {
    let status = reply.status;
    let kind = error_type(reply);
    let text = format!("SES answered {status}: {}", explain(reply));
    let err = match (status, kind.as_str()) {
        (_, "MessageRejected") => SendError::permanent(text),
        (_, "MailFromDomainNotVerifiedException" | "AccountSuspendedException" | "SendingPausedException") => {
            SendError::permanent(format!(
                "{text}; this SES account or identity may not send now, so the Email moves on to the next fallback"
            ))
            .with_auth()
        }
        (_, "TooManyRequestsException" | "LimitExceededException" | "ThrottlingException") | (429, _) => {
            SendError::transient(format!("{text}; SES throttled the request or a sending quota is reached"))
                .with_retry_after(http::retry_after(&reply.headers, jiff::Timestamp::now()))
        }
        (_, k) if is_auth_type(k) => SendError::permanent(format!(
            "{text}; check the credentials (from {source}), that they may call ses:SendEmail, and spec.ses.region"
        ))
        .with_auth(),
        (401 | 403, _) => SendError::permanent(format!("{text}; check the credentials (from {source})")).with_auth(),
        (408, _) => SendError::transient(text),
        (500..=599, _) => SendError::ambiguous(format!(
            "{text}; SES may still have sent the message, so it is not resent automatically"
        )),
        _ => SendError::permanent(text),
    };
    err.with_status(status)
}

#[derive(Deserialize)]
struct Sent {
    #[serde(rename = "MessageId")]
    message_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Account {
    #[serde(default)]
    sending_enabled: Option<bool>,
    #[serde(default)]
    production_access_enabled: Option<bool>,
    #[serde(default)]
    enforcement_status: Option<String>,
    #[serde(default)]
    send_quota: Option<SendQuota>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendQuota {
    #[serde(default)]
    max24_hour_send: Option<f64>,
    #[serde(default)]
    sent_last24_hours: Option<f64>,
}

fn account_report(body: &str, region: &str) -> HealthReport {
    let Ok(a) = serde_json::from_str::<Account>(body) else {
        return HealthReport::unknown(
            reason::UNEXPECTED_RESPONSE,
            format!("could not read the SES account: {}", describe_body(body)),
        );
    };
    if a.sending_enabled == Some(false) || a.enforcement_status.as_deref() == Some("SHUTDOWN") {
        return HealthReport::unhealthy(
            reason::PROVIDER_ERROR,
            format!(
                "sending is paused or shut down for this SES account in {region} (enforcement status {})",
                a.enforcement_status.as_deref().unwrap_or("unknown")
            ),
        );
    }
    if let Some(q) = &a.send_quota
        && let (Some(max), Some(sent)) = (q.max24_hour_send, q.sent_last24_hours)
        && max > 0.0
        && sent >= max
    {
        return HealthReport::unhealthy(
            reason::QUOTA_EXHAUSTED,
            format!("the SES quota of {max} messages per 24 hours in {region} is used up"),
        );
    }
    let sandbox = if a.production_access_enabled == Some(false) {
        " (sandbox: only verified recipients receive mail)"
    } else {
        ""
    };
    HealthReport::healthy(format!(
        "the credentials were accepted and sending is enabled in {region}{sandbox}"
    ))
}

#[async_trait::async_trait]
impl Provider for Ses {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ses
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
        limits::recipients(
            "SES",
            msg,
            RecipientLimits {
                total: Some(MAX_RECIPIENTS),
                to: None,
            },
        )?;
        limits::size("SES", msg, MAX_BYTES)?;
        let mut warnings = Vec::new();
        let body = serde_json::to_vec(&self.body(msg, &mut warnings))
            .map_err(|e| SendError::permanent(format!("could not encode the SES request: {e}")))?;
        let keys = self
            .credentials
            .get()
            .await
            .map_err(|e| e.into_send_error())?;
        let req = self.signed(
            reqwest::Method::POST,
            "/v2/email/outbound-emails",
            body,
            &keys,
        )?;
        let reply = http::send(req, "SES").await?;
        if !(200..300).contains(&reply.status) {
            let err = refused(&reply, keys.source);
            if err.auth {
                self.credentials.invalidate().await;
            }
            return Err(err);
        }
        let id = serde_json::from_str::<Sent>(&reply.body)
            .ok()
            .and_then(|s| s.message_id)
            .filter(|id| !id.trim().is_empty());
        let message_id = id.unwrap_or_else(|| {
            warnings.push("SES returned no MessageId; recorded our own Message-ID instead".into());
            msg.message_id.clone()
        });
        Ok(SendReceipt {
            message_id,
            warnings,
        })
    }

    async fn check_health(&self, timeout: Duration) -> HealthReport {
        let keys = match tokio::time::timeout(timeout, self.credentials.get()).await {
            Ok(Ok(keys)) => keys,
            Ok(Err(e)) if e.transient => {
                return HealthReport::unhealthy(reason::UNREACHABLE, e.message);
            }
            Ok(Err(e)) => return HealthReport::unhealthy(reason::AUTH_FAILED, e.message),
            Err(_) => {
                return HealthReport::unhealthy(
                    reason::TIMEOUT,
                    "fetching AWS credentials did not finish in time",
                );
            }
        };
        let req = match self.signed(reqwest::Method::GET, "/v2/email/account", Vec::new(), &keys) {
            Ok(req) => req.timeout(timeout),
            Err(e) => return HealthReport::unhealthy(reason::AUTH_FAILED, e.message),
        };
        let reply = match http::probe(req, "SES").await {
            Ok(reply) => reply,
            Err(report) => return report,
        };
        let kind = error_type(&reply);
        let text = format!("SES answered {}: {}", reply.status, explain(&reply));
        match reply.status {
            200..=299 => account_report(&reply.body, &self.region),
            // A least-privilege policy may allow ses:SendEmail but not ses:GetAccount.
            403 if kind == "AccessDeniedException" => HealthReport::unknown(
                reason::CHECK_NOT_PERMITTED,
                format!(
                    "{text}; the credentials may not call ses:GetAccount, so the check can not tell whether sending works"
                ),
            ),
            401 | 403 => {
                self.credentials.invalidate().await;
                HealthReport::unhealthy(
                    reason::AUTH_FAILED,
                    format!("{text}; check the credentials (from {})", keys.source),
                )
            }
            429 => HealthReport::unknown(reason::RATE_LIMITED, text),
            500..=599 => HealthReport::unhealthy(reason::PROVIDER_ERROR, text),
            _ => HealthReport::unknown(reason::UNEXPECTED_RESPONSE, text),
        }
    }
}
