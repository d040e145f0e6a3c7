//! `/api/v1/applications`: a user's applications, each addressed by a random 22-character token.
//! Only the owner sees an application; to anyone else it does not exist (404).

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use common::ApiError;
use common::auth::AuthUser;
use common::db;
use common::error::{Json, Path, Query};

use crate::AppState;
use crate::routes::{PageQuery, text_field, user_id};

pub const MAX_NAME_CHARS: usize = 100;

#[derive(Debug, Deserialize)]
pub struct ApplicationName {
    name: String,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Application {
    token: String,
    name: String,
    chats_count: i32,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct ApplicationPage {
    applications: Vec<Application>,
    page: i64,
    per_page: i64,
}

/// 16 random bytes, URL-safe base64 without padding: exactly 22 characters.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Json(new): Json<ApplicationName>,
) -> Result<(StatusCode, Json<Application>), ApiError> {
    let owner = user_id(&user)?;
    text_field("name", &new.name, MAX_NAME_CHARS)?;
    // A token collision (2^-128) would be a unique violation: take another token.
    for _ in 0..3 {
        let result: Result<Option<Application>, sqlx::Error> = sqlx::query_as(
            "INSERT INTO applications (token, owner_id, name)
             SELECT $1, id, $3 FROM chat_users WHERE id = $2
             RETURNING token, name, chats_count, created_at",
        )
        .bind(new_token())
        .bind(owner)
        .bind(&new.name)
        .fetch_optional(&state.pool)
        .await;
        match result {
            Ok(Some(application)) => return Ok((StatusCode::CREATED, Json(application))),
            Ok(None) => return Err(ApiError::unauthorized("the token's user does not exist")),
            Err(e) if db::sqlstate(&e).as_deref() == Some("23505") => continue,
            Err(e) => return Err(db::api_error(e)),
        }
    }
    Err(ApiError::internal(
        "three application-token collisions in a row",
    ))
}

pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<PageQuery>,
) -> Result<Json<ApplicationPage>, ApiError> {
    let owner = user_id(&user)?;
    let page = query.validate()?;
    let applications = sqlx::query_as(
        "SELECT token, name, chats_count, created_at FROM applications
         WHERE owner_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
    )
    .bind(owner)
    .bind(page.per_page)
    .bind(page.offset())
    .fetch_all(&state.pool)
    .await
    .map_err(db::api_error)?;
    Ok(Json(ApplicationPage {
        applications,
        page: page.page,
        per_page: page.per_page,
    }))
}

pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(token): Path<String>,
) -> Result<Json<Application>, ApiError> {
    let app = state
        .directory
        .application(&state.pool, user_id(&user)?, &token)
        .await?;
    let application = sqlx::query_as(
        "SELECT token, name, chats_count, created_at FROM applications WHERE id = $1",
    )
    .bind(app.id)
    .fetch_one(&state.pool)
    .await
    .map_err(db::api_error)?;
    Ok(Json(application))
}

pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(token): Path<String>,
    Json(change): Json<ApplicationName>,
) -> Result<Json<Application>, ApiError> {
    let app = state
        .directory
        .application(&state.pool, user_id(&user)?, &token)
        .await?;
    text_field("name", &change.name, MAX_NAME_CHARS)?;
    let application = sqlx::query_as(
        "UPDATE applications SET name = $2, updated_at = now() WHERE id = $1
         RETURNING token, name, chats_count, created_at",
    )
    .bind(app.id)
    .bind(&change.name)
    .fetch_one(&state.pool)
    .await
    .map_err(db::api_error)?;
    Ok(Json(application))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::is_token_shaped;

    #[test]
    fn tokens_are_22_url_safe_characters_and_differ() {
        let a = new_token();
        assert!(is_token_shaped(&a), "{a}");
        assert_ne!(a, new_token());
    }
}
