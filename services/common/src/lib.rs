//! What every stormstack service shares, and nothing service-specific: configuration, the error
//! envelope, JWT auth, logging, Prometheus metrics, the pprof server, admission control, serving
//! with graceful shutdown, and the health/readiness routes.

pub mod admission;
pub mod auth;
pub mod body;
pub mod config;
pub mod db;
pub mod error;
pub mod health;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod pprof;
pub mod publisher;
pub mod server;
pub mod subject;
pub mod telemetry;

pub use error::ApiError;
