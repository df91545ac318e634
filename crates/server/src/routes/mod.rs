//! The HTTP routes: the brief's API, one module per group, and the router that joins them.

pub mod cohere;
pub mod docs;
pub mod embeddings;
pub mod errors;
pub mod models;
pub mod ollama;
pub mod openai;
pub mod service;
pub mod tei;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::ServeArgs;
use crate::error::ApiError;
use crate::request_log::RequestStats;
use crate::runtime::{Runtime, Usage};

/// Everything a handler may need.
#[derive(Clone)]
pub struct AppState {
    /// Models and the path to the engine: every task goes through it.
    pub runtime: Arc<Runtime>,
    pub config: Arc<ServeArgs>,
    pub started: Instant,
    pub preload: Arc<service::Preload>,
}

/// A task's answer in a dialect's body, with what every route reports the same way:
/// the request log's fields, and `x-queue-time-ms` / `x-compute-time-ms`.
pub fn reply<B: serde::Serialize>(model: &str, usage: &Usage, body: B) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut resp = axum::Json(body).into_response();
    stamp(&mut resp, model, usage);
    resp
}

/// Adds a task's usage to a response: the log line's fields and the timing headers.
pub fn stamp(resp: &mut axum::response::Response, model: &str, usage: &Usage) {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    resp.extensions_mut().insert(RequestStats {
        task: usage.task.name(),
        model: model.to_string(),
        texts: usage.texts,
        tokens: usage.tokens,
        truncated: usage.truncated,
        queue_ms: ms(usage.queue),
        compute_ms: ms(usage.compute),
    });
    for (name, d) in [
        ("x-queue-time-ms", usage.queue),
        ("x-compute-time-ms", usage.compute),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("{:.3}", ms(d))) {
            resp.headers_mut().insert(name, v);
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(service::root).post(tei::embed_root))
        .route("/health", get(service::health))
        .route("/metrics", get(service::metrics))
        .route("/embeddings", post(embeddings::embeddings))
        .route("/model/info", get(models::info))
        .route("/model/load", post(models::load))
        .route("/model/unload", post(models::unload))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/embed", post(tei::embed))
        .route("/tokenize", post(tei::tokenize))
        .route("/rerank", post(tei::rerank))
        .route("/predict", post(tei::predict))
        .route("/v1/rerank", post(cohere::rerank_v1))
        .route("/v2/rerank", post(cohere::rerank_v2))
        .route("/info", get(tei::info))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .merge(docs::router())
        .fallback(crate::guard::not_found)
        .method_not_allowed_fallback(crate::guard::method_not_allowed)
        .with_state(state)
}

/// The routes a request can match, for logs; anything else is "unmatched" so that a
/// scan of random paths does not fill logs and metrics with new labels.
pub const ROUTES: &[&str] = &[
    "/",
    "/health",
    "/metrics",
    "/embeddings",
    "/model/info",
    "/model/load",
    "/model/unload",
    "/v1/embeddings",
    "/v1/models",
    "/embed",
    "/tokenize",
    "/rerank",
    "/predict",
    "/v1/rerank",
    "/v2/rerank",
    "/info",
    "/api/embed",
    "/api/embeddings",
    "/docs",
    "/redoc",
    "/redoc/redoc.standalone.js",
    "/openapi.json",
];

/// Parses a JSON body. Malformed JSON is the client's syntax (400); well-formed JSON of
/// the wrong shape is a validation error (422); a body over MAX_REQUEST_BYTES is 413,
/// one slower than BODY_READ_TIMEOUT 408. (`Content-Type: application/json` is
/// required before this runs: see `guard`.)
pub fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        // tower-http's body timeout, somewhere in the rejection's error chain.
        let mut timed_out = false;
        let mut source: Option<&dyn std::error::Error> = Some(&rejection);
        while let Some(e) = source {
            timed_out |= e.to_string().contains("designated timeout");
            source = e.source();
        }
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than MAX_REQUEST_BYTES",
            )
        } else if timed_out {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive within BODY_READ_TIMEOUT",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the request body could not be read",
            )
        }
    })?;
    // Every body is an object; serde would also read a struct from an array.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::validation("the body must be a JSON object"));
    }
    serde_json::from_slice(&body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::validation(e.to_string()),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON: {e}"),
            ),
        }
    })
}

/// A string or a non-empty list of strings: every dialect's `input`/`inputs`, as
/// the OpenAPI document declares it (parsing is [`string_or_list`]).
pub struct Texts;

impl utoipa::PartialSchema for Texts {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
        let text = || ObjectBuilder::new().schema_type(Type::String).build();
        AnyOfBuilder::new()
            .item(text())
            .item(ArrayBuilder::new().items(text()).min_items(Some(1)).build())
            .into()
    }
}

impl utoipa::ToSchema for Texts {}

/// The texts of a field that holds a string or a list of strings, as every dialect's
/// `input`/`inputs` does.
pub fn string_or_list(value: Value, field: &str) -> Result<Vec<String>, ApiError> {
    match value {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(ApiError::validation(format!(
                    "{field}[{i}] must be a string, not {other}"
                ))),
            })
            .collect(),
        other => Err(ApiError::validation(format!(
            "{field} must be a string or a list of strings, not {other}"
        ))),
    }
}

#[cfg(test)]
mod properties {
    //! Whatever JSON a client sends, every dialect's parsing answers Ok or a 4xx
    //! error, and never panics.

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// Arbitrary JSON, nested a few levels, with the field names the dialects use so
    /// that parsing gets past the first missing field often.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::String),
        ];
        let keys = prop_oneof![
            Just("texts"),
            Just("input"),
            Just("inputs"),
            Just("model"),
            Just("model_name"),
            Just("query"),
            Just("documents"),
            Just("top_n"),
            Just("normalize"),
            Just("dimensions"),
            Just("batch_size"),
            Just("encoding_format"),
            Just("truncate"),
            Just("raw_scores"),
            Just("text"),
            Just("prompt"),
            Just("truncation_direction"),
            Just("return_documents"),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ApiError> {
        parse_json(Ok(axum::body::Bytes::from(v.to_string())))
    }

    fn client_error(e: &ApiError) -> bool {
        e.status.is_client_error()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_dialect_parses_or_refuses_with_4xx(v in json()) {
            let checks: Vec<Result<(), ApiError>> = vec![
                parse::<embeddings::EmbeddingRequest>(&v).map(|_| ()),
                parse::<openai::EmbeddingsRequest>(&v).and_then(|r| openai::texts(r.input).map(|_| ())),
                parse::<tei::EmbedRequest>(&v).and_then(|r| string_or_list(r.inputs, "inputs").map(|_| ())),
                parse::<tei::TokenizeRequest>(&v).and_then(|r| string_or_list(r.inputs, "inputs").map(|_| ())),
                parse::<tei::RerankRequest>(&v).map(|_| ()),
                parse::<tei::PredictRequest>(&v).and_then(|r| tei::predict_input(r.inputs, "inputs").map(|_| ())),
                parse::<ollama::EmbedRequest>(&v).and_then(|r| string_or_list(r.input, "input").map(|_| ())),
                parse::<ollama::LegacyRequest>(&v).map(|_| ()),
                parse::<cohere::RerankRequest>(&v).and_then(|r| cohere::document_texts(r.documents).map(|_| ())),
                parse::<models::LoadQuery>(&v).map(|_| ()),
            ];
            for c in checks {
                if let Err(e) = c {
                    prop_assert!(client_error(&e), "{} for {v}", e.status);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_are_a_400_or_422(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let r: Result<embeddings::EmbeddingRequest, ApiError> = parse_json(Ok(axum::body::Bytes::from(bytes)));
            if let Err(e) = r {
                prop_assert!(e.status == StatusCode::BAD_REQUEST || e.status == StatusCode::UNPROCESSABLE_ENTITY);
            }
        }
    }
}
