//! The body of every 4xx and 5xx answer of the admin API: `{"error": …, "field": …}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
    /// The request field (body property, path or query parameter) at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_without_a_field_has_no_field_key() {
        let body = ErrorBody { error: "no such endpoint".into(), field: None };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"error":"no such endpoint"}"#);
        let at = ErrorBody { error: "bad".into(), field: Some("to".into()) };
        assert_eq!(serde_json::to_string(&at).unwrap(), r#"{"error":"bad","field":"to"}"#);
    }
}
