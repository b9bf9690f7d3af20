//! Open connections kept between sends, closed with QUIT once idle for a short while.
//!
//! A connection waiting in the pool still counts against the server's idle timeout and any
//! per-client connection limit. Discarding stale ones only when the next send comes along
//! would hold them open (and let the server drop them under us) for as long as no mail
//! flows; a limit of a few connections per client would then refuse even the sender's own
//! health check. So a reaper task closes each connection when its idle time is up; it runs
//! only while the pool holds connections.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::AsyncSmtpConnection;

/// Open connections kept for reuse.
const MAX_IDLE: usize = 4;

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

#[derive(Default)]
struct State {
    idle: Vec<Idle>,
    reaper_running: bool,
}

#[derive(Default)]
struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-push; the list is still valid.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The idle connections of one provider.
pub(super) struct Pool {
    shared: Arc<Shared>,
    /// Idle time after which a connection is closed.
    max_idle: Duration,
    /// Limit for the QUIT exchange.
    quit_timeout: Duration,
}

impl Pool {
    pub(super) fn new(max_idle: Duration, quit_timeout: Duration) -> Self {
        Pool {
            shared: Arc::default(),
            max_idle,
            quit_timeout,
        }
    }

    /// The most recently used connection that has not been idle too long. Older ones are
    /// closed here in case the reaper has not got to them yet.
    pub(super) fn take(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let idle = self.shared.lock().idle.pop()?;
            if idle.since.elapsed() < self.max_idle {
                return Some(idle.conn);
            }
            close_later(idle.conn, self.quit_timeout);
        }
    }

    /// Keeps a connection that finished a transaction cleanly, or closes it when the pool
    /// is full.
    pub(super) async fn give_back(&self, conn: AsyncSmtpConnection) {
        let full = {
            let mut state = self.shared.lock();
            if state.idle.len() < MAX_IDLE {
                state.idle.push(Idle {
                    conn,
                    since: Instant::now(),
                });
                if !state.reaper_running {
                    state.reaper_running = true;
                    tokio::spawn(reap(
                        Arc::downgrade(&self.shared),
                        self.max_idle,
                        self.quit_timeout,
                    ));
                }
                None
            } else {
                Some(conn)
            }
        };
        if let Some(conn) = full {
            close(conn, self.quit_timeout).await;
        }
    }
}

/// Sleeps until the oldest connection's idle time is up, closes what is due, and ends when
/// the pool is empty (the next `give_back` starts it again) or gone.
async fn reap(shared: Weak<Shared>, max_idle: Duration, quit_timeout: Duration) {
    loop {
        // Only a weak hold across the sleep: a dropped provider does not wait for us.
        let wait = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut state = shared.lock();
            match state.idle.iter().map(|i| i.since).min() {
                Some(oldest) => (oldest + max_idle).saturating_duration_since(Instant::now()),
                None => {
                    state.reaper_running = false;
                    return;
                }
            }
        };
        tokio::time::sleep(wait).await;
        let due: Vec<Idle> = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut state = shared.lock();
            let (due, keep) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|i| i.since.elapsed() >= max_idle);
            state.idle = keep;
            due
        };
        for idle in due {
            // Each on its own: one server slow to answer QUIT must not delay the others.
            close_later(idle.conn, quit_timeout);
        }
    }
}

impl Drop for Pool {
    /// A provider replaced after a config change says goodbye on its open connections.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.shared.lock().idle);
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
