//! HTTP handlers, one module per resource.

pub mod calls;
pub mod channels;
pub mod reporting;

use chrono::{DateTime, Utc};

use common::ApiError;

/// Parses an RFC 3339 timestamp from input field `name`; 400 names it.
pub fn parse_time(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::bad_request(format!("{name} {text:?} is not an RFC 3339 timestamp: {e}"))
        })
}

/// A page size: `default` when absent, 422 outside `1..=max`.
pub fn page_limit(limit: Option<i64>, default: u32, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=i64::from(max)).contains(&n) => Ok(n as u32),
        Some(n) => Err(ApiError::unprocessable(format!(
            "limit {n} must be 1–{max}"
        ))),
    }
}
