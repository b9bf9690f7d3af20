//! Retention of the ledger: an EmailDelivery outlives its Email on purpose (a re-created Email
//! finds it), but not for ever. When its Email is gone the entry is marked with the time it was
//! first seen orphaned; once `--delivery-retention` has passed since then it is deleted, and
//! the mark is removed again if the Email comes back.
//!
//! [`sweep_step`] decides (pure, tested below); [`sweep`] performs the writes.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::api::{Email, EmailDelivery, FIELD_MANAGER};
use crate::ledger::delete_unless_changed;
use crate::ledger::index::LedgerIndex;

/// Annotation on an EmailDelivery whose Email is gone: since when.
pub const ORPHANED_SINCE: &str = "kmailops.io/orphaned-since";

/// How often the ledger is swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// What the sweep does with one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SweepStep {
    Keep,
    /// The Email is gone: remember since when.
    MarkOrphaned(Timestamp),
    /// The Email is back: forget the mark.
    Unmark,
    /// Gone for longer than the retention.
    Delete,
}

/// Decides what to do with an entry, from whether its Email exists, the entry's mark (as
/// written, possibly by hand) and the time.
pub fn sweep_step(
    email_exists: bool,
    mark: Option<&str>,
    now: Timestamp,
    retention: Duration,
) -> SweepStep {
    match (email_exists, mark) {
        (true, None) => SweepStep::Keep,
        (true, Some(_)) => SweepStep::Unmark,
        (false, None) => SweepStep::MarkOrphaned(now),
        (false, Some(since)) => match since.parse::<Timestamp>() {
            // A mark we cannot read is replaced, so the entry still ages out instead of being
            // kept for ever.
            Err(_) => SweepStep::MarkOrphaned(now),
            Ok(since) => {
                let age: Duration = (now - since).try_into().unwrap_or_default();
                if age > retention {
                    SweepStep::Delete
                } else {
                    SweepStep::Keep
                }
            }
        },
    }
}

/// Sweeps the ledger every [`SWEEP_INTERVAL`] until the task is dropped.
pub async fn sweep(
    client: Client,
    emails: Store<Email>,
    ledger: Arc<LedgerIndex>,
    retention: Duration,
) {
    // The first sweep runs at once, and an entry whose Email is not in the cache gets marked
    // orphaned: before the Email watch has listed everything, that would be every entry not
    // listed yet (a write each, undone by the next sweep). Likewise for a ledger half listed.
    if crate::store_ready::listed(&emails).await.is_err() {
        return;
    }
    ledger.wait_until_ready().await;
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        // Decided first, under the index's lock; written after, without it.
        let due = ledger.pick(|entry| {
            let email_exists = emails
                .get(&ObjectRef::new(entry.email_name).within(entry.namespace))
                .is_some();
            match sweep_step(email_exists, entry.orphaned_since, now, retention) {
                SweepStep::Keep => None,
                step => Some((step, entry.email_name.to_string())),
            }
        });
        for (namespace, name, (step, email)) in due {
            if let Err(err) = write_step(&client, &namespace, &name, &email, step).await {
                tracing::warn!(entry = %format!("{namespace}/{name}"), error = %err, "ledger clean-up failed");
            }
        }
    }
}

async fn write_step(
    client: &Client,
    namespace: &str,
    name: &str,
    email: &str,
    step: SweepStep,
) -> Result<(), kube::Error> {
    let api: Api<EmailDelivery> = Api::namespaced(client.clone(), namespace);
    // An entry to delete is read before its Email is looked for, and its version is the
    // delete's precondition: one written since (its Email re-created and sent again at the
    // boundary) is kept, or a crash before that Email's status write would send it once more.
    let read = if step == SweepStep::Delete {
        let Some(entry) = api.get_metadata_opt(name).await? else {
            return Ok(());
        };
        Some(entry.metadata)
    } else {
        None
    };
    // The cache lacks an Email that our types reject (and, for a moment, one just created):
    // before an entry is marked or deleted, the API server is asked whether its Email is
    // really gone. Metadata only, so a rejected Email is still found. Deleting the entry of an
    // Email that exists would let it be sent again.
    if matches!(step, SweepStep::MarkOrphaned(_) | SweepStep::Delete)
        && Api::<Email>::namespaced(client.clone(), namespace)
            .get_metadata_opt(email)
            .await?
            .is_some()
    {
        return Ok(());
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let annotate = |value: serde_json::Value| serde_json::json!({"metadata": {"annotations": {ORPHANED_SINCE: value}}});
    match step {
        SweepStep::Keep => {}
        SweepStep::Unmark => {
            let patch = annotate(serde_json::Value::Null);
            api.patch(name, &params, &Patch::Merge(&patch)).await?;
        }
        SweepStep::MarkOrphaned(now) => {
            let patch = annotate(now.to_string().into());
            api.patch(name, &params, &Patch::Merge(&patch)).await?;
        }
        SweepStep::Delete => {
            let entry = format!("{namespace}/{name}");
            let Some(read) = read else { return Ok(()) };
            if delete_unless_changed(&api, name, &read).await? {
                tracing::info!(%entry, "deleted EmailDelivery past its retention");
            } else {
                tracing::info!(%entry, "EmailDelivery past its retention changed or went away since it was read; kept");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn an_entry_whose_email_exists_is_kept_and_loses_a_stale_orphan_mark() {
        let now = at("2026-11-29T12:00:00Z");
        assert_eq!(sweep_step(true, None, now, DAY), SweepStep::Keep);
        assert_eq!(
            sweep_step(true, Some("2026-01-01T00:00:00Z"), now, DAY),
            SweepStep::Unmark
        );
    }

    #[test]
    fn an_orphaned_entry_is_marked_then_deleted_only_after_the_retention() {
        let now = at("2026-11-29T12:00:00Z");
        assert_eq!(
            sweep_step(false, None, now, DAY),
            SweepStep::MarkOrphaned(now)
        );
        assert_eq!(
            sweep_step(false, Some("2026-11-29T00:00:00Z"), now, DAY),
            SweepStep::Keep,
            "12 hours of a 24-hour retention"
        );
        assert_eq!(
            sweep_step(false, Some("2026-11-28T11:59:59Z"), now, DAY),
            SweepStep::Delete
        );
        // A mark in the future (a skewed clock) keeps the entry.
        assert_eq!(
            sweep_step(false, Some("2026-12-30T00:00:00Z"), now, DAY),
            SweepStep::Keep
        );
    }

    #[test]
    fn an_unreadable_mark_is_replaced_so_the_entry_still_ages_out() {
        let now = at("2026-11-29T12:00:00Z");
        assert_eq!(
            sweep_step(false, Some("yesterday"), now, DAY),
            SweepStep::MarkOrphaned(now)
        );
    }
}
