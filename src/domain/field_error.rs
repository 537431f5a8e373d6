//! A validation error of one input field: the domain's own error type, which the HTTP layer
//! renders inside a problem+json body.

use serde::Serialize;
use utoipa::ToSchema;

/// One invalid input field: where it is (`positions[3].lat`, `driver_id`, `body`) and why.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the field in the request (JSON path, path parameter or query parameter name).
    #[schema(example = "lat")]
    pub(crate) field: String,
    /// What is wrong with it.
    #[schema(example = "must be between -85.05112878 and 85.05112878 (Redis GEO limit)")]
    pub(crate) message: String,
}

impl FieldError {
    /// A field error for `field` with `message`.
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `field: message; …`: a list of field errors on one line (the `Display` of the error
    /// enums that carry them, for logs).
    pub(crate) fn list(errors: &[FieldError]) -> String {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
