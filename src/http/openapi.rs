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
    ),
    components(schemas(crate::http::error::Problem, crate::http::error::FieldError)),
)]
pub struct ApiDoc;

/// The full OpenAPI document, exactly as `/openapi.json` serves it.
pub fn spec() -> utoipa::openapi::OpenApi {
    let (_, api) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(super::configure_routes)
        .split_for_parts();
    with_protection(api)
}

/// Add what the protection middleware ([`crate::auth::middleware`]) does to every `/v1`
/// route: the bearer security scheme, and the 401, 403 and 429 answers (with the rate-limit
/// headers), so that no route can forget to document them.
pub fn with_protection(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
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
    let problem = |description: &str, rate_headers: bool| {
        let mut r = ResponseBuilder::new().description(description).content(
            crate::http::error::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        );
        if rate_headers {
            let text = |d: &str| {
                HeaderBuilder::new()
                    .schema(Some(
                        utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
                    ))
                    .description(Some(d))
                    .build()
            };
            r = r
                .header("Retry-After", text("Seconds to wait before retrying"))
                .header(
                    "RateLimit-Policy",
                    text("IETF draft: `\"class\";q=quota;w=window seconds`"),
                )
                .header(
                    "RateLimit",
                    text("IETF draft: `\"class\";r=remaining;t=seconds to reset`"),
                );
        }
        RefOr::T(r.build())
    };
    for (path, item) in api.paths.paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
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
            op.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            let r = &mut op.responses.responses;
            r.entry("401".to_owned()).or_insert_with(|| {
                problem(
                    "No credentials, or unknown, revoked or expired ones (`unauthorized`)",
                    false,
                )
            });
            r.entry("403".to_owned()).or_insert_with(|| {
                problem(
                    "The key's role may not call this route, or a driver key acts for another driver (`forbidden`); nothing was written",
                    false,
                )
            });
            r.entry("429".to_owned()).or_insert_with(|| {
                problem(
                    "Rate limit exceeded (`rate-limited`); see `Retry-After`",
                    true,
                )
            });
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
