//! Providers: one rendered [`OutgoingMessage`] in, one provider call out.
//!
//! One trait, one file per provider, and a factory keyed by the config's provider kind
//! ([`build_provider`]). The controller builds a provider once per sender config (and
//! Secret version) and reuses it, so connection pools live as long as the config does.

use std::sync::Arc;
use std::time::Duration;

use crate::api::{EmailSenderConfigSpec, ProviderKind, SecretKeyRef};
use crate::message::OutgoingMessage;

mod aws_credentials;
pub mod clients;
mod error;
mod health;
pub mod http;
mod limits;
pub mod lookup;
pub mod mailersend;
pub mod mailgun;
pub mod postmark;
pub mod resend;
mod secret;
pub mod sendgrid;
pub mod ses;
pub mod smtp;

pub use error::{ConfigError, ErrorClass, SendError};
pub use health::{HealthReport, reason};
pub use http::{HttpTimeouts, http_client, http_client_with};
pub use lookup::{LookupAnswer, Recall};
pub use secret::{Credentials, Loaded, SecretValue};

use secret::{LearnedSecrets, Redactor};

/// The provider accepted the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    /// The provider's id for the message (MailerSend's X-Message-Id, Mailgun's id, or the
    /// Message-ID we set for SMTP).
    pub message_id: String,
    /// Accepted, but with something the user should know (some recipients suppressed,
    /// tags dropped).
    pub warnings: Vec<String>,
}

/// One provider account, ready to send.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// Hands the message to the provider, once. Never retries by itself: retrying is the
    /// controller's decision, made from [`SendError::class`].
    async fn send(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError>;
    /// Checks that the account would take mail, within `timeout`.
    async fn check_health(&self, timeout: Duration) -> HealthReport;
    /// What this provider can tell about messages it accepted (see [`Recall`]).
    fn recall(&self) -> Recall {
        Recall::Nothing
    }
    /// Asks the provider, within `timeout`, whether it has `msg` (found by its delivery key).
    /// Read-only; only called where [`Provider::recall`] says it can answer.
    async fn look_up(&self, msg: &OutgoingMessage, timeout: Duration) -> LookupAnswer {
        let _ = (msg, timeout);
        LookupAnswer::Failed(format!("{} can not be asked about a message", self.kind()))
    }
}

/// The first Secret key a config needs (see [`required_secrets`]), with the field path to
/// name in messages.
pub fn required_secret(spec: &EmailSenderConfigSpec) -> Option<(&'static str, &SecretKeyRef)> {
    required_secrets(spec).into_iter().next()
}

/// Every Secret key a config needs, each with the field path that references it; the first
/// one's value goes into [`Credentials::secret`], all of them into
/// [`Credentials::by_field`]. Empty for configs that need none (SMTP without AUTH).
pub fn required_secrets(spec: &EmailSenderConfigSpec) -> Vec<(&'static str, &SecretKeyRef)> {
    let mut out = Vec::new();
    if let Some(ms) = &spec.mailersend {
        out.push((
            "spec.mailersend.apiTokenSecretRef",
            &ms.api_token_secret_ref,
        ));
    }
    if let Some(mg) = &spec.mailgun {
        out.push(("spec.mailgun.apiKeySecretRef", &mg.api_key_secret_ref));
    }
    if let Some(r) = spec
        .smtp
        .as_ref()
        .and_then(|s| s.password_secret_ref.as_ref())
    {
        out.push(("spec.smtp.passwordSecretRef", r));
    }
    if let Some(o) = spec.smtp.as_ref().and_then(|s| s.oauth2.as_ref()) {
        out.push((
            "spec.smtp.oauth2.clientSecretSecretRef",
            &o.client_secret_secret_ref,
        ));
    }
    if let Some(rs) = &spec.resend {
        out.push(("spec.resend.apiKeySecretRef", &rs.api_key_secret_ref));
    }
    if let Some(pm) = &spec.postmark {
        out.push((
            "spec.postmark.serverTokenSecretRef",
            &pm.server_token_secret_ref,
        ));
    }
    if let Some(sg) = &spec.sendgrid {
        out.push(("spec.sendgrid.apiKeySecretRef", &sg.api_key_secret_ref));
    }
    if let Some(ses) = &spec.ses {
        if let Some(r) = &ses.access_key_id_secret_ref {
            out.push(("spec.ses.accessKeyIdSecretRef", r));
        }
        if let Some(r) = &ses.secret_access_key_secret_ref {
            out.push(("spec.ses.secretAccessKeySecretRef", r));
        }
    }
    out
}

/// Loads every Secret value a config needs through `read` (which gets the field and the
/// reference and returns the raw bytes), for callers that have their own Secret source
/// (the operator's cache, manifest files). A trailing line break is dropped from each value.
/// Errors name the field and never contain a value.
pub fn load_credentials<E>(
    spec: &EmailSenderConfigSpec,
    mut read: impl FnMut(&'static str, &SecretKeyRef) -> Result<Vec<u8>, E>,
    not_text: impl Fn(&'static str, &SecretKeyRef) -> E,
) -> Result<Credentials, E> {
    let mut credentials = Credentials::default();
    for (i, (field, reference)) in required_secrets(spec).into_iter().enumerate() {
        let bytes = read(field, reference)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| not_text(field, reference))?;
        let value = secret::trim_secret_text(text);
        if i == 0 {
            credentials.secret = Some(SecretValue::new(value));
        }
        credentials = credentials.with(field, value);
    }
    Ok(credentials)
}

/// The value for `field`: from [`Credentials::by_field`], else `secret` when `field` is the
/// config's first reference. Empty values count as missing.
fn secret_for(
    spec: &EmailSenderConfigSpec,
    credentials: &Credentials,
    field: &str,
) -> Option<SecretValue> {
    let first = required_secret(spec).map(|(f, _)| f);
    credentials
        .by_field
        .get(field)
        .or_else(|| credentials.secret.as_ref().filter(|_| first == Some(field)))
        .filter(|s| !s.expose().trim().is_empty())
        .cloned()
}

/// Builds the provider a config selects. Errors name the field to fix. SMTP connection pools
/// are created here, so call it once per config and keep the result.
pub fn build_provider(
    spec: &EmailSenderConfigSpec,
    credentials: Credentials,
    http: &reqwest::Client,
) -> Result<Arc<dyn Provider>, ConfigError> {
    build_provider_with(spec, credentials, http, smtp::SmtpTimeouts::default())
}

/// [`build_provider`] with explicit SMTP time limits (tests use short ones).
pub fn build_provider_with(
    spec: &EmailSenderConfigSpec,
    credentials: Credentials,
    http: &reqwest::Client,
    smtp_timeouts: smtp::SmtpTimeouts,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let kind = spec.provider_kind().ok_or_else(|| {
        ConfigError::new(
            "spec",
            "set exactly one of mailersend, mailgun, smtp, ses, sendgrid, postmark or resend",
        )
    })?;
    let secret_of = |field: &str| secret_for(spec, &credentials, field);
    let secret = credentials
        .secret
        .clone()
        .filter(|s| !s.expose().trim().is_empty());
    let needs = |field: &str, what: &str| {
        ConfigError::new(
            field,
            format!("the {what} is missing or empty: put it into the referenced Secret key"),
        )
    };
    match kind {
        ProviderKind::MailerSend => {
            let ms = spec
                .mailersend
                .as_ref()
                .ok_or_else(|| needs("spec.mailersend", "section"))?;
            let token = secret.ok_or_else(|| {
                needs("spec.mailersend.apiTokenSecretRef", "MailerSend API token")
            })?;
            let redactor = Redactor::new(Some(&token), None);
            let provider = mailersend::MailerSend::new(&ms.base_url, token, http.clone())?;
            Ok(Arc::new(Redacting {
                inner: provider,
                redactor,
            }))
        }
        ProviderKind::Mailgun => {
            let mg = spec
                .mailgun
                .as_ref()
                .ok_or_else(|| needs("spec.mailgun", "section"))?;
            let key =
                secret.ok_or_else(|| needs("spec.mailgun.apiKeySecretRef", "Mailgun API key"))?;
            let redactor = Redactor::new(Some(&key), Some("api"));
            let provider = mailgun::Mailgun::new(mg, key, http.clone())?;
            Ok(Arc::new(Redacting {
                inner: provider,
                redactor,
            }))
        }
        ProviderKind::Smtp => {
            let s = spec
                .smtp
                .as_ref()
                .ok_or_else(|| needs("spec.smtp", "section"))?;
            if let Some(o) = &s.oauth2 {
                if s.password_secret_ref.is_some() {
                    return Err(ConfigError::new(
                        "spec.smtp.passwordSecretRef",
                        "set either passwordSecretRef or oauth2, not both",
                    ));
                }
                let field = "spec.smtp.oauth2.clientSecretSecretRef";
                let client_secret =
                    secret_of(field).ok_or_else(|| needs(field, "OAuth2 client secret"))?;
                let token_url = base_url_keep_path("spec.smtp.oauth2.tokenUrl", &o.token_url)?;
                let learned = LearnedSecrets::default();
                let redactor =
                    Redactor::many(&[&client_secret], None).with_learned(learned.clone());
                let tokens = smtp::oauth2::TokenSource::new(
                    http.clone(),
                    token_url,
                    o.client_id.trim().to_string(),
                    client_secret,
                    o.scope.clone().filter(|s| !s.trim().is_empty()),
                    learned,
                );
                let provider =
                    smtp::Smtp::with_oauth2(s, &spec.sender.address, tokens, smtp_timeouts)?;
                return Ok(Arc::new(Redacting {
                    inner: provider,
                    redactor,
                }));
            }
            let password = match (&s.username, s.password_secret_ref.is_some()) {
                (Some(_), true) => Some(
                    secret.ok_or_else(|| needs("spec.smtp.passwordSecretRef", "SMTP password"))?,
                ),
                (None, false) => None,
                _ => {
                    return Err(ConfigError::new(
                        "spec.smtp.username",
                        "set username and passwordSecretRef together, or neither",
                    ));
                }
            };
            let redactor = Redactor::new(password.as_ref(), s.username.as_deref());
            let provider = smtp::Smtp::new(s, &spec.sender.address, password, smtp_timeouts)?;
            Ok(Arc::new(Redacting {
                inner: provider,
                redactor,
            }))
        }
        ProviderKind::Resend => {
            let rs = spec
                .resend
                .as_ref()
                .ok_or_else(|| needs("spec.resend", "section"))?;
            let field = "spec.resend.apiKeySecretRef";
            let key = secret_of(field).ok_or_else(|| needs(field, "Resend API key"))?;
            let redactor = Redactor::new(Some(&key), None);
            let provider = resend::Resend::new(rs, &spec.sender.address, key, http.clone())?;
            Ok(Arc::new(Redacting {
                inner: provider,
                redactor,
            }))
        }
        ProviderKind::Ses => {
            let ses = spec
                .ses
                .as_ref()
                .ok_or_else(|| needs("spec.ses", "section"))?;
            let learned = LearnedSecrets::default();
            let (credentials, redactor) = match (
                &ses.access_key_id_secret_ref,
                &ses.secret_access_key_secret_ref,
            ) {
                (Some(_), Some(_)) => {
                    let id_field = "spec.ses.accessKeyIdSecretRef";
                    let secret_field = "spec.ses.secretAccessKeySecretRef";
                    let id =
                        secret_of(id_field).ok_or_else(|| needs(id_field, "AWS access key ID"))?;
                    let key = secret_of(secret_field)
                        .ok_or_else(|| needs(secret_field, "AWS secret access key"))?;
                    let redactor = Redactor::many(&[&key], None);
                    let keys = aws_credentials::AwsKeys {
                        access_key_id: id.expose().trim().to_string(),
                        secret_access_key: key,
                        session_token: None,
                        expires: None,
                        source: "spec.ses.accessKeyIdSecretRef and secretAccessKeySecretRef",
                    };
                    (aws_credentials::AwsCredentials::Static(keys), redactor)
                }
                (None, None) => (
                    aws_credentials::AwsCredentials::Chain(aws_credentials::DefaultChain::new(
                        http.clone(),
                        &ses.region,
                        learned.clone(),
                    )),
                    Redactor::default(),
                ),
                _ => {
                    return Err(ConfigError::new(
                        "spec.ses.accessKeyIdSecretRef",
                        "set accessKeyIdSecretRef and secretAccessKeySecretRef together, or neither (for the AWS default credential chain)",
                    ));
                }
            };
            let provider = ses::Ses::new(ses, credentials, http.clone())?;
            Ok(Arc::new(Redacting {
                inner: provider,
                redactor: redactor.with_learned(learned),
            }))
        }
        ProviderKind::Postmark => {
            let pm = spec
                .postmark
                .as_ref()
                .ok_or_else(|| needs("spec.postmark", "section"))?;
            let field = "spec.postmark.serverTokenSecretRef";
            let token = secret_of(field).ok_or_else(|| needs(field, "Postmark server token"))?;
            let redactor = Redactor::new(Some(&token), None);
            let provider = postmark::Postmark::new(pm, token, http.clone())?;
            Ok(Arc::new(Redacting {
                inner: provider,
                redactor,
            }))
        }
        ProviderKind::SendGrid => {
            let sg = spec
                .sendgrid
                .as_ref()
                .ok_or_else(|| needs("spec.sendgrid", "section"))?;
            let field = "spec.sendgrid.apiKeySecretRef";
            let key = secret_of(field).ok_or_else(|| needs(field, "SendGrid API key"))?;
            let redactor = Redactor::new(Some(&key), None);
            let provider = sendgrid::SendGrid::new(sg, key, http.clone())?;
            Ok(Arc::new(Redacting {
                inner: provider,
                redactor,
            }))
        }
    }
}

/// Wraps every provider so no text it returns can carry the secret, whatever the server
/// echoed back.
struct Redacting<P> {
    inner: P,
    redactor: Redactor,
}

#[async_trait::async_trait]
impl<P: Provider> Provider for Redacting<P> {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<SendReceipt, SendError> {
        match self.inner.send(msg).await {
            Ok(mut receipt) => {
                for w in &mut receipt.warnings {
                    *w = self.redactor.scrub(w);
                }
                Ok(receipt)
            }
            Err(mut err) => {
                err.message = self.redactor.scrub(&err.message);
                Err(err)
            }
        }
    }

    async fn check_health(&self, timeout: Duration) -> HealthReport {
        self.inner
            .check_health(timeout)
            .await
            .map_message(|m| self.redactor.scrub(&m))
    }

    fn recall(&self) -> Recall {
        self.inner.recall()
    }

    async fn look_up(&self, msg: &OutgoingMessage, timeout: Duration) -> LookupAnswer {
        match self.inner.look_up(msg, timeout).await {
            LookupAnswer::Failed(why) => LookupAnswer::Failed(self.redactor.scrub(&why)),
            other => other,
        }
    }
}

/// Validates a full endpoint URL (one that is called as is, like an OAuth2 token URL).
fn base_url_keep_path(field: &str, raw: &str) -> Result<String, ConfigError> {
    let example = "https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token";
    base_url(field, raw, example)?;
    Ok(raw.trim().to_string())
}

/// Validates an API base URL and removes a trailing slash so paths can be appended.
pub(crate) fn base_url(field: &str, raw: &str, example: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| {
        ConfigError::new(
            field,
            format!("`{raw}` is not a URL ({e}); use e.g. {example}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            field,
            format!("`{raw}` must be an http(s) URL with a host, e.g. {example}"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            field,
            format!("`{raw}` must not have a query or fragment"),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}
