//! Turning deliveries into rows and writing a batch of rows in one statement.
//!
//! What must not break: the insert is idempotent (`ON CONFLICT DO NOTHING` on the primary key
//! (chat_id, number)), and `messages_count` grows by the rows *this* statement inserted, in the same
//! transaction — so a redelivered batch neither duplicates a row nor double-counts it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use chat::queue::{MESSAGE_VERSION, QueuedMessage};
use chat::routes::messages::MAX_BODY_CHARS;
use common::db;

/// A message ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub chat_id: i64,
    pub number: i32,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// Why a delivery can never be written (it goes to the dead-letter queue).
pub fn parse(payload: &[u8]) -> Result<Row, String> {
    let message: QueuedMessage =
        serde_json::from_slice(payload).map_err(|e| format!("not a queued message: {e}"))?;
    if message.v != MESSAGE_VERSION {
        return Err(format!("unknown message version {}", message.v));
    }
    if message.chat_id <= 0 || message.number <= 0 {
        return Err(format!(
            "chat_id {} / number {} must be positive",
            message.chat_id, message.number
        ));
    }
    let chars = message.body.chars().count();
    if !(1..=MAX_BODY_CHARS).contains(&chars) || message.body.contains('\0') {
        return Err(format!("body of {chars} characters is not storable"));
    }
    Ok(Row {
        chat_id: message.chat_id,
        number: message.number,
        body: message.body,
        created_at: message.created_at,
    })
}

/// How a write failed.
#[derive(Debug)]
pub enum WriteError {
    /// The rows themselves are refused (unknown chat, a value Postgres rejects): retrying the same
    /// rows cannot help.
    Rejected(sqlx::Error),
    /// Postgres is unavailable, busy, or the statement lost a deadlock: retry later.
    Transient(sqlx::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Rejected(e) => write!(f, "rows rejected: {e}"),
            WriteError::Transient(e) => write!(f, "database unavailable: {e}"),
        }
    }
}

fn classify(e: sqlx::Error) -> WriteError {
    // Class 22 (data exception) and 23 (integrity constraint): the data's fault.
    match db::sqlstate(&e) {
        Some(code) if code.starts_with("22") || code.starts_with("23") => WriteError::Rejected(e),
        _ => WriteError::Transient(e),
    }
}

/// Inserts `rows` in one statement and bumps their chats' `messages_count`; returns how many rows
/// were new (the rest were already there: redeliveries).
pub async fn write(pool: &PgPool, rows: &[Row]) -> Result<u64, WriteError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let chat_ids: Vec<i64> = rows.iter().map(|r| r.chat_id).collect();
    let numbers: Vec<i32> = rows.iter().map(|r| r.number).collect();
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    let created: Vec<DateTime<Utc>> = rows.iter().map(|r| r.created_at).collect();
    // The chats rows are locked in id order before the update, so two writers bumping the same
    // chats cannot deadlock each other.
    let inserted: i64 = sqlx::query_scalar(
        "WITH inserted AS (
             INSERT INTO chat_messages (chat_id, number, body, created_at)
             SELECT * FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::timestamptz[])
             ON CONFLICT (chat_id, number) DO NOTHING
             RETURNING chat_id
         ), counted AS (
             SELECT chat_id, count(*) AS n FROM inserted GROUP BY chat_id
         ), locked AS (
             SELECT c.id FROM chats c JOIN counted ON c.id = counted.chat_id
             ORDER BY c.id FOR NO KEY UPDATE OF c
         ), bumped AS (
             UPDATE chats c SET messages_count = c.messages_count + counted.n
             FROM counted JOIN locked ON locked.id = counted.chat_id
             WHERE c.id = counted.chat_id
         )
         SELECT COALESCE(SUM(n), 0)::bigint FROM counted",
    )
    .bind(&chat_ids)
    .bind(&numbers)
    .bind(&bodies)
    .bind(&created)
    .fetch_one(pool)
    .await
    .map_err(classify)?;
    Ok(inserted as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_messages_parse() {
        let good = serde_json::json!({"v": 1, "chat_id": 3, "number": 7, "body": "hi",
                                      "created_at": "2026-11-27T10:00:00Z"});
        let row = parse(good.to_string().as_bytes()).unwrap();
        assert_eq!((row.chat_id, row.number, row.body.as_str()), (3, 7, "hi"));
        let bad = [
            "not json".to_string(),
            "{}".to_string(),
            serde_json::json!({"v": 2, "chat_id": 3, "number": 7, "body": "hi", "created_at": "2026-11-27T10:00:00Z"}).to_string(),
            serde_json::json!({"v": 1, "chat_id": 3, "number": 0, "body": "hi", "created_at": "2026-11-27T10:00:00Z"}).to_string(),
            serde_json::json!({"v": 1, "chat_id": -1, "number": 1, "body": "hi", "created_at": "2026-11-27T10:00:00Z"}).to_string(),
            serde_json::json!({"v": 1, "chat_id": 3, "number": 1, "body": "", "created_at": "2026-11-27T10:00:00Z"}).to_string(),
            serde_json::json!({"v": 1, "chat_id": 3, "number": 1, "body": "a\u{0}b", "created_at": "2026-11-27T10:00:00Z"}).to_string(),
            serde_json::json!({"v": 1, "chat_id": 3, "number": 1, "body": "x".repeat(4097), "created_at": "2026-11-27T10:00:00Z"}).to_string(),
            serde_json::json!({"v": 1, "chat_id": 3, "number": 1, "body": "hi", "created_at": "yesterday"}).to_string(),
        ];
        for payload in bad {
            assert!(parse(payload.as_bytes()).is_err(), "{payload}");
        }
    }
}
