//! The five interceptor chains, composed in this one place: the same routes and handler on every
//! listener, and each listener's layers, outermost first, exactly as SPEC "Interceptor-overhead
//! server (S1)" lists them. A benchmark comparing two listeners measures the difference between
//! two of these stacks and nothing else.
//!
//! Outside every chain, the same on all five, is `common::body::ReadBodyFirstLayer`: the request
//! body is read whole (up to `connect::MAX_MESSAGE_BYTES`, under `BODY_READ_TIMEOUT_MS`) before
//! the first interceptor, so a client trickling its body never holds the full chain's concurrency
//! slot or runs down its deadline; past the body-read deadline it is answered `deadline_exceeded`
//! (504, `connect::body_read_failure`) and closed. It is not an interceptor:
//! `Chain::interceptor_count` does not count it, and a request whose body is already complete
//! passes it with no allocation or timer.

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::body::ReadBodyFirstLayer;
use http::StatusCode;
use tower::ServiceBuilder;
use tower::timeout::TimeoutLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::config::ChainSettings;
use crate::connect::{self, Code, ConnectError, MAX_MESSAGE_BYTES};
use crate::greeter::{self, SayHelloRequest};
use crate::interceptor::access_log::access_log;
use crate::interceptor::limit::{ConcurrencyLimit, limit_concurrency};
use crate::interceptor::recover::{layer_error, panic_to_internal};
use crate::interceptor::trace::trace_call;
use crate::interceptor::validate::validate;

/// One listener's interceptor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    Full,
    Baseline,
    Validation,
    Logger,
    Tracing,
}

impl Chain {
    pub const ALL: [Chain; 5] = [
        Chain::Full,
        Chain::Baseline,
        Chain::Validation,
        Chain::Logger,
        Chain::Tracing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Full => "full",
            Chain::Baseline => "baseline",
            Chain::Validation => "validation",
            Chain::Logger => "logger",
            Chain::Tracing => "tracing",
        }
    }

    /// The variable that sets this listener's address.
    pub fn variable(self) -> &'static str {
        match self {
            Chain::Full => "INTERCEPTORS_FULL_ADDR",
            Chain::Baseline => "INTERCEPTORS_BASELINE_ADDR",
            Chain::Validation => "INTERCEPTORS_VALIDATION_ADDR",
            Chain::Logger => "INTERCEPTORS_LOGGER_ADDR",
            Chain::Tracing => "INTERCEPTORS_TRACING_ADDR",
        }
    }

    /// The source's ports (8080, 8081–8084) moved by 100.
    pub fn default_addr(self) -> &'static str {
        match self {
            Chain::Full => ":8180",
            Chain::Baseline => ":8181",
            Chain::Validation => ":8182",
            Chain::Logger => ":8183",
            Chain::Tracing => ":8184",
        }
    }

    /// Interceptors in the chain, for "overhead per interceptor" (the full chain's nine: error
    /// handler, timeout, concurrency limit, validation, logger, tracing, metrics, request id,
    /// compression).
    pub fn interceptor_count(self) -> usize {
        match self {
            Chain::Baseline => 0,
            Chain::Validation | Chain::Logger | Chain::Tracing => 1,
            Chain::Full => 9,
        }
    }
}

/// The routes every listener serves: the call, the health check, Connect errors for the rest.
/// `validated` puts the validation interceptor on the call's route.
fn routes(validated: bool) -> Router {
    let say_hello = post(greeter::say_hello);
    let say_hello = if validated {
        say_hello.route_layer(from_fn(validate::<SayHelloRequest>))
    } else {
        say_hello
    };
    Router::new()
        .route(greeter::SAY_HELLO, say_hello)
        .route(
            greeter::HEALTH_CHECK,
            get(greeter::health_check).post(greeter::health_check),
        )
        .fallback(unknown_procedure)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn unknown_procedure() -> Response {
    ConnectError::new(
        Code::Unimplemented,
        format!(
            "no such procedure; this server serves {} and {}",
            greeter::SAY_HELLO,
            greeter::HEALTH_CHECK
        ),
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    let mut error = ConnectError::new(
        Code::Unimplemented,
        "unary calls are POST (the health check also answers GET)",
    );
    error.status = StatusCode::METHOD_NOT_ALLOWED;
    error.into_response()
}

/// The listener's router: its routes wrapped in its chain, and the chain in the body read.
pub fn router(chain: Chain, settings: &ChainSettings) -> Router {
    chain_router(chain, settings).layer(ReadBodyFirstLayer::new(
        MAX_MESSAGE_BYTES,
        connect::body_read_failure,
    ))
}

/// The routes wrapped in the chain's interceptors.
fn chain_router(chain: Chain, settings: &ChainSettings) -> Router {
    let name = chain.name();
    match chain {
        Chain::Baseline => routes(false),
        Chain::Validation => routes(true),
        Chain::Logger => routes(false).layer(from_fn_with_state(name, access_log)),
        Chain::Tracing => routes(false).layer(from_fn_with_state(name, trace_call)),
        Chain::Full => routes(true).layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(panic_to_internal))
                .layer(from_fn_with_state(name, access_log))
                .layer(from_fn_with_state(name, trace_call))
                .layer(from_fn(common::metrics::track_http))
                .layer(HandleErrorLayer::new(layer_error))
                .layer(TimeoutLayer::new(settings.timeout))
                .layer(from_fn_with_state(
                    ConcurrencyLimit::new(settings.max_concurrency),
                    limit_concurrency,
                ))
                .layer(
                    CompressionLayer::new()
                        .compress_when(SizeAbove::new(settings.compress_min_bytes)),
                ),
        ),
    }
}
