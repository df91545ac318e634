//! Cohere's and Jina's rerank API: `POST /v1/rerank` and `POST /v2/rerank`, for the
//! cohere SDKs, LangChain's and LlamaIndex's Cohere rerankers, and Jina clients.
//!
//! Both send `{model, query, documents, top_n, return_documents}` and read `results:
//! [{index, relevance_score, document: {text}}]`; Cohere also reads `id` and `meta`,
//! Jina `model` and `usage`. One answer carries all of them. Documents may be strings
//! or `{"text": …}` objects. Documents are returned by default on `/v1` (as Jina and
//! Cohere's v1 do) and only on request on `/v2` (as Cohere's v2 does).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{parse_json, reply, AppState};
use crate::error::{ApiError, ErrorShape, Shaped};
use crate::runtime::Rerank;

/// `{"message": "..."}`, as Cohere answers.
pub struct Shape;

impl ErrorShape for Shape {
    fn body(e: &ApiError) -> Value {
        serde_json::json!({"message": e.message})
    }
}

type Error = Shaped<Shape>;

#[derive(Deserialize, ToSchema)]
pub struct RerankRequest {
    /// A cross-encoder (Hub id or folder); default: DEFAULT_MODEL. Loaded if needed.
    #[schema(example = "cross-encoder/ms-marco-MiniLM-L6-v2")]
    pub model: Option<String>,
    #[schema(
        example = "What is the capital of the United States?",
        min_length = 1,
        pattern = r"\S"
    )]
    pub query: String,
    /// Strings, or objects with a `text` field.
    #[schema(value_type = Vec<CohereDocument>, example = json!(["Carson City is the capital city of Nevada.", "Washington, D.C. is the capital of the United States."]), min_items = 1)]
    pub documents: Vec<Value>,
    /// Return only the N most relevant (default: all).
    #[schema(minimum = 1)]
    pub top_n: Option<i64>,
    /// Include each document in the results (default: true on /v1, false on /v2).
    pub return_documents: Option<bool>,
    /// Accepted for compatibility; a document is one input to the model.
    pub max_chunks_per_doc: Option<Value>,
    /// Accepted for compatibility; documents are cut to the model's limit.
    pub max_tokens_per_doc: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Document {
    pub text: String,
}

/// A document as a request may send it: a string, or an object with `text`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CohereDocument {
    Text(String),
    Object(DocumentIn),
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct DocumentIn {
    pub text: String,
}

#[derive(Serialize, ToSchema)]
pub struct RerankResult {
    /// The document's position in `documents`.
    pub index: usize,
    pub relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Document>,
}

#[derive(Serialize, ToSchema)]
pub struct BilledUnits {
    pub search_units: u32,
}

#[derive(Serialize, ToSchema)]
pub struct ApiVersion {
    pub version: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Meta {
    pub api_version: ApiVersion,
    pub billed_units: BilledUnits,
}

#[derive(Serialize, ToSchema)]
pub struct TokenUsage {
    pub total_tokens: usize,
    pub prompt_tokens: usize,
}

#[derive(Serialize, ToSchema)]
pub struct RerankResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<RerankResult>,
    pub meta: Meta,
    pub usage: TokenUsage,
}

/// The text of each document: a string or `{"text": …}`.
pub(crate) fn document_texts(documents: Vec<Value>) -> Result<Vec<String>, ApiError> {
    documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::String(s) => Ok(s),
            Value::Object(mut o) => match o.remove("text") {
                Some(Value::String(s)) => Ok(s),
                _ => Err(ApiError::validation(format!(
                    "documents[{i}] must have a string \"text\" field"
                ))),
            },
            other => Err(ApiError::validation(format!(
                "documents[{i}] must be a string or an object with \"text\", not {other}"
            ))),
        })
        .collect()
}

async fn rerank(
    st: AppState,
    body: Result<Bytes, BytesRejection>,
    v2: bool,
) -> Result<axum::response::Response, Error> {
    let _permit = st.runtime.admit()?;
    let req: RerankRequest = parse_json(body)?;
    let top_n = match req.top_n {
        Some(n) if n < 1 => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_top_n",
                format!("top_n must be at least 1, not {n}"),
            )
            .into())
        }
        Some(n) => Some(n as usize),
        None => None,
    };
    let documents = document_texts(req.documents)?;
    let return_documents = req.return_documents.unwrap_or(!v2);
    let done = st
        .runtime
        .rerank(
            req.model.as_deref(),
            Rerank {
                query: req.query,
                documents: documents.clone(),
                raw: false,
                truncate: true,
            },
        )
        .await?;
    let mut order: Vec<usize> = (0..done.output.len()).collect();
    order.sort_by(|a, b| done.output[*b].total_cmp(&done.output[*a]).then(a.cmp(b)));
    order.truncate(top_n.unwrap_or(order.len()));
    let mut documents: Vec<Option<String>> = documents.into_iter().map(Some).collect();
    let results = order
        .into_iter()
        .map(|index| RerankResult {
            index,
            relevance_score: done.output[index],
            document: return_documents
                .then(|| documents[index].take())
                .flatten()
                .map(|text| Document { text }),
        })
        .collect();
    let body = RerankResponse {
        id: format!(
            "embgen-{:x}",
            std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos())
        ),
        model: done.model.name.clone(),
        results,
        meta: Meta {
            api_version: ApiVersion {
                version: if v2 { "2" } else { "1" },
            },
            billed_units: BilledUnits { search_units: 1 },
        },
        usage: TokenUsage {
            total_tokens: done.usage.tokens,
            prompt_tokens: done.usage.tokens,
        },
    };
    Ok(reply(&done.model.name, &done.usage, body))
}

/// Rerank documents by relevance to a query (Cohere v1 and Jina compatible).
#[utoipa::path(post, path = "/v1/rerank", tag = "rerank", request_body = RerankRequest, responses(
    (status = 200, body = RerankResponse),
    super::errors::CohereErrors,
))]
pub async fn rerank_v1(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Error> {
    rerank(st, body, false).await
}

/// Rerank documents by relevance to a query (Cohere v2 compatible).
#[utoipa::path(post, path = "/v2/rerank", tag = "rerank", request_body = RerankRequest, responses(
    (status = 200, body = RerankResponse),
    super::errors::CohereErrors,
))]
pub async fn rerank_v2(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, Error> {
    rerank(st, body, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_as_strings_or_objects() {
        let docs = vec![
            serde_json::json!("a"),
            serde_json::json!({"text": "b", "title": "t"}),
        ];
        assert_eq!(document_texts(docs).unwrap(), vec!["a", "b"]);
        assert!(document_texts(vec![serde_json::json!({"body": "x"})]).is_err());
        assert!(document_texts(vec![serde_json::json!(3)]).is_err());
    }
}
