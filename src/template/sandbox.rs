//! Where renders run: off the async runtime, a few at a time, within a wall-clock budget.
//!
//! A render is CPU work a tenant controls. On the runtime's worker threads a slow one would
//! hold up the probes, the leader Lease and every other namespace's Emails; here it runs on
//! the blocking pool, at most [`MAX_CONCURRENT_RENDERS`] at once, and a caller waits at most
//! [`RENDER_BUDGET`] for it (fuel ends the render itself soon after). A panic inside is an error.

use std::sync::OnceLock;

use tokio::sync::Semaphore;

use super::error::{RenderError, reasons};
use super::limits::{MAX_CONCURRENT_RENDERS, RENDER_BUDGET};
use crate::api::TemplateErrorDetail;

fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| Semaphore::new(MAX_CONCURRENT_RENDERS))
}

/// Runs `render` on the blocking pool; `what` names it in errors (`EmailTemplate shop/welcome`).
pub async fn run<T, F>(what: String, render: F) -> Result<T, RenderError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    // In workers, the worker's own budget ends the render (and the worker) and says so; this
    // one is then only a backstop for a render that waits for a worker.
    let budget = if super::isolation::in_workers() {
        RENDER_BUDGET + std::time::Duration::from_secs(5)
    } else {
        RENDER_BUDGET
    };
    run_within(what, budget, render).await
}

async fn run_within<T, F>(
    what: String,
    budget: std::time::Duration,
    render: F,
) -> Result<T, RenderError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let fail = |reason: &'static str, message: String| {
        RenderError::new(
            reason,
            TemplateErrorDetail {
                message,
                template: Some(what.clone()),
                ..Default::default()
            },
        )
    };
    // Closed only if the process is ending; then render anyway.
    let _slot = slots().acquire().await.ok();
    let task = tokio::task::spawn_blocking(render);
    match tokio::time::timeout(budget, task).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(fail(
            reasons::TEMPLATE_ERROR,
            "the renderer failed on this template; simplify the template".into(),
        )),
        Err(_) => Err(fail(
            reasons::RENDER_LIMIT,
            format!(
                "rendering took longer than {}s; look for a loop over large strings",
                budget.as_secs()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_render_past_its_budget_is_an_error_and_the_runtime_stays_free() {
        let slow = run_within("t/text".into(), Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_millis(500));
        });
        // The runtime answers while the render runs.
        let other = tokio::time::timeout(Duration::from_millis(50), async { 7 });
        let (slow, other) = tokio::join!(slow, other);
        assert_eq!(other, Ok(7));
        let err = slow.unwrap_err();
        assert_eq!(err.reason, reasons::RENDER_LIMIT);
        assert!(
            err.message
                .starts_with("t/text: rendering took longer than")
        );
    }

    #[tokio::test]
    async fn a_panic_inside_a_render_is_an_error() {
        let err = run_within("t/html".into(), Duration::from_secs(5), || -> u8 {
            panic!("boom")
        })
        .await
        .unwrap_err();
        assert_eq!(err.reason, reasons::TEMPLATE_ERROR);
    }
}
