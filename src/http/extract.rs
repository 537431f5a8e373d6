//! Request extractors whose failures are problem+json [`ApiError`]s.
//!
//! [`JsonBody`] replaces `web::Json`: it enforces the body limit (413, checked against
//! `Content-Length` before reading and again while streaming), requires a JSON content type
//! (415), tells malformed JSON (400) from well-formed JSON of the wrong shape (422), and names the
//! offending field by its path (`positions[3].lat`) using `serde_path_to_error`. Request types
//! use `#[serde(deny_unknown_fields)]`, so an unknown field is a 422 naming it.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::domain::FieldError;
use crate::http::error::ApiError;

/// Maximum body size in bytes, stored as app data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

/// A JSON request body deserialized into `T`.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(1024 * 1024);
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            let essence = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "the body must be sent with Content-Type: application/json (got {:?})",
                    if essence.is_empty() {
                        "nothing"
                    } else {
                        &essence
                    }
                )));
            }
            let too_large = || {
                ApiError::PayloadTooLarge(format!(
                    "the request body exceeds the limit of {limit} bytes"
                ))
            };
            if declared_len.is_some_and(|n| n > limit) {
                return Err(too_large());
            }
            let mut body = Vec::with_capacity(declared_len.unwrap_or(1024).min(limit));
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::MalformedJson(format!("could not read the body: {e}"))
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(JsonBody)
        })
    }
}

/// Deserialize `body`, classifying failures as 400 (syntax) or 422 (shape, naming the field).
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde accepts a JSON array for a struct (fields by position); every request body of this
    // API is an object, so an array is refused rather than silently read positionally.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::field(
            "body",
            "must be a JSON object, not an array",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let (path, inner) = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => match de.end() {
            Ok(()) => return Ok(value),
            Err(trailing) => (".".to_owned(), trailing),
        },
        Err(err) => (err.path().to_string(), err.into_inner()),
    };
    match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => Err(
            ApiError::MalformedJson(format!("the body is not valid JSON: {inner}")),
        ),
        serde_json::error::Category::Io => Err(ApiError::MalformedJson(inner.to_string())),
        serde_json::error::Category::Data => {
            let message = strip_position(&inner.to_string());
            let field = field_of(&path, &message);
            Err(ApiError::Validation(vec![FieldError::new(field, message)]))
        }
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The field a serde data error is about: its path, extended by the field name for unknown and
/// missing fields (serde reports those at the enclosing object).
fn field_of(path: &str, message: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let base = if path == "." { "" } else { path };
    match named {
        Some(name) if base == name || base.ends_with(&format!(".{name}")) => base.to_owned(),
        Some(name) if base.is_empty() => name.to_owned(),
        Some(name) => format!("{base}.{name}"),
        None if base.is_empty() => "body".to_owned(),
        None => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        lat: f64,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Batch {
        items: Vec<Item>,
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        for body in ["{", "{\"items\": [}", "nope", "", "{\"items\": []} {}"] {
            let err = parse_json::<Batch>(body.as_bytes()).unwrap_err();
            assert!(
                matches!(err, ApiError::MalformedJson(_)),
                "{body:?} -> {err:?}"
            );
        }
    }

    #[test]
    fn shape_errors_name_the_field_by_path() {
        let cases = [
            (r#"{"items": [{"lat": 1}, {"lat": "x"}]}"#, "items[1].lat"),
            (r#"{"items": [{"lat": 1, "extra": 2}]}"#, "items[0].extra"),
            (r#"{"items": [{}]}"#, "items[0].lat"),
            (r#"{"itemz": []}"#, "itemz"),
            (r#"[]"#, "body"),
        ];
        for (body, field) in cases {
            let err = parse_json::<Batch>(body.as_bytes()).unwrap_err();
            assert_eq!(fields(err), [field], "{body}");
        }
    }
}

/// Query parameters deserialized into `T`; failures are 422 naming the parameter.
#[derive(Debug)]
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest for QueryParams<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(parse_query(req.query_string()).map(QueryParams))
    }
}

/// Deserialize a query string, naming the offending parameter on failure.
pub(crate) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let message = plain_words(err.into_inner().to_string());
        let field = field_of(&path, &message);
        ApiError::Validation(vec![FieldError::new(field, message)])
    })
}

/// A query parameter's parse error in the client's words: the standard library's number
/// parsers say "invalid digit found in string", which names neither the parameter's type nor
/// what to send.
fn plain_words(message: String) -> String {
    let lower = message.to_ascii_lowercase();
    if lower.contains("invalid digit") || lower.contains("cannot parse integer") {
        "must be a whole number (digits only)".to_owned()
    } else if lower.contains("too large to fit") || lower.contains("too small to fit") {
        "is out of range".to_owned()
    } else if lower.contains("invalid float literal") {
        "must be a number".to_owned()
    } else {
        message
    }
}

/// Deserialize one already-parsed JSON value (a batch item), naming the field on failure.
pub(crate) fn parse_json_value<T: DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = strip_position(&err.into_inner().to_string());
        vec![FieldError::new(field_of(&path, &message), message)]
    })
}
