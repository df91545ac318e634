//! Hugging Face text-embeddings-inference's API: `POST /embed` (also `POST /`),
//! `POST /tokenize`, `GET /info`, for huggingface_hub's InferenceClient, LlamaIndex's
//! TextEmbeddingsInference, Haystack and LangChain's HuggingFaceEndpointEmbeddings.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use embgen_engine::{TokenDetail, Truncation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{parse_json, string_or_list, AppState};
use crate::error::{ApiError, ErrorShape, Shaped};
use crate::inference;

/// `{"error": "...", "error_type": "..."}`, as TEI answers.
pub struct Shape;

impl ErrorShape for Shape {
    fn body(e: &ApiError) -> Value {
        let kind = match e.status.as_u16() {
            401 => "Unauthorized",
            429 => "Overloaded",
            503 => "Unhealthy",
            500.. => "Backend",
            _ => "Validation",
        };
        serde_json::json!({"error": e.message, "error_type": kind})
    }
}

type Error = Shaped<Shape>;

#[derive(Deserialize, ToSchema)]
pub struct EmbedRequest {
    /// A string or a list of strings.
    #[schema(value_type = Object, example = json!("What is Deep Learning?"))]
    pub inputs: Value,
    /// L2-normalize (default true).
    pub normalize: Option<bool>,
    /// Cut texts longer than the model's limit (default true); false refuses them (413).
    pub truncate: Option<bool>,
    /// `Right` (default: keep the start) or `Left` (keep the end).
    pub truncation_direction: Option<String>,
    pub prompt_name: Option<String>,
    pub dimensions: Option<usize>,
}

fn direction(d: Option<&str>) -> Result<Truncation, ApiError> {
    match d.map(str::to_ascii_lowercase).as_deref() {
        None | Some("right") => Ok(Truncation::Right),
        Some("left") => Ok(Truncation::Left),
        Some(other) => Err(ApiError::validation(format!(
            "truncation_direction must be Left or Right, not {other:?}"
        ))),
    }
}

/// Embed texts (TEI-compatible); one vector per input.
#[utoipa::path(post, path = "/embed", tag = "tei", request_body = EmbedRequest, responses(
    (status = 200, description = "One vector per input", body = Vec<Vec<f32>>),
    (status = 413, description = "Too long with truncate=false, or too many inputs"),
))]
pub async fn embed(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<f32>>>, Error> {
    let _permit = inference::admit(&st)?;
    let req: EmbedRequest = parse_json(body)?;
    let out = inference::embed(
        &st,
        inference::Request {
            normalize: req.normalize.unwrap_or(true),
            truncate: req.truncate.unwrap_or(true),
            direction: direction(req.truncation_direction.as_deref())?,
            prompt_name: req.prompt_name,
            dimensions: req.dimensions,
            ..inference::Request::new(None, string_or_list(req.inputs, "inputs")?)
        },
    )
    .await?;
    Ok(Json(out.vectors))
}

#[derive(Deserialize, ToSchema)]
pub struct TokenizeRequest {
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Default true.
    pub add_special_tokens: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct SimpleToken {
    pub id: u32,
    pub text: String,
    pub special: bool,
    pub start: Option<usize>,
    pub stop: Option<usize>,
}

impl From<TokenDetail> for SimpleToken {
    fn from(t: TokenDetail) -> Self {
        SimpleToken {
            id: t.id,
            text: t.text,
            special: t.special,
            // Special tokens have no place in the text.
            start: (!t.special).then_some(t.start),
            stop: (!t.special).then_some(t.stop),
        }
    }
}

/// Tokenize inputs with the default model's tokenizer (TEI-compatible).
#[utoipa::path(post, path = "/tokenize", tag = "tei", request_body = TokenizeRequest, responses(
    (status = 200, description = "The tokens of each input", body = Vec<Vec<SimpleToken>>),
))]
pub async fn tokenize(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<SimpleToken>>>, Error> {
    let req: TokenizeRequest = parse_json(body)?;
    let texts = string_or_list(req.inputs, "inputs")?;
    let (entry, _) = st.registry.get_or_load(&st.registry.default_model).await?;
    let special = req.add_special_tokens.unwrap_or(true);
    let out = tokio::task::spawn_blocking(move || {
        texts
            .iter()
            .map(|t| {
                Ok(entry
                    .model
                    .token_details(t, special)?
                    .into_iter()
                    .map(SimpleToken::from)
                    .collect())
            })
            .collect::<Result<Vec<Vec<SimpleToken>>, embgen_engine::Error>>()
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|e| ApiError::validation(e.to_string()))?;
    Ok(Json(out))
}

/// The default model and the server's limits (TEI-compatible).
#[utoipa::path(get, path = "/info", tag = "tei", responses((status = 200, description = "TEI's info object")))]
pub async fn info(State(st): State<AppState>) -> Result<Json<Value>, Error> {
    let (m, _) = st.registry.get_or_load(&st.registry.default_model).await?;
    let i = m.model.info();
    Ok(Json(serde_json::json!({
        "model_id": m.name,
        "model_sha": m.source.revision,
        "model_dtype": "float32",
        "model_type": {"embedding": {"pooling": i.pooling.join("+")}},
        "max_concurrent_requests": st.config.max_concurrent_requests,
        "max_input_length": i.max_seq_length,
        "max_batch_tokens": st.config.max_batch_tokens,
        "max_batch_requests": null,
        "max_client_batch_size": st.config.max_texts_per_request,
        "auto_truncate": true,
        "tokenization_workers": i.threads,
        "version": env!("CARGO_PKG_VERSION"),
        "prompts": i.prompts,
    })))
}
