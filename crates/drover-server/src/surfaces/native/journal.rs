//! `/api/v1/journal`: the event journal read back a page at a time (with `waitMs`, a long-poll
//! for the next entry), and `/api/v1/journal/verify`, its consistency check.
//!
//! Translation only: the query is checked and turned into one store read (or one wait, which
//! is `wake`'s), and the check is `crate::consistency::check`, answered in camelCase. Nothing
//! here interprets an entry: entries go out in `drover_core::journal`'s own encoding.

use super::error::{ApiError, Refusals};
use crate::extract::ApiQuery;
use crate::{AppState, consistency};
use axum::Json;
use axum::extract::State;
use drover_api as api;
use drover_core::journal::Entry;
use drover_core::rules::MAX_WAIT_MS;
use serde::Deserialize;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Entries per page when the reader does not say, and the most it may ask for.
const PAGE: u32 = 100;
const PAGE_MAX: u32 = 1000;

/// How often a waiting read looks at the journal even when this server saw no write: another
/// replica's writes reach it only as an occasional poke.
const RECHECK: Duration = Duration::from_millis(500);

/// The journal's routes. They carry every journaled item, runner session ids included (which
/// `GET /api/v1/runners` shows only to holders of the API key), so `native::routes` puts them
/// behind the API key for reads too, `--public-reads` or not.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read))
        .routes(routes!(verify))
}

/// `?after=N&limit=M&waitMs=W`; unknown parameters are refused, so that a misspelt `waitMs`
/// does not silently turn a long-poll into a busy loop.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JournalQuery {
    after: Option<u64>,
    limit: Option<u32>,
    wait_ms: Option<u64>,
}

/// Entries after `after` (0: from the first), at most `limit`, oldest first; with `waitMs`,
/// when there are none yet, waits until one is written or the time has passed (then answers
/// none). `head` is read after the entries, so it is never below the last one.
#[utoipa::path(get, path = "/api/v1/journal", tag = "native", security(("apiKey" = [])),
    params(("after" = Option<u64>, Query, description = "Entries after this one (0: from the first)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Entries per page"),
        ("waitMs" = Option<u64>, Query, maximum = 30000, description = "When there are none yet, wait up to this many milliseconds for one")),
    responses((status = 200, description = "Journal entries, oldest first, in the journal's own encoding, and the journal's head", body = api::JournalPage), Refusals))]
async fn read(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<JournalQuery>,
) -> Result<Json<api::JournalPage<Entry>>, ApiError> {
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!("limit must be between 1 and {PAGE_MAX} (got {limit})"),
        ));
    }
    let wait_ms = q.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(
            "INVALID_QUERY",
            format!(
                "waitMs must be between 0 and {MAX_WAIT_MS} milliseconds (got {wait_ms}); read \
                 again to wait longer"
            ),
        ));
    }
    let journal = &app.store.journal;
    let entries = app
        .wake
        .until_written(Duration::from_millis(wait_ms), RECHECK, || {
            journal.journal(after, limit)
        })
        .await?;
    let head = journal.journal_head().await?;
    Ok(Json(api::JournalPage { entries, head }))
}

#[utoipa::path(get, path = "/api/v1/journal/verify", tag = "native", security(("apiKey" = [])),
    responses((status = 200, description = "The journal replayed and compared with the live tables", body = api::JournalVerification), Refusals))]
async fn verify(State(app): State<AppState>) -> Result<Json<api::JournalVerification>, ApiError> {
    let report = consistency::check(app.store.journal.as_ref(), app.clock.now()).await?;
    Ok(Json(api::JournalVerification {
        consistent: report.is_consistent(),
        items_verified: report.items_verified,
        inconsistencies: report.inconsistencies(),
        head: report.head,
        verified_at: drover_core::time::format(&report.verified_at),
        details: report.details,
    }))
}
