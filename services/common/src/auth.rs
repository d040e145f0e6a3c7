//! JWT authentication: HS256 tokens with `sub` and `exp`, verified by the `AuthUser` extractor
//! (and `WsUser` on WebSocket upgrade routes).
//!
//! The token comes from `Authorization: Bearer <token>`. Only WebSocket upgrades (`WsUser`) also
//! take `?access_token=<token>`, for browser clients that cannot set headers: anywhere else a token
//! in the URL ends up in access logs and proxies' caches for nothing. Only HS256 is accepted: a
//! token whose header says `none`, RS256 or anything else is rejected before its signature is
//! looked at. Every failure is a 401 in the envelope; the reason is in the message, never a 500.
//!
//! Tokens are per service. The secret is shared, so the audience is what keeps one service's
//! tokens out of another: chat's sign-up tokens (anyone can get one) carry `aud`/`iss`
//! [`CHAT_AUDIENCE`] and only chat accepts them ([`JwtKeys::chat`]); the gateway and messages
//! ([`JwtKeys::new`]) accept tokens with no `aud` — the S0 source's token script signs
//! `{sub, iat, exp}` only — or `aud` [`STACK_AUDIENCE`], and refuse every other audience.

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

/// The audience (and issuer) of chat's sign-up tokens: valid on chat only.
pub const CHAT_AUDIENCE: &str = "storm-chat";
/// The audience the gateway and messages accept besides none at all.
pub const STACK_AUDIENCE: &str = "stormstack";

/// The claims we read. `tenant` scopes calls and reporting; `aud`/`iss` say which service a token
/// is for (checked by `JwtKeys::verify` before the claims are read).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

impl Claims {
    /// The caller (`sub`).
    pub fn subject(&self) -> &str {
        &self.sub
    }

    /// The caller's tenant, or 403 for tenant-scoped endpoints called without one.
    pub fn tenant(&self) -> Result<Uuid, ApiError> {
        self.tenant
            .ok_or_else(|| ApiError::forbidden("this endpoint needs a token with a tenant claim"))
    }
}

/// RFC 7519 allows `aud` as one string or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
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
    /// The gateway's and messages' keys: tokens with no `aud`, or `aud` [`STACK_AUDIENCE`].
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Self::validation(&["exp", "sub"]);
        validation.set_audience(&[STACK_AUDIENCE]);
        Self::with_validation(secret, validation)
    }

    /// Chat's keys: only tokens with `aud` and `iss` [`CHAT_AUDIENCE`] (the ones chat signs).
    pub fn chat(secret: &[u8]) -> Self {
        let mut validation = Self::validation(&["exp", "sub", "aud", "iss"]);
        validation.set_audience(&[CHAT_AUDIENCE]);
        validation.set_issuer(&[CHAT_AUDIENCE]);
        Self::with_validation(secret, validation)
    }

    fn validation(required: &[&str]) -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(required);
        validation.validate_exp = true;
        validation
    }

    fn with_validation(secret: &[u8], validation: Validation) -> Self {
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
                ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim (sub and exp are required; aud and iss on chat)",
                ErrorKind::InvalidAudience => "token is meant for another service (its aud claim)",
                ErrorKind::InvalidIssuer => "token was issued by another service (its iss claim)",
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

    /// Signs claims with HS256 (tests, the chat service's user tokens, `gen-jwt`). Chat's tokens
    /// set `aud` and `iss` to [`CHAT_AUDIENCE`] in the claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(ApiError::internal)
    }
}

/// The authenticated caller. Put it in a handler's arguments to require a valid token, sent in
/// the `Authorization: Bearer` header.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

/// The authenticated caller of a WebSocket upgrade route: the Bearer header, or `?access_token=`
/// for clients that cannot set headers. Only WebSocket routes take it.
#[derive(Debug, Clone)]
pub struct WsUser(pub Claims);

// An authenticated caller is its verified claims: `user.subject()` and `user.tenant()` are the
// methods of [`Claims`], written once for both extractors.
impl std::ops::Deref for AuthUser {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl std::ops::Deref for WsUser {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.0
    }
}

/// Where a route takes its token from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFrom {
    /// `Authorization: Bearer` only.
    Header,
    /// The header, else `?access_token=` (WebSocket upgrade routes).
    HeaderOrQuery,
}

/// The raw token of a request: the Bearer header first, then (`HeaderOrQuery` only)
/// `?access_token=`.
pub fn token_from_parts(parts: &Parts, from: TokenFrom) -> Result<String, ApiError> {
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
    if from == TokenFrom::HeaderOrQuery
        && let Some(query) = parts.uri.query()
    {
        for (key, value) in form_urlencoded_pairs(query) {
            if key == "access_token" && !value.is_empty() {
                return Ok(value);
            }
        }
    }
    Err(ApiError::unauthorized(match from {
        TokenFrom::HeaderOrQuery => {
            "missing token: send `Authorization: Bearer <token>` or `?access_token=<token>`"
        }
        TokenFrom::Header => {
            "missing token: send `Authorization: Bearer <token>` (`?access_token=` is taken on WebSocket routes only)"
        }
    }))
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
        keys.verify(&token_from_parts(parts, TokenFrom::Header)?)
            .map(AuthUser)
    }
}

impl<S> FromRequestParts<S> for WsUser
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<JwtKeys>::from_ref(state);
        keys.verify(&token_from_parts(parts, TokenFrom::HeaderOrQuery)?)
            .map(WsUser)
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
            ..Claims::default()
        }
    }

    fn chat_claims(exp: u64) -> Claims {
        Claims {
            aud: Some(Audience::One(CHAT_AUDIENCE.into())),
            iss: Some(CHAT_AUDIENCE.into()),
            ..claims(exp)
        }
    }

    #[test]
    fn tokens_are_per_service() {
        let stack = JwtKeys::new(b"s3cret");
        let chat = JwtKeys::chat(b"s3cret");
        let exp = now_secs() + 60;
        let chat_token = chat.sign(&chat_claims(exp)).unwrap();
        assert_eq!(chat.verify(&chat_token).unwrap().sub, "user-1");
        let refused = stack.verify(&chat_token).unwrap_err();
        assert_eq!(refused.status, 401);
        assert!(
            refused.message.contains("another service"),
            "{}",
            refused.message
        );

        // The S0 source's shape ({sub, iat, exp}) and the stack audience are the gateway's.
        let plain = stack.sign(&claims(exp)).unwrap();
        assert!(stack.verify(&plain).is_ok());
        assert_eq!(chat.verify(&plain).unwrap_err().status, 401);
        for aud in [
            Audience::One(STACK_AUDIENCE.into()),
            Audience::Many(vec!["x".into(), STACK_AUDIENCE.into()]),
        ] {
            let token = stack
                .sign(&Claims {
                    aud: Some(aud),
                    ..claims(exp)
                })
                .unwrap();
            assert!(stack.verify(&token).is_ok());
            assert_eq!(chat.verify(&token).unwrap_err().status, 401);
        }
        let other = stack
            .sign(&Claims {
                aud: Some(Audience::One("billing".into())),
                ..claims(exp)
            })
            .unwrap();
        assert_eq!(stack.verify(&other).unwrap_err().status, 401);
        // The right audience from the wrong issuer is not chat's.
        let forged = stack
            .sign(&Claims {
                iss: Some("someone".into()),
                ..chat_claims(exp)
            })
            .unwrap();
        assert_eq!(chat.verify(&forged).unwrap_err().status, 401);
    }

    #[test]
    fn query_tokens_only_where_the_route_takes_them() {
        let (parts, _) = axum::http::Request::builder()
            .uri("/api/v1/ws?subscribe=a&access_token=tok")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            token_from_parts(&parts, TokenFrom::HeaderOrQuery).unwrap(),
            "tok"
        );
        let refused = token_from_parts(&parts, TokenFrom::Header).unwrap_err();
        assert_eq!(refused.status, 401);
        assert!(
            refused.message.contains("WebSocket routes only"),
            "{}",
            refused.message
        );
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
