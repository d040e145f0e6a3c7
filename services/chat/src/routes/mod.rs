//! HTTP handlers, one module per resource, and the input rules they share.

pub mod applications;
pub mod chats;
pub mod messages;
pub mod users;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use common::ApiError;
use common::auth::AuthUser;

use crate::read_cache::PageKey;

/// Application tokens are 22 URL-safe base64 characters (16 random bytes).
pub const TOKEN_CHARS: usize = 22;

pub fn is_token_shaped(token: &str) -> bool {
    token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A text field of 1..=`max` characters with no NUL (Postgres text cannot hold one): 422 otherwise,
/// naming the field.
pub fn text_field(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if !(1..=max).contains(&chars) {
        return Err(ApiError::unprocessable(format!(
            "{field} is {chars} characters; it must be 1–{max}"
        )));
    }
    if value.contains('\0') {
        return Err(ApiError::unprocessable(format!(
            "{field} contains a NUL character"
        )));
    }
    Ok(())
}

/// The caller's user id: tokens from `POST /api/v1/users` carry it as `sub`.
pub fn user_id(user: &AuthUser) -> Result<i64, ApiError> {
    user.subject()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::unauthorized("the token is not a chat user's (see POST /api/v1/users)")
        })
}

/// `?page=&per_page=` as given.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    page: Option<i64>,
    per_page: Option<i64>,
}

/// A validated page: `page` from 1, `per_page` 1–100 (default 50).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: i64,
    pub per_page: i64,
}

pub const MAX_PAGE: i64 = 1_000_000;
pub const MAX_PER_PAGE: i64 = 100;
pub const DEFAULT_PER_PAGE: i64 = 50;

impl PageQuery {
    pub fn validate(&self) -> Result<Page, ApiError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE);
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(ApiError::unprocessable(format!(
                "page {page} must be 1–{MAX_PAGE}"
            )));
        }
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::unprocessable(format!(
                "per_page {per_page} must be 1–{MAX_PER_PAGE}"
            )));
        }
        Ok(Page { page, per_page })
    }
}

impl Page {
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.per_page
    }

    /// The page as the read cache keys it.
    pub fn key(&self) -> PageKey {
        PageKey {
            page: self.page,
            per_page: self.per_page,
        }
    }
}

/// A JSON body encoded once: what a read answers, from Postgres or from the read cache alike.
pub fn encoded<T: Serialize>(value: &T) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(ApiError::internal)
}

/// `200 OK` with an encoded JSON body.
pub fn json_response(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(page: Option<i64>, per_page: Option<i64>) -> Result<Page, u16> {
        PageQuery { page, per_page }
            .validate()
            .map_err(|e| e.status.as_u16())
    }

    #[test]
    fn pages_default_and_refuse_out_of_range_with_422() {
        assert_eq!(
            page(None, None),
            Ok(Page {
                page: 1,
                per_page: 50
            })
        );
        assert_eq!(page(Some(3), Some(100)).map(|p| p.offset()), Ok(200));
        for (p, pp) in [
            (Some(0), None),
            (Some(-1), None),
            (None, Some(0)),
            (None, Some(101)),
            (Some(MAX_PAGE + 1), None),
        ] {
            assert_eq!(page(p, pp), Err(422), "{p:?} {pp:?}");
        }
    }

    #[test]
    fn tokens_and_text_fields() {
        assert!(is_token_shaped("abcdefghijklmnopqrstu_"));
        assert!(!is_token_shaped("abcdefghijklmnopqrstu"));
        assert!(!is_token_shaped("abcdefghijklmnopqrst/_"));
        assert!(text_field("body", "x", 4).is_ok());
        assert!(text_field("body", "ééé", 3).is_ok());
        assert_eq!(text_field("body", "", 3).unwrap_err().status.as_u16(), 422);
        assert_eq!(
            text_field("body", "abcd", 3).unwrap_err().status.as_u16(),
            422
        );
        assert_eq!(
            text_field("body", "a\0", 3).unwrap_err().status.as_u16(),
            422
        );
    }
}
