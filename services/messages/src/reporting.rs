//! Call reporting (SPEC "Messages service"): per-bucket call metrics from the hourly rollup, and
//! the newest-first call list with an opaque keyset cursor. Both see only the caller's tenant.
//!
//! Buckets are whole UTC hours or days. The range is `[from, to)`: the first bucket is the one
//! holding `from`, the last the one holding the last instant before `to`, and every bucket in
//! between is present (zeros when empty). A call counts in the bucket of its INITIATED event;
//! answered/completed/failed count the calls initiated in that bucket that reached that state.
//! The metrics read at most 8 rollup rows per hour of range (never the calls themselves), so their
//! cost does not grow with the number of calls.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use common::ApiError;

use crate::calls::CallState;
use common::db;

/// The longest range one metrics request may cover.
pub const MAX_RANGE_DAYS: i64 = 90;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hourly,
    Daily,
}

impl Granularity {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "hourly" => Ok(Self::Hourly),
            "daily" => Ok(Self::Daily),
            other => Err(ApiError::unprocessable(format!(
                "granularity {other:?} must be hourly or daily"
            ))),
        }
    }

    pub fn step(self) -> Duration {
        match self {
            Self::Hourly => Duration::hours(1),
            Self::Daily => Duration::days(1),
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Hourly => "hour",
            Self::Daily => "day",
        }
    }

    /// The start of the bucket holding `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        t.duration_trunc(self.step()).unwrap_or(t)
    }
}

/// The bucket starts of `[from, to)`, oldest first.
pub fn bucket_starts(
    granularity: Granularity,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut starts = Vec::new();
    let mut start = granularity.floor(from);
    while start < to {
        starts.push(start);
        start += granularity.step();
    }
    starts
}

/// Checks a requested range: 422 when reversed or longer than 90 days.
pub fn check_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), ApiError> {
    if from > to {
        return Err(ApiError::unprocessable(format!(
            "from ({}) is after to ({})",
            from.to_rfc3339(),
            to.to_rfc3339()
        )));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(ApiError::unprocessable(format!(
            "the range is longer than {MAX_RANGE_DAYS} days"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub bucket_start: DateTime<Utc>,
    pub initiated: i64,
    pub answered: i64,
    pub completed: i64,
    pub failed: i64,
    /// answered / initiated, 0 when nothing was initiated.
    pub answer_rate: f64,
    /// Mean talk time (COMPLETED − ANSWERED) of the answered calls that completed; 0 when none.
    pub avg_talk_seconds: f64,
}

const METRICS: &str = "
SELECT date_trunc($4, bucket_start, 'UTC') AS bucket,
       sum(initiated)::int8, sum(answered)::int8, sum(completed)::int8, sum(failed)::int8,
       sum(talk_seconds)::float8, sum(talked)::int8
FROM call_stats_hourly
WHERE tenant_id = $1 AND bucket_start >= $2 AND bucket_start < $3
GROUP BY 1 ORDER BY 1";

type MetricsRow = (DateTime<Utc>, i64, i64, i64, i64, f64, i64);

/// Every bucket of `[from, to)` for `tenant`.
pub async fn metrics(
    pool: &PgPool,
    tenant: Uuid,
    granularity: Granularity,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Bucket>, ApiError> {
    let starts = bucket_starts(granularity, from, to);
    let (Some(first), Some(last)) = (starts.first().copied(), starts.last().copied()) else {
        return Ok(Vec::new());
    };
    let rows: Vec<MetricsRow> = sqlx::query_as(METRICS)
        .bind(tenant)
        .bind(first)
        .bind(last + granularity.step())
        .bind(granularity.unit())
        .fetch_all(pool)
        .await
        .map_err(db::api_error)?;
    let mut rows = rows.into_iter().peekable();
    Ok(starts
        .into_iter()
        .map(|start| {
            let row = rows.next_if(|row| row.0 == start);
            let (initiated, answered, completed, failed, talk, talked) = row
                .map(|r| (r.1, r.2, r.3, r.4, r.5, r.6))
                .unwrap_or_default();
            Bucket {
                bucket_start: start,
                initiated,
                answered,
                completed,
                failed,
                answer_rate: ratio(answered as f64, initiated),
                avg_talk_seconds: ratio(talk, talked),
            }
        })
        .collect())
}

fn ratio(numerator: f64, denominator: i64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator / denominator as f64
    }
}

/// One call in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CallSummary {
    pub call_id: String,
    pub state: String,
    pub from: String,
    pub to: String,
    pub initiated_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where the next page starts: after this call in (initiated_at, call_id) descending order. Both
/// never change, so rows inserted meanwhile are neither skipped nor repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub initiated_at: DateTime<Utc>,
    pub call_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}:{}",
            self.initiated_at.timestamp_micros(),
            self.call_id
        ))
    }

    pub fn decode(text: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_request("cursor is not one this API returned");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (micros, call_id) = text.split_once(':').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let initiated_at = Utc.timestamp_micros(micros).single().ok_or_else(bad)?;
        if call_id.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            initiated_at,
            call_id: call_id.to_string(),
        })
    }
}

// Four static statements rather than one with optional filters: each gets a plan that uses its
// index (an `$2 IS NULL OR …` filter would be planned generically).
fn calls_query(by_state: bool, after: bool) -> &'static str {
    match (by_state, after) {
        (false, false) => concat!(
            "SELECT call_id, state, from_number AS \"from\", to_number AS \"to\", initiated_at, updated_at FROM calls ",
            "WHERE tenant_id = $1 ORDER BY initiated_at DESC, call_id DESC LIMIT $2"
        ),
        (true, false) => concat!(
            "SELECT call_id, state, from_number AS \"from\", to_number AS \"to\", initiated_at, updated_at FROM calls ",
            "WHERE tenant_id = $1 AND state = $3 ORDER BY initiated_at DESC, call_id DESC LIMIT $2"
        ),
        (false, true) => concat!(
            "SELECT call_id, state, from_number AS \"from\", to_number AS \"to\", initiated_at, updated_at FROM calls ",
            "WHERE tenant_id = $1 AND (initiated_at, call_id) < ($3, $4) ",
            "ORDER BY initiated_at DESC, call_id DESC LIMIT $2"
        ),
        (true, true) => concat!(
            "SELECT call_id, state, from_number AS \"from\", to_number AS \"to\", initiated_at, updated_at FROM calls ",
            "WHERE tenant_id = $1 AND state = $5 AND (initiated_at, call_id) < ($3, $4) ",
            "ORDER BY initiated_at DESC, call_id DESC LIMIT $2"
        ),
    }
}

/// One page of the tenant's calls, newest first, and the cursor of the next page (if any).
pub async fn list_calls(
    pool: &PgPool,
    tenant: Uuid,
    state: Option<CallState>,
    limit: u32,
    after: Option<&Cursor>,
) -> Result<(Vec<CallSummary>, Option<Cursor>), ApiError> {
    // One extra row says whether another page exists.
    let mut query = sqlx::query_as::<_, CallSummary>(calls_query(state.is_some(), after.is_some()))
        .bind(tenant)
        .bind(i64::from(limit) + 1);
    if let Some(cursor) = after {
        query = query.bind(cursor.initiated_at).bind(&cursor.call_id);
    }
    if let Some(state) = state {
        query = query.bind(state.as_str());
    }
    let mut calls = query.fetch_all(pool).await.map_err(db::api_error)?;
    let next = if calls.len() > limit as usize {
        calls.truncate(limit as usize);
        calls.last().map(|last| Cursor {
            initiated_at: last.initiated_at,
            call_id: last.call_id.clone(),
        })
    } else {
        None
    };
    Ok((calls, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn buckets_cover_from_inclusive_to_exclusive() {
        let hourly = bucket_starts(
            Granularity::Hourly,
            t("2026-01-01T10:30:00Z"),
            t("2026-01-01T13:00:00Z"),
        );
        assert_eq!(
            hourly,
            vec![
                t("2026-01-01T10:00:00Z"),
                t("2026-01-01T11:00:00Z"),
                t("2026-01-01T12:00:00Z")
            ]
        );
        let daily = bucket_starts(
            Granularity::Daily,
            t("2026-01-01T23:59:59Z"),
            t("2026-01-03T00:00:01Z"),
        );
        assert_eq!(
            daily,
            vec![
                t("2026-01-01T00:00:00Z"),
                t("2026-01-02T00:00:00Z"),
                t("2026-01-03T00:00:00Z")
            ]
        );
        assert!(
            bucket_starts(
                Granularity::Hourly,
                t("2026-01-01T10:00:00Z"),
                t("2026-01-01T10:00:00Z")
            )
            .is_empty()
        );
    }

    #[test]
    fn ranges_are_checked() {
        assert!(check_range(t("2026-01-02T00:00:00Z"), t("2026-01-01T00:00:00Z")).is_err());
        assert!(check_range(t("2026-01-01T00:00:00Z"), t("2026-04-01T00:00:01Z")).is_err());
        assert!(check_range(t("2026-01-01T00:00:00Z"), t("2026-03-31T00:00:00Z")).is_ok());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            initiated_at: t("2026-01-01T10:30:00.123456Z"),
            call_id: "call:with:colons".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for garbage in [
            "",
            "!!!",
            "bm9jb2xvbg",
            "eDpjYWxs",
            "OTk5OTk5OTk5OTk5OTk5OTk5OTk5Ojo",
        ] {
            let err = Cursor::decode(garbage).unwrap_err();
            assert_eq!(err.status.as_u16(), 400, "{garbage}");
        }
    }
}
