//! The error responses each dialect's routes declare in the OpenAPI document, in the
//! shape that dialect answers with, so that the document matches what the server
//! sends (CI checks it with schemathesis).

use serde::Serialize;
use utoipa::ToSchema;

/// OpenAI's error body.
#[derive(Serialize, ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Always null.
    #[schema(nullable = true, value_type = Option<String>)]
    pub param: Option<String>,
    pub code: String,
}

/// TEI's error body.
#[derive(Serialize, ToSchema)]
pub struct TeiError {
    pub error: String,
    /// Validation, Unauthorized, Overloaded, Unhealthy or Backend.
    pub error_type: String,
}

/// Ollama's error body.
#[derive(Serialize, ToSchema)]
pub struct OllamaError {
    pub error: String,
}

/// Cohere's error body.
#[derive(Serialize, ToSchema)]
pub struct CohereError {
    pub message: String,
}

/// Declares every error status an inference route can answer, with `$body` as the
/// body of each.
macro_rules! error_responses {
    ($name:ident, $body:ty) => {
        #[derive(utoipa::IntoResponses)]
        #[allow(dead_code)]
        pub enum $name {
            /// Malformed JSON, an invalid model name or revision, a model that does not
            /// serve this task, dimensions outside the model's size.
            #[response(status = 400)]
            BadRequest($body),
            /// Missing or wrong API key (API_KEY).
            #[response(status = 401)]
            Unauthorized($body),
            /// A model outside ALLOWED_MODELS, or a cross-site request from an origin
            /// CORS_ALLOW_ORIGINS does not allow.
            #[response(status = 403)]
            Forbidden($body),
            /// The model was not found (locally, in the cache, or on the Hub).
            #[response(status = 404)]
            NotFound($body),
            /// The body did not arrive within BODY_READ_TIMEOUT.
            #[response(status = 408)]
            Timeout($body),
            /// Over MAX_REQUEST_BYTES, MAX_TEXTS_PER_REQUEST or MAX_TOKENS_PER_REQUEST,
            /// or an input longer than the model's limit with truncation off.
            #[response(status = 413)]
            TooLarge($body),
            /// A body that is not `Content-Type: application/json`.
            #[response(status = 415)]
            UnsupportedMediaType($body),
            /// Well-formed JSON with invalid fields (no texts, a wrong type).
            #[response(status = 422)]
            Invalid($body),
            /// Overloaded: retry after the `Retry-After` seconds.
            #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
            Overloaded($body),
            /// The model's files are broken, or the engine failed on this request.
            #[response(status = 500)]
            Internal($body),
            /// The Hub is unreachable, the model was unloaded mid-request, or there is
            /// no room for another model (MAX_LOADED_MODELS, MODEL_MEMORY_BUDGET).
            #[response(status = 503)]
            Unavailable($body),
        }
    };
}

error_responses!(NativeErrors, crate::error::ErrorBody);
error_responses!(OpenAiErrors, OpenAiError);
error_responses!(TeiErrors, TeiError);
error_responses!(OllamaErrors, OllamaError);
error_responses!(CohereErrors, CohereError);

/// The statuses of routes that only read state.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ReadErrors {
    /// Missing or wrong API key (API_KEY).
    #[response(status = 401)]
    Unauthorized(crate::error::ErrorBody),
}
