//! A small Chat API client for tests: sign up, create applications and chats, post and read
//! messages, and the database facts the exactly-once assertions compare against.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{TestApp, unique};

/// A signed-up user of a chat service under test.
#[derive(Clone)]
pub struct ChatUser {
    pub id: i64,
    pub token: String,
}

impl TestApp {
    /// `POST /api/v1/users` with a unique e-mail; panics unless 201.
    pub async fn sign_up(&self, client: &reqwest::Client) -> ChatUser {
        let email = format!("{}@example.com", unique("user"));
        let (status, body) = self
            .send(
                client,
                Method::POST,
                "/api/v1/users",
                None,
                Some(&json!({"email": email, "name": "Test User"})),
            )
            .await;
        assert_eq!(status, 201, "sign-up: {body}");
        ChatUser {
            id: body["id"].as_i64().expect("id"),
            token: body["token"].as_str().expect("token").to_string(),
        }
    }

    /// `POST /api/v1/applications`; the new application's token. Panics unless 201.
    pub async fn create_application(&self, client: &reqwest::Client, user: &ChatUser) -> String {
        let (status, body) = self
            .send(
                client,
                Method::POST,
                "/api/v1/applications",
                Some(&user.token),
                Some(&json!({"name": "test app"})),
            )
            .await;
        assert_eq!(status, 201, "create application: {body}");
        body["token"].as_str().expect("token").to_string()
    }

    /// `POST …/chats`: (status, body).
    pub async fn create_chat(
        &self,
        client: &reqwest::Client,
        user: &ChatUser,
        app: &str,
    ) -> (u16, Value) {
        self.send(
            client,
            Method::POST,
            &format!("/api/v1/applications/{app}/chats"),
            Some(&user.token),
            None,
        )
        .await
    }

    /// `POST …/chats/{chat}/messages`: (status, body).
    pub async fn post_message(
        &self,
        client: &reqwest::Client,
        user: &ChatUser,
        app: &str,
        chat: i64,
        body: &str,
    ) -> (u16, Value) {
        self.send(
            client,
            Method::POST,
            &format!("/api/v1/applications/{app}/chats/{chat}/messages"),
            Some(&user.token),
            Some(&json!({ "body": body })),
        )
        .await
    }

    /// `GET path` as `user`: (status, body).
    pub async fn get_as(
        &self,
        client: &reqwest::Client,
        user: &ChatUser,
        path: &str,
    ) -> (u16, Value) {
        self.send(client, Method::GET, path, Some(&user.token), None)
            .await
    }

    /// A pool on this service's database, for assertions on rows.
    pub async fn database(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.settings["DATABASE_URL"])
            .await
            .expect("test database reachable")
    }
}

/// The message numbers stored for chat `chat` of application `app`, ascending.
pub async fn stored_numbers(pool: &sqlx::PgPool, app: &str, chat: i64) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT m.number FROM chat_messages m
         JOIN chats c ON c.id = m.chat_id JOIN applications a ON a.id = c.application_id
         WHERE a.token = $1 AND c.number = $2 ORDER BY m.number",
    )
    .bind(app)
    .bind(chat as i32)
    .fetch_all(pool)
    .await
    .expect("stored numbers")
}

/// What a set of 202s became: lost (accepted, no row), duplicated (a number accepted twice) and
/// extra (rows nobody got a 202 for).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Audit {
    pub accepted: usize,
    pub stored: usize,
    pub lost: Vec<i32>,
    pub duplicated: Vec<i32>,
    pub extra: Vec<i32>,
}

impl Audit {
    pub fn of(accepted: &[i32], stored: &[i32]) -> Self {
        use std::collections::BTreeMap;
        let mut answered: BTreeMap<i32, usize> = BTreeMap::new();
        for n in accepted {
            *answered.entry(*n).or_default() += 1;
        }
        let stored_set: std::collections::BTreeSet<i32> = stored.iter().copied().collect();
        Audit {
            accepted: accepted.len(),
            stored: stored.len(),
            lost: answered
                .keys()
                .filter(|n| !stored_set.contains(n))
                .copied()
                .collect(),
            duplicated: answered
                .iter()
                .filter(|(_, c)| **c > 1)
                .map(|(n, _)| *n)
                .chain(stored.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]))
                .collect(),
            extra: stored_set
                .iter()
                .filter(|n| !answered.contains_key(n))
                .copied()
                .collect(),
        }
    }
}
