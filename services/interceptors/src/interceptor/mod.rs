//! The interceptors, one module each, as tower layers (axum `from_fn` middleware): what each adds
//! to a call is what the benchmark of its listener measures. `chains.rs` composes them.

pub mod access_log;
pub mod limit;
pub mod recover;
pub mod trace;
pub mod validate;
