//! The one call every chain serves, `greeter.v1.GreeterService/SayHello`, and the gRPC health
//! check. The handler does the least a real handler does (decode, format, encode) so that the
//! chains' differences are what a benchmark sees.
//!
//! The reply carries the greeting under `greeting` (this stack's contract) and again under
//! `message`, the field name of the source's own proto (`SayHelloResponse.message`): one revision
//! of the source's k6 scripts checks for one, a later revision for the other, and both must pass.

use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};

use crate::connect::{ConnectError, Reply, Unary};

pub const SAY_HELLO: &str = "/greeter.v1.GreeterService/SayHello";
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// `SayHelloRequest`. Proto3 JSON: a missing field is the default (empty) value, so decoding alone
/// accepts `{}`; refusing it is the validation interceptor's job.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SayHelloRequest {
    #[serde(default, deserialize_with = "string_field")]
    pub name: String,
}

/// A proto3 string field: `null` is the default (empty) value, and a value of another type is an
/// error that names the field (serde's own message does not).
fn string_field<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(deserializer)
        .map(Option::unwrap_or_default)
        .map_err(|e| serde::de::Error::custom(format!("name: {e}")))
}

#[derive(Debug, Clone, Serialize)]
pub struct SayHelloResponse {
    pub greeting: String,
    pub message: String,
}

/// A message's own rules, checked by the validation interceptor (protovalidate's role in the source).
pub trait Validate {
    /// The first violated rule, naming the field.
    fn validate(&self) -> Result<(), ConnectError>;
}

impl Validate for SayHelloRequest {
    fn validate(&self) -> Result<(), ConnectError> {
        let chars = self.name.chars().count();
        if chars == 0 {
            return Err(ConnectError::invalid_argument(
                "name: value is required (1–100 characters)",
            ));
        }
        if chars > MAX_NAME_CHARS {
            return Err(ConnectError::invalid_argument(format!(
                "name: value length must be at most {MAX_NAME_CHARS} characters, got {chars}"
            )));
        }
        Ok(())
    }
}

pub async fn say_hello(Unary(request): Unary<SayHelloRequest>) -> Reply<SayHelloResponse> {
    let greeting = format!("Hello, {}!", request.name);
    Reply(SayHelloResponse {
        message: greeting.clone(),
        greeting,
    })
}

/// `grpc.health.v1.Health/Check` over Connect (GET or POST): this process serves while it runs.
pub async fn health_check() -> Response {
    Reply(serde_json::json!({"status": "SERVING"})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> SayHelloRequest {
        SayHelloRequest { name: name.into() }
    }

    #[test]
    fn names_of_1_to_100_characters_are_valid() {
        assert!(named("a").validate().is_ok());
        assert!(
            named(&"é".repeat(100)).validate().is_ok(),
            "characters, not bytes"
        );
        let missing = named("").validate().unwrap_err();
        assert!(missing.message.starts_with("name:"), "{}", missing.message);
        let long = named(&"x".repeat(101)).validate().unwrap_err();
        assert!(long.message.starts_with("name:"), "{}", long.message);
    }
}
