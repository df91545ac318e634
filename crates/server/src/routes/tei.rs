//! Hugging Face text-embeddings-inference's API: `POST /embed` (also `POST /`),
//! `POST /rerank`, `POST /predict`, `POST /tokenize`, `GET /info`, for
//! huggingface_hub's InferenceClient, LlamaIndex's TextEmbeddingsInference, Haystack
//! and LangChain's HuggingFaceEndpointEmbeddings and their TEI rerankers.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use embgen_engine::{Prompt, TokenDetail, Truncation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{parse_json, reply, string_or_list, AppState};
use crate::error::{ApiError, ErrorShape, Shaped};
use crate::runtime::{Classify, Embed, Input, Rerank, Tokenize};

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
    #[schema(value_type = super::Texts, example = json!("What is Deep Learning?"))]
    pub inputs: Value,
    /// L2-normalize (default true).
    pub normalize: Option<bool>,
    /// Cut texts longer than the model's limit (default true); false refuses them (413).
    pub truncate: Option<bool>,
    /// `Right` (default: keep the start) or `Left` (keep the end).
    pub truncation_direction: Option<String>,
    pub prompt_name: Option<String>,
    #[schema(minimum = 1)]
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
    super::errors::TeiErrors,
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
            None,
            Embed {
                normalize: req.normalize.unwrap_or(true),
                truncate: req.truncate.unwrap_or(true),
                direction: direction(req.truncation_direction.as_deref())?,
                prompt: req.prompt_name.map_or(Prompt::Default, Prompt::Named),
                dimensions: req.dimensions,
                ..Embed::new(string_or_list(req.inputs, "inputs")?)
            },
        )
        .await?;
    Ok(reply(&done.model.name, &done.usage, done.output))
}

/// Embed texts at the root, as huggingface_hub's InferenceClient posts (TEI-compatible).
#[utoipa::path(post, path = "/", tag = "tei", request_body = EmbedRequest, responses(
    (status = 200, description = "One vector per input", body = Vec<Vec<f32>>),
    super::errors::TeiErrors,
))]
pub async fn embed_root(
    st: State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Error> {
    embed(st, body).await
}

#[derive(Deserialize, ToSchema)]
pub struct RerankRequest {
    #[schema(example = "What is Deep Learning?", min_length = 1, pattern = r"\S")]
    pub query: String,
    /// The documents to rank against the query.
    #[schema(example = json!(["Deep Learning is not...", "Deep learning is..."]), min_items = 1)]
    pub texts: Vec<String>,
    /// Logits instead of the model's activation (sigmoid for one label).
    pub raw_scores: Option<bool>,
    /// Include each document's text in the answer.
    pub return_text: Option<bool>,
    /// Cut pairs longer than the model's limit (default true); false refuses them (413).
    pub truncate: Option<bool>,
    /// Accepted for TEI compatibility; pairs are cut longest-first, as
    /// sentence-transformers does.
    pub truncation_direction: Option<String>,
    /// A cross-encoder (Hub id or folder); default: DEFAULT_MODEL. Loaded if needed.
    pub model_name: Option<String>,
    /// The same, under the name other APIs use.
    pub model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Rank {
    /// The document's position in `texts`.
    pub index: usize,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Rank texts by relevance to a query with a cross-encoder (TEI-compatible); best first.
#[utoipa::path(post, path = "/rerank", tag = "rerank", request_body = RerankRequest, responses(
    (status = 200, description = "Documents by relevance, best first", body = Vec<Rank>),
    super::errors::TeiErrors,
))]
pub async fn rerank(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Error> {
    let _permit = st.runtime.admit()?;
    let req: RerankRequest = parse_json(body)?;
    direction(req.truncation_direction.as_deref())?;
    let model = req.model_name.or(req.model);
    let return_text = req.return_text.unwrap_or(false);
    let done = st
        .runtime
        .rerank(
            model.as_deref(),
            Rerank {
                query: req.query,
                documents: req.texts.clone(),
                raw: req.raw_scores.unwrap_or(false),
                truncate: req.truncate.unwrap_or(true),
            },
        )
        .await?;
    let mut ranks: Vec<Rank> = done
        .output
        .iter()
        .enumerate()
        .map(|(index, score)| Rank {
            index,
            score: *score,
            text: return_text.then(|| req.texts[index].clone()),
        })
        .collect();
    ranks.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    Ok(reply(&done.model.name, &done.usage, ranks))
}

#[derive(Deserialize, ToSchema)]
pub struct PredictRequest {
    /// A text, a pair `[a, b]`, or a list of texts and pairs (`[a]` or `[a, b]`).
    #[schema(value_type = PredictInputs, example = json!("I like you. I love you"))]
    pub inputs: Value,
    /// Logits instead of probabilities (softmax over labels; sigmoid for one label).
    pub raw_scores: Option<bool>,
    pub truncate: Option<bool>,
    pub truncation_direction: Option<String>,
    /// A classifier (Hub id or folder); default: DEFAULT_MODEL.
    pub model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// `/predict`'s inputs: a text, a pair, or a list of texts and pairs. A two-string
/// list is one pair, so the alternatives overlap: anyOf, not oneOf.
pub struct PredictInputs;

impl utoipa::PartialSchema for PredictInputs {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type};
        use utoipa::openapi::RefOr;
        let text = || ObjectBuilder::new().schema_type(Type::String).build();
        let pair = || {
            ArrayBuilder::new()
                .items(text())
                .min_items(Some(1))
                .max_items(Some(2))
                .build()
        };
        let one = || AnyOfBuilder::new().item(text()).item(pair()).build();
        AnyOfBuilder::new()
            .item(text())
            .item(pair())
            .item(
                ArrayBuilder::new()
                    .items(RefOr::T(Schema::AnyOf(one())))
                    .min_items(Some(1))
                    .build(),
            )
            .into()
    }
}

impl utoipa::ToSchema for PredictInputs {}

/// `/predict`'s answer: one input's labels, or one list per input.
pub struct PredictResponse;

impl utoipa::PartialSchema for PredictResponse {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, Schema};
        use utoipa::openapi::RefOr;
        let labels = || ArrayBuilder::new().items(LabelScore::schema()).build();
        AnyOfBuilder::new()
            .item(labels())
            .item(
                ArrayBuilder::new()
                    .items(RefOr::T(Schema::Array(labels())))
                    .build(),
            )
            .into()
    }
}

impl utoipa::ToSchema for PredictResponse {}

/// One input of `/predict`: a text, or a pair given as a 2-element list.
pub(crate) fn predict_input(v: Value, field: &str) -> Result<Input, ApiError> {
    match v {
        Value::String(s) => Ok(Input::Text(s)),
        Value::Array(items)
            if (1..=2).contains(&items.len()) && items.iter().all(Value::is_string) =>
        {
            let mut it = items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string));
            let a = it.next().unwrap_or_default();
            Ok(match it.next() {
                Some(b) => Input::Pair(a, b),
                None => Input::Text(a),
            })
        }
        other => Err(ApiError::validation(format!(
            "{field} must be a text or a pair of texts [a, b], not {other}"
        ))),
    }
}

/// Classify texts or text pairs with a sequence classifier (TEI-compatible): every
/// label with its score, best first.
#[utoipa::path(post, path = "/predict", tag = "rerank", request_body = PredictRequest, responses(
    (status = 200, description = "For one input (a text or a pair), its labels best first; for a list, one such list per input", body = PredictResponse),
    super::errors::TeiErrors,
))]
pub async fn predict(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Error> {
    let _permit = st.runtime.admit()?;
    let req: PredictRequest = parse_json(body)?;
    direction(req.truncation_direction.as_deref())?;
    // A string or a [a, b] pair is one input; any other list is a batch.
    let (single, inputs) = match req.inputs {
        Value::String(_) => (true, vec![predict_input(req.inputs, "inputs")?]),
        Value::Array(ref items) if items.len() == 2 && items.iter().all(Value::is_string) => {
            (true, vec![predict_input(req.inputs, "inputs")?])
        }
        Value::Array(items) => (
            false,
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| predict_input(v, &format!("inputs[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(ApiError::validation(format!(
                "inputs must be a text, a pair, or a list of them, not {other}"
            ))
            .into())
        }
    };
    let done = st
        .runtime
        .classify(
            req.model.as_deref(),
            Classify {
                inputs,
                raw: req.raw_scores.unwrap_or(false),
                truncate: req.truncate.unwrap_or(true),
            },
        )
        .await?;
    let labels = done.model.model.info().labels.clone();
    let ranked: Vec<Vec<LabelScore>> = done
        .output
        .iter()
        .map(|scores| {
            let mut v: Vec<LabelScore> = labels
                .iter()
                .zip(scores)
                .map(|(label, score)| LabelScore {
                    label: label.clone(),
                    score: *score,
                })
                .collect();
            v.sort_by(|a, b| b.score.total_cmp(&a.score));
            v
        })
        .collect();
    let body = if single {
        serde_json::to_value(&ranked[0])
    } else {
        serde_json::to_value(&ranked)
    }
    .map_err(|_| ApiError::internal())?;
    Ok(reply(&done.model.name, &done.usage, body))
}

#[derive(Deserialize, ToSchema)]
pub struct TokenizeRequest {
    /// A string or a list of strings.
    #[schema(value_type = super::Texts)]
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
    super::errors::TeiErrors,
))]
pub async fn tokenize(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Error> {
    let _permit = st.runtime.admit()?;
    let req: TokenizeRequest = parse_json(body)?;
    let done = st
        .runtime
        .tokenize(
            None,
            Tokenize {
                texts: string_or_list(req.inputs, "inputs")?,
                add_special_tokens: req.add_special_tokens.unwrap_or(true),
            },
        )
        .await?;
    let tokens: Vec<Vec<SimpleToken>> = done
        .output
        .iter()
        .map(|t| t.iter().cloned().map(SimpleToken::from).collect())
        .collect();
    Ok(reply(&done.model.name, &done.usage, tokens))
}

/// The default model and the server's limits (TEI-compatible).
#[utoipa::path(get, path = "/info", tag = "tei", responses(
    (status = 200, description = "TEI's info object", content_type = "application/json"),
    super::errors::ReadErrors,
))]
pub async fn info(State(st): State<AppState>) -> Result<Json<Value>, Error> {
    // Describes the default model if it is loaded; asking never loads one.
    let default = &st.runtime.registry.default_model;
    let Some(m) = st.runtime.registry.get(default) else {
        return Ok(Json(serde_json::json!({
            "model_id": default,
            "model_sha": null,
            "model_dtype": null,
            "model_type": null,
            "max_concurrent_requests": st.config.max_concurrent_requests,
            "max_input_length": null,
            "max_batch_tokens": st.config.max_batch_tokens,
            "max_batch_requests": null,
            "max_client_batch_size": st.config.max_texts_per_request,
            "auto_truncate": true,
            "version": env!("CARGO_PKG_VERSION"),
        })));
    };
    let i = m.model.info();
    let labels: serde_json::Map<String, Value> = i
        .labels
        .iter()
        .enumerate()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    let model_type = match (i.task, i.labels.len()) {
        ("scoring", 1) => serde_json::json!({"reranker": {"id2label": labels}}),
        ("scoring", _) => serde_json::json!({"classifier": {"id2label": labels}}),
        _ => serde_json::json!({"embedding": {"pooling": i.pooling.join("+")}}),
    };
    Ok(Json(serde_json::json!({
        "model_id": m.name,
        "model_sha": m.source.revision,
        "model_dtype": i.weights_dtype,
        "model_type": model_type,
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
