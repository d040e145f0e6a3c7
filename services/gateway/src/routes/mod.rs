//! The gateway's handlers, one module per resource; `crate::router` lists every route.

pub mod events;
pub mod proxy;
pub mod s3;
pub mod ws;
