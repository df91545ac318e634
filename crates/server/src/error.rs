//! The JSON error every route answers with, and how internal errors map onto it.
//!
//! Clients get a status that says whose fault it was, a stable machine-readable code
//! to branch on, and a message for people. Nothing internal leaks: engine and Hub
//! errors name files, so paths are cut down to the model-relative part before they
//! reach a response, and panics become a plain 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds a refused client should wait (`Retry-After`), for 429 and 503.
    pub retry_after: Option<u64>,
}

/// Body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: invalid_json, validation_error, too_many_texts, payload_too_large,
    /// invalid_model_name, model_not_found, model_not_loaded, model_load_failed,
    /// hub_unreachable, overloaded, model_unloaded, internal_error.
    pub code: String,
    pub message: String,
    pub status: u16,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            message,
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to handle the request; see its logs",
        )
    }
}

/// How an API dialect spells an error; the status code is the same in all of them.
pub trait ErrorShape {
    fn body(e: &ApiError) -> serde_json::Value;
}

/// The brief's own shape: `{"error": {"code", "message", "status"}}`.
pub struct Native;

impl ErrorShape for Native {
    fn body(e: &ApiError) -> serde_json::Value {
        let body = ErrorBody {
            error: ErrorDetail {
                code: e.code.to_string(),
                message: e.message.clone(),
                status: e.status.as_u16(),
            },
        };
        serde_json::to_value(body).unwrap_or_default()
    }
}

/// An [`ApiError`] answered in the shape `S`, for the routes of another dialect.
pub struct Shaped<S>(pub ApiError, std::marker::PhantomData<S>);

impl<S> From<ApiError> for Shaped<S> {
    fn from(e: ApiError) -> Self {
        Shaped(e, std::marker::PhantomData)
    }
}

impl<S: ErrorShape> IntoResponse for Shaped<S> {
    fn into_response(self) -> Response {
        respond(&self.0, S::body(&self.0))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Native::body(&self);
        respond(&self, body)
    }
}

fn respond(e: &ApiError, body: serde_json::Value) -> Response {
    let mut resp = (e.status, axum::Json(body)).into_response();
    let retry = match (e.retry_after, e.status) {
        (Some(s), _) => Some(s),
        (None, StatusCode::TOO_MANY_REQUESTS) => Some(1),
        _ => None,
    };
    if let Some(s) = retry {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(s),
        );
    }
    resp
}

/// Removes every occurrence of the given folders from a message, so that an engine
/// error such as "/root/.cache/huggingface/hub/models--x/snapshots/abc/config.json:
/// hidden_size: ..." reaches the client as "config.json: hidden_size: ...".
pub fn strip_paths(message: &str, folders: &[&std::path::Path]) -> String {
    let mut out = message.to_string();
    for folder in folders {
        let s = folder.display().to_string();
        if s.len() > 1 {
            out = out
                .replace(&format!("{s}/"), "")
                .replace(&s, "(model folder)");
        }
    }
    out
}

/// `e` in the error shape of the dialect `path` belongs to: for refusals made before a
/// route's handler runs (API keys, content type, cross-site origins), so that each
/// client reads them as its own API's errors.
pub fn respond_for(path: &str, e: ApiError) -> Response {
    use crate::routes::{cohere, ollama, openai, tei};
    if matches!(path, "/v1/rerank" | "/v2/rerank") {
        Shaped::<cohere::Shape>::from(e).into_response()
    } else if path.starts_with("/v1/") {
        Shaped::<openai::Shape>::from(e).into_response()
    } else if path.starts_with("/api/") {
        Shaped::<ollama::Shape>::from(e).into_response()
    } else if matches!(
        path,
        "/" | "/embed" | "/tokenize" | "/info" | "/rerank" | "/predict"
    ) {
        Shaped::<tei::Shape>::from(e).into_response()
    } else {
        e.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cut() {
        let dir = std::path::Path::new("/srv/models/m");
        let msg = "/srv/models/m/config.json: hidden_size: bad; see /srv/models/m";
        assert_eq!(
            strip_paths(msg, &[dir]),
            "config.json: hidden_size: bad; see (model folder)"
        );
    }
}
