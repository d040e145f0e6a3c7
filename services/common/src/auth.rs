//! JWT authentication: HS256 tokens with `sub` and `exp`, verified by the `AuthUser` extractor.
//!
//! The token comes from `Authorization: Bearer <token>` or, for WebSocket clients that cannot set
//! headers, `?access_token=<token>`. Only HS256 is accepted: a token whose header says `none`,
//! RS256 or anything else is rejected before its signature is looked at. Every failure is a 401
//! in the envelope; the reason is in the message, never a 500.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// Seconds of clock skew tolerated on `exp` (and `nbf`).
pub const LEEWAY_SECS: u64 = 30;

/// The development secret, the S0 source's default, used by the scripts and compose file only.
pub const DEV_SECRET: &str = "dev-secret";

/// The claims we read. `tenant` scopes calls and reporting.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Uuid>,
}

/// Verifies and signs tokens with one shared secret.
pub struct JwtKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
        }
    }

    /// Verifies a token: HS256 only, signature, `exp` (with leeway), non-empty `sub`.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "token has expired",
                ErrorKind::InvalidSignature => "token signature does not match",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "token algorithm must be HS256",
                ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim (sub and exp are required)",
                ErrorKind::ImmatureSignature => "token is not valid yet",
                ErrorKind::Json(_) => "token claims are invalid (sub: string and exp: number are required; tenant must be a UUID)",
                _ => "token is malformed",
            };
            ApiError::unauthorized(why)
        })?;
        if data.claims.sub.is_empty() {
            return Err(ApiError::unauthorized("token subject (sub) is empty"));
        }
        Ok(data.claims)
    }

    /// Signs claims with HS256 (tests, the chat service's user tokens, `gen-jwt`).
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(ApiError::internal)
    }
}

/// The authenticated caller. Put it in a handler's arguments to require a valid token.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

impl AuthUser {
    pub fn subject(&self) -> &str {
        &self.0.sub
    }

    /// The caller's tenant, or 403 for tenant-scoped endpoints called without one.
    pub fn tenant(&self) -> Result<Uuid, ApiError> {
        self.0
            .tenant
            .ok_or_else(|| ApiError::forbidden("this endpoint needs a token with a tenant claim"))
    }
}

/// The raw token of a request: the Bearer header first, then `?access_token=`.
pub fn token_from_parts(parts: &Parts) -> Result<String, ApiError> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("authorization header is not valid text"))?;
        let (scheme, token) = value.split_once(' ').ok_or_else(|| {
            ApiError::unauthorized("authorization header must be `Bearer <token>`")
        })?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::unauthorized(
                "authorization header must be `Bearer <token>`",
            ));
        }
        return Ok(token.trim().to_string());
    }
    if let Some(query) = parts.uri.query() {
        for (key, value) in form_urlencoded_pairs(query) {
            if key == "access_token" && !value.is_empty() {
                return Ok(value);
            }
        }
    }
    Err(ApiError::unauthorized(
        "missing token: send `Authorization: Bearer <token>` or `?access_token=<token>`",
    ))
}

fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default()
}

impl<S> FromRequestParts<S> for AuthUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<JwtKeys>::from_ref(state);
        let token = token_from_parts(parts)?;
        keys.verify(&token).map(AuthUser)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "user-1".into(),
            exp,
            iat: Some(now_secs()),
            tenant: None,
        }
    }

    #[test]
    fn valid_token_round_trips() {
        let keys = JwtKeys::new(b"s3cret");
        let token = keys.sign(&claims(now_secs() + 60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "user-1");
    }

    #[test]
    fn leeway_is_thirty_seconds() {
        let keys = JwtKeys::new(b"s3cret");
        assert!(
            keys.verify(&keys.sign(&claims(now_secs() - 10)).unwrap())
                .is_ok()
        );
        let expired = keys
            .verify(&keys.sign(&claims(now_secs() - 120)).unwrap())
            .unwrap_err();
        assert_eq!(expired.status, 401);
        assert!(expired.message.contains("expired"));
    }

    #[test]
    fn wrong_secret_none_and_rs256_are_rejected() {
        let keys = JwtKeys::new(b"s3cret");
        let other = JwtKeys::new(b"other")
            .sign(&claims(now_secs() + 60))
            .unwrap();
        assert_eq!(keys.verify(&other).unwrap_err().status, 401);

        let payload = b64(&format!(r#"{{"sub":"x","exp":{}}}"#, now_secs() + 60));
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), payload);
        assert_eq!(keys.verify(&none).unwrap_err().status, 401);
        let rs = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256","typ":"JWT"}"#), payload);
        assert_eq!(keys.verify(&rs).unwrap_err().status, 401);
        for junk in ["", "a", "a.b", "a.b.c", "....", "\u{0}"] {
            assert_eq!(keys.verify(junk).unwrap_err().status, 401, "{junk:?}");
        }
    }

    #[test]
    fn sub_is_required() {
        let keys = JwtKeys::new(b"s3cret");
        let header = Header::new(Algorithm::HS256);
        let no_sub = serde_json::json!({"exp": now_secs() + 60});
        let token =
            jsonwebtoken::encode(&header, &no_sub, &EncodingKey::from_secret(b"s3cret")).unwrap();
        assert!(keys.verify(&token).unwrap_err().message.contains("sub"));
        let bad_tenant =
            serde_json::json!({"sub":"a","exp": now_secs() + 60, "tenant": "not-a-uuid"});
        let token =
            jsonwebtoken::encode(&header, &bad_tenant, &EncodingKey::from_secret(b"s3cret"))
                .unwrap();
        assert_eq!(keys.verify(&token).unwrap_err().status, 401);
    }
}
