//! `GET /` and `GET /health`: what this server is and whether it can serve.

use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// Progress of loading the default model at start-up (PRELOAD).
#[derive(Default)]
pub struct Preload {
    state: Mutex<PreloadState>,
}

#[derive(Default, Clone)]
enum PreloadState {
    #[default]
    Off,
    Loading,
    Done,
    Failed(String),
}

impl Preload {
    pub fn loading(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = PreloadState::Loading;
    }
    pub fn done(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = PreloadState::Done;
    }
    pub fn failed(&self, message: String) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = PreloadState::Failed(message);
    }
    fn get(&self) -> PreloadState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Serialize, ToSchema)]
pub struct ServiceInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub default_model: String,
    pub loaded_models: Vec<String>,
    pub docs: &'static str,
    pub redoc: &'static str,
    pub openapi: &'static str,
    pub health: &'static str,
}

/// Service information and links to the documentation.
#[utoipa::path(get, path = "/", tag = "service", responses(
    (status = 200, body = ServiceInfo),
    super::errors::ReadErrors,
))]
pub async fn root(State(st): State<AppState>) -> Json<ServiceInfo> {
    Json(ServiceInfo {
        name: "embgen",
        version: env!("CARGO_PKG_VERSION"),
        description: "Text embeddings on the CPU, faithful to sentence-transformers",
        default_model: st.runtime.registry.default_model.clone(),
        loaded_models: st
            .runtime
            .registry
            .list()
            .iter()
            .map(|m| m.name.clone())
            .collect(),
        docs: "/docs",
        redoc: "/redoc",
        openapi: "/openapi.json",
        health: "/health",
    })
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// ok, loading (the default model is being loaded) or error (it failed to load).
    pub status: &'static str,
    /// Whether the default model is loaded.
    pub model_loaded: bool,
    /// The default model.
    pub model_name: String,
    pub loaded_models: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub version: &'static str,
    pub uptime_seconds: f64,
    /// Resident memory of the server process.
    pub memory_rss_bytes: Option<u64>,
}

/// 200 while the server can serve; 503 while the default model is still loading or
/// after it failed to load.
#[utoipa::path(get, path = "/health", tag = "service", responses(
    (status = 200, description = "Serving", body = Health),
    (status = 503, description = "Not ready", body = Health),
))]
pub async fn health(
    State(st): State<AppState>,
    auth: Option<axum::Extension<crate::auth::Authenticated>>,
) -> Response {
    let default = &st.runtime.registry.default_model;
    let model_loaded = st.runtime.registry.get(default).is_some();
    let (status, code, message) = match st.preload.get() {
        PreloadState::Loading if !model_loaded => {
            ("loading", StatusCode::SERVICE_UNAVAILABLE, None)
        }
        PreloadState::Failed(m) if !model_loaded => {
            ("error", StatusCode::SERVICE_UNAVAILABLE, Some(m))
        }
        _ => ("ok", StatusCode::OK, None),
    };
    // Without a valid key (when API_KEY is set), only the status: model names and
    // memory figures are for the operator.
    if auth.is_some_and(|a| !a.0 .0) {
        return (code, Json(serde_json::json!({ "status": status }))).into_response();
    }
    let body = Health {
        status,
        model_loaded,
        model_name: default.clone(),
        loaded_models: st
            .runtime
            .registry
            .list()
            .iter()
            .map(|m| m.name.clone())
            .collect(),
        message,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: st.started.elapsed().as_secs_f64(),
        memory_rss_bytes: rss_bytes(),
    };
    (code, Json(body)).into_response()
}

/// Resident set size from /proc (Linux); None elsewhere.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "service", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain"),
    super::errors::ReadErrors,
))]
pub async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(),
    )
        .into_response()
}
