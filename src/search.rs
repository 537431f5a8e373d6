//! Nearby search: `GET /v1/drivers/nearby`, nearest first, by radius or box, filtered by status
//! and vehicle type. One script (`lua/nearby.lua`) over the city's GEO sets does an
//! expanding-radius search whose cost tracks `limit`, not the radius, and drops drivers whose
//! last position is older than the TTL even between sweeps.

use std::sync::LazyLock;

use actix_web::{HttpResponse, get, web};
use redis::Script;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::cities::CityIndex;
use crate::config::Settings;
use crate::domain::GeoPoint;
use crate::drivers::{DriverStatus, VehicleType, geo_key, seen_key};
use crate::error::{ApiError, FieldError, Problem, redis_error};
use crate::extract::QueryParams;
use crate::scripts::{self, evalsha};
use crate::store::{Keys, Store};

/// `lua/nearby.lua`.
pub static NEARBY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/nearby.lua")));

/// This module's scripts.
pub fn scripts() -> [&'static Script; 1] {
    [&NEARBY]
}

/// Query of `GET /v1/drivers/nearby`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NearbyQuery {
    /// Latitude of the centre.
    #[param(example = 48.8566)]
    pub lat: f64,
    /// Longitude of the centre.
    #[param(example = 2.3522)]
    pub lon: f64,
    /// Maximum distance searched, in metres (default 5000, at most 50000). Not with a box.
    pub radius_m: Option<f64>,
    /// Box width in metres (with `height_m`, instead of `radius_m`).
    pub width_m: Option<f64>,
    /// Box height in metres (with `width_m`).
    pub height_m: Option<f64>,
    /// How many drivers at most (default 20, at most 100).
    pub limit: Option<usize>,
    /// Only drivers with this status (default: every driver that is not offline).
    pub status: Option<DriverStatus>,
    /// Only drivers with this vehicle type (default: all).
    pub vehicle_type: Option<VehicleType>,
}

/// One driver found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NearbyDriver {
    /// Driver id.
    pub driver_id: String,
    /// Latitude (as indexed by Redis GEO, within about a metre of the reported one).
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Distance from the centre in metres (Redis' haversine, earth radius 6372797.560856 m).
    pub distance_m: f64,
    /// Status.
    pub status: DriverStatus,
    /// Vehicle type.
    pub vehicle_type: VehicleType,
}

/// `GET /v1/drivers/nearby` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"city": "paris", "drivers": [
    {"driver_id": "drv-1", "lat": 48.8570, "lon": 2.3530, "distance_m": 72.4, "status": "available", "vehicle_type": "scooter"}
]}))]
pub struct NearbyResponse {
    /// City searched (the one containing the centre).
    pub city: String,
    /// Nearest first.
    pub drivers: Vec<NearbyDriver>,
}

/// Search area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Area {
    /// Within this many metres.
    Radius(f64),
    /// Within a box of this width and height (metres) centred on the point.
    Box(f64, f64),
}

/// A validated search.
#[derive(Debug, Clone)]
pub struct Search {
    /// Centre.
    pub center: GeoPoint,
    /// Area.
    pub area: Area,
    /// k.
    pub limit: usize,
    /// Statuses to include.
    pub statuses: Vec<DriverStatus>,
    /// Vehicle types to include.
    pub vehicles: Vec<VehicleType>,
}

impl NearbyQuery {
    /// Validate against the configured bounds.
    pub fn validate(&self, settings: &Settings) -> Result<Search, ApiError> {
        let mut errors: Vec<FieldError> = GeoPoint::parse(self.lat, self.lon, "")
            .err()
            .unwrap_or_default();
        let limit = self.limit.unwrap_or(settings.search_default_limit);
        if limit == 0 || limit > settings.search_max_limit {
            errors.push(FieldError::new(
                "limit",
                format!("must be between 1 and {}", settings.search_max_limit),
            ));
        }
        let max = settings.search_max_radius_m;
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let area = match (self.radius_m, self.width_m, self.height_m) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                errors.push(FieldError::new(
                    "radius_m",
                    "give either radius_m or width_m and height_m, not both",
                ));
                None
            }
            (r, None, None) => {
                let r = r.unwrap_or(settings.search_default_radius_m);
                if !positive(r) || r > max {
                    errors.push(FieldError::new(
                        "radius_m",
                        format!("must be > 0 and at most {max} m"),
                    ));
                }
                Some(Area::Radius(r))
            }
            (None, Some(w), Some(h)) => {
                for (name, v) in [("width_m", w), ("height_m", h)] {
                    if !positive(v) || v > 2.0 * max {
                        errors.push(FieldError::new(
                            name,
                            format!("must be > 0 and at most {} m", 2.0 * max),
                        ));
                    }
                }
                Some(Area::Box(w, h))
            }
            (None, w, _) => {
                let missing = if w.is_some() { "height_m" } else { "width_m" };
                errors.push(FieldError::new(
                    missing,
                    "a box needs both width_m and height_m",
                ));
                None
            }
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(Search {
            center: GeoPoint {
                lat: self.lat,
                lon: self.lon,
            },
            area: area.expect("validated"),
            limit,
            statuses: match self.status {
                Some(s) => vec![s],
                None => vec![DriverStatus::Available, DriverStatus::Busy],
            },
            vehicles: match self.vehicle_type {
                Some(v) => vec![v],
                None => VehicleType::ALL.to_vec(),
            },
        })
    }
}

/// Round to 7 decimals (about 1 cm), below the GEO index's own precision.
fn round7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

/// Run a search in `city` (the caller resolved it). Nearest first; ties by driver id.
pub async fn search(
    store: &Store,
    settings: &Settings,
    city: &str,
    city_area_m2: f64,
    search: &Search,
) -> Result<Vec<NearbyDriver>, ApiError> {
    let keys: &Keys = store.keys();
    let mut k = vec![seen_key(keys, city)];
    let mut sets = Vec::new();
    for &status in &search.statuses {
        for &vehicle in &search.vehicles {
            k.push(geo_key(keys, city, status, vehicle));
            sets.push((status, vehicle));
        }
    }
    let (mode, a, b) = match search.area {
        Area::Radius(r) => ("radius", r, 0.0),
        Area::Box(w, h) => ("box", w, h),
    };
    let args = [
        search.center.lon.to_string(),
        search.center.lat.to_string(),
        mode.to_owned(),
        a.to_string(),
        b.to_string(),
        search.limit.to_string(),
        settings.driver_ttl_ms.to_string(),
        city_area_m2.to_string(),
    ];
    let cmd = evalsha(&NEARBY, &k, &args);
    let mut conn = store.conn();
    let flat: Vec<String> = scripts::run(&mut conn, &NEARBY, &cmd)
        .await
        .map_err(redis_error("nearby search"))?;
    flat.chunks_exact(5)
        .map(|c| {
            let idx: usize = c[4]
                .parse()
                .map_err(|_| anyhow::anyhow!("bad key index {c:?}"))?;
            let (status, vehicle_type) = *sets
                .get(idx.wrapping_sub(2))
                .ok_or_else(|| anyhow::anyhow!("key index {idx} out of range"))?;
            Ok(NearbyDriver {
                driver_id: c[0].clone(),
                distance_m: c[1]
                    .parse()
                    .map_err(|_| anyhow::anyhow!("bad distance {c:?}"))?,
                lon: round7(c[2].parse().map_err(|_| anyhow::anyhow!("bad lon {c:?}"))?),
                lat: round7(c[3].parse().map_err(|_| anyhow::anyhow!("bad lat {c:?}"))?),
                status,
                vehicle_type,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(ApiError::Internal)
}

/// Drivers near a point, nearest first, with their distance.
///
/// The city is the one containing the point. Without `status`, every driver that is not
/// offline is searched. Only drivers whose last position is younger than `driver_ttl_ms` are
/// returned. Use `radius_m` for a circle or `width_m` and `height_m` for a box.
#[utoipa::path(
    tag = "search",
    params(NearbyQuery),
    responses(
        (status = 200, description = "Drivers, nearest first", body = NearbyResponse),
        (status = 422, description = "Invalid or out-of-bounds parameter, or a point outside every service area (`outside-service-area`)", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[get("/drivers/nearby")]
pub async fn nearby(
    query: QueryParams<NearbyQuery>,
    store: web::Data<Store>,
    settings: web::Data<Settings>,
    cities: web::Data<CityIndex>,
) -> Result<HttpResponse, ApiError> {
    let search_req = query.0.validate(&settings)?;
    let city = cities.resolve_or_reject(search_req.center)?;
    let drivers = search(
        &store,
        &settings,
        city.id.as_str(),
        city.area_m2,
        &search_req,
    )
    .await?;
    Ok(HttpResponse::Ok().json(NearbyResponse {
        city: city.id.to_string(),
        drivers,
    }))
}

/// Register this module's routes under `/v1` (before the drivers module's `/drivers/{id}`).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(nearby);
}
