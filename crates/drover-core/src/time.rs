//! Time as the domain sees it: UTC instants with a fixed text form.
//!
//! Stores keep instants as fixed-width RFC 3339 text (`2026-01-28T17:00:00.000Z`), so that text
//! order equals time order and `sqlite3` shows readable values. Nothing here reads the clock:
//! callers pass `now` in, which keeps lifecycle logic testable without sleeping.

use chrono::{DateTime, SecondsFormat, Utc};

pub type Timestamp = DateTime<Utc>;

/// The canonical text form of an instant (millisecond precision, `Z` suffix, fixed width).
pub fn format(ts: &Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses the canonical form (or any RFC 3339 instant) back.
pub fn parse(s: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn text_order_is_time_order() {
        let a = Utc.with_ymd_and_hms(2026, 1, 28, 9, 0, 0).unwrap();
        let b = a + chrono::Duration::milliseconds(1500);
        let c = b + chrono::Duration::days(400);
        let (fa, fb, fc) = (format(&a), format(&b), format(&c));
        assert_eq!(fa, "2026-01-28T09:00:00.000Z");
        assert!(fa < fb && fb < fc);
        assert_eq!(fa.len(), fc.len());
        assert_eq!(parse(&fb), Some(b));
    }
}
