//! OpenAPI assembly. Paths and schemas are collected from the registered services by
//! `utoipa-actix-web`, so the spec cannot drift from the routes; this module adds the document's
//! header, tags and the shared error schema. `geodispatch openapi` prints [`spec`].

use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

/// Document header and shared components.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "geodispatch",
        description = "Delivery dispatch on Redis: driver GPS ingest into GEO indexes, nearby search, \
                       sorted-set ranking and exactly-once dispatch under atomic locks. Errors are \
                       RFC 9457 `application/problem+json`.",
        license(name = "Apache-2.0"),
    ),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "cities", description = "Service areas"),
        (name = "drivers", description = "Driver positions, shift status and state"),
        (name = "search", description = "Nearest drivers"),
        (name = "ranking", description = "Driver scores, leaderboards and candidate ranking"),
        (name = "orders", description = "Orders, locked dispatch and the driver's answers"),
        (name = "events", description = "Order events as Server-Sent Events"),
        (name = "admin", description = "API keys (admin role)"),
        (name = "sessions", description = "Driver sessions"),
        (name = "webhooks", description = "Webhook endpoints and their deliveries (admin role)"),
    ),
    components(schemas(crate::http::error::Problem, crate::http::error::FieldError)),
)]
pub(crate) struct ApiDoc;

/// The full OpenAPI document, exactly as `/openapi.json` serves it.
pub(crate) fn spec() -> utoipa::openapi::OpenApi {
    let (_, api) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(super::configure_routes)
        .split_for_parts();
    with_protection(api)
}

/// The error answers every route shares, declared once as `components/responses` and
/// referenced by each operation that can give them: what the protection middleware answers on
/// every `/v1` route (401, 403, 429), what the JSON body extractor answers on every route with
/// a JSON body (400, 413, 415), and what any `/v1` route, all of which use Redis, may answer
/// (500, 503).
const SHARED: &[(&str, &str, &str)] = &[
    (
        "400",
        "MalformedJson",
        "The body is not well-formed JSON (`malformed-json`); nothing was written",
    ),
    (
        "401",
        "Unauthorized",
        "No credentials, or unknown, revoked or expired ones (`unauthorized`)",
    ),
    (
        "403",
        "Forbidden",
        "The key's role may not call this route, or a driver key acts for another driver (`forbidden`); nothing was written",
    ),
    (
        "413",
        "PayloadTooLarge",
        "The body exceeds `body_limit_bytes` (`payload-too-large`); nothing was written",
    ),
    (
        "415",
        "UnsupportedMediaType",
        "The body is not sent as `Content-Type: application/json` (`unsupported-media-type`); nothing was written",
    ),
    (
        "429",
        "RateLimited",
        "Rate limit exceeded (`rate-limited`); see `Retry-After`",
    ),
    (
        "500",
        "InternalError",
        "An unexpected error (`internal-error`); it is logged with the request id, and the answer tells nothing more",
    ),
    (
        "503",
        "Unavailable",
        "Redis is unreachable or fails over, or a write could not be confirmed on a replica (`unavailable`); retry after `Retry-After` seconds",
    ),
];

/// Add the bearer security scheme and the shared error answers ([`SHARED`]) to the operations
/// that can give them, so that no route can forget to document them.
pub(crate) fn with_protection(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::content::ContentBuilder;
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::response::ResponseBuilder;
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    use utoipa::openapi::{Ref, RefOr, Type};

    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key (`gdk_…`, roles admin, dispatcher, driver) or a driver session token (`gds_…`)",
                ))
                .build(),
        ),
    );
    let text = |d: &str| {
        HeaderBuilder::new()
            .schema(Some(
                utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
            ))
            .description(Some(d))
            .build()
    };
    for (status, name, description) in SHARED {
        let mut r = ResponseBuilder::new().description(*description).content(
            crate::http::error::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        if matches!(*status, "429" | "503") {
            r = r.header("Retry-After", text("Seconds to wait before retrying"));
        }
        if *status == "429" {
            r = r
                .header(
                    "RateLimit-Policy",
                    text("IETF draft: `\"class\";q=quota;w=window seconds`"),
                )
                .header(
                    "RateLimit",
                    text("IETF draft: `\"class\";r=remaining;t=seconds to reset`"),
                );
        }
        components
            .responses
            .insert((*name).to_owned(), RefOr::T(r.build()));
    }
    let shared = |code: &str| {
        let (_, name, _) = SHARED
            .iter()
            .find(|(status, _, _)| *status == code)
            .expect("a shared response");
        RefOr::Ref(Ref::new(format!("#/components/responses/{name}")))
    };
    for (path, item) in api.paths.paths.iter_mut() {
        let protected = path.starts_with("/v1/");
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let json_body = op.request_body.as_ref().is_some_and(|b| match b {
                RefOr::T(body) => body.content.contains_key("application/json"),
                RefOr::Ref(_) => false,
            });
            let mut codes = Vec::new();
            if protected {
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                codes.extend(["401", "403", "429"]);
            }
            if json_body {
                codes.extend(["400", "413", "415"]);
            }
            for code in codes {
                op.responses.responses.insert(code.to_owned(), shared(code));
            }
            // A route may say more about its own 503 (event streams do).
            if protected {
                for code in ["500", "503"] {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| shared(code));
                }
            }
        }
    }
    api
}

/// The spec as pretty JSON with a trailing newline (the committed `openapi/openapi.json`).
pub fn spec_json() -> String {
    let mut text = spec().to_pretty_json().expect("the spec serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::domain::driver_id::ID_PATTERN;

    /// Every `pattern` given to a driver or order id, as a parameter or a body property.
    fn id_patterns(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                let is_id = |name: &str| name == "driver_id" || name == "order_id";
                if map.get("name").and_then(Value::as_str).is_some_and(is_id)
                    && let Some(p) = map
                        .get("schema")
                        .and_then(|s| s.get("pattern"))
                        .and_then(Value::as_str)
                {
                    out.push(p.to_owned());
                }
                if let Some(Value::Object(props)) = map.get("properties") {
                    for (name, prop) in props {
                        if is_id(name)
                            && let Some(p) = prop.get("pattern").and_then(Value::as_str)
                        {
                            out.push(p.to_owned());
                        }
                    }
                }
                for v in map.values() {
                    id_patterns(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| id_patterns(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_id_in_the_spec_has_the_enforced_pattern() {
        let spec: Value = serde_json::from_str(&super::spec_json()).expect("spec is JSON");
        let mut patterns = Vec::new();
        id_patterns(&spec, &mut patterns);
        assert!(patterns.len() >= 10, "{patterns:?}");
        assert!(patterns.iter().all(|p| p == ID_PATTERN), "{patterns:?}");
    }
}
