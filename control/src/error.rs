//! The API's error: an HTTP status and `{"error": {"field", "reason"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use braid_config::ConfigError;
use serde::Serialize;

/// A refused request. `field` is the path in the document (or in the
/// request body) when one is to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub field: Option<String>,
    pub reason: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    field: Option<&'a str>,
    reason: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, field: Option<String>, reason: impl Into<String>) -> ApiError {
        ApiError { status, field, reason: reason.into() }
    }

    pub fn field(status: StatusCode, field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::new(status, Some(field.into()), reason)
    }

    pub fn bare(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError::new(status, None, reason)
    }

    pub fn not_found(what: &str, key: &str) -> ApiError {
        ApiError::bare(StatusCode::NOT_FOUND, format!("no {what} {key:?}"))
    }

    pub fn internal(reason: impl Into<String>) -> ApiError {
        ApiError::bare(StatusCode::INTERNAL_SERVER_ERROR, reason)
    }

    /// A document that breaks a rule: 422, naming the field.
    pub fn from_config(e: ConfigError) -> ApiError {
        match e {
            ConfigError::Invalid { field, reason } => ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, field, reason),
            ConfigError::Parse(e) => ApiError::bare(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            ConfigError::Io { .. } => ApiError::internal(e.to_string()),
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> String {
        serde_json::to_string(&Body { error: Detail { field: self.field.as_deref(), reason: &self.reason } })
            .expect("an error always serializes")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, [(axum::http::header::CONTENT_TYPE, "application/json")], self.body()).into_response()
    }
}

/// Parses a request body as `T`: a syntax error is 400, a wrong type, a
/// missing or an unknown field is 422; both name the field where known.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let status = if inner.is_syntax() || inner.is_eof() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let field = (path != "." && path != "?" && !path.is_empty()).then_some(path);
        ApiError::new(status, field, inner.to_string())
    })?;
    de.end().map_err(|e| ApiError::bare(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(value)
}
