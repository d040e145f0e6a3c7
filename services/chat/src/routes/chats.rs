//! `/api/v1/applications/{token}/chats`: numbered chats. A chat is inserted before its 201, with
//! the number from [`crate::numbering::ChatNumbers`]; the unique index on (application, number) is
//! the safety net, and a collision (Redis lost its counter mid-flight) is retried with a reseeded
//! counter. The insert announces the changed chat list (`queue::commits`) to every chat process's
//! read cache once it commits.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;

use common::ApiError;
use common::auth::AuthUser;
use common::db;
use common::error::{Json, Path, Query};

use crate::AppState;
use crate::read_cache::{Key, ListedChat, PageKey};
use crate::routes::{PageQuery, encoded, json_response, user_id};

/// Attempts at a chat number before giving up (each after a unique violation).
const NUMBER_ATTEMPTS: usize = 5;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Chat {
    number: i32,
    messages_count: i64,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct ChatPage {
    chats: Vec<Chat>,
    page: i64,
    per_page: i64,
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Path(token): Path<String>,
) -> Result<(StatusCode, Json<Chat>), ApiError> {
    let app = state
        .directory
        .application(&state.pool, user_id(&user)?, &token)
        .await?;
    let mut reseed = false;
    for _ in 0..NUMBER_ATTEMPTS {
        let number = state
            .chat_numbers
            .allocate(&state.pool, app.id, reseed)
            .await?;
        let created: Result<(i64, Chat), sqlx::Error> = sqlx::query_as(
            "WITH chat AS (
                 INSERT INTO chats (application_id, number) VALUES ($1, $2)
                 RETURNING id, number, messages_count, created_at
             ), counter AS (
                 INSERT INTO chat_message_numbers (chat_id) SELECT id FROM chat
             ), application AS (
                 UPDATE applications SET chats_count = chats_count + 1 WHERE id = $1
             ), notified AS (
                 SELECT pg_notify($3, $4)
             )
             SELECT id, number, messages_count, created_at FROM chat, notified",
        )
        .bind(app.id)
        .bind(number)
        .bind(queue::commits::CHANNEL)
        .bind(queue::commits::chats_changed(app.id))
        .fetch_one(&state.pool)
        .await
        .map(|row: (i64, i32, i64, DateTime<Utc>)| {
            (
                row.0,
                Chat {
                    number: row.1,
                    messages_count: row.2,
                    created_at: row.3,
                },
            )
        });
        match created {
            Ok((id, chat)) => {
                state.directory.remember_chat(app.id, chat.number, id);
                return Ok((StatusCode::CREATED, Json(chat)));
            }
            Err(e) if db::sqlstate(&e).as_deref() == Some("23505") => {
                metrics::counter!("chat_number_collisions_total").increment(1);
                tracing::warn!(application = app.id, number, "chat number taken; reseeding");
                reseed = true;
            }
            Err(e) => return Err(db::api_error(e)),
        }
    }
    Err(ApiError::unavailable(
        "could not allocate a chat number; try again",
    ))
}

pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Path(token): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let app = state
        .directory
        .application(&state.pool, user_id(&user)?, &token)
        .await?;
    let page = query.validate()?;
    let cache = &state.read_cache;
    if let Some(body) = cache.chats_page(app.id, page.key()) {
        return Ok(json_response(body));
    }
    let ticket = cache.ticket(Key::Application(app.id));
    let rows: Vec<(i64, i32, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, number, messages_count, created_at FROM chats
         WHERE application_id = $1 ORDER BY number LIMIT $2 OFFSET $3",
    )
    .bind(app.id)
    .bind(page.per_page)
    .bind(page.offset())
    .fetch_all(&state.pool)
    .await
    .map_err(db::api_error)?;
    let chats = rows
        .into_iter()
        .map(|(id, number, messages_count, created_at)| ListedChat {
            id,
            messages_count,
            row: ChatFields { number, created_at },
        })
        .collect();
    let body = cache.store_chats_page(ticket, app.id, page.key(), chats);
    Ok(json_response(body))
}

/// What a cached chat list keeps of a chat besides its id and count.
#[derive(Debug, Clone)]
pub struct ChatFields {
    number: i32,
    created_at: DateTime<Utc>,
}

/// The body of a chat list (for the read cache, which encodes again when a count changes).
pub fn encode_page(chats: &[ListedChat<ChatFields>], key: PageKey) -> Bytes {
    let page = ChatPage {
        chats: chats
            .iter()
            .map(|c| Chat {
                number: c.row.number,
                messages_count: c.messages_count,
                created_at: c.row.created_at,
            })
            .collect(),
        page: key.page,
        per_page: key.per_page,
    };
    // A struct of numbers and a timestamp always encodes.
    encoded(&page).unwrap_or_default()
}

pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path((token, number)): Path<(String, i32)>,
) -> Result<Json<Chat>, ApiError> {
    let app = state
        .directory
        .application(&state.pool, user_id(&user)?, &token)
        .await?;
    let chat: Option<Chat> = sqlx::query_as(
        "SELECT number, messages_count, created_at FROM chats
         WHERE application_id = $1 AND number = $2",
    )
    .bind(app.id)
    .bind(number)
    .fetch_optional(&state.pool)
    .await
    .map_err(db::api_error)?;
    chat.map(Json)
        .ok_or_else(|| ApiError::not_found(format!("chat {number} not found")))
}
