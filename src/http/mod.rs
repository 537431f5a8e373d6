//! The HTTP layer: problem+json errors ([`error`]), extractors ([`extract`]), the request-id
//! and access-log middleware ([`telemetry`]), the health probes ([`health`]), the live map
//! ([`map`]) and the OpenAPI document ([`openapi`]); [`configure_routes`] registers every
//! route of every capability.

pub(crate) mod admin;
pub(crate) mod auth;
mod cities;
pub(crate) mod drivers;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod extract;
pub(crate) mod health;
pub(crate) mod map;
pub(crate) mod metrics;
pub mod openapi;
pub(crate) mod orders;
mod ranking;
mod search;
pub(crate) mod sessions;
pub mod telemetry;
pub(crate) mod webhooks;

use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;

/// Register every documented route: health at the root, the API under `/v1`.
pub(crate) fn configure_routes(cfg: &mut ServiceConfig) {
    cfg.service(crate::http::health::healthz)
        .service(crate::http::health::readyz)
        .service(crate::http::metrics::metrics)
        .service(
            // actix tries routes in this order, each dynamic one with a regex, so the routes
            // drivers' phones hit most come first (search before drivers: `/drivers/nearby`
            // must not be taken for `/drivers/{driver_id}`).
            scope("/v1")
                .configure(crate::http::search::configure)
                .configure(crate::http::drivers::configure)
                .configure(crate::http::ranking::configure)
                .configure(crate::http::orders::configure)
                .configure(crate::http::cities::configure)
                .configure(crate::http::events::configure)
                .configure(crate::http::admin::configure)
                .configure(crate::http::webhooks::configure)
                .configure(crate::http::sessions::configure)
                .configure(crate::http::map::configure),
        );
}
