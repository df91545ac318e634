//! embgen's server: the HTTP API over the engine, the model registry, configuration,
//! and the commands of the `embgen` binary.

pub mod auth;
pub mod batcher;
pub mod commands;
pub mod config;
pub mod error;
pub mod inference;
pub mod loader;
pub mod metrics;
pub mod registry;
pub mod request_log;
pub mod routes;
pub mod server;
