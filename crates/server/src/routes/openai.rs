//! OpenAI's embeddings API: `POST /v1/embeddings` and `GET /v1/models`, for the
//! OpenAI SDKs, LangChain's OpenAIEmbeddings, LlamaIndex and the rest of that family.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{parse_json, reply, string_or_list, AppState};
use crate::error::{ApiError, ErrorShape, Shaped};
use crate::runtime::Embed;

/// `{"error": {"message", "type", "param", "code"}}`, as OpenAI answers.
pub struct Shape;

impl ErrorShape for Shape {
    fn body(e: &ApiError) -> Value {
        let kind = match e.status.as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            500.. => "server_error",
            _ => "invalid_request_error",
        };
        serde_json::json!({"error": {"message": e.message, "type": kind, "param": null, "code": e.code}})
    }
}

type Error = Shaped<Shape>;

#[derive(Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    /// A string or a list of strings.
    #[schema(value_type = super::Texts, example = json!(["The food was delicious"]))]
    pub input: Value,
    /// The model to use; loaded if needed. Default: DEFAULT_MODEL.
    pub model: Option<String>,
    /// `float` (default) or `base64` (little-endian f32).
    pub encoding_format: Option<String>,
    /// Keep the first N dimensions and re-normalize.
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
    /// Accepted and ignored.
    pub user: Option<String>,
}

/// What `embedding` holds: floats, or base64 with `encoding_format: "base64"`.
/// Describes the schema only (the value is built as JSON).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EmbeddingVector {
    Floats(Vec<f32>),
    Base64(String),
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingData {
    pub object: &'static str,
    /// A list of floats, or a base64 string of little-endian f32.
    #[schema(value_type = EmbeddingVector)]
    pub embedding: Value,
    pub index: usize,
}

#[derive(Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: Usage,
}

/// The texts of `input`; token-id arrays are refused with the fix spelled out.
pub(crate) fn texts(input: Value) -> Result<Vec<String>, ApiError> {
    let token_ids = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "token_ids_not_supported",
            "input holds token ids; they are ids of OpenAI's tokenizer, which this model does not \
             use, so they cannot be embedded correctly. Send the texts as strings instead (in \
             LangChain: OpenAIEmbeddings(..., check_embedding_ctx_length=False))",
        )
    };
    if input
        .as_array()
        .is_some_and(|items| items.iter().any(|v| v.is_number() || v.is_array()))
    {
        return Err(token_ids());
    }
    string_or_list(input, "input")
}

fn base64_f32(v: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Create embeddings (OpenAI-compatible).
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingsRequest, responses(
    (status = 200, body = EmbeddingsResponse),
    super::errors::OpenAiErrors,
))]
pub async fn embeddings(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Error> {
    let _permit = st.runtime.admit()?;
    let req: EmbeddingsRequest = parse_json(body)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "encoding_format must be float or base64, not {other:?}"
            ))
            .into())
        }
    };
    let done = st
        .runtime
        .embed(
            req.model.as_deref(),
            Embed {
                dimensions: req.dimensions,
                ..Embed::new(texts(req.input)?)
            },
        )
        .await?;
    let data = done
        .output
        .iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            embedding: if base64 {
                Value::String(base64_f32(v))
            } else {
                serde_json::json!(v)
            },
            index,
        })
        .collect();
    let body = EmbeddingsResponse {
        object: "list",
        data,
        model: done.model.name.clone(),
        usage: Usage {
            prompt_tokens: done.usage.tokens,
            total_tokens: done.usage.tokens,
        },
    };
    Ok(reply(&done.model.name, &done.usage, body))
}

#[derive(Serialize, ToSchema)]
pub struct ModelEntry {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
    /// Whether the model is in memory now (the others load on first use).
    pub loaded: bool,
    /// A loaded model's precision: what its linear layers compute in, with the
    /// kernel ("float32", "int8 avx512-vnni", "bf16 avx512-bf16").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// A loaded model's weights in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelEntry>,
}

/// Loaded models, and those that can be loaded without a download.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses(
    (status = 200, body = ModelList),
    super::errors::ReadErrors,
))]
pub async fn models(State(st): State<AppState>) -> Json<ModelList> {
    let loaded = st.runtime.registry.list();
    let mut data: Vec<ModelEntry> = loaded
        .iter()
        .map(|m| ModelEntry {
            id: m.name.clone(),
            object: "model",
            created: m
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            owned_by: owner(&m.name),
            loaded: true,
            precision: Some(m.model.info().precision.clone()),
            memory_bytes: Some(m.model.info().memory_bytes),
        })
        .collect();
    let available = tokio::task::spawn_blocking({
        let registry = st.runtime.registry.clone();
        move || registry.available()
    })
    .await
    .unwrap_or_default();
    for id in available {
        if !data.iter().any(|m| m.id == id) {
            data.push(ModelEntry {
                owned_by: owner(&id),
                id,
                object: "model",
                created: 0,
                loaded: false,
                precision: None,
                memory_bytes: None,
            });
        }
    }
    Json(ModelList {
        object: "list",
        data,
    })
}

fn owner(id: &str) -> String {
    id.split_once('/')
        .map_or("local", |(org, _)| org)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_forms() {
        assert_eq!(texts(serde_json::json!("a")).unwrap(), vec!["a"]);
        assert_eq!(
            texts(serde_json::json!(["a", "b"])).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            texts(serde_json::json!([1, 2])).unwrap_err().code,
            "token_ids_not_supported"
        );
        assert_eq!(
            texts(serde_json::json!([[1, 2]])).unwrap_err().code,
            "token_ids_not_supported"
        );
        assert_eq!(texts(serde_json::json!({"a": 1})).unwrap_err().status, 422);
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
    }
}
