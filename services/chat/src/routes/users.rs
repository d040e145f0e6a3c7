//! `POST /api/v1/users`: sign up. The answer carries a token for the new user, which every other
//! Chat API route needs. There is no password: this is a system under test, not an identity provider.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use common::ApiError;
use common::auth::{Audience, CHAT_AUDIENCE, Claims, now_secs};
use common::db;
use common::error::Json;

use crate::AppState;
use crate::routes::text_field;

pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_NAME_CHARS: usize = 100;

#[derive(Debug, Deserialize)]
pub struct NewUser {
    email: String,
    name: String,
}

#[derive(Debug, Serialize)]
pub struct CreatedUser {
    id: i64,
    email: String,
    name: String,
    token: String,
    created_at: DateTime<Utc>,
}

/// `local@domain`: one `@`, both sides non-empty, no whitespace or control characters.
fn check_email(email: &str) -> Result<(), ApiError> {
    text_field("email", email, MAX_EMAIL_CHARS)?;
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "email {email:?} is not an address of the form local@domain"
        )))
    }
}

pub async fn create(
    State(state): State<AppState>,
    Json(new): Json<NewUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    check_email(&new.email)?;
    text_field("name", &new.name, MAX_NAME_CHARS)?;
    let row: Result<(i64, DateTime<Utc>), sqlx::Error> = sqlx::query_as(
        "INSERT INTO chat_users (email, name) VALUES ($1, $2) RETURNING id, created_at",
    )
    .bind(&new.email)
    .bind(&new.name)
    .fetch_one(&state.pool)
    .await;
    let (id, created_at) = match row {
        Ok(row) => row,
        Err(e) if db::sqlstate(&e).as_deref() == Some("23505") => {
            return Err(ApiError::conflict(format!(
                "a user with email {:?} already exists",
                new.email
            )));
        }
        Err(e) => return Err(db::api_error(e)),
    };
    let now = now_secs();
    let token = state.keys.sign(&Claims {
        sub: id.to_string(),
        exp: now + state.user_token_ttl.as_secs(),
        iat: Some(now),
        aud: Some(Audience::One(CHAT_AUDIENCE.into())),
        iss: Some(CHAT_AUDIENCE.into()),
        ..Claims::default()
    })?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            id,
            email: new.email,
            name: new.name,
            token,
            created_at,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::check_email;

    #[test]
    fn email_shapes() {
        for good in ["a@b", "perftest1-x@example.com", "Ünï@cödé.de"] {
            assert!(check_email(good).is_ok(), "{good}");
        }
        for bad in ["", "ab", "@b", "a@", "a@b@c", "a b@c", "a@b\n", "a\0@b"] {
            assert_eq!(
                check_email(bad).unwrap_err().status.as_u16(),
                422,
                "{bad:?}"
            );
        }
    }
}
