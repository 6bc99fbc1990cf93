//! Who may read: anyone on a loopback address without a token; with a
//! token, only requests that carry it (`Authorization: Bearer <token>`, the
//! `routine_ui_token` cookie, or `?token=` once, which sets the cookie).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

const COOKIE: &str = "routine_ui_token";

pub(crate) async fn check(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token.as_deref() else {
        return next.run(request).await;
    };
    let from_query = query_token(request.uri().query());
    let carried = bearer(&request)
        .or_else(|| cookie(&request))
        .or(from_query.clone());
    if !carried.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a token is needed: `Authorization: Bearer <token>`, or ?token=<token> once\n",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    if from_query.is_some() {
        let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

fn bearer(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value.strip_prefix("Bearer ").map(str::to_owned)
}

fn cookie(request: &Request) -> Option<String> {
    let value = request.headers().get(header::COOKIE)?.to_str().ok()?;
    value
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "token")
        .map(|(_, value)| value.to_owned())
}

/// Compares in time that does not depend on where the two differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"s3cret", b"s3cres"));
        assert_eq!(query_token(Some("page=2&token=abc")), Some("abc".into()));
        assert_eq!(query_token(Some("page=2")), None);
    }
}
