//! `/api/v1/applications/{token}/chats/{number}/messages`: the write path (202 after the broker's
//! confirm) and the reads (from Postgres; the pages of `list` through the read cache, which only
//! ever holds committed rows: `crate::read_cache`).
//!
//! The order of the write is what makes "every 202 is exactly one row" hold: resolve the chat,
//! allocate the number (committed in Postgres), publish persistent and wait for the confirm, then
//! answer. A failure before the confirm answers 503 and burns the number (a gap the audit reports,
//! never a duplicate); after the confirm the writer owns the message.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use metrics::histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use common::ApiError;
use common::auth::AuthUser;
use common::db;
use common::error::{Json, Path, Query};

use crate::AppState;
use crate::read_cache::Key;
use crate::routes::{PageQuery, encoded, json_response, text_field, user_id};
use queue::QueuedMessage;

pub use queue::MAX_BODY_CHARS;
pub const MAX_QUERY_CHARS: usize = 200;
/// Most hits a search returns.
pub const SEARCH_LIMIT: i64 = 100;

#[derive(Debug, Deserialize)]
pub struct NewMessage {
    body: String,
}

#[derive(Debug, Serialize)]
pub struct Accepted {
    number: i32,
    chat_number: i32,
    body: String,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Message {
    number: i32,
    body: String,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct MessagePage {
    messages: Vec<Message>,
    page: i64,
    per_page: i64,
}

#[derive(Debug, Serialize)]
pub struct SearchHits {
    messages: Vec<Message>,
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// The chat's id after the owner check.
async fn chat_id(
    state: &AppState,
    user: &AuthUser,
    token: &str,
    chat_number: i32,
) -> Result<i64, ApiError> {
    let app = state
        .directory
        .application(&state.pool, user_id(user)?, token)
        .await?;
    state.directory.chat(&state.pool, app.id, chat_number).await
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Path((token, chat_number)): Path<(String, i32)>,
    Json(new): Json<NewMessage>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    text_field("body", &new.body, MAX_BODY_CHARS)?;
    let chat_id = chat_id(&state, &user, &token, chat_number).await?;
    let started = Instant::now();
    let number = state.message_numbers.allocate(chat_id).await?;
    let numbered = Instant::now();
    // Its id is made here, once: a redelivery carries it, another message claiming the same
    // number cannot.
    let message = QueuedMessage::new(chat_id, number, new.body);
    let payload = serde_json::to_vec(&message).map_err(ApiError::internal)?;
    state.broker.submit(payload).await?;
    // Where an accepted write's time went: waiting for its number, then for its batch's confirm.
    histogram!("chat_write_stage_seconds", "stage" => "number")
        .record((numbered - started).as_secs_f64());
    histogram!("chat_write_stage_seconds", "stage" => "publish")
        .record(numbered.elapsed().as_secs_f64());
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            number,
            chat_number,
            body: message.body,
        }),
    ))
}

pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Path((token, chat_number)): Path<(String, i32)>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let page = query.validate()?;
    let chat_id = chat_id(&state, &user, &token, chat_number).await?;
    let cache = &state.read_cache;
    if let Some(body) = cache.messages_page(chat_id, page.key()) {
        return Ok(json_response(body));
    }
    let ticket = cache.ticket(Key::Chat(chat_id));
    let messages: Vec<Message> = sqlx::query_as(
        "SELECT number, body, created_at FROM chat_messages
         WHERE chat_id = $1 ORDER BY number LIMIT $2 OFFSET $3",
    )
    .bind(chat_id)
    .bind(page.per_page)
    .bind(page.offset())
    .fetch_all(&state.pool)
    .await
    .map_err(db::api_error)?;
    let last_number = messages.last().map(|m| m.number);
    let count = messages.len();
    let body = encoded(&MessagePage {
        messages,
        page: page.page,
        per_page: page.per_page,
    })?;
    cache.store_messages_page(
        ticket,
        chat_id,
        page.key(),
        last_number,
        count,
        body.clone(),
    );
    Ok(json_response(body))
}

pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path((token, chat_number, number)): Path<(String, i32, i32)>,
) -> Result<Json<Message>, ApiError> {
    let chat_id = chat_id(&state, &user, &token, chat_number).await?;
    let message: Option<Message> = sqlx::query_as(
        "SELECT number, body, created_at FROM chat_messages WHERE chat_id = $1 AND number = $2",
    )
    .bind(chat_id)
    .bind(number)
    .fetch_optional(&state.pool)
    .await
    .map_err(db::api_error)?;
    message
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("message {number} not found (yet)")))
}

/// Full-text search with English stemming (`q=run` finds "running"), web-search syntax
/// (`"a phrase"`, `or`, `-word`), best-first up to [`SEARCH_LIMIT`] hits in number order.
pub async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    Path((token, chat_number)): Path<(String, i32)>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<SearchHits>, ApiError> {
    let q = query
        .q
        .ok_or_else(|| ApiError::bad_request("query parameter q is required"))?;
    text_field("q", &q, MAX_QUERY_CHARS)?;
    let chat_id = chat_id(&state, &user, &token, chat_number).await?;
    let messages = sqlx::query_as(
        "SELECT number, body, created_at FROM chat_messages
         WHERE chat_id = $1 AND search @@ websearch_to_tsquery('english', $2)
         ORDER BY number LIMIT $3",
    )
    .bind(chat_id)
    .bind(&q)
    .bind(SEARCH_LIMIT)
    .fetch_all(&state.pool)
    .await
    .map_err(db::api_error)?;
    Ok(Json(SearchHits { messages }))
}
