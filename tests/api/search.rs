//! Nearby search against a brute-force haversine over the same drivers.

use geodispatch::domain::{GeoPoint, haversine_m};
use serde_json::{Value, json};

use crate::helpers::{PARIS, Rng, TestApp, now_ms, spawn_app};

struct Fleet {
    drivers: Vec<(String, f64, f64, &'static str)>,
}

async fn load_fleet(app: &TestApp, n: usize, km: f64, seed: u64) -> Fleet {
    let mut rng = Rng::new(seed);
    let vehicles = ["bike", "scooter", "car", "van"];
    let mut drivers = Vec::new();
    for i in 0..n {
        let (lat, lon) = rng.near(PARIS.0, PARIS.1, km);
        drivers.push((format!("f{i:04}"), lat, lon, vehicles[i % 4]));
    }
    let fleet: Vec<(&str, f64, f64, &str)> = drivers
        .iter()
        .map(|(id, lat, lon, vt)| (id.as_str(), *lat, *lon, *vt))
        .collect();
    app.put_vehicles(&fleet).await;
    Fleet { drivers }
}

fn ids(answer: &Value) -> Vec<String> {
    answer["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["driver_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn nearest_k_matches_a_brute_force_haversine() {
    let app = spawn_app().await;
    let fleet = load_fleet(&app, 400, 6.0, 7).await;
    let mut rng = Rng::new(99);
    for (k, radius) in [(20, 50_000.0), (5, 50_000.0), (100, 50_000.0), (20, 800.0)] {
        for _ in 0..5 {
            let (lat, lon) = rng.near(PARIS.0, PARIS.1, 5.0);
            let center = GeoPoint { lat, lon };
            let answer = app
                .nearby((lat, lon), &format!("&limit={k}&radius_m={radius}"))
                .await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            let got = answer.json["drivers"].as_array().unwrap();
            let mut expected: Vec<(f64, &str)> = fleet
                .drivers
                .iter()
                .map(|(id, la, lo, _)| {
                    (
                        haversine_m(center, GeoPoint { lat: *la, lon: *lo }),
                        id.as_str(),
                    )
                })
                .filter(|(d, _)| *d <= radius)
                .collect();
            expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
            expected.truncate(k);
            assert_eq!(got.len(), expected.len(), "k={k} r={radius}");
            for (g, (d, id)) in got.iter().zip(&expected) {
                let gd = g["distance_m"].as_f64().unwrap();
                // Redis stores 52-bit geohashes (about 0.6 m): ids may swap only on near-ties.
                assert!(
                    (gd - d).abs() < 2.0,
                    "distance {gd} vs brute force {d} for {id}"
                );
                if g["driver_id"] != *id {
                    let theirs = expected
                        .iter()
                        .find(|(_, e)| *e == g["driver_id"])
                        .map(|(d, _)| *d);
                    assert!(
                        theirs.is_some_and(|t| (t - d).abs() < 2.0),
                        "{} is not a near-tie of {id}",
                        g["driver_id"]
                    );
                }
            }
            let distances: Vec<f64> = got
                .iter()
                .map(|g| g["distance_m"].as_f64().unwrap())
                .collect();
            assert!(distances.windows(2).all(|w| w[0] <= w[1]), "nearest first");
        }
    }
}

#[tokio::test]
async fn sparse_drivers_are_found_up_to_the_maximum_radius() {
    let app = spawn_app().await;
    // Three drivers 2, 9 and 20 km north of the centre: the search must widen to find them.
    for (i, km) in [2.0, 9.0, 20.0].iter().enumerate() {
        app.put_driver_at(&format!("far{i}"), (PARIS.0 + km / 111.2, PARIS.1))
            .await;
    }
    let all = app.nearby(PARIS, "&radius_m=50000&limit=10").await;
    assert_eq!(ids(&all.json), ["far0", "far1", "far2"]);
    let within_10 = app.nearby(PARIS, "&radius_m=10000&limit=10").await;
    assert_eq!(ids(&within_10.json), ["far0", "far1"]);
}

#[tokio::test]
async fn box_search_returns_exactly_the_drivers_inside_the_box_nearest_first() {
    let app = spawn_app().await;
    let fleet = load_fleet(&app, 300, 4.0, 11).await;
    let (w, h) = (3_000.0, 1_500.0);
    let answer = app
        .nearby(PARIS, &format!("&width_m={w}&height_m={h}&limit=100"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let got = ids(&answer.json);
    let center = GeoPoint {
        lat: PARIS.0,
        lon: PARIS.1,
    };
    // Redis' rule: north-south distance along the meridian, east-west along the member's parallel.
    let inside = |lat: f64, lon: f64, margin: f64| {
        let dy = haversine_m(GeoPoint { lat, lon }, GeoPoint { lat: PARIS.0, lon });
        let dx = haversine_m(GeoPoint { lat, lon }, GeoPoint { lat, lon: PARIS.1 });
        dy <= h / 2.0 + margin && dx <= w / 2.0 + margin
    };
    let expected: Vec<&str> = fleet
        .drivers
        .iter()
        .filter(|(_, la, lo, _)| inside(*la, *lo, -2.0))
        .map(|(id, ..)| id.as_str())
        .collect();
    assert!(
        !expected.is_empty() && expected.len() < 100,
        "{}",
        expected.len()
    );
    for id in &expected {
        assert!(
            got.iter().any(|g| g == id),
            "{id} is inside the box but missing"
        );
    }
    for g in answer.json["drivers"].as_array().unwrap() {
        let (lat, lon) = (g["lat"].as_f64().unwrap(), g["lon"].as_f64().unwrap());
        assert!(
            inside(lat, lon, 2.0),
            "{} is outside the box",
            g["driver_id"]
        );
        let d = haversine_m(center, GeoPoint { lat, lon });
        assert!((d - g["distance_m"].as_f64().unwrap()).abs() < 2.0);
    }
}

#[tokio::test]
async fn filters_by_vehicle_type_and_status() {
    let app = spawn_app().await;
    let fleet = load_fleet(&app, 40, 2.0, 3).await;
    let answer = app.nearby(PARIS, "&vehicle_type=bike&limit=100").await;
    let bikes: Vec<&str> = fleet
        .drivers
        .iter()
        .filter(|d| d.3 == "bike")
        .map(|d| d.0.as_str())
        .collect();
    let mut got = ids(&answer.json);
    got.sort();
    assert_eq!(got, bikes);
    for d in answer.json["drivers"].as_array().unwrap() {
        assert_eq!(d["vehicle_type"], "bike");
        assert_eq!(d["status"], "available");
    }
    let busy = app.nearby(PARIS, "&status=busy").await;
    assert!(ids(&busy.json).is_empty());
}

#[tokio::test]
async fn bad_search_parameters_are_422_naming_the_parameter() {
    let app = spawn_app().await;
    let p = format!("lat={}&lon={}", PARIS.0, PARIS.1);
    let cases = [
        (format!("{p}&limit=101"), "limit"),
        (format!("{p}&limit=0"), "limit"),
        (format!("{p}&radius_m=50001"), "radius_m"),
        (format!("{p}&radius_m=-1"), "radius_m"),
        (
            format!("{p}&radius_m=100&width_m=100&height_m=100"),
            "radius_m",
        ),
        (format!("{p}&width_m=100"), "height_m"),
        (format!("lat=abc&lon={}", PARIS.1), "lat"),
        (format!("lon={}", PARIS.1), "lat"),
        (format!("lat=91&lon={}", PARIS.1), "lat"),
        (format!("{p}&status=sleeping"), "status"),
        (format!("{p}&vehicle_type=rocket"), "vehicle_type"),
        (format!("{p}&colour=red"), "colour"),
    ];
    for (query, field) in cases {
        let answer = app.get(&format!("/v1/drivers/nearby?{query}")).await;
        answer.assert_problem(422, "validation-error");
        assert!(
            answer.problem_fields().contains(&field.to_owned()),
            "{query}: {}",
            answer.text
        );
    }
    app.get("/v1/drivers/nearby?lat=50.11&lon=8.68")
        .await
        .assert_problem(422, "outside-service-area");
}

#[tokio::test]
async fn many_stale_drivers_between_sweeps_are_never_returned() {
    // More stale drivers than the search's stale window: the per-candidate check takes over.
    // The widening steps re-read this stale cluster several times on their way to the fresh
    // drivers 1.1 km away, more than the default member cap allows (such a search answers
    // partial; see stale.rs): this test is about the freshness check, so the cap is raised.
    let app = crate::helpers::spawn_app_with(|s| {
        s.driver_ttl_ms = 5_000;
        s.sweep_interval_ms = 3_600_000;
        s.search_max_members = 5_000;
    })
    .await;
    let t = now_ms();
    let stale: Vec<Value> = (0..150)
        .map(|i| json!({"driver_id": format!("old{i}"), "lat": PARIS.0 + i as f64 * 1e-5, "lon": PARIS.1, "recorded_at": t - 10_000}))
        .collect();
    app.post_json("/v1/locations/batch", &json!({"positions": stale}))
        .await;
    let fresh: Vec<Value> = (0..5)
        .map(|i| json!({"driver_id": format!("new{i}"), "lat": PARIS.0 + 0.01 + i as f64 * 1e-4, "lon": PARIS.1, "recorded_at": t}))
        .collect();
    app.post_json("/v1/locations/batch", &json!({"positions": fresh}))
        .await;
    let answer = app.nearby(PARIS, "&limit=20").await;
    let mut got = ids(&answer.json);
    got.sort();
    assert_eq!(
        got,
        ["new0", "new1", "new2", "new3", "new4"],
        "{}",
        answer.text
    );
    // A few stale ones (inside the window) with fresh ones: the cheap path.
    let few = app
        .nearby((PARIS.0 + 0.01, PARIS.1), "&limit=3&radius_m=2000")
        .await;
    assert!(
        ids(&few.json).iter().all(|id| id.starts_with("new")),
        "{}",
        few.text
    );
}

#[tokio::test]
async fn a_fresh_driver_in_a_bucket_whose_bound_looks_stale_is_found() {
    // Positions keep a liveness bucket's index entry a lower bound; until a sweep raises it,
    // the bucket looks stale and its candidates are checked one by one: the fresh are kept.
    let app = crate::helpers::spawn_app_with(|s| {
        s.driver_ttl_ms = 5_000;
        s.sweep_interval_ms = 3_600_000;
    })
    .await;
    let t = now_ms();
    for (id, recorded) in [("back", t - 60_000), ("back", t), ("gone", t - 60_000)] {
        let answer = app
            .post_json(
                "/v1/locations/batch",
                &json!({"positions": [{"driver_id": id, "lat": PARIS.0, "lon": PARIS.1, "recorded_at": recorded}]}),
            )
            .await;
        assert_eq!(
            answer.json["results"][0]["status"], "accepted",
            "{}",
            answer.text
        );
    }
    let answer = app.nearby(PARIS, "").await;
    assert_eq!(ids(&answer.json), ["back"], "{}", answer.text);
}
