//! embgen's server: the HTTP API over the engine, the model registry, configuration,
//! and the commands of the `embgen` binary.

pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod guard;
pub mod loader;
pub mod metrics;
pub mod request_log;
pub mod routes;
pub mod runtime;
pub mod server;
