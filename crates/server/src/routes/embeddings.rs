//! `POST /embeddings`: texts in, vectors out, loading the named model if needed.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{parse_json, AppState};
use crate::error::ApiError;
use crate::inference;
use crate::request_log::RequestStats;

#[derive(Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    /// Texts to embed (the empty string is a valid text).
    #[schema(example = json!(["The quick brown fox", "A fast auburn fox"]))]
    pub texts: Vec<String>,
    /// A Hub id or a folder under MODEL_DIRS; default: DEFAULT_MODEL. Loaded if needed.
    #[schema(example = "sentence-transformers/all-MiniLM-L6-v2")]
    pub model_name: Option<String>,
    /// L2-normalize the vectors (default true).
    pub normalize: Option<bool>,
    /// Texts per forward pass, at most MAX_BATCH_SIZE.
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
    (status = 400, description = "Malformed JSON or model name", body = crate::error::ErrorBody),
    (status = 404, description = "Unknown model", body = crate::error::ErrorBody),
    (status = 413, description = "Too many texts or body too large", body = crate::error::ErrorBody),
    (status = 422, description = "Invalid fields", body = crate::error::ErrorBody),
    (status = 429, description = "Overloaded: retry after the Retry-After header's seconds", body = crate::error::ErrorBody),
))]
pub async fn embeddings(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _permit = inference::admit(&st)?;
    let req: EmbeddingRequest = parse_json(body)?;
    let out = inference::embed(
        &st,
        inference::Request {
            normalize: req.normalize.unwrap_or(true),
            batch_size: req.batch_size,
            ..inference::Request::new(req.model_name, req.texts)
        },
    )
    .await?;
    let body = EmbeddingResponse {
        total_texts: out.vectors.len(),
        dimensions: out.model.model.dimensions(),
        model_name: out.model.name.clone(),
        processing_time: out.total_time.as_secs_f64(),
        total_tokens: out.tokens,
        embeddings: out.vectors,
    };
    let stats = RequestStats {
        texts: body.total_texts,
        tokens: body.total_tokens,
    };
    let mut resp = Json(body).into_response();
    resp.extensions_mut().insert(stats);
    let ms =
        |d: std::time::Duration| HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1e3));
    if let (Ok(q), Ok(c)) = (ms(out.queue_time), ms(out.compute_time)) {
        resp.headers_mut().insert("x-queue-time-ms", q);
        resp.headers_mut().insert("x-compute-time-ms", c);
    }
    Ok(resp)
}
