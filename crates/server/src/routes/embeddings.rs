//! `POST /embeddings`: texts in, vectors out, loading the named model if needed.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use embgen_engine::EncodeOptions;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{parse_json, AppState};
use crate::batcher::overloaded;
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
    (status = 429, description = "Overloaded: retry after the Retry-After header's seconds", body = crate::error::ErrorBody),
))]
pub async fn embeddings(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Refused at once rather than queued without bound: a client told to retry does
    // better than one that times out. The permit is taken before the body is even parsed, so
    // refusing costs next to nothing, and held until the response is built.
    let _permit = st.admission.clone().try_acquire_owned().map_err(|_| {
        crate::metrics::rejected("concurrency");
        overloaded(format!(
            "{} embedding requests are in progress (MAX_CONCURRENT_REQUESTS); retry shortly",
            st.config.max_concurrent_requests
        ))
    })?;
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
    // Tokenizing is this request's own work: it runs here, beside the engine's batches.
    let encoded = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        model.tokenize(&refs, &EncodeOptions::default())
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "tokenizer task failed");
        ApiError::internal()
    })?
    .map_err(|e| ApiError::validation(e.to_string()))?;
    let tokens: usize = encoded.iter().map(|t| t.ids.len()).sum();
    // If this handler is dropped (the client went away), the receiver goes with it
    // and the batcher skips the texts not yet computed.
    let output = entry
        .batcher
        .submit(encoded, batch_size, normalize)?
        .await
        .map_err(|_| ApiError::internal())??;
    crate::metrics::embedded(&entry.name, output.vectors.len(), tokens);
    let body = EmbeddingResponse {
        total_texts: output.vectors.len(),
        dimensions: entry.model.dimensions(),
        model_name: entry.name.clone(),
        processing_time: start.elapsed().as_secs_f64(),
        total_tokens: tokens,
        embeddings: output.vectors,
    };
    let stats = RequestStats {
        texts: body.total_texts,
        tokens,
    };
    let mut resp = Json(body).into_response();
    resp.extensions_mut().insert(stats);
    let ms =
        |d: std::time::Duration| HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1e3));
    if let (Ok(q), Ok(c)) = (ms(output.queue_time), ms(output.compute_time)) {
        resp.headers_mut().insert("x-queue-time-ms", q);
        resp.headers_mut().insert("x-compute-time-ms", c);
    }
    Ok(resp)
}
