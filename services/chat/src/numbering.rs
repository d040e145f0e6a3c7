//! Number allocation: chats per application and messages per chat, each counting from 1, never
//! repeated — also across restarts, several chat processes, and a flushed or restarted Redis.
//!
//! Chats are numbered by Redis `INCR` (one key per application). A missing key is seeded from the
//! database's `max(number)` before incrementing, atomically (a Lua script). Chats are inserted before
//! their 201, so the database's max covers every chat ever answered; the race where Redis is flushed
//! between another request's `INCR` and its `INSERT` is caught by the unique index, and the loser
//! lifts the counter to the database's max and takes the next number.
//!
//! Messages cannot be numbered that way: an accepted message may still be in the queue, so the
//! database's max can be *behind* numbers already answered with 202, and seeding from it would hand
//! a number out twice (the writer would then drop one of the two messages as a "redelivery": a loss).
//! Their counter is therefore a row in Postgres (`chat_message_numbers`), and allocation is batched:
//! requests queue up while one `UPDATE … RETURNING` runs, and the next statement serves all of them
//! — one round trip for many numbers, still exactly 1, 2, 3 … under any number of processes.
//! What must not break: a number is allocated (committed) *before* its message is published.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics::histogram;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use common::ApiError;
use common::db;

use crate::batching::serve_in_batches;

/// Requests waiting for a message number, at most; beyond, callers wait to enqueue.
const MESSAGE_NUMBER_QUEUE: usize = 8192;
/// Most requests one allocation statement serves.
const MESSAGE_NUMBER_BATCH: usize = 2048;

/// Increments the key if it exists; nil when it is missing (the caller seeds it).
const INCR_IF_PRESENT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('INCR', KEYS[1])
end
return false";

/// Raises the key to at least ARGV[1], then increments it.
const RAISE_THEN_INCR: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return redis.call('INCR', KEYS[1])";

/// Chat numbers on Redis, seeded from Postgres.
#[derive(Clone)]
pub struct ChatNumbers {
    redis: ConnectionManager,
    key_prefix: String,
    incr_if_present: redis::Script,
    raise_then_incr: redis::Script,
}

impl ChatNumbers {
    pub fn new(redis: ConnectionManager, key_prefix: String) -> Self {
        Self {
            redis,
            key_prefix,
            incr_if_present: redis::Script::new(INCR_IF_PRESENT),
            raise_then_incr: redis::Script::new(RAISE_THEN_INCR),
        }
    }

    fn key(&self, application_id: i64) -> String {
        format!("{}app:{application_id}:chat_number", self.key_prefix)
    }

    /// The next chat number of the application. `reseed` lifts the counter to the database's max
    /// first (after a unique violation showed it was behind).
    pub async fn allocate(
        &self,
        pool: &PgPool,
        application_id: i64,
        reseed: bool,
    ) -> Result<i32, ApiError> {
        let key = self.key(application_id);
        let mut redis = self.redis.clone();
        if !reseed {
            let next: Option<i64> = self
                .incr_if_present
                .key(&key)
                .invoke_async(&mut redis)
                .await
                .map_err(redis_error)?;
            if let Some(next) = next {
                return to_number(next);
            }
        }
        let max: i32 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(number), 0) FROM chats WHERE application_id = $1",
        )
        .bind(application_id)
        .fetch_one(pool)
        .await
        .map_err(db::api_error)?;
        let next: i64 = self
            .raise_then_incr
            .key(&key)
            .arg(max)
            .invoke_async(&mut redis)
            .await
            .map_err(redis_error)?;
        to_number(next)
    }
}

fn to_number(n: i64) -> Result<i32, ApiError> {
    i32::try_from(n)
        .map_err(|_| ApiError::unprocessable("this application has no chat numbers left"))
}

fn redis_error(e: redis::RedisError) -> ApiError {
    tracing::warn!(error = %e, "redis numbering failed");
    ApiError::unavailable("the numbering store (Redis) is unavailable")
}

struct NumberRequest {
    chat_id: i64,
    reply: oneshot::Sender<Result<i32, ApiError>>,
}

/// Message numbers from Postgres, many per statement.
#[derive(Clone)]
pub struct MessageNumbers {
    requests: mpsc::Sender<NumberRequest>,
}

impl MessageNumbers {
    /// Starts the allocator task; it ends when the last handle is dropped.
    pub fn start(pool: PgPool) -> Self {
        let (requests, rx) = mpsc::channel(MESSAGE_NUMBER_QUEUE);
        // One statement at a time: two in flight measured no better (BASELINES, S4 notes).
        tokio::spawn(serve_in_batches(
            rx,
            MESSAGE_NUMBER_BATCH,
            1,
            move |batch| allocate(pool.clone(), batch),
        ));
        Self { requests }
    }

    /// The next message number of the chat, committed before this returns.
    pub async fn allocate(&self, chat_id: i64) -> Result<i32, ApiError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ApiError::unavailable("the service is shutting down");
        self.requests
            .send(NumberRequest { chat_id, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Serves one batch of requests with one statement.
async fn allocate(pool: PgPool, batch: Vec<NumberRequest>) {
    histogram!("chat_number_batch_size").record(batch.len() as f64);
    let mut wanted: BTreeMap<i64, i32> = BTreeMap::new();
    for request in &batch {
        *wanted.entry(request.chat_id).or_default() += 1;
    }
    match reserve(&pool, &wanted).await {
        Ok(mut next) => {
            for request in batch {
                let answer = match next.get_mut(&request.chat_id) {
                    Some(n) => {
                        *n += 1;
                        Ok(*n)
                    }
                    None => Err(ApiError::not_found("chat not found")),
                };
                let _ = request.reply.send(answer);
            }
        }
        Err(e) => {
            for request in batch {
                let _ = request.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Reserves `count` numbers for each chat; returns, per chat, the number *before* its first one.
async fn reserve(
    pool: &PgPool,
    wanted: &BTreeMap<i64, i32>,
) -> Result<BTreeMap<i64, i32>, ApiError> {
    let ids: Vec<i64> = wanted.keys().copied().collect();
    let counts: Vec<i32> = wanted.values().copied().collect();
    let mut attempt = 0;
    loop {
        // Rows are locked in chat-id order (the CTE sorts them), so two processes allocating for
        // the same chats cannot deadlock.
        let result: Result<Vec<(i64, i32)>, sqlx::Error> = sqlx::query_as(
            "WITH wanted AS (
                 SELECT chat_id, k FROM UNNEST($1::bigint[], $2::int[]) AS w(chat_id, k)
             ), locked AS (
                 SELECT n.chat_id FROM chat_message_numbers n JOIN wanted USING (chat_id)
                 ORDER BY n.chat_id FOR NO KEY UPDATE
             )
             UPDATE chat_message_numbers n SET last_number = n.last_number + wanted.k
             FROM wanted JOIN locked USING (chat_id)
             WHERE n.chat_id = wanted.chat_id
             RETURNING n.chat_id, n.last_number - wanted.k",
        )
        .bind(&ids)
        .bind(&counts)
        .fetch_all(pool)
        .await;
        match result {
            Ok(rows) => return Ok(rows.into_iter().collect()),
            Err(e) if attempt < 3 && db::sqlstate(&e).as_deref() == Some("40P01") => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(db::api_error(e)),
        }
    }
}
