//! The delivery ledger: EmailDelivery objects, one per (Email, content hash, retry token).
//!
//! Exactly-once rests on one fact of the API server: creating an object whose name exists
//! fails with 409. The name is derived from the Email's name and the content hash, so of two
//! reconciles (or two replicas) that want to send the same content, only one can create the
//! entry, and only the one that created it calls the provider.
//!
//! A claim is recorded in the entry's annotations: who holds it, which attempt, and until when.
//! `status.attempts` counts finished attempts; a claimed attempt above that count is in flight,
//! or it died with its process (then, once the claim expires, the outcome is `Unknown`).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::{
    DeliveryPhase, EmailDelivery, EmailDeliverySpec, EmailDeliveryStatus, FIELD_MANAGER,
};

pub mod head;
pub mod index;
pub mod retention;

/// Label on every EmailDelivery: the Email's name (or its hash when too long for a label).
pub const EMAIL_LABEL: &str = "kmailops.io/email";
/// Annotation: the process holding the current claim.
pub const CLAIMED_BY: &str = "kmailops.io/claimed-by";
/// Annotation: the attempt number the current claim is for (1-based).
pub const CLAIM_ATTEMPT: &str = "kmailops.io/claim-attempt";
/// Annotation: when the current claim lapses (RFC 3339).
pub const CLAIM_EXPIRES: &str = "kmailops.io/claim-expires";
/// Annotation: the `kmailops.io/retry` token this entry was created for, if any.
pub const RETRY_TOKEN: &str = "kmailops.io/retry-token";

/// The ledger key: the content hash, mixed with the retry token when one is in effect, so a
/// retry request gets a fresh entry while the same content without a token maps to the old one.
pub fn ledger_key(delivery_hash: &str, retry_token: Option<&str>) -> String {
    match retry_token {
        None => delivery_hash.to_string(),
        Some(token) => {
            let mut h = Sha256::new();
            h.update(delivery_hash.as_bytes());
            h.update([0]);
            h.update(token.as_bytes());
            hex::encode(h.finalize())
        }
    }
}

/// `<email name>-<16 hex digits of the key>`: stable across re-creations of the Email, unique
/// per content and retry token. A name too long for that (over 236 characters) is cut and
/// followed by 16 hex digits of a hash of the whole name, so two long names that share their
/// first characters never share an entry (one would report the other's delivery as its own).
pub fn entry_name(email_name: &str, key: &str) -> String {
    const MAX: usize = 253;
    const DIGITS: usize = 16;
    let suffix = &key[..key.len().min(DIGITS)];
    let room = MAX - 1 - suffix.len();
    if email_name.len() <= room {
        return format!("{email_name}-{suffix}");
    }
    let whole = hex::encode(Sha256::digest(email_name.as_bytes()));
    let room = room - 1 - DIGITS;
    // Names are ASCII (DNS subdomain rules), so cutting at a byte index is a char boundary;
    // `get` keeps a non-ASCII name (never accepted by the API server) from panicking.
    let mut prefix = email_name.get(..room).unwrap_or_default().to_string();
    // Object names must not end in '.' or '-' before the separator we add.
    while prefix.ends_with(['.', '-']) {
        prefix.pop();
    }
    format!("{prefix}-{}-{suffix}", &whole[..DIGITS])
}

/// The value of [`EMAIL_LABEL`] for an Email name.
pub fn email_label_value(email_name: &str) -> String {
    if email_name.len() <= 63 && !email_name.contains('.') {
        email_name.to_string()
    } else {
        let digest = hex::encode(Sha256::digest(email_name.as_bytes()));
        digest[..63].to_string()
    }
}

/// What an entry says about its delivery.
#[derive(Clone, Debug, PartialEq)]
pub enum EntryState {
    Sent,
    Failed,
    Unknown,
    /// An attempt is claimed and has no outcome yet.
    InFlight {
        claimed_by: String,
        attempt: i32,
        expires: Option<Timestamp>,
    },
    /// Between attempts after a transient error.
    Waiting {
        attempts: i32,
        next_attempt: Option<Timestamp>,
    },
}

/// Reads the state of an entry.
pub fn state(entry: &EmailDelivery) -> EntryState {
    let status = entry.status.clone().unwrap_or_default();
    match status.phase {
        Some(DeliveryPhase::Sent) => return EntryState::Sent,
        Some(DeliveryPhase::Failed) => return EntryState::Failed,
        Some(DeliveryPhase::Unknown) => return EntryState::Unknown,
        Some(DeliveryPhase::Sending) | None => {}
    }
    let annotations = entry.annotations();
    let finished = status.attempts.unwrap_or(0);
    let claimed = annotations
        .get(CLAIM_ATTEMPT)
        .and_then(|a| a.parse::<i32>().ok())
        .unwrap_or(1);
    if claimed > finished {
        EntryState::InFlight {
            claimed_by: annotations.get(CLAIMED_BY).cloned().unwrap_or_default(),
            attempt: claimed,
            expires: annotations
                .get(CLAIM_EXPIRES)
                .and_then(|t| t.parse::<Timestamp>().ok()),
        }
    } else {
        EntryState::Waiting {
            attempts: finished,
            next_attempt: status.next_attempt_time.map(|t| t.0),
        }
    }
}

/// Everything needed to create an entry.
pub struct NewEntry<'a> {
    pub namespace: &'a str,
    pub email_name: &'a str,
    pub email_uid: &'a str,
    pub delivery_hash: &'a str,
    pub key: &'a str,
    pub sender_config: &'a str,
    pub recipient_count: usize,
    pub retry_token: Option<&'a str>,
}

/// The result of trying to claim.
pub enum Claim {
    /// We created the entry: we, and only we, may call the provider for attempt 1.
    Won(Box<EmailDelivery>),
    /// The entry exists already (another reconcile or replica created it).
    Exists,
}

fn claim_annotations(
    instance: &str,
    attempt: i32,
    ttl: std::time::Duration,
) -> BTreeMap<String, String> {
    let expires = Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    BTreeMap::from([
        (CLAIMED_BY.to_string(), instance.to_string()),
        (CLAIM_ATTEMPT.to_string(), attempt.to_string()),
        (CLAIM_EXPIRES.to_string(), expires.to_string()),
    ])
}

/// Creates the entry, claiming attempt 1. This is the atomic step of exactly-once.
pub async fn claim_new(
    api: &Api<EmailDelivery>,
    new: NewEntry<'_>,
    instance: &str,
    ttl: std::time::Duration,
) -> Result<Claim, kube::Error> {
    let mut annotations = claim_annotations(instance, 1, ttl);
    if let Some(token) = new.retry_token {
        annotations.insert(RETRY_TOKEN.to_string(), token.to_string());
    }
    let mut entry = EmailDelivery::new(
        &entry_name(new.email_name, new.key),
        EmailDeliverySpec {
            email_name: new.email_name.to_string(),
            email_uid: new.email_uid.to_string(),
            delivery_hash: new.delivery_hash.to_string(),
            sender_config: new.sender_config.to_string(),
            recipient_count: i32::try_from(new.recipient_count).unwrap_or(i32::MAX),
        },
    );
    entry.metadata.namespace = Some(new.namespace.to_string());
    entry.metadata.labels = Some(BTreeMap::from([(
        EMAIL_LABEL.to_string(),
        email_label_value(new.email_name),
    )]));
    entry.metadata.annotations = Some(annotations);
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &entry,
        )
        .await
    {
        Ok(created) => Ok(Claim::Won(Box::new(created))),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Claim::Exists),
        Err(e) => Err(e),
    }
}

/// Withdraws the claim of attempt 1 that was never used (no provider call was made for it):
/// deletes the entry, unless it changed since `entry` was read, so the delivery is back to
/// having no entry. Only its creator may do this, before any call: an entry that recorded or
/// started an attempt is the delivery's history and is never deleted here.
pub async fn withdraw_new(
    api: &Api<EmailDelivery>,
    entry: &EmailDelivery,
) -> Result<bool, kube::Error> {
    delete_unless_changed(api, &entry.name_any(), &entry.metadata).await
}

/// Deletes entry `name` unless it changed since `read` (its metadata as read): returns
/// whether it was deleted. An entry changed or gone meanwhile is left alone.
pub async fn delete_unless_changed(
    api: &Api<EmailDelivery>,
    name: &str,
    read: &ObjectMeta,
) -> Result<bool, kube::Error> {
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: read.uid.clone(),
            resource_version: read.resource_version.clone(),
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Claims the next attempt of an entry that is waiting between attempts. The entry's
/// resourceVersion is a precondition, so of two claimers only one succeeds.
pub async fn claim_next(
    api: &Api<EmailDelivery>,
    entry: &EmailDelivery,
    attempt: i32,
    instance: &str,
    ttl: std::time::Duration,
) -> Result<bool, kube::Error> {
    let mut annotations: serde_json::Map<String, serde_json::Value> =
        claim_annotations(instance, attempt, ttl)
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
    // A new attempt is its Email's doing, so the Email is back: a mark that the retention
    // sweep left from its absence would otherwise still count, and the entry could be deleted
    // sooner than a whole retention after this send.
    annotations.insert(retention::ORPHANED_SINCE.into(), serde_json::Value::Null);
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": entry.resource_version(),
            "annotations": annotations,
        }
    });
    let params = merge_params();
    unless_conflict(
        api.patch(&entry.name_any(), &params, &Patch::Merge(&patch))
            .await,
    )
}

/// Hands back the claim of a later attempt (2 or more) that was never used (no provider call
/// was made for it): the entry is waiting between attempts again, so whoever comes next makes
/// that attempt instead of taking the claim for one the operator was interrupted in. Guarded by
/// the entry's resourceVersion like [`claim_next`]; `false` when it changed meanwhile.
pub async fn withdraw_next(
    api: &Api<EmailDelivery>,
    entry: &EmailDelivery,
) -> Result<bool, kube::Error> {
    let finished = entry.status.as_ref().and_then(|s| s.attempts).unwrap_or(0);
    if finished < 1 {
        // Attempt 1 has no history to keep: that claim is withdrawn whole (`withdraw_new`).
        return Ok(false);
    }
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": entry.resource_version(),
            "annotations": {
                CLAIM_ATTEMPT: finished.to_string(),
                CLAIMED_BY: null,
                CLAIM_EXPIRES: null,
            },
        }
    });
    unless_conflict(
        api.patch(&entry.name_any(), &merge_params(), &Patch::Merge(&patch))
            .await,
    )
}

fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// A write guarded by a resourceVersion precondition: `false` when someone else changed the
/// object first (409), so the caller looks again instead of overwriting.
fn unless_conflict<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes an entry's outcome (the whole status, server-side applied).
pub async fn record(
    api: &Api<EmailDelivery>,
    name: &str,
    status: &EmailDeliveryStatus,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({
        "apiVersion": "kmailops.io/v1alpha1",
        "kind": "EmailDelivery",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Marks an in-flight entry `Unknown`, unless it changed since it was read (its owner may
/// just have recorded the real outcome). Returns false when it had changed.
pub async fn mark_unknown(
    api: &Api<EmailDelivery>,
    entry: &EmailDelivery,
    message: &str,
) -> Result<bool, kube::Error> {
    let mut status = entry.status.clone().unwrap_or_default();
    status.phase = Some(DeliveryPhase::Unknown);
    status.reason = Some(reasons::OUTCOME_UNKNOWN.to_string());
    status.error = Some(message.to_string());
    status.next_attempt_time = None;
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": entry.resource_version() },
        "status": status,
    });
    let params = merge_params();
    unless_conflict(
        api.patch_status(&entry.name_any(), &params, &Patch::Merge(&patch))
            .await,
    )
}

/// Marks an Unknown entry `Sent` under `message_id` because the provider, asked, had the
/// message; false when the entry changed since it was read.
pub async fn mark_recovered(
    api: &Api<EmailDelivery>,
    entry: &EmailDelivery,
    message_id: &str,
) -> Result<bool, kube::Error> {
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": entry.resource_version() },
        "status": {
            "phase": DeliveryPhase::Sent,
            "reason": reasons::RECOVERED_FROM_PROVIDER,
            "messageId": message_id,
            "error": null,
            "nextAttemptTime": null,
        },
    });
    let params = merge_params();
    unless_conflict(
        api.patch_status(&entry.name_any(), &params, &Patch::Merge(&patch))
            .await,
    )
}

/// Opens an Unknown entry for another attempt (due at `next_attempt`, or now): the provider,
/// asked after its record settled, does not have the message, or (`in_doubt`) it would drop
/// a repeat of it. The attempt that was in doubt counts as made, so the entry waits for the
/// next one; false when the entry changed since it was read. With `in_doubt` the entry
/// remembers that attempt (`attemptInDoubt`): the message may be out, so the delivery must
/// not move on to another sender ([`fails_over`]).
pub async fn reopen(
    api: &Api<EmailDelivery>,
    entry: &EmailDelivery,
    next_attempt: Option<Timestamp>,
    in_doubt: bool,
) -> Result<bool, kube::Error> {
    let recorded = entry.status.as_ref().and_then(|s| s.attempts).unwrap_or(0);
    let claimed = entry
        .annotations()
        .get(CLAIM_ATTEMPT)
        .and_then(|a| a.parse::<i32>().ok())
        .unwrap_or(1);
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": entry.resource_version() },
        "status": {
            "phase": DeliveryPhase::Sending,
            "reason": null,
            "attempts": recorded.max(claimed),
            "nextAttemptTime": next_attempt.map(Time),
            // Kept (the earliest attempt in doubt) when the repeat rests on the provider's
            // key; dropped when the provider, searched, does not have the message at all.
            "attemptInDoubt": in_doubt.then(|| {
                entry
                    .status
                    .as_ref()
                    .and_then(|s| s.attempt_in_doubt)
                    .unwrap_or(recorded.max(claimed))
            }),
        },
    });
    let params = merge_params();
    unless_conflict(
        api.patch_status(&entry.name_any(), &params, &Patch::Merge(&patch))
            .await,
    )
}

/// When the attempt of an Unknown entry was handed over at the latest: when its status was
/// last written (the outcome, or the mark of a claim that lapsed, both come after the
/// hand-over), else its claim's expiry (a call never outlives its claim). Read from an entry
/// fetched from the API server (the cache drops what this reads).
pub fn handed_over_by(entry: &EmailDelivery) -> Option<Timestamp> {
    let status_written = entry
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.as_deref() == Some("status"))
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .max()
        // Written in whole seconds: the write itself may have been up to a second later.
        .and_then(|t| t.checked_add(jiff::SignedDuration::from_secs(1)).ok());
    status_written.or_else(|| {
        entry
            .annotations()
            .get(CLAIM_EXPIRES)
            .and_then(|t| t.parse::<Timestamp>().ok())
    })
}

/// Every entry of an Email name, read from the API server (authoritative, used when an Email
/// has no status of its own: new, or deleted and created again).
pub async fn list_for_email(
    api: &Api<EmailDelivery>,
    email_name: &str,
) -> Result<Vec<EmailDelivery>, kube::Error> {
    let selector = format!("{EMAIL_LABEL}={}", email_label_value(email_name));
    let list = api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|d| d.spec.email_name == email_name)
        .collect())
}

/// The newest Sent entry among `entries`, preferring one whose content hash is in `hashes`.
pub fn best_sent<'a>(entries: &'a [EmailDelivery], hashes: &[String]) -> Option<&'a EmailDelivery> {
    let sent = |d: &&EmailDelivery| state(d) == EntryState::Sent;
    entries
        .iter()
        .filter(sent)
        .filter(|d| hashes.contains(&d.spec.delivery_hash))
        .max_by_key(|d| sent_time(d))
        .or_else(|| entries.iter().filter(sent).max_by_key(|d| sent_time(d)))
}

/// Whether a Failed entry moves the Email on to the next sender of its chain: after an auth
/// error or exhausted retries, unless an earlier attempt may have delivered the message
/// (`attemptInDoubt`), when a fallback would send a second one.
pub fn fails_over(entry: &EmailDelivery) -> bool {
    let Some(status) = entry.status.as_ref() else {
        return false;
    };
    status.attempt_in_doubt.is_none()
        && status
            .reason
            .as_deref()
            .is_some_and(|r| r == reasons::AUTH_FAILED || r == reasons::RETRIES_EXHAUSTED)
}

/// Reasons recorded in an entry's status.
pub mod reasons {
    pub const SENT: &str = "Sent";
    pub const PROVIDER_REJECTED: &str = "ProviderRejected";
    pub const AUTH_FAILED: &str = "AuthFailed";
    pub const RETRIES_EXHAUSTED: &str = "RetriesExhausted";
    pub const OUTCOME_UNKNOWN: &str = "OutcomeUnknown";
    /// The provider had the message when it was asked (by its delivery key): Sent, and not
    /// sent again.
    pub const RECOVERED_FROM_PROVIDER: &str = "RecoveredFromProvider";
}

fn sent_time(d: &EmailDelivery) -> Option<Timestamp> {
    d.status
        .as_ref()
        .and_then(|s| s.sent_time.as_ref())
        .map(|t| t.0)
}

/// Now, as a Kubernetes time.
pub fn now() -> Time {
    Time(Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EmailDeliverySpec {
        EmailDeliverySpec {
            email_name: "welcome".into(),
            email_uid: "u1".into(),
            delivery_hash: "a".repeat(64),
            sender_config: "ns/primary".into(),
            recipient_count: 1,
        }
    }

    #[test]
    fn only_auth_errors_and_exhausted_retries_fail_over_and_never_after_an_attempt_in_doubt() {
        let with = |reason: &str, in_doubt: Option<i32>| EmailDelivery {
            metadata: Default::default(),
            spec: spec(),
            status: Some(EmailDeliveryStatus {
                phase: Some(DeliveryPhase::Failed),
                reason: Some(reason.into()),
                attempt_in_doubt: in_doubt,
                ..Default::default()
            }),
        };
        let table = [
            (reasons::AUTH_FAILED, None, true),
            (reasons::RETRIES_EXHAUSTED, None, true),
            (reasons::PROVIDER_REJECTED, None, false),
            (reasons::OUTCOME_UNKNOWN, None, false),
            // A repeat on Resend's key failed: the first attempt may be out.
            (reasons::AUTH_FAILED, Some(1), false),
            (reasons::RETRIES_EXHAUSTED, Some(1), false),
        ];
        for (reason, in_doubt, fails_over_expected) in table {
            assert_eq!(
                fails_over(&with(reason, in_doubt)),
                fails_over_expected,
                "{reason} with attempt in doubt {in_doubt:?}"
            );
        }
        let no_status = EmailDelivery {
            metadata: Default::default(),
            spec: spec(),
            status: None,
        };
        assert!(!fails_over(&no_status));
    }

    #[test]
    fn entry_names_are_stable_short_enough_and_differ_by_content_and_token() {
        let hash = "a".repeat(64);
        let name = entry_name("welcome", &ledger_key(&hash, None));
        assert_eq!(name, format!("welcome-{}", &hash[..16]));
        assert_eq!(name, entry_name("welcome", &ledger_key(&hash, None)));
        assert_ne!(name, entry_name("welcome", &ledger_key(&hash, Some("t1"))));
        assert_ne!(
            entry_name("welcome", &ledger_key(&hash, Some("t1"))),
            entry_name("welcome", &ledger_key(&hash, Some("t2")))
        );
        let long = entry_name(&"x".repeat(300), &hash);
        assert!(long.len() <= 253);
    }

    #[test]
    fn long_email_names_that_share_their_start_get_different_entries() {
        let hash = "b".repeat(64);
        let key = ledger_key(&hash, None);
        let first = format!("{}-one", "n".repeat(240));
        let second = format!("{}-two", "n".repeat(240));
        let (a, b) = (entry_name(&first, &key), entry_name(&second, &key));
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(name.len() <= 253, "{}", name.len());
            assert!(name.ends_with(&hash[..16]));
        }
        // Exactly at the limit the name is kept whole; one more character shortens it.
        let fits = "f".repeat(236);
        assert_eq!(entry_name(&fits, &key), format!("{fits}-{}", &hash[..16]));
        let over = "f".repeat(237);
        assert_ne!(entry_name(&over, &key), entry_name(&fits, &key));
        assert!(entry_name(&over, &key).len() <= 253);
    }

    #[test]
    fn long_email_names_get_a_hashed_label_value() {
        assert_eq!(email_label_value("short"), "short");
        let v = email_label_value(&"n".repeat(80));
        assert_eq!(v.len(), 63);
        assert!(v.chars().all(|c| c.is_ascii_hexdigit()));
    }

    fn entry(
        phase: Option<DeliveryPhase>,
        attempts: Option<i32>,
        claim: Option<i32>,
    ) -> EmailDelivery {
        let mut d = EmailDelivery::new(
            "e-1",
            EmailDeliverySpec {
                email_name: "e".into(),
                email_uid: "u".into(),
                delivery_hash: "h".into(),
                sender_config: "ns/s".into(),
                recipient_count: 1,
            },
        );
        if let Some(c) = claim {
            d.metadata.annotations = Some(BTreeMap::from([
                (CLAIM_ATTEMPT.to_string(), c.to_string()),
                (CLAIMED_BY.to_string(), "me".to_string()),
            ]));
        }
        d.status = Some(EmailDeliveryStatus {
            phase,
            attempts,
            ..Default::default()
        });
        d
    }

    #[test]
    fn an_entry_without_outcome_is_in_flight_and_one_with_finished_attempts_is_waiting() {
        // Created by hand or by a process that died before writing anything.
        assert!(matches!(
            state(&entry(None, None, None)),
            EntryState::InFlight { attempt: 1, .. }
        ));
        assert!(matches!(
            state(&entry(Some(DeliveryPhase::Sending), Some(1), Some(1))),
            EntryState::Waiting { attempts: 1, .. }
        ));
        assert!(matches!(
            state(&entry(Some(DeliveryPhase::Sending), Some(1), Some(2))),
            EntryState::InFlight { attempt: 2, .. }
        ));
        assert_eq!(
            state(&entry(Some(DeliveryPhase::Sent), Some(1), Some(1))),
            EntryState::Sent
        );
    }
}
