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
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
)]
pub struct ApiDoc;

/// The full OpenAPI document, exactly as `/openapi.json` serves it.
pub fn spec() -> utoipa::openapi::OpenApi {
    let (_, api) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(crate::startup::configure_routes)
        .split_for_parts();
    api
}

/// The spec as pretty JSON with a trailing newline (the committed `openapi/openapi.json`).
pub fn spec_json() -> String {
    let mut text = spec().to_pretty_json().expect("the spec serializes");
    text.push('\n');
    text
}
