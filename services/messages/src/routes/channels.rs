//! `POST|GET /api/v1/channels/{channel_id}/messages`: store a message and publish it on
//! `channel.{channel_id}` (the gateway's channel WebSocket delivers it), or read a channel's
//! messages newest first with a keyset cursor (`before=<id>`).
//!
//! The message is stored before it is published: a Redis failure loses the live delivery (counted
//! and logged), never the message.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use common::ApiError;
use common::auth::AuthUser;
use common::error::{Json, Path, Query};
use common::subject;

use crate::AppState;
use crate::routes::page_limit;
use common::db;

pub const MAX_BODY_CHARS: usize = 4096;

#[derive(Debug, Deserialize)]
pub struct NewMessage {
    body: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Message {
    pub id: i64,
    pub channel_id: String,
    pub author: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

pub async fn post(
    State(state): State<AppState>,
    user: AuthUser,
    Path(channel_id): Path<String>,
    Json(new): Json<NewMessage>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let subject = subject::channel_subject(&channel_id).map_err(ApiError::bad_request)?;
    let chars = new.body.chars().count();
    if !(1..=MAX_BODY_CHARS).contains(&chars) {
        return Err(ApiError::unprocessable(format!(
            "body is {chars} characters; it must be 1–{MAX_BODY_CHARS}"
        )));
    }
    let message: Message = sqlx::query_as(
        "INSERT INTO channel_messages (channel_id, author, body) VALUES ($1, $2, $3)
         RETURNING id, channel_id, author, body, created_at",
    )
    .bind(&channel_id)
    .bind(user.subject())
    .bind(&new.body)
    .fetch_one(&state.pool)
    .await
    .map_err(db::api_error)?;
    state.publish(&subject, user.subject(), &message).await;
    Ok((StatusCode::CREATED, Json(message)))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<i64>,
    before: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Page {
    messages: Vec<Message>,
    next_before: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    _user: AuthUser,
    Path(channel_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page>, ApiError> {
    subject::channel_subject(&channel_id).map_err(ApiError::bad_request)?;
    let limit = page_limit(query.limit, 50, 200)?;
    let before = match query.before {
        None => i64::MAX,
        Some(id) if id > 0 => id,
        Some(id) => {
            return Err(ApiError::unprocessable(format!(
                "before {id} must be a message id (positive)"
            )));
        }
    };
    let mut messages: Vec<Message> = sqlx::query_as(
        "SELECT id, channel_id, author, body, created_at FROM channel_messages
         WHERE channel_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(&channel_id)
    .bind(before)
    .bind(i64::from(limit) + 1)
    .fetch_all(&state.pool)
    .await
    .map_err(db::api_error)?;
    let next_before = if messages.len() > limit as usize {
        messages.truncate(limit as usize);
        messages.last().map(|m| m.id)
    } else {
        None
    };
    Ok(Json(Page {
        messages,
        next_before,
    }))
}
