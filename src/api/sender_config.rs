//! `EmailSenderConfig`: one provider account that Emails are sent through.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AllowedNamespaces, NO_LINE_BREAKS, SecretKeyRef};

/// One provider account (MailerSend, Mailgun, SMTP, Amazon SES, SendGrid, Postmark or Resend) and how to use it: sender identity,
/// retries, rate limit, fallbacks, health checks, and who may reference it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kmailops.io",
    version = "v1alpha1",
    kind = "EmailSenderConfig",
    namespaced,
    status = "EmailSenderConfigStatus",
    shortname = "esc",
    category = "kmailops",
    derive = "PartialEq",
    doc = "EmailSenderConfig is one email provider account (MailerSend, Mailgun, SMTP, Amazon SES, SendGrid, Postmark or Resend) that Emails are sent through.",
    printcolumn(
        name = "Display-Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(name = "Provider", type_ = "string", json_path = ".status.provider"),
    printcolumn(name = "Sender", type_ = "string", json_path = ".spec.sender.address"),
    printcolumn(name = "Default", type_ = "boolean", json_path = ".spec.default"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Healthy\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.mailersend), has(self.mailgun), has(self.smtp), has(self.resend), has(self.postmark), has(self.sendgrid), has(self.ses)].filter(p, p).size() == 1"
).message("exactly one of mailersend, mailgun, smtp, ses, sendgrid, postmark or resend must be set"))]
pub struct EmailSenderConfigSpec {
    /// A human name for this sender, e.g. `Shop notifications (EU)`; shown by `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new(NO_LINE_BREAKS).message("displayName must not contain CR or LF"))]
    pub display_name: Option<String>,
    /// The From identity of every Email sent through this config.
    pub sender: Sender,
    /// Default Reply-To mailbox (`a@b.c` or `Name <a@b.c>`); an Email's own replyTo wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 320))]
    #[x_kube(validation = Rule::new(NO_LINE_BREAKS).message("replyTo must not contain CR or LF"))]
    pub reply_to: Option<String>,
    /// Use this config for Emails that name no sender. At most one default per namespace;
    /// two make such Emails fail with AmbiguousDefault instead of guessing.
    #[serde(default)]
    pub default: bool,
    /// Keep the object but send nothing through it; Emails move on to `fallback` senders.
    #[serde(default)]
    pub disabled: bool,
    /// Send through the MailerSend HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailersend: Option<MailerSendSpec>,
    /// Send through the Mailgun HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailgun: Option<MailgunSpec>,
    /// Send through an SMTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSpec>,
    /// Send through the Resend HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend: Option<ResendSpec>,
    /// Send through the Postmark HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmark: Option<PostmarkSpec>,
    /// Send through the SendGrid v3 HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendgrid: Option<SendGridSpec>,
    /// Send through Amazon SES (API v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ses: Option<SesSpec>,
    /// Retry policy for transient errors, per Email on this sender.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Token bucket shared by every Email sent through this config. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Other EmailSenderConfigs in this namespace, tried in order when this one is disabled,
    /// unhealthy, out of transient retries, or refuses its credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 1, max = 253)))]
    pub fallback: Vec<String>,
    /// Which namespaces may send through this config. Default: only its own.
    #[serde(default)]
    pub allowed_namespaces: AllowedNamespaces,
    /// How often the provider is checked.
    #[serde(default)]
    pub health_check: HealthCheckSpec,
    /// Asking the provider whether a message already went out, before a first send and before
    /// resending after an answer that may have meant "accepted" (Postmark, Mailgun).
    #[serde(default)]
    pub lookup: LookupSpec,
}

/// The From identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
pub struct Sender {
    /// RFC 5322 addr-spec, e.g. `notifications@example.com`.
    #[schemars(length(min = 3, max = 254))]
    #[x_kube(
        validation = Rule::new(NO_LINE_BREAKS).message("sender.address must not contain CR or LF"),
        validation = Rule::new("self.matches('^[^@\\\\s<>]+@[^@\\\\s<>]+$')")
            .message("sender.address must be a bare address like name@example.com")
    )]
    pub address: String,
    /// Display name, e.g. `Example Notifications`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new(NO_LINE_BREAKS).message("sender.name must not contain CR or LF"))]
    pub name: Option<String>,
}

/// MailerSend account settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailerSendSpec {
    /// Secret key holding the API token (same namespace).
    pub api_token_secret_ref: SecretKeyRef,
    /// API base URL, for proxies and tests.
    #[serde(default = "default_mailersend_base_url")]
    #[schemars(length(min = 8, max = 2048))]
    pub base_url: String,
}

/// The default MailerSend API base URL.
pub fn default_mailersend_base_url() -> String {
    "https://api.mailersend.com/v1".to_string()
}

/// Mailgun account settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailgunSpec {
    /// Sending domain, e.g. `mg.example.com`.
    #[schemars(length(min = 1, max = 253))]
    pub domain: String,
    /// Account region; picks the API base URL.
    #[serde(default)]
    pub region: MailgunRegion,
    /// Secret key holding the API key (same namespace).
    pub api_key_secret_ref: SecretKeyRef,
    /// API base URL; overrides `region`. For proxies and tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    pub base_url: Option<String>,
}

/// Mailgun region.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MailgunRegion {
    /// `https://api.mailgun.net`
    #[default]
    US,
    /// `https://api.eu.mailgun.net`
    EU,
}

impl MailgunRegion {
    /// The API base URL of the region.
    pub fn base_url(self) -> &'static str {
        match self {
            MailgunRegion::US => "https://api.mailgun.net",
            MailgunRegion::EU => "https://api.eu.mailgun.net",
        }
    }
}

/// Resend account settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResendSpec {
    /// Secret key holding the API key (`re_...`, same namespace); sent as a Bearer token.
    pub api_key_secret_ref: SecretKeyRef,
    /// API base URL, for proxies and tests. Default `https://api.resend.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    pub base_url: Option<String>,
}

/// The default Resend API base URL.
pub const RESEND_BASE_URL: &str = "https://api.resend.com";

/// Amazon SES (API v2) settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.accessKeyIdSecretRef) == has(self.secretAccessKeySecretRef)")
    .message("ses.accessKeyIdSecretRef and ses.secretAccessKeySecretRef must be set together"))]
pub struct SesSpec {
    /// AWS region of the SES account, e.g. `eu-west-1`.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z0-9-]+$"))]
    pub region: String,
    /// Secret key holding the access key ID (same namespace); requires
    /// secretAccessKeySecretRef. Neither: the AWS default credential chain (environment, web
    /// identity / IRSA, EKS Pod Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the secret access key (same namespace); requires accessKeyIdSecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_secret_ref: Option<SecretKeyRef>,
    /// SES configuration set for event publishing, dedicated IPs or suppression settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub configuration_set_name: Option<String>,
    /// API base URL, for proxies, VPC endpoints and tests. Default
    /// `https://email.<region>.amazonaws.com`. Requests are signed for the service `ses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    pub endpoint: Option<String>,
}

/// Postmark server settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostmarkSpec {
    /// Secret key holding the server token (same namespace); sent as `X-Postmark-Server-Token`.
    pub server_token_secret_ref: SecretKeyRef,
    /// The message stream to send through, e.g. `outbound` (transactional) or a broadcast
    /// stream's ID.
    #[serde(default = "default_postmark_stream")]
    #[schemars(length(min = 1, max = 100))]
    pub message_stream: String,
    /// API base URL, for proxies and tests. Default `https://api.postmarkapp.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    pub base_url: Option<String>,
}

fn default_postmark_stream() -> String {
    "outbound".into()
}

/// The default Postmark API base URL.
pub const POSTMARK_BASE_URL: &str = "https://api.postmarkapp.com";

/// SendGrid account settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendGridSpec {
    /// Secret key holding the API key (`SG....`, same namespace); sent as a Bearer token.
    pub api_key_secret_ref: SecretKeyRef,
    /// Where the account's data lives; picks the API base URL.
    #[serde(default)]
    pub region: SendGridRegion,
    /// API base URL; overrides `region`. For proxies and tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048))]
    pub base_url: Option<String>,
}

/// SendGrid region.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SendGridRegion {
    /// `https://api.sendgrid.com`
    #[default]
    Global,
    /// `https://api.eu.sendgrid.com` (EU regional subusers)
    EU,
}

impl SendGridRegion {
    /// The API base URL of the region.
    pub fn base_url(self) -> &'static str {
        match self {
            SendGridRegion::Global => "https://api.sendgrid.com",
            SendGridRegion::EU => "https://api.eu.sendgrid.com",
        }
    }
}

/// SMTP server settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.oauth2) || has(self.username) == has(self.passwordSecretRef)")
        .message("smtp.username and smtp.passwordSecretRef must be set together"),
    validation = Rule::new("!has(self.oauth2) || (has(self.username) && !has(self.passwordSecretRef))")
        .message("smtp.oauth2 needs smtp.username (the mailbox) and no smtp.passwordSecretRef")
)]
pub struct SmtpSpec {
    /// Server host name or IP address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Server port. Default: 587 for StartTLS, 465 for TLS, 25 for None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// `StartTLS` (default; the upgrade is required, never skipped), `TLS` (implicit TLS,
    /// usually port 465) or `None` (no encryption; only for local catchers, flagged by a
    /// warning condition).
    #[serde(default)]
    pub tls: SmtpTls,
    /// AUTH user name; requires passwordSecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub username: Option<String>,
    /// Secret key holding the AUTH password (same namespace); requires username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// AUTH XOAUTH2 with a token from the OAuth2 client-credentials grant, instead of a
    /// password; `username` is the mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<SmtpOAuth2Spec>,
    /// Extra trusted root certificates, PEM, for servers with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub ca_bundle: Option<String>,
    /// Accept any server certificate. Testing only: shown as a warning condition and Event.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name sent in EHLO. Default: the operator host's fully qualified name where one
    /// can be found, else its bare host name; some relays refuse a bare pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HELO_NAME_PATTERN))]
    pub helo_name: Option<String>,
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens.
pub const HELO_NAME_PATTERN: &str = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$";

/// OAuth2 client-credentials settings for SMTP AUTH XOAUTH2.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpOAuth2Spec {
    /// The token endpoint, e.g.
    /// `https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`.
    #[schemars(length(min = 8, max = 2048))]
    pub token_url: String,
    /// The application (client) ID.
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,
    /// Secret key holding the client secret (same namespace).
    pub client_secret_secret_ref: SecretKeyRef,
    /// The scope to ask for, e.g. `https://outlook.office365.com/.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub scope: Option<String>,
}

impl SmtpSpec {
    /// The port to connect to, defaulted from the TLS mode.
    pub fn effective_port(&self) -> u16 {
        let fallback = match self.tls {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        };
        self.port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(fallback)
    }
}

/// SMTP transport security.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS; a server that does not offer it is an error.
    #[default]
    #[serde(rename = "StartTLS")]
    StartTls,
    /// TLS from the first byte (implicit TLS, port 465).
    #[serde(rename = "TLS")]
    Tls,
    /// No encryption at all. Only for development mail catchers.
    None,
}

/// Retry policy for transient errors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// At most this many attempts per Email on this sender before moving to the next
    /// fallback or failing, even within `maxDuration`. Default: no cap but `maxDuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<i32>,
    /// How long after the first attempt transient failures are still retried (and how long
    /// an Email waits for an unhealthy sender with no usable fallback), so a provider or MTA
    /// restart of a few minutes loses nothing.
    #[serde(default = "default_max_duration")]
    #[schemars(length(max = 32), regex(pattern = super::common::DURATION_PATTERN))]
    pub max_duration: String,
    /// First backoff; doubles per attempt, with jitter.
    #[serde(default = "default_initial_backoff")]
    #[schemars(regex(pattern = super::common::DURATION_PATTERN))]
    pub initial_backoff: String,
    /// Upper bound of the backoff.
    #[serde(default = "default_max_backoff")]
    #[schemars(regex(pattern = super::common::DURATION_PATTERN))]
    pub max_backoff: String,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_attempts: None,
            max_duration: default_max_duration(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_max_duration() -> String {
    "30m".into()
}

impl RetrySpec {
    /// `maxDuration`, parsed (the schema's pattern has checked its form; 30 minutes if not).
    pub fn max_duration(&self) -> std::time::Duration {
        humantime::parse_duration(&self.max_duration)
            .unwrap_or(std::time::Duration::from_secs(30 * 60))
    }

    /// Whether another attempt is due after `attempts` attempts, the next one planned at
    /// `next`, the first one made at `first`.
    pub fn allows_another(
        &self,
        attempts: i32,
        first: jiff::Timestamp,
        next: jiff::Timestamp,
    ) -> bool {
        let within_cap = self.max_attempts.is_none_or(|cap| attempts < cap);
        let deadline = first
            .checked_add(jiff::SignedDuration::try_from(self.max_duration()).unwrap_or_default())
            .unwrap_or(jiff::Timestamp::MAX);
        within_cap && next <= deadline
    }
}
fn default_initial_backoff() -> String {
    "5s".into()
}
fn default_max_backoff() -> String {
    "10m".into()
}

/// Token bucket shared by all Emails using the sender.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained sends per minute.
    #[schemars(range(min = 1, max = 1000000))]
    pub per_minute: i32,
    /// Sends allowed at once above the sustained rate. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub burst: Option<i32>,
}

/// Asking the provider before sending what may already be out (see docs/exactly-once.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LookupSpec {
    /// Never ask the provider: a first send goes out without a look-up, and an answer that
    /// may have meant "accepted" leaves the Email `Unknown` for a person, as with providers
    /// that can not be asked.
    #[serde(default)]
    pub disabled: bool,
    /// How long after a hand-over the provider's record is complete, so that not finding the
    /// message means it was not accepted (Mailgun's events arrive late; default `30m`).
    /// Until then a resend waits (`Retrying`, reason `AwaitingProviderRecord`).
    #[serde(default = "default_settling_time")]
    #[schemars(length(max = 32), regex(pattern = super::common::DURATION_PATTERN))]
    pub settling_time: String,
    /// Trust "not found" before a first send only after `settlingTime` too (Mailgun): a first
    /// send whose look-up found nothing waits that long after the first look-up (`Retrying`,
    /// reason `AwaitingProviderRecord`), asks again and only then goes out. Turn it on for a
    /// cluster rebuilt from Git, where the old cluster may have handed the message over
    /// moments before it stopped; off (the default), a first send goes out at once. Postmark's
    /// search is complete at once and ignores it.
    #[serde(default)]
    pub settle_first_sends: bool,
}

impl Default for LookupSpec {
    fn default() -> Self {
        Self {
            disabled: false,
            settling_time: default_settling_time(),
            settle_first_sends: false,
        }
    }
}

fn default_settling_time() -> String {
    "30m".into()
}

impl LookupSpec {
    /// `settlingTime`, parsed (the schema's pattern has checked its form; 30 minutes if not).
    pub fn settling_time(&self) -> std::time::Duration {
        humantime::parse_duration(&self.settling_time)
            .unwrap_or(std::time::Duration::from_secs(30 * 60))
    }
}

/// Health check schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// Interval between checks while healthy; at least 30s.
    #[serde(default = "default_health_interval")]
    #[schemars(length(max = 32), regex(pattern = super::common::DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('30s')").message("healthCheck.interval must be at least 30s"))]
    pub interval: String,
    /// Interval between checks while unhealthy; at least 10s.
    #[serde(default = "default_unhealthy_interval")]
    #[schemars(length(max = 32), regex(pattern = super::common::DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s')").message("healthCheck.unhealthyInterval must be at least 10s"))]
    pub unhealthy_interval: String,
    /// Time limit of one check.
    #[serde(default = "default_health_timeout")]
    #[schemars(regex(pattern = super::common::DURATION_PATTERN))]
    pub timeout: String,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        Self {
            interval: default_health_interval(),
            unhealthy_interval: default_unhealthy_interval(),
            timeout: default_health_timeout(),
        }
    }
}

/// The shortest health check interval while healthy. A check is a request to an address a
/// tenant chose; the floor keeps a sender from becoming a fast network probe (and keeps a
/// provider's API quota for mail).
pub const MIN_HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// The shortest health check interval while unhealthy.
pub const MIN_UNHEALTHY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

fn default_health_interval() -> String {
    "5m".into()
}
fn default_unhealthy_interval() -> String {
    "30s".into()
}
fn default_health_timeout() -> String {
    "10s".into()
}

/// Which provider a config uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ProviderKind {
    /// MailerSend HTTP API.
    MailerSend,
    /// Mailgun HTTP API.
    Mailgun,
    /// An SMTP server.
    #[serde(rename = "SMTP")]
    Smtp,
    /// Resend HTTP API.
    Resend,
    /// Postmark HTTP API.
    Postmark,
    /// SendGrid v3 HTTP API.
    SendGrid,
    /// Amazon SES (API v2).
    #[serde(rename = "SES")]
    Ses,
}

impl ProviderKind {
    /// The name used in status, metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::MailerSend => "MailerSend",
            ProviderKind::Mailgun => "Mailgun",
            ProviderKind::Smtp => "SMTP",
            ProviderKind::Resend => "Resend",
            ProviderKind::Postmark => "Postmark",
            ProviderKind::SendGrid => "SendGrid",
            ProviderKind::Ses => "SES",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EmailSenderConfigSpec {
    /// The provider this config selects; `None` when the spec sets none (the CRD rejects that,
    /// but objects read from files or older servers may still carry it).
    pub fn provider_kind(&self) -> Option<ProviderKind> {
        let set = [
            (self.mailersend.is_some(), ProviderKind::MailerSend),
            (self.mailgun.is_some(), ProviderKind::Mailgun),
            (self.smtp.is_some(), ProviderKind::Smtp),
            (self.resend.is_some(), ProviderKind::Resend),
            (self.postmark.is_some(), ProviderKind::Postmark),
            (self.sendgrid.is_some(), ProviderKind::SendGrid),
            (self.ses.is_some(), ProviderKind::Ses),
        ];
        let mut chosen = set.iter().filter(|(on, _)| *on).map(|(_, kind)| *kind);
        match (chosen.next(), chosen.next()) {
            (Some(kind), None) => Some(kind),
            _ => None,
        }
    }
}

/// Observed state of an EmailSenderConfig.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailSenderConfigStatus {
    /// The generation this status describes; -1 until the operator has looked at the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = -1))]
    pub observed_generation: Option<i64>,
    /// The provider in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    /// `Ready` (spec valid and credentials loaded; reason `Disabled` when disabled; a provider
    /// outage never changes it), `Healthy` (last check passed), `CredentialsLoaded`, and
    /// warnings such as `InsecureTransport`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// When the last health check finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_health_check_time: Option<Time>,
    /// When an Email was last sent through this config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_send_time: Option<Time>,
    /// The last send error, if the last send failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_send_error: Option<String>,
}
