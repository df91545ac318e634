//! `GET /model/info`, `POST /model/load`, `POST /model/unload`.
//!
//! The model may be named in the query (`?model_name=…`, as the brief's curl examples
//! do) or in a JSON body; with neither, these act on DEFAULT_MODEL.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{parse_json, AppState};
use crate::error::ApiError;
use crate::runtime::registry::{not_loaded, release_memory, LoadedModel};
use embgen_engine::Quantize;

/// How long an unload waits, in 10 ms steps, for the model's batcher to let go of
/// it: a batcher stops within one forward pass, and a request still using the model
/// keeps it anyway (its memory then goes back when that request ends).
const UNLOAD_WAIT_STEPS: usize = 100;

#[derive(Deserialize, IntoParams, ToSchema, Default)]
pub struct ModelQuery {
    /// A Hub id or a folder under MODEL_DIRS; default: DEFAULT_MODEL.
    pub model_name: Option<String>,
}

/// `/model/load`'s parameters, in the query or a JSON body.
#[derive(Deserialize, IntoParams, ToSchema, Default)]
pub struct LoadQuery {
    /// A Hub id or a folder under MODEL_DIRS; default: DEFAULT_MODEL.
    pub model_name: Option<String>,
    /// none, int8 or bf16; default: QUANTIZE. A model loaded in another precision is
    /// reloaded in this one.
    pub quantize: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelInfo {
    pub model_name: String,
    /// embedding, or scoring (a cross-encoder: reranking and classification).
    pub task: String,
    pub architecture: String,
    pub dimensions: usize,
    pub max_seq_length: usize,
    pub pooling: Vec<String>,
    pub normalize: bool,
    pub hidden_size: usize,
    pub layers: usize,
    pub parameters: usize,
    pub memory_bytes: usize,
    /// local, hub-cache or hub-download.
    pub source: String,
    pub revision: Option<String>,
    pub load_time_seconds: f64,
    /// Unix time the model was loaded.
    pub loaded_at: u64,
    pub prompts: Vec<String>,
    pub default_prompt: Option<String>,
    pub threads: usize,
    /// The instruction set the kernels use.
    pub isa: String,
    /// How the checkpoint stores its weights (float32, float16, bfloat16).
    pub weights_dtype: String,
    /// The quantization asked for at load: none, int8 or bf16.
    pub quantize: String,
    /// What the linear layers compute in, with the kernel: "float32", "int8 avx512-vnni", "bf16 avx512-bf16"…
    pub precision: String,
    /// A cross-encoder's labels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Requests using the model now (a model in use is never unloaded to make room).
    pub in_flight: usize,
    /// The activation a cross-encoder's scores get unless raw scores are asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_activation: Option<String>,
}

impl From<&LoadedModel> for ModelInfo {
    fn from(m: &LoadedModel) -> Self {
        let i = m.model.info();
        ModelInfo {
            model_name: m.name.clone(),
            task: i.task.to_string(),
            architecture: i.architecture.to_string(),
            dimensions: i.dimensions,
            max_seq_length: i.max_seq_length,
            pooling: i.pooling.iter().map(|p| p.to_string()).collect(),
            normalize: i.normalize,
            hidden_size: i.hidden_size,
            layers: i.layers,
            parameters: i.parameters,
            memory_bytes: i.memory_bytes,
            source: m.source.source.name().to_string(),
            revision: m.source.revision.clone(),
            load_time_seconds: m.load_time.as_secs_f64(),
            loaded_at: m
                .loaded_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            prompts: i.prompts.clone(),
            default_prompt: i.default_prompt.clone(),
            threads: i.threads,
            isa: i.isa.to_string(),
            weights_dtype: i.weights_dtype.to_string(),
            quantize: i.quantize.to_string(),
            precision: i.precision.clone(),
            labels: i.labels.clone(),
            in_flight: m.in_flight(),
            score_activation: i.score_activation.map(str::to_string),
        }
    }
}

/// What stays loaded: the limits and their use now.
#[derive(Serialize, ToSchema)]
pub struct Residency {
    pub loaded_models: usize,
    pub max_loaded_models: usize,
    /// Bytes of weights loaded.
    pub memory_used_bytes: usize,
    /// MODEL_MEMORY_BUDGET; null when unlimited.
    pub memory_budget_bytes: Option<usize>,
}

impl Residency {
    pub fn of(st: &AppState) -> Self {
        let r = st.runtime.registry.residency();
        Residency {
            loaded_models: st.runtime.registry.list().len(),
            max_loaded_models: r.max_models,
            memory_used_bytes: st.runtime.registry.memory_used(),
            memory_budget_bytes: (r.memory_budget != usize::MAX).then_some(r.memory_budget),
        }
    }
}

/// `/model/info`: the model, and the residency it lives within.
#[derive(Serialize, ToSchema)]
pub struct InfoResponse {
    #[serde(flatten)]
    pub model: ModelInfo,
    pub residency: Residency,
}

#[derive(Serialize, ToSchema)]
pub struct LoadResponse {
    /// loaded, or already_loaded.
    pub status: &'static str,
    pub model: ModelInfo,
}

#[derive(Serialize, ToSchema)]
pub struct UnloadResponse {
    pub status: &'static str,
    pub model_name: String,
    /// Weights released (given back to the system once in-flight requests finish).
    pub memory_freed_bytes: usize,
}

/// The parameters given in the query, else in a JSON body; the model defaults to
/// DEFAULT_MODEL.
fn parameters(
    st: &AppState,
    query: LoadQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, Option<String>), ApiError> {
    let given = if query.model_name.is_some() || query.quantize.is_some() {
        query
    } else {
        match body {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => LoadQuery::default(),
            other => parse_json::<LoadQuery>(other)?,
        }
    };
    let name = given
        .model_name
        .unwrap_or_else(|| st.runtime.registry.default_model.clone());
    Ok((name, given.quantize))
}

/// Information about a loaded model.
#[utoipa::path(get, path = "/model/info", tag = "models", params(ModelQuery), responses(
    (status = 200, body = InfoResponse),
    (status = 400, description = "Invalid model name", body = crate::error::ErrorBody),
    (status = 401, description = "Missing or wrong API key", body = crate::error::ErrorBody),
    (status = 404, description = "Not loaded", body = crate::error::ErrorBody),
))]
pub async fn info(
    State(st): State<AppState>,
    Query(q): Query<ModelQuery>,
) -> Result<Json<InfoResponse>, ApiError> {
    let name = q
        .model_name
        .unwrap_or_else(|| st.runtime.registry.default_model.clone());
    let m = st
        .runtime
        .registry
        .get(&name)
        .ok_or_else(|| not_loaded(&name))?;
    Ok(Json(InfoResponse {
        model: ModelInfo::from(&*m),
        residency: Residency::of(&st),
    }))
}

/// Load a model (from a folder under MODEL_DIRS, the Hugging Face cache, or the Hub).
#[utoipa::path(post, path = "/model/load", tag = "models", params(LoadQuery), request_body(content = Option<LoadQuery>), responses(
    (status = 200, body = LoadResponse),
    super::errors::NativeErrors,
))]
pub async fn load(
    State(st): State<AppState>,
    query: Result<Query<LoadQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LoadResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::validation(e.body_text()))?;
    let (name, quantize) = parameters(&st, query, body)?;
    let quantize = quantize
        .map(|q| Quantize::parse(&q))
        .transpose()
        .map_err(|e| ApiError::validation(format!("quantize: {e}")))?;
    let (m, loaded_now) = st.runtime.registry.get_or_load_as(&name, quantize).await?;
    Ok(Json(LoadResponse {
        status: if loaded_now {
            "loaded"
        } else {
            "already_loaded"
        },
        model: ModelInfo::from(&**m),
    }))
}

/// Unload a model and give its memory back.
#[utoipa::path(post, path = "/model/unload", tag = "models", params(ModelQuery), request_body(content = Option<ModelQuery>), responses(
    (status = 200, body = UnloadResponse),
    super::errors::NativeErrors,
))]
pub async fn unload(
    State(st): State<AppState>,
    query: Result<Query<ModelQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UnloadResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::validation(e.body_text()))?;
    let query = LoadQuery {
        model_name: query.model_name,
        quantize: None,
    };
    let (name, _) = parameters(&st, query, body)?;
    let removed = st.runtime.registry.unload(&name)?;
    let response = UnloadResponse {
        status: "unloaded",
        model_name: removed.name.clone(),
        memory_freed_bytes: removed.model.info().memory_bytes,
    };
    // The model's batcher lets go of it as it stops; when no request is using it,
    // wait for that (briefly) so that the memory is back when the answer says so.
    let weights = Arc::downgrade(&removed.model);
    drop(removed);
    for _ in 0..UNLOAD_WAIT_STEPS {
        if weights.strong_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release_memory();
    Ok(Json(response))
}
