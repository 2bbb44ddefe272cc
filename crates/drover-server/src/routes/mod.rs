//! The HTTP surfaces. Each module maps its routes onto store calls through `translate`; none
//! holds SQL or a lifecycle rule.

pub mod internal;
pub mod public;
pub mod session_runners;

use crate::error::ApiError;
use drover_store::Page;
use serde::Deserialize;

/// Paging and filtering parameters shared by the list endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub cursor: Option<String>,
    pub limit: Option<u32>,
    pub status: Option<String>,
    pub format: Option<String>,
}

impl ListQuery {
    /// The page asked for; `limit` defaults to `default` and may not exceed `max`.
    pub fn page(&self, default: u32, max: u32) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(default);
        if !(1..=max).contains(&limit) {
            return Err(ApiError::bad_request(
                "INVALID_QUERY",
                format!("limit must be between 1 and {max} (got {limit})"),
            ));
        }
        let cursor = match &self.cursor {
            None => None,
            Some(c) => Some(c.parse::<i64>().map_err(|_| {
                ApiError::bad_request(
                    "INVALID_QUERY",
                    format!("cursor {c:?} is not one this server handed out; use nextCursor from the previous page"),
                )
            })?),
        };
        Ok(Page { cursor, limit })
    }

    pub fn status<T>(&self) -> Result<Option<T>, ApiError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        self.status
            .as_deref()
            .map(|s| s.parse::<T>())
            .transpose()
            .map_err(|e| ApiError::bad_request("INVALID_QUERY", format!("status: {e}")))
    }
}
