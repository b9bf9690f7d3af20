//! Renders that cost a worker (they ran past the wall-clock budget or the memory cap),
//! remembered by exactly what they were given, so the same inputs are not rendered again.
//!
//! Such a render holds one of the few render slots for up to [`RENDER_BUDGET`]. Whatever
//! brings its Email or template back without changing it (the echo of the status write that
//! reported the failure, the periodic recheck, a Secret changed in its namespace, a relist)
//! would render it again and fail the same way; a tenant with a handful of such Emails could
//! keep every slot busy. A render is known when its request (namespace, template, spec,
//! variables, parts) and every source its worker read (includes, extends, imports, by name
//! and content) are the same as those of a remembered overrun; it then fails at once with
//! the same error. An entry is forgotten after [`FORGET_AFTER`]: a render that overran on a
//! loaded machine may fit on a quiet one.
//!
//! Hashes are keyed per process ([`RandomState`]), so a tenant cannot craft a request that
//! collides with another tenant's.
//!
//! [`RENDER_BUDGET`]: super::limits::RENDER_BUDGET

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::RenderError;

/// How long an overrun is remembered.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Overruns remembered at most; the oldest goes first.
const CAPACITY: usize = 1024;
/// Sources a remembered render may have read. One that read more is not remembered (its
/// entry would be large, and it is rendered again instead).
pub(super) const MAX_SOURCES: usize = 256;

/// What a render read: each source by name, and the hash of what it was given (`None`
/// hashes as missing).
pub(super) type Read = Vec<(String, u64)>;

pub(super) struct Overruns {
    hasher: RandomState,
    entries: Mutex<HashMap<u64, Entry>>,
}

struct Entry {
    read: Read,
    error: RenderError,
    at: Instant,
}

impl Overruns {
    pub(super) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            entries: Mutex::default(),
        }
    }

    /// The key of a request, from its serialized form.
    pub(super) fn request(&self, body: &[u8]) -> u64 {
        self.hasher.hash_one(body)
    }

    /// The hash of one source as the worker was given it.
    pub(super) fn source(&self, source: Option<&str>) -> u64 {
        self.hasher.hash_one(source)
    }

    /// The error of a remembered overrun of `request` whose sources, read again through
    /// `source`, are unchanged.
    pub(super) fn known(
        &self,
        request: u64,
        now: Instant,
        source: impl Fn(&str) -> Option<String>,
    ) -> Option<RenderError> {
        let (read, error) = {
            let mut entries = self.lock();
            let entry = entries.get(&request)?;
            if now.saturating_duration_since(entry.at) >= FORGET_AFTER {
                entries.remove(&request);
                return None;
            }
            (entry.read.clone(), entry.error.clone())
        };
        // Read outside the lock: a source comes from the template cache.
        read.iter()
            .all(|(name, hash)| self.source(source(name).as_deref()) == *hash)
            .then_some(error)
    }

    /// Remembers an overrun of `request` that read `read`.
    pub(super) fn remember(&self, request: u64, read: Read, error: RenderError, now: Instant) {
        if read.len() > MAX_SOURCES {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= CAPACITY && !entries.contains_key(&request) {
            entries.retain(|_, e| now.saturating_duration_since(e.at) < FORGET_AFTER);
            if entries.len() >= CAPACITY
                && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            request,
            Entry {
                read,
                error,
                at: now,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        // Plain values; a panic elsewhere cannot leave the map half-written.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TemplateErrorDetail;
    use crate::template::error::reasons;

    fn overrun(what: &str) -> RenderError {
        RenderError::new(
            reasons::RENDER_LIMIT,
            TemplateErrorDetail {
                message: format!("{what} took too long"),
                ..Default::default()
            },
        )
    }

    /// Sources as a template cache would hand them out.
    fn library(sources: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let sources: HashMap<String, String> = sources
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| sources.get(name).cloned()
    }

    type Sources<'a> = &'a [(&'a str, &'a str)];

    #[test]
    fn an_overrun_is_known_again_only_for_the_same_request_and_the_same_sources() {
        let o = Overruns::new();
        let t0 = Instant::now();
        let request = o.request(b"slow, with {who: a}");
        let read = vec![
            (
                "base".to_string(),
                o.source(Some("{% block b %}{% endblock %}")),
            ),
            ("gone".to_string(), o.source(None)),
        ];
        o.remember(request, read, overrun("slow"), t0);
        let same = [("base", "{% block b %}{% endblock %}")];
        let later = |s| t0 + Duration::from_secs(s);
        #[rustfmt::skip]
        let cases: [(&str, u64, Sources, u64, bool); 7] = [
            ("the same request and sources",        request,                               &same,                                          1,    true),
            ("still, just before it is forgotten",  request,                               &same,                                          3599, true),
            ("other variables",                     o.request(b"slow, with {who: b}"),     &same,                                          1,    false),
            ("an include changed",                  request,                               &[("base", "{% block b %}x{% endblock %}")],    1,    false),
            ("an include was deleted",              request,                               &[],                                            1,    false),
            ("a missing include now exists",        request,                               &[same[0], ("gone", "here")],                   1,    false),
            ("after an hour",                       request,                               &same,                                          3600, false),
        ];
        for (case, request, sources, at, known) in cases {
            let got = o.known(request, later(at), library(sources));
            assert_eq!(got.is_some(), known, "{case}");
            if let Some(e) = got {
                assert_eq!(e, overrun("slow"), "{case}");
            }
        }
        // Forgotten for good once seen expired.
        assert!(o.known(request, later(1), library(&same)).is_none());
    }

    #[test]
    fn a_render_that_read_too_many_sources_is_not_remembered() {
        let o = Overruns::new();
        let now = Instant::now();
        let read: Read = (0..=MAX_SOURCES)
            .map(|i| (format!("t{i}"), o.source(None)))
            .collect();
        o.remember(1, read, overrun("wide"), now);
        assert!(o.known(1, now, |_| None).is_none());
    }

    #[test]
    fn the_oldest_overrun_makes_room_for_a_new_one() {
        let o = Overruns::new();
        let t0 = Instant::now();
        for i in 0..CAPACITY as u64 {
            o.remember(i, Vec::new(), overrun("old"), t0 + Duration::from_millis(i));
        }
        let now = t0 + Duration::from_secs(10);
        o.remember(u64::MAX, Vec::new(), overrun("new"), now);
        assert_eq!(o.lock().len(), CAPACITY);
        assert!(o.known(0, now, |_| None).is_none(), "the oldest was kept");
        assert!(o.known(1, now, |_| None).is_some());
        assert_eq!(o.known(u64::MAX, now, |_| None), Some(overrun("new")));
    }
}
