//! Ollama's embeddings API: `POST /api/embed` (and the older `POST /api/embeddings`),
//! for the ollama client libraries and tools configured for an Ollama server.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{parse_json, reply, string_or_list, AppState};
use crate::error::{ApiError, ErrorShape, Shaped};
use crate::runtime::Embed;

/// `{"error": "..."}`, as Ollama answers.
pub struct Shape;

impl ErrorShape for Shape {
    fn body(e: &ApiError) -> Value {
        serde_json::json!({"error": e.message})
    }
}

type Error = Shaped<Shape>;

#[derive(Deserialize, ToSchema)]
pub struct EmbedRequest {
    /// Default: DEFAULT_MODEL.
    pub model: Option<String>,
    /// A string or a list of strings.
    #[schema(value_type = super::Texts)]
    pub input: Value,
    /// Cut texts longer than the model's limit (default true); false refuses them.
    pub truncate: Option<bool>,
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
    /// Accepted; models stay loaded until unloaded.
    #[schema(value_type = Object)]
    pub keep_alive: Option<Value>,
    /// Accepted and ignored.
    #[schema(value_type = Object)]
    pub options: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    /// Nanoseconds.
    pub total_duration: u64,
    /// Nanoseconds spent loading the model for this request.
    pub load_duration: u64,
    pub prompt_eval_count: usize,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// Embed texts (Ollama-compatible).
#[utoipa::path(post, path = "/api/embed", tag = "ollama", request_body = EmbedRequest, responses(
    (status = 200, body = EmbedResponse),
    super::errors::OllamaErrors,
))]
pub async fn embed(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Error> {
    let _permit = st.runtime.admit()?;
    let req: EmbedRequest = parse_json(body)?;
    let done = st
        .runtime
        .embed(
            req.model.as_deref(),
            Embed {
                truncate: req.truncate.unwrap_or(true),
                dimensions: req.dimensions,
                ..Embed::new(string_or_list(req.input, "input")?)
            },
        )
        .await?;
    let body = EmbedResponse {
        model: done.model.name.clone(),
        total_duration: nanos(done.usage.total),
        load_duration: nanos(done.usage.load),
        prompt_eval_count: done.usage.tokens,
        embeddings: done.output,
    };
    Ok(reply(&done.model.name, &done.usage, body))
}

#[derive(Serialize, ToSchema)]
pub struct LegacyResponse {
    pub embedding: Vec<f32>,
}

#[derive(Deserialize, ToSchema)]
pub struct LegacyRequest {
    pub model: Option<String>,
    pub prompt: String,
}

/// The older single-text endpoint: `{"embedding": [...]}`.
#[utoipa::path(post, path = "/api/embeddings", tag = "ollama", request_body = LegacyRequest, responses(
    (status = 200, body = LegacyResponse),
    super::errors::OllamaErrors,
))]
pub async fn embeddings(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Error> {
    let _permit = st.runtime.admit()?;
    let req: LegacyRequest = parse_json(body)?;
    let mut done = st
        .runtime
        .embed(req.model.as_deref(), Embed::new(vec![req.prompt]))
        .await?;
    let embedding = done.output.pop().unwrap_or_default();
    Ok(reply(
        &done.model.name,
        &done.usage,
        serde_json::json!({"embedding": embedding}),
    ))
}
