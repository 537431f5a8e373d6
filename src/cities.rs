//! Service areas: city polygons loaded from GeoJSON and point → city resolution (served by
//! `GET /v1/cities` and `POST /v1/cities/resolve`).
//!
//! Resolution first filters by bounding box, then asks a prepared monotone subdivision of the
//! polygon (`geo::MonotonicPolygons`, O(log n) per query in the number of vertices), so the cost
//! per request does not grow with detailed outlines.

use std::path::Path;

use anyhow::{Context, bail};
use geo::{BoundingRect, Coord, Intersects, LineString, MonotonicPolygons, MultiPolygon, Polygon};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{CityId, GeoPoint};

/// The built-in service areas (`seed-data/cities.geojson`), used when no file is configured.
pub(crate) const BUILTIN_CITIES: &str = include_str!("../seed-data/cities.geojson");

/// A bounding box in degrees.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct BoundingBox {
    /// Southern edge.
    pub min_lat: f64,
    /// Western edge.
    pub min_lon: f64,
    /// Northern edge.
    pub max_lat: f64,
    /// Eastern edge.
    pub max_lon: f64,
}

impl BoundingBox {
    fn contains(&self, p: GeoPoint) -> bool {
        p.lat >= self.min_lat
            && p.lat <= self.max_lat
            && p.lon >= self.min_lon
            && p.lon <= self.max_lon
    }
}

/// One service area.
#[derive(Debug)]
pub struct City {
    /// Its id (also the Redis hash tag of its keys).
    pub id: CityId,
    /// Display name.
    pub(crate) name: String,
    /// Bounding box of the outline.
    pub bbox: BoundingBox,
    /// The outline.
    pub(crate) area: MultiPolygon<f64>,
    prepared: MonotonicPolygons<f64>,
}

impl City {
    /// Whether `p` lies inside (or on the edge of) the outline.
    pub fn contains(&self, p: GeoPoint) -> bool {
        self.bbox.contains(p) && self.prepared.intersects(&Coord { x: p.lon, y: p.lat })
    }
}

/// Why a point or a city name could not be resolved to a service area.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum CityError {
    /// The point lies in no configured service area: nothing can be searched or dispatched
    /// there.
    #[error("the point ({lat}, {lon}) lies outside every service area")]
    OutsideServiceArea {
        /// Latitude of the rejected point.
        lat: f64,
        /// Longitude of the rejected point.
        lon: f64,
    },
}

/// All service areas, for point → city resolution.
#[derive(Debug)]
pub struct CityIndex {
    cities: Vec<City>,
}

impl CityIndex {
    /// Parse a GeoJSON FeatureCollection of Polygon / MultiPolygon features, each with a
    /// `properties.id` (a valid [`CityId`]) and optional `properties.name`.
    pub(crate) fn from_geojson(text: &str) -> anyhow::Result<Self> {
        let doc: serde_json::Value =
            serde_json::from_str(text).context("cities file is not JSON")?;
        let features = doc
            .get("features")
            .and_then(|f| f.as_array())
            .context("cities file must be a GeoJSON FeatureCollection")?;
        let mut cities: Vec<City> = Vec::new();
        for (i, feature) in features.iter().enumerate() {
            let props = feature.get("properties");
            let id = props
                .and_then(|p| p.get("id"))
                .and_then(|v| v.as_str())
                .with_context(|| format!("feature {i} has no properties.id"))?;
            let id = CityId::parse(id)
                .map_err(|e| anyhow::anyhow!("feature {i}: city id {id:?} {e}"))?;
            if cities.iter().any(|c| c.id == id) {
                bail!("city id {id} appears twice");
            }
            let name = props
                .and_then(|p| p.get("name"))
                .and_then(|v| v.as_str())
                .unwrap_or(id.as_str())
                .to_owned();
            let geometry = feature
                .get("geometry")
                .with_context(|| format!("city {id} has no geometry"))?;
            let area = parse_geometry(geometry).with_context(|| format!("city {id}"))?;
            let rect = area
                .bounding_rect()
                .with_context(|| format!("city {id} is empty"))?;
            let bbox = BoundingBox {
                min_lat: rect.min().y,
                min_lon: rect.min().x,
                max_lat: rect.max().y,
                max_lon: rect.max().x,
            };
            if bbox.max_lat > crate::domain::REDIS_MAX_LAT
                || bbox.min_lat < -crate::domain::REDIS_MAX_LAT
            {
                bail!("city {id} reaches beyond the latitudes Redis GEO can store");
            }
            cities.push(City {
                id,
                name,
                bbox,
                prepared: MonotonicPolygons::from(area.clone()),
                area,
            });
        }
        if cities.is_empty() {
            bail!("cities file defines no city");
        }
        Ok(CityIndex { cities })
    }

    /// Load from `path`, or the built-in cities when `None`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading cities file {}", path.display()))?;
                Self::from_geojson(&text).with_context(|| format!("in {}", path.display()))
            }
            None => Self::from_geojson(BUILTIN_CITIES).context("built-in cities"),
        }
    }

    /// The city containing `p`, if any.
    pub fn resolve(&self, p: GeoPoint) -> Option<&City> {
        self.cities.iter().find(|c| c.contains(p))
    }

    /// The city containing `p`, or [`CityError::OutsideServiceArea`].
    pub(crate) fn resolve_or_reject(&self, p: GeoPoint) -> Result<&City, CityError> {
        self.resolve(p).ok_or(CityError::OutsideServiceArea {
            lat: p.lat,
            lon: p.lon,
        })
    }

    /// The city with this id.
    pub fn get(&self, id: &str) -> Option<&City> {
        self.cities.iter().find(|c| c.id.as_str() == id)
    }

    /// Every city, in file order.
    pub fn all(&self) -> &[City] {
        &self.cities
    }
}

fn ring(value: &serde_json::Value) -> anyhow::Result<LineString<f64>> {
    let points: Vec<[f64; 2]> =
        serde_json::from_value(value.clone()).context("ring must be [[lon, lat], ...]")?;
    if points.len() < 4 {
        bail!("a ring needs at least 4 positions");
    }
    Ok(LineString::from(
        points
            .into_iter()
            .map(|[x, y]| Coord { x, y })
            .collect::<Vec<_>>(),
    ))
}

fn polygon(value: &serde_json::Value) -> anyhow::Result<Polygon<f64>> {
    let rings = value
        .as_array()
        .context("polygon coordinates must be an array of rings")?;
    let (outer, holes) = rings.split_first().context("polygon without rings")?;
    Ok(Polygon::new(
        ring(outer)?,
        holes.iter().map(ring).collect::<Result<_, _>>()?,
    ))
}

fn parse_geometry(geometry: &serde_json::Value) -> anyhow::Result<MultiPolygon<f64>> {
    let coords = geometry
        .get("coordinates")
        .context("geometry without coordinates")?;
    match geometry.get("type").and_then(|t| t.as_str()) {
        Some("Polygon") => Ok(MultiPolygon::new(vec![polygon(coords)?])),
        Some("MultiPolygon") => Ok(MultiPolygon::new(
            coords
                .as_array()
                .context("multipolygon coordinates must be an array")?
                .iter()
                .map(polygon)
                .collect::<Result<_, _>>()?,
        )),
        other => bail!("geometry type {other:?} is not Polygon or MultiPolygon"),
    }
}

/// A city as listed by the API.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "paris", "name": "Paris (Île-de-France core)", "bbox": {"min_lat": 48.51, "min_lon": 1.85, "max_lat": 49.19, "max_lon": 2.82}}))]
pub(crate) struct CityView {
    /// City id, used in URLs and as the Redis hash tag.
    pub(crate) id: String,
    /// Display name.
    pub(crate) name: String,
    /// Bounding box of the service area.
    pub(crate) bbox: BoundingBox,
}

impl From<&City> for CityView {
    fn from(city: &City) -> Self {
        CityView {
            id: city.id.to_string(),
            name: city.name.clone(),
            bbox: city.bbox,
        }
    }
}

/// `GET /v1/cities` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CityList {
    /// Every service area.
    pub(crate) cities: Vec<CityView>,
}

impl From<&CityIndex> for CityList {
    fn from(index: &CityIndex) -> Self {
        CityList {
            cities: index.all().iter().map(CityView::from).collect(),
        }
    }
}

/// `POST /v1/cities/resolve` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lat": 48.8566, "lon": 2.3522}))]
pub(crate) struct ResolveRequest {
    /// Latitude in degrees (±85.05112878, the Redis GEO limit).
    pub(crate) lat: f64,
    /// Longitude in degrees (±180).
    pub(crate) lon: f64,
}

/// `POST /v1/cities/resolve` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"city": "paris"}))]
pub(crate) struct ResolveResponse {
    /// Id of the service area containing the point.
    pub(crate) city: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin() -> CityIndex {
        CityIndex::load(None).unwrap()
    }

    #[test]
    fn builtin_cities_are_paris_and_berlin() {
        let ids: Vec<_> = builtin().all().iter().map(|c| c.id.to_string()).collect();
        assert_eq!(ids, ["paris", "berlin"]);
    }

    #[test]
    fn each_city_covers_the_30_km_square_around_its_centre() {
        let index = builtin();
        for (id, lat, lon) in [("paris", 48.85_f64, 2.35), ("berlin", 52.52, 13.405)] {
            let dlat = 15_000.0 / 111_320.0;
            let dlon = 15_000.0 / (111_320.0 * f64::cos(lat.to_radians()));
            for (sy, sx) in [
                (-1.0, -1.0),
                (-1.0, 1.0),
                (1.0, -1.0),
                (1.0, 1.0),
                (0.0, 0.0),
            ] {
                let p = GeoPoint {
                    lat: lat + sy * dlat,
                    lon: lon + sx * dlon,
                };
                assert_eq!(index.resolve(p).map(|c| c.id.as_str()), Some(id), "{p:?}");
            }
        }
    }

    #[test]
    fn points_outside_every_city_resolve_to_none() {
        let index = builtin();
        for p in [
            GeoPoint { lat: 0.0, lon: 0.0 },
            GeoPoint {
                lat: 50.0,
                lon: 8.0,
            }, // Frankfurt, between the two
            GeoPoint {
                lat: 48.85,
                lon: 3.5,
            }, // east of Paris' outline, inside no bbox
        ] {
            assert!(index.resolve(p).is_none(), "{p:?}");
        }
    }

    #[test]
    fn resolve_or_reject_names_the_point_outside_every_city() {
        let err = builtin()
            .resolve_or_reject(GeoPoint { lat: 0.0, lon: 0.0 })
            .unwrap_err();
        assert_eq!(err, CityError::OutsideServiceArea { lat: 0.0, lon: 0.0 });
    }

    #[test]
    fn bad_geojson_is_rejected_with_a_reason() {
        for (doc, why) in [
            ("{}", "FeatureCollection"),
            (r#"{"features": []}"#, "no city"),
            (
                r#"{"features": [{"properties": {"id": "Bad Id"}, "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}}]}"#,
                "city id",
            ),
            (
                r#"{"features": [{"properties": {"id": "x"}, "geometry": {"type": "Point", "coordinates": [0,0]}}]}"#,
                "Polygon",
            ),
        ] {
            let err = CityIndex::from_geojson(doc).unwrap_err();
            assert!(
                format!("{err:#}").contains(why),
                "{err:#} should mention {why}"
            );
        }
    }
}
