//! Turning deliveries into rows and writing a batch of rows in one statement.
//!
//! What must not break: the insert is idempotent (`ON CONFLICT DO NOTHING` on the primary key
//! (chat_id, number)), and `messages_count` grows by the rows *this* statement inserted, in the same
//! transaction — so a redelivered batch neither duplicates a row nor double-counts it. A row the
//! statement skipped is acknowledged only when the stored row carries the same message id (a
//! redelivery); any other skipped row is a [`Written::conflicts`] entry, never a silent ack.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use sqlx::PgPool;
use uuid::Uuid;

use common::db;
use queue::{Rejection, SigningKey};

/// A message ready to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The message id the chat service gave it.
    pub id: Uuid,
    pub chat_id: i64,
    pub number: i32,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// A delivery's rows (one, or a batch's), if it is signed with `key` and every message in it is
/// storable; otherwise why not (the whole delivery goes to the dead-letter queue with the
/// rejection's reason).
pub fn parse(
    key: &SigningKey,
    properties: &BasicProperties,
    payload: &[u8],
) -> Result<Vec<Row>, Rejection> {
    let messages = queue::open_all(key, properties, payload)?;
    Ok(messages
        .into_iter()
        .map(|message| Row {
            id: message.id,
            chat_id: message.chat_id,
            number: message.number,
            body: message.body,
            created_at: message.created_at,
        })
        .collect())
}

/// What a committed write did.
#[derive(Debug, Default, PartialEq)]
pub struct Written {
    /// Rows this statement inserted.
    pub inserted: u64,
    /// Indexes (into the rows written) of rows whose `(chat_id, number)` already holds another
    /// message: a different message id, or a row stored without one. Everything else was inserted
    /// or is a redelivery of the stored row.
    pub conflicts: Vec<Conflict>,
}

/// A row that was not written because its `(chat_id, number)` holds another message.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub index: usize,
    /// The stored row's message id (`None`: stored without one).
    pub stored: Option<Uuid>,
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

/// Inserts `rows` in one statement and bumps their chats' `messages_count`, then sorts the rows
/// the statement skipped into redeliveries and conflicts.
///
/// The same statement announces what it changed on [`queue::commits::CHANNEL`] (per chat: the
/// lowest number inserted and the new count), which listeners hear only after the commit: the chat
/// service's read cache is kept exact by it. (The `WHERE` on `notified` is what makes Postgres run
/// that CTE at all; it is true whenever there are rows to announce.)
///
/// The lookup of skipped rows is a second statement, run only when some were skipped: after the
/// insert, the row that blocked each of them is committed and visible. If that lookup fails the
/// whole write is retried, which is safe: this batch's rows then find themselves (same ids) and
/// count as redeliveries.
pub async fn write(pool: &PgPool, rows: &[Row]) -> Result<Written, WriteError> {
    if rows.is_empty() {
        return Ok(Written::default());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let chat_ids: Vec<i64> = rows.iter().map(|r| r.chat_id).collect();
    let numbers: Vec<i32> = rows.iter().map(|r| r.number).collect();
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    let created: Vec<DateTime<Utc>> = rows.iter().map(|r| r.created_at).collect();
    // The chats rows are locked in id order before the update, so two writers bumping the same
    // chats cannot deadlock each other.
    let inserted: Vec<(i64, i32, Option<Uuid>)> = sqlx::query_as(
        "WITH inserted AS (
             INSERT INTO chat_messages (chat_id, number, body, created_at, message_id)
             SELECT * FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::timestamptz[],
                                  $5::uuid[])
             ON CONFLICT (chat_id, number) DO NOTHING
             RETURNING chat_id, number, message_id
         ), counted AS (
             SELECT chat_id, count(*) AS n, min(number) AS first FROM inserted GROUP BY chat_id
         ), locked AS (
             SELECT c.id FROM chats c JOIN counted ON c.id = counted.chat_id
             ORDER BY c.id FOR NO KEY UPDATE OF c
         ), bumped AS (
             UPDATE chats c SET messages_count = c.messages_count + counted.n
             FROM counted JOIN locked ON locked.id = counted.chat_id
             WHERE c.id = counted.chat_id
             RETURNING c.id, c.application_id, counted.first, c.messages_count
         ), notified AS (
             SELECT pg_notify($6, string_agg('c' || id || ':' || application_id || ':' || first
                                             || ':' || messages_count, ','))
             FROM (SELECT *, (row_number() OVER (ORDER BY id) - 1) / $7 AS chunk FROM bumped) b
             GROUP BY chunk
         )
         SELECT chat_id, number, message_id FROM inserted
         WHERE (SELECT count(*) FROM notified) >= 0",
    )
    .bind(&chat_ids)
    .bind(&numbers)
    .bind(&bodies)
    .bind(&created)
    .bind(&ids)
    .bind(queue::commits::CHANNEL)
    .bind(queue::commits::ENTRIES_PER_NOTIFY as i64)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    let written = inserted.len() as u64;
    if inserted.len() == rows.len() {
        return Ok(Written {
            inserted: written,
            conflicts: Vec::new(),
        });
    }
    // A row is settled when the statement inserted exactly it (its key with its id); the others
    // were skipped. The same message twice in one batch (same key and id) is settled by its
    // inserted twin.
    let stored_here: HashSet<(i64, i32, Uuid)> = inserted
        .into_iter()
        .filter_map(|(chat_id, number, id)| id.map(|id| (chat_id, number, id)))
        .collect();
    let skipped: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| !stored_here.contains(&(r.chat_id, r.number, r.id)))
        .map(|(i, _)| i)
        .collect();
    if skipped.is_empty() {
        return Ok(Written {
            inserted: written,
            conflicts: Vec::new(),
        });
    }
    let stored = stored_ids(pool, rows, &skipped).await?;
    let conflicts = skipped
        .into_iter()
        .filter_map(|index| {
            let row = &rows[index];
            let stored = stored.get(&(row.chat_id, row.number)).copied().flatten();
            (stored != Some(row.id)).then_some(Conflict { index, stored })
        })
        .collect();
    Ok(Written {
        inserted: written,
        conflicts,
    })
}

/// The stored message id of each skipped row's `(chat_id, number)` (inner `None`: stored without
/// one; absent: no row, which only a deletion could cause — a conflict too, never a silent ack).
async fn stored_ids(
    pool: &PgPool,
    rows: &[Row],
    skipped: &[usize],
) -> Result<HashMap<(i64, i32), Option<Uuid>>, WriteError> {
    let chat_ids: Vec<i64> = skipped.iter().map(|&i| rows[i].chat_id).collect();
    let numbers: Vec<i32> = skipped.iter().map(|&i| rows[i].number).collect();
    let stored: Vec<(i64, i32, Option<Uuid>)> = sqlx::query_as(
        "SELECT m.chat_id, m.number, m.message_id
         FROM chat_messages m
         JOIN UNNEST($1::bigint[], $2::int[]) AS k(chat_id, number)
           ON m.chat_id = k.chat_id AND m.number = k.number",
    )
    .bind(&chat_ids)
    .bind(&numbers)
    .fetch_all(pool)
    .await
    .map_err(classify)?;
    Ok(stored
        .into_iter()
        .map(|(chat_id, number, id)| ((chat_id, number), id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signed_well_formed_messages_become_rows() {
        let key = SigningKey::new(b"0123456789abcdef0123456789abcdef");
        let good = serde_json::json!({"v": 2, "id": "6f1c2b9e-8d5a-4c1e-9a57-3c1d2e4f5a6b",
                                      "chat_id": 3, "number": 7, "body": "hi",
                                      "created_at": "2026-11-27T10:00:00Z"})
        .to_string()
        .into_bytes();
        let rows = parse(&key, &key.properties(&good), &good).unwrap();
        let [row] = rows.as_slice() else {
            panic!("one message, one row: {rows:?}")
        };
        assert_eq!(
            (
                row.chat_id,
                row.number,
                row.body.as_str(),
                row.id.to_string()
            ),
            (
                3,
                7,
                "hi",
                "6f1c2b9e-8d5a-4c1e-9a57-3c1d2e4f5a6b".to_string()
            )
        );
        let unsigned = parse(&key, &queue::unsigned_properties(), &good).unwrap_err();
        assert_eq!(unsigned.reason(), "unsigned");
        let other = SigningKey::new(b"another key, also 32 bytes long!");
        let mis_signed = parse(&key, &other.properties(&good), &good).unwrap_err();
        assert_eq!(mis_signed.reason(), "bad_signature");
        // A batch is one row per message, in order.
        let batch = queue::batch_body([good.as_slice(), good.as_slice()].into_iter());
        assert_eq!(
            parse(&key, &key.properties(&batch), &batch).unwrap().len(),
            2
        );
        let garbage = b"{not json".to_vec();
        let malformed = parse(&key, &key.properties(&garbage), &garbage).unwrap_err();
        assert_eq!(malformed.reason(), "malformed");
    }
}
