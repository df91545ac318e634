//! Refusals that belong to the transport, before any handler runs: request bodies
//! that are not JSON (415), cross-site requests from origins CORS does not allow
//! (403), and JSON answers for unknown routes (404) and methods (405).
//!
//! Every POST route reads JSON; requiring `Content-Type: application/json` on a body
//! keeps web pages from acting through "simple" cross-site requests (a `text/plain`
//! POST needs no CORS preflight, so a page anywhere could otherwise load or unload
//! models). A bodiless POST (`curl -X POST '…/model/load?model_name=…'`) needs no
//! content type, but a browser sends `Origin` with every cross-site POST, so one from
//! an origin outside CORS_ALLOW_ORIGINS is refused too (same-origin requests, such as
//! the docs page's "try it out", pass).

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{respond_for, ApiError};

/// The origins CORS allows (`*` for any), for the cross-site check.
#[derive(Clone)]
pub struct Origins(pub std::sync::Arc<Vec<String>>);

fn has_body(req: &Request) -> bool {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => req.headers().contains_key(header::TRANSFER_ENCODING),
    }
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `origin` is the server's own (`Host`): same-origin requests are not
/// cross-site.
fn same_origin(origin: &str, req: &Request) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let authority = origin.split("://").nth(1);
    matches!((host, authority), (Some(h), Some(a)) if h.eq_ignore_ascii_case(a))
}

pub async fn check(State(origins): State<Origins>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        if let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        {
            let allowed = origins.0.iter().any(|o| o == "*" || o == origin);
            if !allowed && !same_origin(origin, &req) {
                let e = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    format!("requests from {origin} are not allowed (CORS_ALLOW_ORIGINS)"),
                );
                return respond_for(req.uri().path(), e);
            }
        }
        if has_body(&req) && !is_json(&req) {
            let e = ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request bodies must be JSON: send Content-Type: application/json",
            );
            return respond_for(req.uri().path(), e);
        }
    }
    next.run(req).await
}

/// 404 for paths no route has, as JSON like every other error.
pub async fn not_found(req: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} (see /docs)", req.uri().path()),
    )
    .into_response()
}

/// 405 for a method a route does not take, as JSON.
pub async fn method_not_allowed(req: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {} (see /docs)",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}
