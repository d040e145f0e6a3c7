//! `POST /api/v1/demo/events/call`: one call event through the state machine (see `calls`), then
//! published when it changed something: on Redis subject `call.{tenant}.{state}` (tenant-scoped, so
//! the gateway can hand a socket only its own tenant's calls), in an envelope whose `subject` is
//! `call.{state}` (what clients subscribe to) with `"tenant"` and `"origin":"messages"`.

use axum::extract::State;
use chrono::{Duration, Utc};
use metrics::counter;
use serde::{Deserialize, Serialize};

use common::ApiError;
use common::auth::AuthUser;
use common::error::Json;

use crate::AppState;
use crate::calls::{self, CallEvent, CallState};
use crate::routes::parse_time;

const MAX_CALL_ID: usize = 128;
const MAX_NUMBER: usize = 64;
/// How far in the future an event's `timestamp` may be (clock skew between systems).
const MAX_FUTURE: Duration = Duration::minutes(5);

#[derive(Debug, Deserialize)]
pub struct EventBody {
    call_id: String,
    state: String,
    from: Option<String>,
    to: Option<String>,
    /// When the event happened (RFC 3339); now when absent.
    timestamp: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EventAnswer {
    call_id: String,
    state: CallState,
    previous_state: Option<CallState>,
}

/// What subscribers of `call.*` receive as the envelope's `data`.
#[derive(Debug, Serialize)]
struct Published<'a> {
    tenant_id: uuid::Uuid,
    call_id: &'a str,
    state: CallState,
    previous_state: Option<CallState>,
    from: &'a str,
    to: &'a str,
    at: chrono::DateTime<Utc>,
}

fn check_call_id(id: &str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_CALL_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "call_id must be 1–{MAX_CALL_ID} of A-Z a-z 0-9 _ . : -"
        )))
    }
}

fn check_number(field: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v)
            if v.is_empty()
                || v.chars().count() > MAX_NUMBER
                || v.chars().any(char::is_control) =>
        {
            Err(ApiError::unprocessable(format!(
                "{field} must be 1–{MAX_NUMBER} characters without control characters"
            )))
        }
        other => Ok(other),
    }
}

/// The call-transition series at 0 from the start: every state × transition, repeat, conflict.
pub fn register_metrics() {
    for state in CallState::ALL {
        for outcome in ["transition", "repeat", "conflict"] {
            counter!("messages_call_events_total", "state" => state.as_str(), "outcome" => outcome)
                .increment(0);
        }
    }
}

pub async fn post_event(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<EventBody>,
) -> Result<Json<EventAnswer>, ApiError> {
    let tenant = user.tenant()?;
    check_call_id(&body.call_id)?;
    let next = CallState::parse(&body.state).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "state {:?} must be one of INITIATED, RINGING, ANSWERED, COMPLETED, FAILED",
            body.state
        ))
    })?;
    let now = Utc::now();
    let at = match &body.timestamp {
        Some(text) => parse_time("timestamp", text)?,
        None => now,
    };
    if at > now + MAX_FUTURE {
        return Err(ApiError::unprocessable(
            "timestamp is more than 5 minutes in the future",
        ));
    }
    let event = CallEvent {
        tenant,
        call_id: body.call_id,
        state: next,
        from: check_number("from", body.from)?,
        to: check_number("to", body.to)?,
        at,
    };
    let applied = calls::apply(&state.pool, &event).await;
    let outcome = match &applied {
        Ok(applied) if applied.changed => "transition",
        Ok(_) => "repeat",
        Err(error) if error.code == "conflict" => "conflict",
        Err(error) if error.status.is_client_error() => "invalid",
        Err(_) => "error",
    };
    counter!("messages_call_events_total", "state" => next.as_str(), "outcome" => outcome)
        .increment(1);
    let applied = applied?;
    if applied.changed {
        let data = Published {
            tenant_id: tenant,
            call_id: &event.call_id,
            state: applied.state,
            previous_state: applied.previous,
            from: &applied.from,
            to: &applied.to,
            at,
        };
        state
            .publish_for_tenant(
                &applied.state.subject(),
                Some(tenant),
                user.subject(),
                &data,
            )
            .await;
    }
    Ok(Json(EventAnswer {
        call_id: event.call_id,
        state: applied.state,
        previous_state: applied.previous,
    }))
}
