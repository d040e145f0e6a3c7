//! The call state machine (SPEC "Messages service"): which event may follow which, and how one
//! event is applied to Postgres.
//!
//! INITIATED → RINGING → ANSWERED → COMPLETED, and INITIATED | RINGING | ANSWERED → FAILED.
//! Repeating the current state is an idempotent no-op; anything else is a conflict.
//!
//! What must not break: two concurrent events for one call never both win. Each event is one SQL
//! statement: the first event is an `INSERT … ON CONFLICT DO NOTHING`, every later one locks the
//! row (`SELECT … FOR UPDATE`) and updates it only if its current state is one the new state may
//! follow. The same statement appends the event to the history and bumps the hourly rollup, so
//! the three can never disagree.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use common::ApiError;

use common::db;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallState {
    Initiated,
    Ringing,
    Answered,
    Completed,
    Failed,
}

impl CallState {
    pub const ALL: [CallState; 5] = [
        CallState::Initiated,
        CallState::Ringing,
        CallState::Answered,
        CallState::Completed,
        CallState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Initiated => "INITIATED",
            CallState::Ringing => "RINGING",
            CallState::Answered => "ANSWERED",
            CallState::Completed => "COMPLETED",
            CallState::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The subject of an event entering this state, as clients see it: `call.initiated`, …. On
    /// Redis it goes out under its tenant: `call.{tenant}.initiated` (`subject::tenant_subject`).
    pub fn subject(self) -> String {
        format!("call.{}", self.as_str().to_ascii_lowercase())
    }

    /// The states this one may directly follow.
    pub fn allowed_from(self) -> &'static [CallState] {
        match self {
            CallState::Initiated => &[],
            CallState::Ringing => &[CallState::Initiated],
            CallState::Answered => &[CallState::Ringing],
            CallState::Completed => &[CallState::Answered],
            CallState::Failed => &[
                CallState::Initiated,
                CallState::Ringing,
                CallState::Answered,
            ],
        }
    }
}

/// What an event does to a call whose current state is `current` (`None`: no such call yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The first event of a call (INITIATED).
    Create,
    /// A legal transition.
    Advance { from: CallState },
    /// The call is already in this state: answered 200, nothing changes.
    Repeat,
    /// 409.
    Conflict,
}

/// The state machine as a pure function: the reference the store and the tests agree on.
pub fn decide(current: Option<CallState>, next: CallState) -> Decision {
    match current {
        None if next == CallState::Initiated => Decision::Create,
        None => Decision::Conflict,
        Some(state) if state == next => Decision::Repeat,
        Some(state) if next.allowed_from().contains(&state) => Decision::Advance { from: state },
        Some(_) => Decision::Conflict,
    }
}

/// A validated call event.
#[derive(Debug, Clone)]
pub struct CallEvent {
    pub tenant: Uuid,
    pub call_id: String,
    pub state: CallState,
    /// Required for INITIATED; later events take the call's stored numbers.
    pub from: Option<String>,
    pub to: Option<String>,
    pub at: DateTime<Utc>,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub previous: Option<CallState>,
    pub state: CallState,
    /// False for an idempotent repeat (nothing stored, nothing published).
    pub changed: bool,
    pub from: String,
    pub to: String,
}

/// Rollup rows per tenant-hour (see the migration): spreads concurrent updates over row locks.
const ROLLUP_SHARDS: u32 = 8;

fn rollup_shard(call_id: &str) -> i16 {
    // FNV-1a: any spread will do, the reporting query sums every shard.
    let hash = call_id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash % ROLLUP_SHARDS) as i16
}

const CREATE: &str = "
WITH ins AS (
    INSERT INTO calls (tenant_id, call_id, state, from_number, to_number, initiated_at, updated_at)
    VALUES ($1, $2, 'INITIATED', $3, $4, $5, $5)
    ON CONFLICT (tenant_id, call_id) DO NOTHING
    RETURNING initiated_at
), ev AS (
    INSERT INTO call_events (tenant_id, call_id, state, previous_state, at)
    SELECT $1, $2, 'INITIATED', NULL, initiated_at FROM ins
), rollup AS (
    INSERT INTO call_stats_hourly AS s (tenant_id, bucket_start, shard, initiated)
    SELECT $1, date_trunc('hour', initiated_at, 'UTC'), $6, 1 FROM ins
    ON CONFLICT (tenant_id, bucket_start, shard) DO UPDATE SET initiated = s.initiated + 1
)
SELECT count(*) FROM ins";

const ADVANCE: &str = "
WITH prev AS (
    SELECT state FROM calls WHERE tenant_id = $1 AND call_id = $2 FOR UPDATE
), upd AS (
    UPDATE calls c SET
        state = $3,
        updated_at = $4,
        answered_at = CASE WHEN $3 = 'ANSWERED' THEN $4 ELSE c.answered_at END,
        ended_at = CASE WHEN $3 IN ('COMPLETED', 'FAILED') THEN $4 ELSE c.ended_at END
    FROM prev
    WHERE c.tenant_id = $1 AND c.call_id = $2 AND prev.state = ANY($5::text[])
    RETURNING prev.state AS previous_state, c.initiated_at, c.answered_at, c.from_number, c.to_number
), ev AS (
    INSERT INTO call_events (tenant_id, call_id, state, previous_state, at)
    SELECT $1, $2, $3, previous_state, $4 FROM upd
), rollup AS (
    INSERT INTO call_stats_hourly AS s
        (tenant_id, bucket_start, shard, answered, completed, failed, talk_seconds, talked)
    SELECT $1, date_trunc('hour', initiated_at, 'UTC'), $6,
        ($3 = 'ANSWERED')::int, ($3 = 'COMPLETED')::int, ($3 = 'FAILED')::int,
        CASE WHEN $3 = 'COMPLETED' AND answered_at IS NOT NULL
             THEN GREATEST(0, EXTRACT(EPOCH FROM ($4 - answered_at)))::float8 ELSE 0 END,
        ($3 = 'COMPLETED' AND answered_at IS NOT NULL)::int
    FROM upd
    ON CONFLICT (tenant_id, bucket_start, shard) DO UPDATE SET
        answered = s.answered + EXCLUDED.answered,
        completed = s.completed + EXCLUDED.completed,
        failed = s.failed + EXCLUDED.failed,
        talk_seconds = s.talk_seconds + EXCLUDED.talk_seconds,
        talked = s.talked + EXCLUDED.talked
)
SELECT previous_state, from_number, to_number FROM upd";

const CURRENT: &str =
    "SELECT state, from_number, to_number FROM calls WHERE tenant_id = $1 AND call_id = $2";

/// Applies one event; a conflict is 409 naming the states involved.
pub async fn apply(pool: &PgPool, event: &CallEvent) -> Result<Applied, ApiError> {
    let shard = rollup_shard(&event.call_id);
    if event.state == CallState::Initiated {
        let (from, to) = match (&event.from, &event.to) {
            (Some(from), Some(to)) => (from.clone(), to.clone()),
            _ => {
                return Err(ApiError::unprocessable(
                    "an INITIATED event needs `from` and `to`",
                ));
            }
        };
        let created: i64 = sqlx::query_scalar(CREATE)
            .bind(event.tenant)
            .bind(&event.call_id)
            .bind(&from)
            .bind(&to)
            .bind(event.at)
            .bind(shard)
            .fetch_one(pool)
            .await
            .map_err(db::api_error)?;
        if created == 1 {
            return Ok(Applied {
                previous: None,
                state: CallState::Initiated,
                changed: true,
                from,
                to,
            });
        }
    } else {
        let allowed: Vec<&str> = event
            .state
            .allowed_from()
            .iter()
            .map(|s| s.as_str())
            .collect();
        let advanced: Option<(String, String, String)> = sqlx::query_as(ADVANCE)
            .bind(event.tenant)
            .bind(&event.call_id)
            .bind(event.state.as_str())
            .bind(event.at)
            .bind(&allowed)
            .bind(shard)
            .fetch_optional(pool)
            .await
            .map_err(db::api_error)?;
        if let Some((previous, from, to)) = advanced {
            return Ok(Applied {
                previous: CallState::parse(&previous),
                state: event.state,
                changed: true,
                from,
                to,
            });
        }
    }
    // Nothing changed: say why, from the state as it is now.
    let current: Option<(String, String, String)> = sqlx::query_as(CURRENT)
        .bind(event.tenant)
        .bind(&event.call_id)
        .fetch_optional(pool)
        .await
        .map_err(db::api_error)?;
    let state = current.as_ref().and_then(|(s, _, _)| CallState::parse(s));
    match (decide(state, event.state), current) {
        (Decision::Repeat, Some((_, from, to))) => Ok(Applied {
            previous: state,
            state: event.state,
            changed: false,
            from,
            to,
        }),
        (_, None) => Err(ApiError::conflict(format!(
            "call {:?} has no events yet: its first event must be INITIATED, not {}",
            event.call_id,
            event.state.as_str()
        ))),
        (_, Some((current, _, _))) => Err(ApiError::conflict(format!(
            "call {:?} is {current}: it cannot become {}",
            event.call_id,
            event.state.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_transitions() {
        use CallState::*;
        let legal = [
            (Initiated, Ringing),
            (Ringing, Answered),
            (Answered, Completed),
            (Initiated, Failed),
            (Ringing, Failed),
            (Answered, Failed),
        ];
        for from in CallState::ALL {
            for to in CallState::ALL {
                let expected = if from == to {
                    Decision::Repeat
                } else if legal.contains(&(from, to)) {
                    Decision::Advance { from }
                } else {
                    Decision::Conflict
                };
                assert_eq!(decide(Some(from), to), expected, "{from:?} -> {to:?}");
            }
            let first = if from == Initiated {
                Decision::Create
            } else {
                Decision::Conflict
            };
            assert_eq!(decide(None, from), first, "first event {from:?}");
        }
    }

    #[test]
    fn states_round_trip_and_name_their_subjects() {
        for state in CallState::ALL {
            assert_eq!(CallState::parse(state.as_str()), Some(state));
        }
        assert_eq!(CallState::parse("initiated"), None);
        assert_eq!(CallState::Answered.subject(), "call.answered");
    }

    #[test]
    fn shards_stay_in_range() {
        for id in ["", "a", "call-1", "ü-long-id-with-unicode"] {
            assert!((0..ROLLUP_SHARDS as i16).contains(&rollup_shard(id)));
        }
    }
}
