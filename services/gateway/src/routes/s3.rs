//! The S3 worker-pool endpoints, all behind admission control: `GET /api/users` (a JSON list of
//! `USERS_COUNT` synthetic users, serialized on every request — the "heavy JSON" endpoint),
//! `POST /api/echo` (the JSON body back) and `GET /api/metrics` (admission and socket counts).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use common::ApiError;
use common::admission::AdmissionSnapshot;
use common::error::Json;

use crate::AppState;

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub role: &'static str,
    pub active: bool,
    pub created_at: String,
}

/// `count` deterministic users: the same list on every start, so responses are comparable.
pub fn synthetic_users(count: usize) -> Vec<User> {
    (1..=count as u64)
        .map(|id| User {
            id,
            name: format!("User {id}"),
            email: format!("user{id}@example.com"),
            role: if id % 10 == 0 { "admin" } else { "member" },
            active: id % 7 != 0,
            created_at: format!("2026-01-{:02}T{:02}:00:00Z", id % 28 + 1, id % 24),
        })
        .collect()
}

pub async fn users(State(state): State<AppState>) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(state.users.as_slice()).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn echo(
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError::unsupported_media_type(
            "echo needs Content-Type: application/json",
        ));
    }
    crate::routes::events::parse_json_body(&body)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Debug, Serialize)]
pub struct MetricsSnapshot {
    #[serde(flatten)]
    admission: AdmissionSnapshot,
    ws_connections: usize,
    ws_max_connections: usize,
    pubsub_topics: usize,
}

pub async fn metrics(State(state): State<AppState>) -> Json<MetricsSnapshot> {
    Json(MetricsSnapshot {
        admission: state.admission.snapshot(),
        ws_connections: state.ws_connections(),
        ws_max_connections: state.config.max_ws_conns,
        pubsub_topics: state.hub.topic_count(),
    })
}
