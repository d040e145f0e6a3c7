//! Publishing: `POST /api/v1/events/{subject}` (the documented API) and the S0 source's
//! `POST /publish?subject=` (drop-in for its k6 script). Both need a JWT and answer 202.
//!
//! The service namespaces `call.` and `channel.` (and the bare `call`, `channel`) are reserved:
//! only the messages service publishes there, so both routes answer 403 `forbidden` naming the
//! namespace. Every envelope published here says `"origin":"client"`
//! (set by the gateway's `Publisher`, never taken from the request).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;

use common::ApiError;
use common::auth::AuthUser;
use common::error::{Json, Path, Query};

use crate::AppState;
use crate::subject;
use common::publisher::Accepted;

/// True for `application/json` and `application/*+json`, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Refuses subjects of the reserved namespaces with 403 naming the namespace.
fn check_client_subject(subject: &str) -> Result<(), ApiError> {
    subject::check_publish(subject).map_err(ApiError::bad_request)?;
    match subject::reserved_namespace(subject) {
        Some(namespace) => Err(ApiError::forbidden(format!(
            "subject {subject:?} is in the reserved namespace `{namespace}.`: only the stack's services publish there"
        ))),
        None => Ok(()),
    }
}

/// Parses the body as one JSON value, keeping its text; 400 says where it broke.
pub fn parse_json_body(body: &Bytes) -> Result<&RawValue, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(format!(
            "body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    serde_json::from_str::<&RawValue>(text)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// The v1 route: any JSON value, `Content-Type: application/json` required.
pub async fn publish_v1(
    State(state): State<AppState>,
    user: AuthUser,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    check_client_subject(&subject)?;
    let body = body?;
    if !is_json(&headers) {
        return Err(ApiError::unsupported_media_type(
            "events must be sent with Content-Type: application/json",
        ));
    }
    let data = parse_json_body(&body)?;
    let accepted = state
        .publisher
        .publish(&subject, None, user.subject(), data)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[derive(Debug, Deserialize)]
pub struct PublishParams {
    subject: Option<String>,
}

/// The S0 route: JSON bodies are published as they are; any other body as a JSON string.
pub async fn publish_s0(
    State(state): State<AppState>,
    user: AuthUser,
    Query(params): Query<PublishParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let subject = params
        .subject
        .as_deref()
        .unwrap_or(subject::DEFAULT_SUBJECT);
    check_client_subject(subject)?;
    let body = body?;
    let accepted = if is_json(&headers) {
        let data = parse_json_body(&body)?;
        state
            .publisher
            .publish(subject, None, user.subject(), data)
            .await?
    } else {
        let text = std::str::from_utf8(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ))
        })?;
        let as_string = serde_json::value::to_raw_value(text).map_err(ApiError::internal)?;
        state
            .publisher
            .publish(subject, None, user.subject(), &as_string)
            .await?
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
