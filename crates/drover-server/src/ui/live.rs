//! The dashboard's live updates: server-sent event streams of the figures a page shows, sent
//! again after committed writes change them.
//!
//! A stream reads the same store calls its page reads, when the server's `Wake` says a write
//! was committed (at most every [`COALESCE`], so a burst of writes is one read), and at least
//! every [`RECHECK`] (another replica's writes reach this one only as an occasional notice).
//! It sends only what changed, and ends when the server stops, so a browser that keeps a page
//! open never holds up a graceful stop. It decides nothing.

use super::UiError;
use crate::AppState;
use crate::extract::ApiPath;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;

/// Writes within this much of each other are read once.
const COALESCE: Duration = Duration::from_millis(250);
/// Read again at least this often, changes seen or not.
const RECHECK: Duration = Duration::from_secs(5);

/// A stream of `read`'s answers: the first at once, then each that differs from the last sent,
/// until the server stops. A failed read is skipped (the page keeps its last figures).
fn stream<F, Fut>(app: AppState, read: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: Fn(AppState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Value, UiError>> + Send,
{
    let written = app.wake.written();
    futures::stream::unfold(
        (app, read, written, None::<Value>, true),
        |(app, read, mut written, mut last, first)| async move {
            let mut wait = !first;
            loop {
                if wait {
                    tokio::select! {
                        _ = app.wake.closed() => return None,
                        changed = written.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                            tokio::select! {
                                _ = app.wake.closed() => return None,
                                _ = tokio::time::sleep(COALESCE) => {}
                            }
                        }
                        _ = tokio::time::sleep(RECHECK) => {}
                    }
                }
                wait = true;
                written.borrow_and_update();
                match read(app.clone()).await {
                    Ok(now) if last.as_ref() != Some(&now) => {
                        let event = Event::default().data(now.to_string());
                        last = Some(now);
                        return Some((Ok(event), (app, read, written, last, false)));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "a dashboard stream's read failed"),
                }
            }
        },
    )
}

/// The overview's cards.
pub(super) async fn overview(
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(stream(app, |app| async move {
        let o = app.store.ops.overview().await?;
        Ok(json!({
            "activeNodes": o.active_nodes,
            "pendingTasks": o.pending_tasks,
            "runningTasks": o.running_tasks,
        }))
    }))
    .keep_alive(KeepAlive::default())
}

/// A job's status and counts.
pub(super) async fn job(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    // An unknown job is a 404 now, not an empty stream.
    app.store.jobs.get_job(&id).await?;
    Ok(Sse::new(stream(app, move |app| {
        let id = id.clone();
        async move {
            let j = app.store.jobs.get_job(&id).await?;
            let c = &j.counts;
            Ok(json!({
                "status": j.status.as_str(),
                "total": c.total,
                "finished": c.done + c.failed + c.cancelled,
                "pending": c.new,
                "running": c.running,
                "done": c.done,
                "failed": c.failed,
                "cancelled": c.cancelled,
            }))
        }
    }))
    .keep_alive(KeepAlive::default()))
}
