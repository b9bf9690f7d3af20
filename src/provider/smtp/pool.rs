//! Open connections kept between sends, each closed with QUIT once it has been idle for a
//! short while.
//!
//! A connection waiting in the pool still counts against the server's idle timeout and any
//! per-client connection limit. Discarding stale ones only when the next send comes along
//! would hold them open (and let the server drop them under us) for as long as no mail
//! flows; a limit of a few connections per client would then refuse even the sender's own
//! health check. So every pooled connection has a timer that closes it politely.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::AsyncSmtpConnection;

/// Open connections kept for reuse.
const MAX_IDLE: usize = 4;

struct Idle {
    id: u64,
    conn: AsyncSmtpConnection,
    since: Instant,
}

#[derive(Default)]
struct Slots {
    idle: Mutex<Vec<Idle>>,
    next_id: AtomicU64,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A poisoned lock only means another task panicked mid-push; the list is still valid.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove(&self, id: u64) -> Option<AsyncSmtpConnection> {
        let mut idle = self.lock();
        let at = idle.iter().position(|i| i.id == id)?;
        Some(idle.remove(at).conn)
    }
}

/// The idle connections of one provider.
pub(super) struct Pool {
    slots: Arc<Slots>,
    /// Idle time after which a connection is closed.
    max_idle: Duration,
    /// Limit for the QUIT exchange.
    quit_timeout: Duration,
}

impl Pool {
    pub(super) fn new(max_idle: Duration, quit_timeout: Duration) -> Self {
        Pool {
            slots: Arc::default(),
            max_idle,
            quit_timeout,
        }
    }

    /// The most recently used connection that has not been idle too long. Older ones are
    /// closed here in case their timer has not fired yet.
    pub(super) fn take(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let idle = self.slots.lock().pop()?;
            if idle.since.elapsed() < self.max_idle {
                return Some(idle.conn);
            }
            close_later(idle.conn, self.quit_timeout);
        }
    }

    /// Keeps a connection that finished a transaction cleanly, or closes it when the pool
    /// is full.
    pub(super) async fn give_back(&self, conn: AsyncSmtpConnection) {
        let id = self.slots.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut idle = self.slots.lock();
            if idle.len() < MAX_IDLE {
                idle.push(Idle {
                    id,
                    conn,
                    since: Instant::now(),
                });
                drop(idle);
                self.close_when_idle(id);
                return;
            }
        }
        close(conn, self.quit_timeout).await;
    }

    /// The timer of one pooled connection. It holds the pool weakly: a dropped provider
    /// does not wait for its timers.
    fn close_when_idle(&self, id: u64) {
        let slots: Weak<Slots> = Arc::downgrade(&self.slots);
        let (after, quit_timeout) = (self.max_idle, self.quit_timeout);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            // Taken by a send meanwhile: then that send owns it (and gives it back under a
            // new id with a new timer).
            let conn = slots.upgrade().and_then(|s| s.remove(id));
            if let Some(conn) = conn {
                close(conn, quit_timeout).await;
            }
        });
    }
}

impl Drop for Pool {
    /// A provider replaced after a config change says goodbye on its open connections.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.slots.lock());
        for i in idle {
            close_later(i.conn, self.quit_timeout);
        }
    }
}

/// QUIT, then close the socket; a server that does not answer in time is not waited for.
async fn close(mut conn: AsyncSmtpConnection, limit: Duration) {
    let _ = tokio::time::timeout(limit, conn.abort()).await;
}

fn close_later(conn: AsyncSmtpConnection, limit: Duration) {
    // Outside a runtime (a provider dropped at shutdown) the socket just closes.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(close(conn, limit));
    }
}
