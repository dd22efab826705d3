//! Reading requests: JSON bodies, path and query parameters, each refused with a
//! JSON error that names the field at fault.
//!
//! axum's own extractors answer in plain text; these wrap them so that every
//! refusal has the API's one error shape. This module must never accept a body
//! with trailing data or unknown fields (the request types say
//! `deny_unknown_fields`), and never panic on any byte sequence.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::Failure;

/// A JSON body of type `T`: 400 when it is not JSON at all, 422 naming the field
/// when a value is missing, of the wrong type or unknown, 413 when it is too large.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("request body larger than {} bytes", crate::BODY_BYTES_MAX)
            } else {
                format!("reading the request body failed: {}", e.body_text())
            };
            Failure::new(status, message)
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parse `bytes` as one JSON object of type `T` (see [`JsonBody`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    // Syntax first (400), so that the shape and the fields can be told apart (422).
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Failure::bad_request(format!("the request body is not one valid JSON value: {e}")))?;
    if !value.is_object() {
        // serde would read a struct from an array by position; the API takes objects only.
        return Err(Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "the request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // A missing field is reported at its parent; name the field itself.
        let field = match (missing_field(&message), path.as_str()) {
            (Some(name), ".") => Some(name.to_string()),
            (Some(name), parent) => Some(format!("{parent}.{name}")),
            (None, ".") => None,
            (None, path) => Some(path.to_string()),
        };
        let failure = Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            match &field {
                Some(f) => format!("{f}: {message}"),
                None => message,
            },
        );
        match field {
            Some(f) => failure.at(&f),
            None => failure,
        }
    })
}

/// The field name in serde's "missing field `name`" message.
fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// One path parameter as text; `name` is how the OpenAPI document calls it.
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathText(value)),
            Err(e) => Err(Failure::bad_request(format!("path parameter: {}", e.body_text())).at("path")),
        }
    }
}

/// Query parameters of type `T`: 400 naming the parameter when one cannot be read.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(QueryParams(value)),
            Err(e) => Err(Failure::bad_request(format!("query string: {}", e.body_text())).at("query")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        domain: String,
        #[serde(default)]
        quota_bytes: u64,
    }

    #[test]
    fn refusals_name_the_field() {
        let missing = parse_json::<Body>(b"{}").unwrap_err();
        assert_eq!((missing.status, missing.field.as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("domain")));
        let wrong = parse_json::<Body>(br#"{"domain":"a.test","quota_bytes":-1}"#).unwrap_err();
        assert_eq!((wrong.status, wrong.field.as_deref()), (StatusCode::UNPROCESSABLE_ENTITY, Some("quota_bytes")));
        let unknown = parse_json::<Body>(br#"{"domain":"a.test","x":1}"#).unwrap_err();
        assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
        let garbage = parse_json::<Body>(b"{\"domain\":").unwrap_err();
        assert_eq!((garbage.status, garbage.field), (StatusCode::BAD_REQUEST, None));
        let trailing = parse_json::<Body>(br#"{"domain":"a.test"} {}"#).unwrap_err();
        assert_eq!(trailing.status, StatusCode::BAD_REQUEST);
        let array = parse_json::<Body>(br#"["a.test", 1]"#).unwrap_err();
        assert_eq!((array.status, array.field), (StatusCode::UNPROCESSABLE_ENTITY, None));
        assert!(parse_json::<Body>(br#"{"domain":"a.test"}"#).is_ok());
    }
}
