//! `POST /embeddings`: texts in, vectors out, loading the named model if needed.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use embgen_engine::{EncodeOptions, Tokenized};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{parse_json, AppState};
use crate::error::ApiError;
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
))]
pub async fn embeddings(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse_json(body)?;
    if req.texts.is_empty() {
        return Err(ApiError::validation("texts must hold at least one text"));
    }
    let max = st.config.max_texts_per_request;
    if req.texts.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_texts",
            format!(
                "{} texts in one request; the limit is {max} (MAX_TEXTS_PER_REQUEST)",
                req.texts.len()
            ),
        ));
    }
    let batch_size = match req.batch_size {
        Some(0) => return Err(ApiError::validation("batch_size must be at least 1")),
        Some(b) => b.min(st.config.max_batch_size),
        None => st.config.max_batch_size,
    };
    let name = req
        .model_name
        .as_deref()
        .unwrap_or(&st.registry.default_model);
    let (entry, _) = st.registry.get_or_load(name).await?;
    let normalize = req.normalize.unwrap_or(true);
    let start = Instant::now();
    let model = entry.model.clone();
    let texts = req.texts;
    let (embeddings, tokens) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoded = model
            .tokenize(&refs, &EncodeOptions::default())
            .map_err(|e| ApiError::validation(e.to_string()))?;
        let tokens: usize = encoded.iter().map(|t| t.ids.len()).sum();
        let mut out = Vec::with_capacity(encoded.len());
        for chunk in encoded.chunks(batch_size) {
            let batch: Vec<&Tokenized> = chunk.iter().collect();
            out.extend(model.forward(&batch, normalize).map_err(|e| {
                tracing::error!(error = %e, "forward pass failed");
                ApiError::internal()
            })?);
        }
        Ok((out, tokens))
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "embedding task failed");
        ApiError::internal()
    })??;
    let body = EmbeddingResponse {
        total_texts: embeddings.len(),
        dimensions: entry.model.dimensions(),
        model_name: entry.name.clone(),
        processing_time: start.elapsed().as_secs_f64(),
        total_tokens: tokens,
        embeddings,
    };
    let stats = RequestStats {
        texts: body.total_texts,
        tokens,
    };
    let mut resp = Json(body).into_response();
    resp.extensions_mut().insert(stats);
    Ok(resp)
}
