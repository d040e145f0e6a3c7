//! `GET /api/v1/reporting/metrics` and `GET /api/v1/reporting/calls`, for the caller's tenant only.

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use common::ApiError;
use common::auth::AuthUser;
use common::error::{Json, Query};

use crate::AppState;
use crate::calls::CallState;
use crate::reporting::{self, Bucket, CallSummary, Cursor, Granularity};
use crate::routes::{page_limit, parse_time};

#[derive(Debug, Deserialize)]
pub struct MetricsQuery {
    granularity: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MetricsAnswer {
    granularity: Granularity,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    buckets: Vec<Bucket>,
}

/// Defaults: hourly, `to` = now, `from` = 24 hours (hourly) or 30 days (daily) before `to`.
pub async fn metrics(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<MetricsQuery>,
) -> Result<Json<MetricsAnswer>, ApiError> {
    let tenant = user.tenant()?;
    let granularity = Granularity::parse(query.granularity.as_deref().unwrap_or("hourly"))?;
    let to = match &query.to {
        Some(text) => parse_time("to", text)?,
        None => Utc::now(),
    };
    let from = match &query.from {
        Some(text) => parse_time("from", text)?,
        None => match granularity {
            Granularity::Hourly => to - Duration::hours(24),
            Granularity::Daily => to - Duration::days(30),
        },
    };
    reporting::check_range(from, to)?;
    let buckets = reporting::metrics(&state.pool, tenant, granularity, from, to).await?;
    Ok(Json(MetricsAnswer {
        granularity,
        from,
        to,
        buckets,
    }))
}

#[derive(Debug, Deserialize)]
pub struct CallsQuery {
    state: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CallsAnswer {
    calls: Vec<CallSummary>,
    next_cursor: Option<String>,
}

pub async fn calls(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<CallsQuery>,
) -> Result<Json<CallsAnswer>, ApiError> {
    let tenant = user.tenant()?;
    let filter = match query.state.as_deref() {
        None | Some("") => None,
        Some(text) => Some(CallState::parse(text).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "state {text:?} must be one of INITIATED, RINGING, ANSWERED, COMPLETED, FAILED"
            ))
        })?),
    };
    let limit = page_limit(query.limit, 50, 200)?;
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(text) => Some(Cursor::decode(text)?),
    };
    let (calls, next) =
        reporting::list_calls(&state.pool, tenant, filter, limit, cursor.as_ref()).await?;
    Ok(Json(CallsAnswer {
        calls,
        next_cursor: next.map(|c| c.encode()),
    }))
}
