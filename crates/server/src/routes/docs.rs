//! The OpenAPI document, Swagger UI at `/docs` and ReDoc at `/redoc`, all served from
//! the binary so that the docs work on machines with no internet.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::{cohere, embeddings, errors, models, ollama, openai, service, tei, AppState};
use crate::error;

#[derive(OpenApi)]
#[openapi(
    info(title = "embgen", description = "Text embeddings and reranking on the CPU, faithful to sentence-transformers."),
    paths(
        service::root,
        service::health,
        service::metrics,
        embeddings::embeddings,
        models::info,
        models::load,
        models::unload,
        openai::embeddings,
        openai::models,
        tei::embed,
        tei::embed_root,
        tei::rerank,
        tei::predict,
        tei::tokenize,
        tei::info,
        ollama::embed,
        ollama::embeddings,
        cohere::rerank_v1,
        cohere::rerank_v2,
    ),
    // The dialects' error shapes are named by the routes' responses; listed here so
    // that the document defines what it refers to.
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        errors::OpenAiError,
        errors::OpenAiErrorDetail,
        errors::TeiError,
        errors::OllamaError,
        errors::CohereError,
        openai::EmbeddingVector,
    )),
    tags(
        (name = "embeddings", description = "Texts to vectors"),
        (name = "models", description = "Loading and unloading models"),
        (name = "service", description = "Service information and health"),
        (name = "openai", description = "OpenAI-compatible embeddings"),
        (name = "tei", description = "text-embeddings-inference-compatible API"),
        (name = "ollama", description = "Ollama-compatible embeddings"),
        (name = "rerank", description = "Reranking and classification with cross-encoders (TEI, Cohere and Jina compatible)"),
    )
)]
pub struct ApiDoc;

const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");

const REDOC_HTML: &str = r#"<!DOCTYPE html>
<html>
  <head>
    <title>embgen API</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
  </head>
  <body>
    <redoc spec-url="/openapi.json"></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>
"#;

pub fn router() -> Router<AppState> {
    // The Swagger UI router also serves the document at /openapi.json.
    let swagger: Router<AppState> = SwaggerUi::new("/docs")
        .url("/openapi.json", ApiDoc::openapi())
        .into();
    Router::new()
        .route("/redoc", get(|| async { Html(REDOC_HTML) }))
        .route(
            "/redoc/redoc.standalone.js",
            get(|| async {
                ([(header::CONTENT_TYPE, "application/javascript")], REDOC_JS).into_response()
            }),
        )
        .merge(swagger)
}
