//! The HTTP layer: problem+json errors ([`error`]), extractors ([`extract`]), the request-id
//! and access-log middleware ([`telemetry`]), the health probes ([`health`]), the live map
//! ([`map`]) and the OpenAPI document ([`openapi`]).

pub mod error;
pub mod extract;
pub mod health;
pub mod map;
pub mod openapi;
pub mod telemetry;
