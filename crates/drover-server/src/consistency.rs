//! The journal's consistency check: replay the store's journal from its first entry and compare
//! the state it rebuilds with the live tables. One function, [`check`], that every surface
//! answers from (`GET /api/v1/journal/verify`, the placement contract's
//! `GET /fallback/consistency`, `drover journal verify` through the first).
//!
//! This module owns the procedure: read the live state first (with the journal's head in the
//! same snapshot), then the entries `1..=head` a page at a time (or, once the journal was
//! compacted, its snapshot and the entries after it), replay them, compare. Writes
//! that commit while the check runs have sequence numbers above that head and are not read, so
//! a busy server is checked against one consistent point. A missing entry (a gap, or a journal
//! that ends before its head) or an entry that cannot be applied is an inconsistency of its own,
//! named in the report; the state is then not compared, since a replay around a hole builds a
//! state no store ever had. What an entry means and how two states differ is
//! `drover_core::journal`'s; this module must not re-judge either, nor pick status codes (the
//! surfaces map its errors, as they map every store error).
//!
//! It also holds the placement contract's handler for `GET /fallback/consistency`
//! ([`fallback_consistency`]), a translation only, for the placement surface to mount.

use crate::AppState;
use crate::surfaces::placement::PlacementApiError;
use axum::Json;
use axum::extract::State;
use drover_core::Timestamp;
use drover_core::journal::{Entry, State as Journaled};
use drover_store::{JournalStore, LiveState, StoreError};

/// Entries read per store call while replaying.
pub const PAGE: u32 = 1000;

/// What a check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The items compared: the larger of the replayed and the live state's (an item on one side
    /// only is compared too: it is a difference).
    pub items_verified: u64,
    /// One sentence per inconsistency, naming the entry or the item; empty when consistent.
    pub details: Vec<String>,
    /// The journal's head the check stopped at: the live state was read at this entry.
    pub head: u64,
    /// When the check was made.
    pub verified_at: Timestamp,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.details.is_empty()
    }

    pub fn inconsistencies(&self) -> u64 {
        self.details.len() as u64
    }
}

/// Checks the journal of `journal` against its live tables (see the module docs); `now` is the
/// check's time, for the report. An error is the store's: the check could not be made.
///
/// When the journal was compacted, the replay starts from its snapshot. Should a compaction
/// drop entries between reading the snapshot and reading them, the check starts again (a
/// compaction runs at most every few seconds, so once is enough in practice; three tries).
pub async fn check(journal: &dyn JournalStore, now: Timestamp) -> Result<Report, StoreError> {
    let mut tries = 0;
    loop {
        let live = journal.live_state().await?;
        let snapshot = journal.snapshot().await?;
        let from = snapshot.as_ref().map_or(0, |s| s.applied);
        let report = check_from(journal, snapshot.unwrap_or_default(), live, now).await?;
        tries += 1;
        let moved = journal.snapshot().await?.map_or(0, |s| s.applied) != from;
        if report.is_consistent() || !moved || tries == 3 {
            return Ok(report);
        }
    }
}

/// The rest of [`check`], once `live` has been read, for a journal never compacted: replays
/// the entries up to `live.head` and compares. Entries written since `live` was read are not
/// looked at.
pub async fn check_against(
    journal: &dyn JournalStore,
    live: LiveState,
    now: Timestamp,
) -> Result<Report, StoreError> {
    check_from(journal, Journaled::default(), live, now).await
}

/// Replays the entries after `start` (a snapshot, or the empty state) up to `live.head` and
/// compares with `live`.
async fn check_from(
    journal: &dyn JournalStore,
    start: Journaled,
    live: LiveState,
    now: Timestamp,
) -> Result<Report, StoreError> {
    let head = live.head;
    let mut after = start.applied;
    let mut replayed = start;
    let mut details = Vec::new();
    'pages: while after < head {
        let limit = u32::try_from(head - after).map_or(PAGE, |left| left.min(PAGE));
        let page = journal.journal(after, limit).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        // Entries past the head committed after the live state was read: not this check's.
        for entry in page.iter().take_while(|e| e.seq <= head) {
            if let Err(why) = replay(&mut replayed, entry) {
                details.push(why);
                break 'pages;
            }
        }
    }
    if details.is_empty() && replayed.applied < head {
        details.push(format!(
            "entries {} to {head} are missing: the journal ends at entry {} but its head is \
             {head}",
            replayed.applied + 1,
            replayed.applied
        ));
    }
    let items = replayed.items().max(live.state.items());
    if details.is_empty() {
        details = compare(&replayed, &live);
    } else {
        details.push(format!(
            "the tables were not compared: the replay stopped after entry {}",
            replayed.applied
        ));
    }
    if !details.is_empty() {
        tracing::warn!(
            head,
            inconsistencies = details.len(),
            first = %details[0],
            "the journal and the live tables disagree"
        );
    }
    Ok(Report {
        items_verified: items,
        details,
        head,
        verified_at: now,
    })
}

/// Applies the next entry; an entry that is not the next one is named.
fn replay(state: &mut Journaled, entry: &Entry) -> Result<(), String> {
    if entry.seq <= state.applied {
        // The store answers entries in order, each once: a repeat is a broken journal, not a
        // harmless redelivery.
        return Err(format!(
            "entry {} appears again after entry {}",
            entry.seq, state.applied
        ));
    }
    state
        .apply(entry)
        .map_err(|e| format!("the journal has a gap: {e}"))
}

fn compare(replayed: &Journaled, live: &LiveState) -> Vec<String> {
    replayed.differences(&live.state, &live.counts)
}

/// `GET /fallback/consistency` of the placement contract: [`check`] in the contract's body
/// (`verified_at` in Unix milliseconds). Mounted by the placement surface
/// (`surfaces::placement::routes`), behind its client routes' key check.
#[utoipa::path(get, path = "/fallback/consistency", tag = "placement", security(("apiKey" = [])),
    responses((status = 200, description = "The journal replayed and compared with the live tables", body = drover_api::placement::ConsistencyReport),
        crate::surfaces::placement::Refusals))]
pub async fn fallback_consistency(
    State(app): State<AppState>,
) -> Result<Json<drover_api::placement::ConsistencyReport>, PlacementApiError> {
    let report = check(app.store.journal.as_ref(), app.clock.now())
        .await
        .map_err(crate::error::ApiError::from)?;
    Ok(Json(drover_api::placement::ConsistencyReport {
        is_consistent: report.is_consistent(),
        items_verified: report.items_verified,
        inconsistencies_found: report.inconsistencies(),
        verified_at: report.verified_at.timestamp_millis(),
        details: report.details,
    }))
}
