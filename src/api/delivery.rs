//! `EmailDelivery`: the delivery ledger. One object per (Email, content hash, retry token),
//! created before the provider is called. Its atomic creation is what makes a send
//! exactly-once across reconciles, replicas and restarts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::sender_config::ProviderKind;

/// The record of one delivery. Written only by the operator; it outlives its Email on purpose
/// (no ownerReference) so a re-created Email is not sent again.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "kmailops.io",
    version = "v1alpha1",
    kind = "EmailDelivery",
    plural = "emaildeliveries",
    namespaced,
    status = "EmailDeliveryStatus",
    shortname = "emd",
    category = "kmailops",
    derive = "PartialEq",
    doc = "EmailDelivery is the operator's ledger entry for one delivery of an Email; read it as an audit log.",
    printcolumn(name = "Email", type_ = "string", json_path = ".spec.emailName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Message-ID", type_ = "string", json_path = ".status.messageId"),
    printcolumn(name = "Sent", type_ = "date", json_path = ".status.sentTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("EmailDelivery spec is immutable"))]
pub struct EmailDeliverySpec {
    /// Name of the Email this delivery is for.
    #[schemars(length(min = 1, max = 253))]
    pub email_name: String,
    /// UID of the Email object at the time of the claim.
    #[serde(rename = "emailUID")]
    #[schemars(length(max = 128))]
    pub email_uid: String,
    /// SHA-256 of the delivered content (hex).
    #[schemars(length(min = 64, max = 64))]
    pub delivery_hash: String,
    /// The EmailSenderConfig used, as `namespace/name`.
    #[schemars(length(max = 317))]
    pub sender_config: String,
    /// Number of to + cc + bcc recipients.
    #[schemars(range(min = 0, max = 70))]
    pub recipient_count: i32,
}

/// The state of one delivery.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DeliveryPhase {
    /// Claimed; a provider call is (or was) in flight.
    Sending,
    /// The provider accepted the message.
    Sent,
    /// The provider refused it, or every attempt failed.
    Failed,
    /// The outcome of a provider call is not known (operator died, timeout after hand-over).
    Unknown,
}

impl DeliveryPhase {
    /// The name used in status.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryPhase::Sending => "Sending",
            DeliveryPhase::Sent => "Sent",
            DeliveryPhase::Failed => "Failed",
            DeliveryPhase::Unknown => "Unknown",
        }
    }
}

/// Outcome of a delivery.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailDeliveryStatus {
    /// The generation this status describes; -1 until the operator has written it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = -1))]
    pub observed_generation: Option<i64>,
    /// Sending, Sent, Failed or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DeliveryPhase>,
    /// The provider's message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The provider used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    /// When the provider accepted the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_time: Option<Time>,
    /// Provider calls made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Why the delivery ended as it did: Sent, ProviderRejected, AuthFailed, RetriesExhausted
    /// or OutcomeUnknown. AuthFailed and RetriesExhausted move an Email on to the sender's
    /// next fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// While `Sending` after a transient error: when the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    /// The attempt whose outcome was unknown when the delivery went on sending through the
    /// same provider because that provider drops a repeat of an accepted message (Resend's
    /// idempotency key). While set, the message may be out already: the delivery never moves
    /// on to a fallback sender, and a failure of the later attempts ends `Unknown`, not
    /// `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_in_doubt: Option<i32>,
    /// Conditions (kstatus style).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
