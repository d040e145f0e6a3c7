//! Resolving the path's names — an application token, a chat number — to database ids, with the
//! owner check. Both mappings never change once created (applications and chats are not deleted,
//! tokens and numbers are not reassigned), so they are cached in bounded in-process caches: the
//! hot write and read paths then touch Postgres only for the data they are about.
//!
//! Another user's application is a 404, exactly like a missing one: a token's existence is not
//! revealed to whoever does not own it.

use quick_cache::sync::Cache;
use sqlx::PgPool;

use common::ApiError;
use common::db;

/// Entries per cache: ~100 bytes each.
const CACHE_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
pub struct Application {
    pub id: i64,
    pub owner_id: i64,
}

pub struct Directory {
    applications: Cache<String, Application>,
    chats: Cache<(i64, i32), i64>,
}

impl Default for Directory {
    fn default() -> Self {
        Self {
            applications: Cache::new(CACHE_ENTRIES),
            chats: Cache::new(CACHE_ENTRIES),
        }
    }
}

impl Directory {
    /// The application `token` if `user_id` owns it; 404 otherwise.
    pub async fn application(
        &self,
        pool: &PgPool,
        user_id: i64,
        token: &str,
    ) -> Result<Application, ApiError> {
        let not_found = || ApiError::not_found("application not found");
        let application = match self.applications.get(token) {
            Some(application) => application,
            None => {
                if !crate::routes::is_token_shaped(token) {
                    return Err(not_found());
                }
                let row: Option<(i64, i64)> =
                    sqlx::query_as("SELECT id, owner_id FROM applications WHERE token = $1")
                        .bind(token)
                        .fetch_optional(pool)
                        .await
                        .map_err(db::api_error)?;
                let (id, owner_id) = row.ok_or_else(not_found)?;
                let application = Application { id, owner_id };
                self.applications.insert(token.to_string(), application);
                application
            }
        };
        if application.owner_id != user_id {
            return Err(not_found());
        }
        Ok(application)
    }

    /// The id of chat `number` of the application; 404 when it does not exist.
    pub async fn chat(
        &self,
        pool: &PgPool,
        application_id: i64,
        number: i32,
    ) -> Result<i64, ApiError> {
        if let Some(id) = self.chats.get(&(application_id, number)) {
            return Ok(id);
        }
        let id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM chats WHERE application_id = $1 AND number = $2")
                .bind(application_id)
                .bind(number)
                .fetch_optional(pool)
                .await
                .map_err(db::api_error)?;
        let id = id.ok_or_else(|| ApiError::not_found(format!("chat {number} not found")))?;
        self.chats.insert((application_id, number), id);
        Ok(id)
    }

    /// Remembers a chat just created.
    pub fn remember_chat(&self, application_id: i64, number: i32, id: i64) {
        self.chats.insert((application_id, number), id);
    }
}
