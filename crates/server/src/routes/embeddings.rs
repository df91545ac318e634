//! `POST /embeddings`: texts in, vectors out, loading the named model if needed.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{parse_json, reply, AppState};
use crate::error::ApiError;
use crate::runtime::Embed;

#[derive(Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// Texts to embed (the empty string is a valid text).
    #[schema(example = json!(["The quick brown fox", "A fast auburn fox"]), min_items = 1)]
    pub texts: Vec<String>,
    /// A Hub id or a folder under MODEL_DIRS; default: DEFAULT_MODEL. Loaded if needed.
    #[schema(example = "sentence-transformers/all-MiniLM-L6-v2")]
    pub model_name: Option<String>,
    /// L2-normalize the vectors (default true).
    pub normalize: Option<bool>,
    /// Texts per forward pass, at most MAX_BATCH_SIZE.
    #[schema(minimum = 1)]
    pub batch_size: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingResponse {
    /// One vector per text, in order.
    pub embeddings: Vec<Vec<f32>>,
    pub model_name: String,
    pub dimensions: usize,
    /// Seconds spent tokenizing and embedding.
    pub processing_time: f64,
    pub total_texts: usize,
    /// Tokens the model saw, after truncation.
    pub total_tokens: usize,
}

/// Embed texts with a sentence-transformers model.
#[utoipa::path(post, path = "/embeddings", tag = "embeddings", request_body = EmbeddingRequest, responses(
    (status = 200, body = EmbeddingResponse),
    super::errors::NativeErrors,
))]
pub async fn embeddings(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = st.runtime.admit()?;
    let req: EmbeddingRequest = parse_json(body)?;
    let done = st
        .runtime
        .embed(
            req.model_name.as_deref(),
            Embed {
                normalize: req.normalize.unwrap_or(true),
                batch_size: req.batch_size,
                ..Embed::new(req.texts)
            },
        )
        .await?;
    let body = EmbeddingResponse {
        total_texts: done.output.len(),
        dimensions: done.output.first().map_or(0, Vec::len),
        model_name: done.model.name.clone(),
        processing_time: done.usage.total.as_secs_f64(),
        total_tokens: done.usage.tokens,
        embeddings: done.output,
    };
    Ok(reply(&done.model.name, &done.usage, body))
}
