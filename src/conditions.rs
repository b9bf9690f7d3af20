//! kstatus-style conditions (`Ready`, `Reconciling`, `Stalled`, ...) shared by every kind.
//!
//! Flux (kstatus) and Argo CD read these. Two rules make them trustworthy: every condition
//! carries the generation it describes, and `lastTransitionTime` moves only when the status
//! flips, so a re-reconcile that changes nothing writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

/// Condition status values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition as the reconciler decides it, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Builds the condition list from what is desired, keeping `lastTransitionTime` of every
/// condition whose status did not change. Conditions of other types that the previous list
/// held (for example ones another component owns) are kept as they were.
pub fn merge(
    previous: &[Condition],
    desired: Vec<Desired>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for d in desired {
        let before = previous.iter().find(|c| c.type_ == d.type_);
        let last_transition_time = match before {
            Some(b) if b.status == d.status.as_str() => b.last_transition_time.clone(),
            _ => now.clone(),
        };
        out.push(Condition {
            type_: d.type_.to_string(),
            status: d.status.as_str().to_string(),
            reason: d.reason,
            message: truncate(&d.message, 32 * 1024),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Cuts a message to at most `max` bytes on a character boundary (the API limits condition
/// messages to 32 KiB).
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    // Leave room for the "..." first, then step back to a character boundary: subtracting
    // after finding the boundary could land inside a multi-byte character and panic.
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_stays_while_status_is_unchanged_and_moves_on_a_flip() {
        let first = merge(
            &[],
            vec![Desired::new(
                types::READY,
                Status::False,
                "Pending",
                "waiting",
            )],
            Some(1),
            &at(100),
        );
        let same = merge(
            &first,
            vec![Desired::new(
                types::READY,
                Status::False,
                "Retrying",
                "again",
            )],
            Some(1),
            &at(200),
        );
        assert_eq!(same[0].last_transition_time, at(100));
        assert_eq!(same[0].reason, "Retrying");
        let flipped = merge(
            &same,
            vec![Desired::new(types::READY, Status::True, "Sent", "sent")],
            Some(2),
            &at(300),
        );
        assert_eq!(flipped[0].last_transition_time, at(300));
        assert_eq!(flipped[0].observed_generation, Some(2));
    }

    #[test]
    fn conditions_of_other_types_are_kept() {
        let mut foreign = merge(
            &[],
            vec![Desired::new("Healthy", Status::True, "CheckPassed", "ok")],
            Some(1),
            &at(1),
        );
        foreign = merge(
            &foreign,
            vec![Desired::new(types::READY, Status::True, "Ready", "ok")],
            Some(1),
            &at(2),
        );
        assert_eq!(foreign.len(), 2);
        assert!(find(&foreign, "Healthy").is_some());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let s = "é".repeat(10);
        let t = truncate(&s, 7);
        assert!(t.len() <= 7 + 3);
        assert!(t.ends_with("..."));
    }
}
