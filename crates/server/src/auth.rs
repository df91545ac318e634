//! API keys: with API_KEY (or API_KEY_FILE) set, every route but `/health` needs
//! `Authorization: Bearer KEY`; `/health` then answers only its status to callers
//! without one (the model names and memory figures are for the operator).
//!
//! Keys are compared in constant time, so response timing says nothing about how much
//! of a guess was right, and they never reach a log line. A refusal is spelled in the
//! error shape of the dialect the route belongs to, so each client shows its user a
//! proper "invalid API key" error.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;

/// Whether the request carried a valid key (always true without API_KEY): set for
/// `/health`, which answers in full only to authenticated callers.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated(pub bool);

#[derive(Clone, Default)]
pub struct Keys(Arc<Vec<Vec<u8>>>);

impl Keys {
    pub fn new(keys: Vec<String>) -> Self {
        Keys(Arc::new(keys.into_iter().map(String::into_bytes).collect()))
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Checks every key, whatever matched first, each in constant time.
    fn accepts(&self, given: &[u8]) -> bool {
        self.0
            .iter()
            .fold(false, |ok, key| ok | constant_time_eq(key, given))
    }
}

/// Equal without an early exit; only the longer length shows in the timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

pub async fn require_key(State(keys): State<Keys>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_string);
    let valid = !keys.enabled() || given.as_ref().is_some_and(|k| keys.accepts(k.as_bytes()));
    if path == "/health" {
        req.extensions_mut().insert(Authenticated(valid));
        return next.run(req).await;
    }
    if valid {
        return next.run(req).await;
    }
    let path = path.as_str();
    let err = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
        if given.is_some() {
            "the API key is not valid"
        } else {
            "an API key is required: send Authorization: Bearer KEY"
        },
    );
    let mut resp = crate::error::respond_for(path, err);
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly() {
        let keys = Keys::new(vec!["secret-one".into(), "two".into()]);
        assert!(keys.accepts(b"secret-one"));
        assert!(keys.accepts(b"two"));
        for bad in [&b"secret-on"[..], b"secret-one!", b"", b"tw", b"SECRET-ONE"] {
            assert!(!keys.accepts(bad), "{bad:?}");
        }
        assert!(!Keys::default().enabled());
    }
}
