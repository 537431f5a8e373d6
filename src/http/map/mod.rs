//! The live dispatch map: `GET /map` serves one self-contained page (no CDN, no map tiles: the
//! city outlines from `GET /map/cities.geojson` are drawn as SVG), which shows the drivers of a
//! city coloured by status (`GET /v1/cities/{city}/drivers`, refreshed every few seconds),
//! orders and offers live from the event stream (`GET /v1/events`, read with `fetch` so the
//! key travels in the `Authorization` header, never in a URL), a city selector, and a driver's
//! state and rank on click. The page asks for an API key (dispatcher or admin) and keeps it in
//! the browser's local storage; `?key=` pre-fills it.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::cities::CityIndex;
use crate::drivers::{DriverStatus, VehicleType};
use crate::http::error::{ApiError, Problem};
use crate::http::extract::QueryParams;
use crate::store::Store;

const PAGE: &str = include_str!("map.html");

/// The map page.
#[get("/map")]
pub(crate) async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("content-security-policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"))
        .body(PAGE)
}

/// The service areas as GeoJSON (what the map draws; not secret, so not behind a key).
#[get("/map/cities.geojson")]
pub(crate) async fn cities_geojson(cities: web::Data<CityIndex>) -> HttpResponse {
    use geo::CoordsIter;
    let features: Vec<serde_json::Value> = cities
        .all()
        .iter()
        .map(|c| {
            let polygons: Vec<serde_json::Value> = c
                .area
                .0
                .iter()
                .map(|p| {
                    let ring: Vec<[f64; 2]> = p.exterior().coords_iter().map(|co| [co.x, co.y]).collect();
                    serde_json::json!([ring])
                })
                .collect();
            serde_json::json!({"type": "Feature", "properties": {"id": c.id.as_str(), "name": c.name},
                "geometry": {"type": "MultiPolygon", "coordinates": polygons}})
        })
        .collect();
    HttpResponse::Ok()
        .content_type("application/geo+json")
        .json(serde_json::json!({"type": "FeatureCollection", "features": features}))
}

/// Query of the driver snapshot.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SnapshotQuery {
    /// At most this many drivers per status (default and maximum 5000).
    #[param(minimum = 1, maximum = 5000)]
    pub(crate) limit: Option<usize>,
}

/// One driver on the map.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct MapDriver {
    /// Driver id.
    pub(crate) driver_id: String,
    /// Latitude.
    pub(crate) lat: f64,
    /// Longitude.
    pub(crate) lon: f64,
    /// Status.
    pub(crate) status: DriverStatus,
    /// Vehicle type.
    pub(crate) vehicle_type: VehicleType,
}

/// `GET /v1/cities/{city}/drivers` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"city": "paris", "drivers": [{"driver_id": "drv-1", "lat": 48.857, "lon": 2.353, "status": "available", "vehicle_type": "car"}], "truncated": false}))]
pub(crate) struct Snapshot {
    /// City.
    pub(crate) city: String,
    /// Indexed drivers (the liveness sweeper removes stale ones every `sweep_interval_ms`).
    pub(crate) drivers: Vec<MapDriver>,
    /// Whether a status had more drivers than `limit`.
    pub(crate) truncated: bool,
}

/// Default and largest `limit` of a snapshot.
const MAX_SNAPSHOT: usize = 5_000;

/// Every indexed driver of a city with its position and status (for the map).
#[utoipa::path(
    tag = "cities",
    params(("city" = String, Path, description = "City id: 1–32 characters of [a-z0-9_-]", pattern = r"^[a-z0-9_-]{1,32}$", min_length = 1, max_length = 32, example = "paris"), SnapshotQuery),
    responses(
        (status = 200, description = "The city's drivers", body = Snapshot),
        (status = 404, description = "No such city", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`limit` is not a whole number between 1 and 5000", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/cities/{city}/drivers")]
pub(crate) async fn snapshot(
    path: web::Path<String>,
    query: QueryParams<SnapshotQuery>,
    store: web::Data<Store>,
    cities: web::Data<CityIndex>,
) -> Result<HttpResponse, ApiError> {
    let city = cities
        .get(&path)
        .ok_or_else(|| ApiError::NotFound(format!("city {} does not exist", path.as_str())))?;
    let limit = query.0.limit.unwrap_or(MAX_SNAPSHOT);
    if limit == 0 || limit > MAX_SNAPSHOT {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_SNAPSHOT}"),
        ));
    }
    let indexed = crate::drivers::indexed_drivers(&store, city, limit).await?;
    let drivers = indexed
        .drivers
        .into_iter()
        .map(|d| MapDriver {
            driver_id: d.driver_id,
            lat: d.lat,
            lon: d.lon,
            status: d.status,
            vehicle_type: d.vehicle_type,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Snapshot {
        city: city.id.to_string(),
        drivers,
        truncated: indexed.truncated,
    }))
}

/// Register the page and its GeoJSON at the root (not part of the API document).
pub(crate) fn configure_pages(cfg: &mut web::ServiceConfig) {
    cfg.service(page).service(cities_geojson);
}

/// Register the snapshot route under `/v1`.
pub(crate) fn configure(cfg: &mut ServiceConfig) {
    cfg.service(snapshot);
}
