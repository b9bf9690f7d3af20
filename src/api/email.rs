//! `Email`: one message to deliver, exactly once.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ConfigMapKeyRef, ObjectRef, SecretKeyRef, free_form_object};
use super::sender_config::ProviderKind;

/// CEL: every list item is free of line breaks.
const ITEMS_WITHOUT_LINE_BREAKS: &str = "self.all(a, !a.contains('\\r') && !a.contains('\\n'))";

/// One email. kmailops sends it once, records the outcome in status and in an EmailDelivery,
/// and never sends it again when the same manifest is applied again.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kmailops.io",
    version = "v1alpha1",
    kind = "Email",
    namespaced,
    status = "EmailStatus",
    shortname = "em",
    category = "kmailops",
    derive = "PartialEq",
    doc = "Email is one message that kmailops delivers exactly once.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "To", type_ = "string", json_path = ".spec.to[0]"),
    printcolumn(name = "Sender", type_ = "string", json_path = ".status.senderConfig"),
    printcolumn(name = "Message-ID", type_ = "string", json_path = ".status.messageId"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.templateRef) || has(self.text) || has(self.html)")
    .message("an Email needs content: set text, html, or templateRef"))]
pub struct EmailSpec {
    /// The EmailSenderConfig to send through. Unset: the namespace's default config, else the
    /// one default config elsewhere that admits this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_config_ref: Option<ObjectRef>,
    /// Recipients: `a@example.com` or `Name <a@example.com>`; 1 to 50.
    #[schemars(length(min = 1, max = 50), inner(length(min = 3, max = 320)))]
    #[x_kube(validation = Rule::new(ITEMS_WITHOUT_LINE_BREAKS).message("to addresses must not contain CR or LF"))]
    pub to: Vec<String>,
    /// Carbon-copy recipients; at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 3, max = 320)))]
    #[x_kube(validation = Rule::new(ITEMS_WITHOUT_LINE_BREAKS).message("cc addresses must not contain CR or LF"))]
    pub cc: Vec<String>,
    /// Blind-copy recipients; at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 3, max = 320)))]
    #[x_kube(validation = Rule::new(ITEMS_WITHOUT_LINE_BREAKS).message("bcc addresses must not contain CR or LF"))]
    pub bcc: Vec<String>,
    /// Reply-To mailbox; overrides the sender config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 320))]
    #[x_kube(validation = Rule::new(super::common::NO_LINE_BREAKS).message("replyTo must not contain CR or LF"))]
    pub reply_to: Option<String>,
    /// Subject; with a template, overrides the template's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 998))]
    #[x_kube(validation = Rule::new(super::common::NO_LINE_BREAKS).message("subject must not contain CR or LF"))]
    pub subject: Option<String>,
    /// Plain-text body; with a template, overrides the template's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1048576))]
    pub text: Option<String>,
    /// HTML body; with a template, overrides the template's html.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1048576))]
    pub html: Option<String>,
    /// An EmailTemplate to render subject and bodies from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<ObjectRef>,
    /// Template input: any JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub variables: Option<BTreeMap<String, serde_json::Value>>,
    /// Extra mail headers, e.g. `X-Campaign: spring`. Names and values without CR/LF; headers
    /// kmailops sets itself (From, To, Subject, ...) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "header_map")]
    #[x_kube(
        validation = Rule::new("self.all(k, k.size() <= 128 && k.matches('^[!-9;-~]+$'))")
            .message("header names must be 1-128 printable ASCII characters without ':' or whitespace"),
        validation = Rule::new("self.all(k, !self[k].contains('\\r') && !self[k].contains('\\n'))")
            .message("header values must not contain CR or LF"),
        validation = Rule::new("self.all(k, !(k.lowerAscii() in ['from', 'to', 'cc', 'bcc', 'subject', 'reply-to', 'sender', 'date', 'message-id', 'mime-version', 'content-type', 'content-transfer-encoding', 'return-path']))")
            .message("headers must not set From, To, Cc, Bcc, Subject, Reply-To, Sender, Date, Message-ID, MIME-Version, Content-Type, Content-Transfer-Encoding or Return-Path: use the Email's own fields")
    )]
    pub headers: BTreeMap<String, String>,
    /// Tags passed to providers that support them (Mailgun keeps the first 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 1, max = 128)))]
    pub tags: Vec<String>,
    /// Files attached from Secrets or ConfigMaps in this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub attachments: Vec<Attachment>,
    /// Send at this time (RFC 3339) instead of now; until then the Email is Scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<Time>,
    /// Never send after this time (RFC 3339): guards against replays, e.g. a cluster rebuilt
    /// from Git. A passed notAfter leaves the Email Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// What a spec change after the Email was sent does: `Never` (default) keeps it Sent and
    /// warns; `OnChange` sends the new content once.
    #[serde(default)]
    pub resend_policy: ResendPolicy,
}

/// Schema of `headers`: bounded so the API server can bound the cost of its CEL rules.
fn header_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 50,
        "additionalProperties": {"type": "string", "maxLength": 998}
    })
}

/// A file attached to an Email; exactly one source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)")
    .message("an attachment needs exactly one of secretKeyRef or configMapKeyRef"))]
pub struct Attachment {
    /// File name shown to the recipient.
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("!self.contains('/') && !self.contains('\\r') && !self.contains('\\n')")
        .message("attachment filename must not contain '/', CR or LF"))]
    pub filename: String,
    /// MIME type; guessed from the filename when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 255))]
    pub content_type: Option<String>,
    /// Content from a Secret key (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Content from a ConfigMap key (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,
}

/// What to do when the spec changes after the Email was sent.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ResendPolicy {
    /// Keep it Sent; report ChangedAfterSend.
    #[default]
    Never,
    /// Send the changed content once.
    OnChange,
}

/// Where an Email is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum EmailPhase {
    /// Accepted, not yet sent (waiting for a sender, a Secret, or a rate-limit token).
    Pending,
    /// Waiting for `sendAt`.
    Scheduled,
    /// Rendered by a dry run; nothing sent.
    Previewed,
    /// A provider call is in flight.
    Sending,
    /// A transient error; another attempt is planned at `nextAttemptTime`.
    Retrying,
    /// The provider accepted the message.
    Sent,
    /// It will not be sent without a change: see `error`.
    Failed,
    /// The provider may or may not have accepted it; not resent automatically.
    Unknown,
    /// `notAfter` passed before it could be sent.
    Expired,
}

impl EmailPhase {
    /// The name used in status, Events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EmailPhase::Pending => "Pending",
            EmailPhase::Scheduled => "Scheduled",
            EmailPhase::Previewed => "Previewed",
            EmailPhase::Sending => "Sending",
            EmailPhase::Retrying => "Retrying",
            EmailPhase::Sent => "Sent",
            EmailPhase::Failed => "Failed",
            EmailPhase::Unknown => "Unknown",
            EmailPhase::Expired => "Expired",
        }
    }
}

/// Observed state of an Email.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailStatus {
    /// The generation this status describes; -1 until the operator has looked at the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = -1))]
    pub observed_generation: Option<i64>,
    /// Pending, Scheduled, Previewed, Sending, Retrying, Sent, Failed, Unknown or Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EmailPhase>,
    /// SHA-256 of what the recipients get; equal hash means the same message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_hash: Option<String>,
    /// The provider's id of the sent message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The provider that was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    /// The EmailSenderConfig used, as `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_config: Option<String>,
    /// Provider calls made for the current content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// When the last provider call started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_time: Option<Time>,
    /// When the next attempt is planned (Retrying, Scheduled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// When the provider accepted the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_time: Option<Time>,
    /// What went wrong and how to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The rendered message (bodies truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<EmailPreview>,
    /// The last `kmailops.io/retry` annotation value acted on; each token is acted on once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_retry: Option<String>,
    /// The last `kmailops.io/retry` annotation of an EmailSenderConfig acted on for this
    /// Email (`namespace/name=token`); each sender token retries an Email once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_sender_retry: Option<String>,
    /// `Ready`, `Reconciling` and `Stalled`, kstatus style.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// What an Email renders to, as a dry run shows it in status: content and recipients as they
/// would go out, the sender, and attachment names and sizes. Bodies are truncated to a bounded
/// size so a large message never bloats the object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailPreview {
    /// Rendered subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Rendered plain-text body (truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Rendered HTML body (truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// The To recipients as they will be addressed (at most 50 shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// The Cc recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    /// The Bcc recipients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    /// The EmailSenderConfig (`namespace/name`) it would go out through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The From mailbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The attachments, by name and size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<PreviewAttachment>,
}

/// An attachment as a preview shows it (never its content).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewAttachment {
    pub filename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Size in bytes.
    pub size: i64,
}
