//! Driver positions: ingest, stale and future rejection, batch, status, liveness, city change.

use std::time::Duration;

use geodispatch::domain::DriverStatus;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{BERLIN, PARIS, now_ms, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_position_is_stored_and_indexed_by_status_and_vehicle() {
    let app = spawn_app().await;
    let t = now_ms();
    let answer = app
        .put_location("drv-1", PARIS.0, PARIS.1, t, json!({"vehicle_type": "scooter", "accuracy_m": 8.5, "heading_deg": 90, "speed_mps": 6.2}))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json["city"], "paris");
    assert_eq!(
        answer.json["status"], "available",
        "a new driver starts available"
    );
    assert_eq!(answer.json["vehicle_type"], "scooter");
    assert_eq!(answer.json["recorded_at_ms"], t);
    assert_eq!(answer.json["fresh"], true);
    assert_eq!(answer.json["accuracy_m"], 8.5);

    let read = app.get("/v1/drivers/drv-1").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json["lat"], PARIS.0);
    assert!(read.json["age_ms"].as_i64().unwrap() >= 0);
    assert_eq!(
        app.indexes_of("drv-1").await.len(),
        1,
        "the available set, once"
    );
    assert_eq!(
        app.geo_members("paris", "available", "scooter").await,
        ["drv-1"]
    );
}

#[tokio::test]
async fn recorded_at_may_be_rfc3339() {
    let app = spawn_app().await;
    let body =
        json!({"lat": PARIS.0, "lon": PARIS.1, "recorded_at": "2026-01-02T03:04:05.678+01:00"});
    let answer = app.put_json("/v1/drivers/d/location", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json["recorded_at"], "2026-01-02T02:04:05.678Z");
}

#[tokio::test]
async fn an_older_position_is_409_stale_and_writes_nothing() {
    let app = spawn_app().await;
    let t = now_ms();
    assert_eq!(
        app.put_location("d1", PARIS.0, PARIS.1, t, json!({}))
            .await
            .status,
        200
    );
    let before = app.snapshot().await;
    let answer = app
        .put_location("d1", 48.9, 2.4, t - 1, json!({"vehicle_type": "van"}))
        .await;
    answer.assert_problem(409, "stale-position");
    assert!(
        app.snapshot().await == before,
        "a stale update must not write"
    );
    let equal = app.put_location("d1", 48.85, 2.35, t, json!({})).await;
    assert_eq!(
        equal.status, 200,
        "the same timestamp again is an idempotent retry"
    );
}

#[tokio::test]
async fn bad_positions_are_422_naming_the_field_and_write_nothing() {
    let app = spawn_app().await;
    let t = now_ms();
    let base = json!({"lat": PARIS.0, "lon": PARIS.1, "recorded_at": t});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "latitude above 90",
            with("lat", json!(91.0)),
            "lat",
            "validation-error",
        ),
        (
            "latitude Redis cannot store",
            with("lat", json!(85.06)),
            "lat",
            "validation-error",
        ),
        (
            "latitude below the Redis limit",
            with("lat", json!(-85.0511288)),
            "lat",
            "validation-error",
        ),
        (
            "longitude above 180",
            with("lon", json!(180.0001)),
            "lon",
            "validation-error",
        ),
        (
            "latitude as a string",
            with("lat", json!("48.85")),
            "lat",
            "validation-error",
        ),
        (
            "latitude null",
            with("lat", Value::Null),
            "lat",
            "validation-error",
        ),
        (
            "missing latitude",
            without("lat"),
            "lat",
            "validation-error",
        ),
        (
            "missing recorded_at",
            without("recorded_at"),
            "recorded_at",
            "validation-error",
        ),
        (
            "unknown field",
            with("altitude", json!(35)),
            "altitude",
            "validation-error",
        ),
        (
            "recorded_at not a timestamp",
            with("recorded_at", json!("yesterday")),
            "recorded_at",
            "validation-error",
        ),
        (
            "recorded_at in seconds",
            with("recorded_at", json!(t / 1000)),
            "recorded_at",
            "validation-error",
        ),
        (
            "recorded_at far in the future",
            with("recorded_at", json!(t + 3_600_000)),
            "recorded_at",
            "validation-error",
        ),
        (
            "busy set by a phone",
            with("status", json!("busy")),
            "status",
            "validation-error",
        ),
        (
            "unknown vehicle",
            with("vehicle_type", json!("rocket")),
            "vehicle_type",
            "validation-error",
        ),
        (
            "negative speed",
            with("speed_mps", json!(-1)),
            "speed_mps",
            "validation-error",
        ),
        (
            "heading of 360",
            with("heading_deg", json!(360)),
            "heading_deg",
            "validation-error",
        ),
        (
            "outside every city",
            with("lat", json!(50.11)),
            "lat",
            "outside-service-area",
        ),
    ];
    for (why, body, field, code) in cases {
        let answer = app.put_json("/v1/drivers/drv-1/location", &body).await;
        answer.assert_problem(422, code);
        assert!(
            answer.problem_fields().contains(&field.to_owned()),
            "{why}: {}",
            answer.text
        );
    }
    for (why, raw) in [
        (
            "NaN literal",
            format!("{{\"lat\": NaN, \"lon\": 2.35, \"recorded_at\": {t}}}"),
        ),
        (
            "Infinity literal",
            format!("{{\"lat\": Infinity, \"lon\": 2.35, \"recorded_at\": {t}}}"),
        ),
        ("truncated", "{\"lat\": 48.85, \"lon\"".to_owned()),
    ] {
        let answer = app
            .send_raw(
                Method::PUT,
                "/v1/drivers/drv-1/location",
                "application/json",
                raw.into_bytes(),
            )
            .await;
        assert_eq!(answer.status, 400, "{why}: {}", answer.text);
        answer.assert_problem(400, "malformed-json");
    }
    for bad_id in ["a%20b", "a:b", &"x".repeat(65), "%7Bparis%7D"] {
        let answer = app
            .put_json(&format!("/v1/drivers/{bad_id}/location"), &base)
            .await;
        answer.assert_problem(422, "validation-error");
        assert_eq!(answer.problem_fields(), ["driver_id"], "{bad_id}");
    }
    assert!(
        app.data_keys().await.is_empty(),
        "nothing may be written: {:?}",
        app.keys().await
    );
}

#[tokio::test]
async fn concurrent_updates_of_one_driver_leave_the_newest_position() {
    let app = spawn_app_with(|s| s.http_workers = 2).await;
    let base = now_ms() - 10_000;
    // 64 updates with distinct timestamps sent concurrently in a scrambled order.
    let mut order: Vec<i64> = (0..64).collect();
    order.sort_by_key(|i| (i * 37) % 64);
    let tasks: Vec<_> = order
        .into_iter()
        .map(|i| {
            let app = &app;
            async move {
                let lat = 48.80 + i as f64 * 0.001;
                let answer = app
                    .put_location("racer", lat, 2.35, base + i, json!({}))
                    .await;
                assert!(
                    answer.status == 200 || answer.status == 409,
                    "{}",
                    answer.text
                );
                answer.status
            }
        })
        .collect();
    let statuses = futures_util::future::join_all(tasks).await;
    assert!(statuses.contains(&200));
    let state = app.get("/v1/drivers/racer").await;
    assert_eq!(
        state.json["recorded_at_ms"],
        base + 63,
        "the newest always wins"
    );
    assert!((state.json["lat"].as_f64().unwrap() - (48.80 + 63.0 * 0.001)).abs() < 1e-9);
    let near = app
        .get("/v1/drivers/nearby?lat=48.863&lon=2.35&radius_m=100")
        .await;
    assert_eq!(
        near.json["drivers"][0]["driver_id"], "racer",
        "{}",
        near.text
    );
    assert_eq!(
        app.indexes_of("racer").await.len(),
        1,
        "indexed exactly once"
    );
}

#[tokio::test]
async fn a_batch_reports_each_item_in_order_and_stores_only_the_good_ones() {
    let app = spawn_app().await;
    let t = now_ms();
    let body = json!({"positions": [
        {"driver_id": "b1", "lat": PARIS.0, "lon": PARIS.1, "recorded_at": t},
        {"driver_id": "b2", "lat": 95.0, "lon": PARIS.1, "recorded_at": t},
        {"driver_id": "b:3", "lat": PARIS.0, "lon": PARIS.1, "recorded_at": t},
        {"driver_id": "b4", "lat": BERLIN.0, "lon": BERLIN.1, "recorded_at": t, "vehicle_type": "bike"},
        {"driver_id": "b5", "lat": 50.11, "lon": 8.68, "recorded_at": t},
        {"driver_id": "b1", "lat": 48.9, "lon": 2.3, "recorded_at": t - 5},
        {"driver_id": "b6", "lat": PARIS.0, "lon": PARIS.1, "recorded_at": t, "extra": 1},
        {"lat": PARIS.0, "lon": PARIS.1, "recorded_at": t},
        {"driver_id": "b7", "lat": PARIS.0, "lon": PARIS.1, "recorded_at": t + 3_600_000},
        "not an object"
    ]});
    let answer = app.post_json("/v1/locations/batch", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let results = answer.json["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "accepted", "invalid", "invalid", "accepted", "invalid", "stale", "invalid", "invalid",
            "invalid", "invalid"
        ]
    );
    assert!(
        results[1]["detail"]
            .as_str()
            .unwrap()
            .contains("positions[1].lat"),
        "{}",
        answer.text
    );
    assert!(
        results[4]["detail"]
            .as_str()
            .unwrap()
            .contains("outside every service area")
    );
    assert!(results[6]["detail"].as_str().unwrap().contains("extra"));
    assert!(results[7]["detail"].as_str().unwrap().contains("driver_id"));
    assert!(
        results[8]["detail"]
            .as_str()
            .unwrap()
            .contains("ahead of the server clock")
    );
    assert_eq!(results[0]["driver_id"], "b1");
    assert_eq!(
        app.get("/v1/drivers/b1").await.json["lat"],
        PARIS.0,
        "the stale item did not win"
    );
    assert_eq!(app.get("/v1/drivers/b4").await.json["city"], "berlin");
    for id in ["b2", "b5", "b6", "b7"] {
        assert_eq!(
            app.get(&format!("/v1/drivers/{id}")).await.status,
            404,
            "{id} must not be stored"
        );
    }
}

#[tokio::test]
async fn one_driver_several_times_in_a_batch_is_decided_in_order() {
    let app = spawn_app().await;
    let t = now_ms() - 1_000;
    let created = app
        .put_location("dup", PARIS.0, PARIS.1, t, json!({}))
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let body = json!({"positions": [
        {"driver_id": "dup", "lat": 48.86, "lon": 2.34, "recorded_at": t + 10, "vehicle_type": "bike"},
        {"driver_id": "dup", "lat": 48.87, "lon": 2.33, "recorded_at": t + 5},
        {"driver_id": "dup", "lat": 48.88, "lon": 2.32, "recorded_at": t + 20, "status": "offline"},
        {"driver_id": "dup", "lat": 48.89, "lon": 2.31, "recorded_at": t + 15, "status": "available"}
    ]});
    let answer = app.post_json("/v1/locations/batch", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let statuses: Vec<&str> = answer.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "stale", "accepted", "stale"]);
    let read = app.get("/v1/drivers/dup").await;
    assert_eq!(read.json["lat"], 48.88, "{}", read.text);
    assert_eq!(read.json["status"], "offline");
    assert_eq!(read.json["vehicle_type"], "bike");
    assert_eq!(app.indexes_of("dup").await.len(), 1, "indexed once");
    assert_eq!(app.geo_members("paris", "offline", "bike").await, ["dup"]);
    assert!(
        app.geo_members("paris", "available", "car")
            .await
            .is_empty()
    );
    assert!(
        app.geo_members("paris", "available", "bike")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_batch_over_the_limit_is_rejected_whole() {
    let app = spawn_app_with(|s| s.batch_max_positions = 5).await;
    let t = now_ms();
    let positions: Vec<Value> = (0..6)
        .map(|i| json!({"driver_id": format!("d{i}"), "lat": PARIS.0, "lon": PARIS.1, "recorded_at": t}))
        .collect();
    let answer = app
        .post_json("/v1/locations/batch", &json!({"positions": positions}))
        .await;
    answer.assert_problem(422, "validation-error");
    assert_eq!(answer.problem_fields(), ["positions"]);
    assert!(app.data_keys().await.is_empty());
    let ok = app
        .post_json("/v1/locations/batch", &json!({"positions": positions[..5]}))
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn status_moves_the_driver_between_indexes_and_busy_is_not_settable() {
    let app = spawn_app().await;
    let t = now_ms();
    app.put_location("s1", PARIS.0, PARIS.1, t, json!({"vehicle_type": "van"}))
        .await;
    let off = app
        .put_json("/v1/drivers/s1/status", &json!({"status": "offline"}))
        .await;
    assert_eq!(off.status, 200, "{}", off.text);
    assert_eq!(off.json["status"], "offline");
    assert_eq!(app.geo_members("paris", "offline", "van").await, ["s1"]);
    assert!(
        app.geo_members("paris", "available", "van")
            .await
            .is_empty()
    );

    let default_search = app.nearby(PARIS, "").await;
    assert!(
        default_search.json["drivers"]
            .as_array()
            .unwrap()
            .is_empty(),
        "offline drivers are not searched by default"
    );
    let offline_search = app.nearby(PARIS, "&status=offline").await;
    assert_eq!(offline_search.json["drivers"][0]["driver_id"], "s1");

    // Going back on shift in the same call as a position.
    let back = app
        .put_location(
            "s1",
            PARIS.0,
            PARIS.1,
            t + 1,
            json!({"status": "available"}),
        )
        .await;
    assert_eq!(back.json["status"], "available");
    assert_eq!(app.indexes_of("s1").await.len(), 1);

    app.put_json("/v1/drivers/s1/status", &json!({"status": "busy"}))
        .await
        .assert_problem(422, "validation-error");
    app.put_json("/v1/drivers/nobody/status", &json!({"status": "offline"}))
        .await
        .assert_problem(404, "not-found");
}

#[tokio::test]
async fn a_driver_moving_city_leaves_the_old_citys_indexes() {
    let app = spawn_app().await;
    let t = now_ms();
    app.put_location("m1", PARIS.0, PARIS.1, t, json!({})).await;
    let moved = app
        .put_location("m1", BERLIN.0, BERLIN.1, t + 1000, json!({}))
        .await;
    assert_eq!(moved.json["city"], "berlin", "{}", moved.text);
    let indexes = app.indexes_of("m1").await;
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    assert!(
        indexes.iter().all(|k| k.contains("{berlin}")),
        "{indexes:?}"
    );
    let mut conn = app.redis_conn().await;
    let in_paris: Option<f64> = redis::cmd("ZSCORE")
        .arg(
            app.context
                .store
                .keys()
                .seen_bucket("paris", geodispatch::drivers::driver_bucket("m1")),
        )
        .arg("m1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(in_paris.is_none(), "left the old city's last-seen index");
    let paris = app.nearby(PARIS, "").await;
    assert!(paris.json["drivers"].as_array().unwrap().is_empty());
    // An older Paris position arriving late loses.
    app.put_location("m1", PARIS.0, PARIS.1, t + 500, json!({}))
        .await
        .assert_problem(409, "stale-position");
    assert_eq!(app.indexes_of("m1").await.len(), 1);
}

#[tokio::test]
async fn concurrent_positions_in_two_cities_leave_the_driver_in_exactly_one() {
    let app = spawn_app().await;
    let t = now_ms();
    // Single updates and batches (one batch even names the driver in both cities), all at
    // once, alternating between Paris and Berlin with distinct timestamps.
    let singles = (0..24).map(|i| {
        let at = if i % 2 == 0 { PARIS } else { BERLIN };
        app.put_location("hop", at.0, at.1, t + i, json!({}))
    });
    let batch = json!({"positions": [
        {"driver_id": "hop", "lat": PARIS.0, "lon": PARIS.1, "recorded_at": t + 100},
        {"driver_id": "hop", "lat": BERLIN.0, "lon": BERLIN.1, "recorded_at": t + 101},
    ]});
    let batches = (0..4).map(|_| app.post_json("/v1/locations/batch", &batch));
    let (singles, batches) = tokio::join!(
        futures_util::future::join_all(singles),
        futures_util::future::join_all(batches)
    );
    for a in singles.iter().chain(&batches) {
        assert!(
            a.status == 200 || a.status == 409 || a.status == 503,
            "{}",
            a.text
        );
    }
    let keys = app.context.store.keys();
    let mut conn = app.redis_conn().await;
    let mut held_by = Vec::new();
    for city in ["paris", "berlin"] {
        let held: bool = redis::cmd("HEXISTS")
            .arg(keys.driver_states(city))
            .arg("hop")
            .query_async(&mut conn)
            .await
            .unwrap();
        if held {
            held_by.push(city);
        }
    }
    assert_eq!(held_by.len(), 1, "held by {held_by:?}");
    let directory: Option<String> = redis::cmd("HGET")
        .arg(keys.driver_directory("hop"))
        .arg("hop")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        directory.as_deref().and_then(|d| d.split('|').next()),
        Some(held_by[0])
    );
    let indexes = app.indexes_of("hop").await;
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    assert!(
        indexes
            .iter()
            .all(|k| k.contains(&format!("{{{}}}", held_by[0])))
    );
    // The newest position won.
    let a = app.get("/v1/drivers/hop").await;
    assert_eq!(a.json["recorded_at_ms"], t + 101, "{}", a.text);
}

#[tokio::test]
async fn stale_drivers_vanish_from_search_at_once_and_from_indexes_after_a_sweep() {
    let app = spawn_app_with(|s| {
        s.driver_ttl_ms = 1_500;
        s.sweep_interval_ms = 3_600_000; // no background sweep during this test
    })
    .await;
    app.put_driver_at("old", PARIS).await;
    assert_eq!(
        app.nearby(PARIS, "").await.json["drivers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Wait until the position is older than the TTL (polling the driver's own freshness).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.get("/v1/drivers/old").await.json["fresh"] == true {
        assert!(std::time::Instant::now() < deadline, "never went stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        app.nearby(PARIS, "").await.json["drivers"]
            .as_array()
            .unwrap()
            .is_empty(),
        "search filters stale drivers between sweeps"
    );
    assert_eq!(app.indexes_of("old").await.len(), 1, "not swept yet");

    let removed =
        geodispatch::drivers::sweep_city(&app.context.store, &app.context.settings, "paris")
            .await
            .unwrap();
    assert_eq!(removed, 1);
    assert!(
        app.indexes_of("old").await.is_empty(),
        "swept out of the GEO index"
    );
    assert!(
        app.keys().await.iter().all(|k| !k.contains(":seen")),
        "its liveness bucket and the bucket's index entry are gone: {:?}",
        app.keys().await
    );
    let state = app.get("/v1/drivers/old").await;
    assert_eq!(state.status, 200, "its state stays readable");
    assert_eq!(state.json["fresh"], false);

    // A new position re-indexes it.
    let t = now_ms();
    app.put_location("old", PARIS.0, PARIS.1, t, json!({}))
        .await;
    let keys = app.context.store.keys();
    let oldest: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.seen_index("paris"))
        .arg(geodispatch::drivers::driver_bucket("old"))
        .query_async(&mut app.redis_conn().await)
        .await
        .unwrap();
    assert_eq!(oldest, Some(t as f64), "back in the liveness index");
    assert_eq!(
        app.nearby(PARIS, "").await.json["drivers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_background_sweeper_removes_stale_drivers_in_bounded_batches() {
    let app = spawn_app_with(|s| {
        s.driver_ttl_ms = 1_000;
        s.sweep_interval_ms = 100;
        s.sweep_batch = 3;
    })
    .await;
    let positions: Vec<Value> = (0..10)
        .map(|i| json!({"driver_id": format!("z{i}"), "lat": PARIS.0, "lon": PARIS.1 + i as f64 * 0.001, "recorded_at": now_ms()}))
        .collect();
    app.post_json("/v1/locations/batch", &json!({"positions": positions}))
        .await;
    assert_eq!(app.geo_members("paris", "available", "car").await.len(), 10);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !app
        .geo_members("paris", "available", "car")
        .await
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweeper never removed them"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn delete_removes_a_driver_from_every_index() {
    let app = spawn_app().await;
    app.put_driver_at("gone", PARIS).await;
    let answer = app.delete("/v1/drivers/gone").await;
    assert_eq!(answer.status, 204);
    assert!(app.indexes_of("gone").await.is_empty());
    assert_eq!(app.get("/v1/drivers/gone").await.status, 404);
    assert!(
        app.keys().await.iter().all(|k| !k.contains(":seen")),
        "{:?}",
        app.keys().await
    );
    app.delete("/v1/drivers/gone")
        .await
        .assert_problem(404, "not-found");
}

/// The liveness index holds, per bucket, a lower bound of the time of the bucket's oldest
/// driver: lowered by creation, kept by updates (single and batch), made exact by deletion and
/// by the sweep.
#[tokio::test]
async fn the_liveness_index_bounds_each_buckets_oldest_driver_and_the_sweep_makes_it_exact() {
    let app = spawn_app_with(|s| {
        s.sweep_interval_ms = 3_600_000; // no background sweep; every bucket is due in a pass
    })
    .await;
    let bucket = geodispatch::drivers::driver_bucket("lv-0");
    let ids: Vec<String> = (0..)
        .map(|i| format!("lv-{i}"))
        .filter(|id| geodispatch::drivers::driver_bucket(id) == bucket)
        .take(3)
        .collect();
    let keys = app.context.store.keys();
    let index = keys.seen_index("paris");
    let bucket_key = keys.seen_bucket("paris", bucket);
    let mut conn = app.redis_conn().await;
    let mut oldest = async || -> Option<i64> {
        redis::cmd("ZSCORE")
            .arg(&index)
            .arg(bucket)
            .query_async::<Option<f64>>(&mut conn)
            .await
            .unwrap()
            .map(|s| s as i64)
    };
    let sweep = async || {
        geodispatch::drivers::sweep_city(&app.context.store, &app.context.settings, "paris")
            .await
            .unwrap()
    };
    let t = now_ms() - 10_000;
    for (i, id) in ids.iter().enumerate().rev() {
        app.put_location(id, PARIS.0, PARIS.1, t + 1000 * i as i64, json!({}))
            .await;
    }
    assert_eq!(oldest().await, Some(t), "each creation lowers the bound");

    // The oldest reports again: the bound stays until a sweep makes it exact.
    app.put_location(&ids[0], PARIS.0, PARIS.1, t + 5000, json!({}))
        .await;
    assert_eq!(oldest().await, Some(t));
    assert_eq!(sweep().await, 0);
    assert_eq!(oldest().await, Some(t + 1000));

    // A batch moves two of them; a stale position changes nothing.
    let body = json!({"positions": [
        {"driver_id": ids[1], "lat": PARIS.0, "lon": PARIS.1, "recorded_at": t + 6000},
        {"driver_id": ids[2], "lat": PARIS.0, "lon": PARIS.1, "recorded_at": t + 7000},
        {"driver_id": ids[2], "lat": PARIS.0, "lon": PARIS.1, "recorded_at": t + 1},
    ]});
    let answer = app.post_json("/v1/locations/batch", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(oldest().await, Some(t + 1000));
    assert_eq!(sweep().await, 0);
    assert_eq!(oldest().await, Some(t + 5000));

    // Deleting the oldest hands over to the next; deleting all removes the bucket's entry.
    assert_eq!(
        app.delete(&format!("/v1/drivers/{}", ids[0])).await.status,
        204
    );
    assert_eq!(oldest().await, Some(t + 6000));
    for id in &ids[1..] {
        assert_eq!(app.delete(&format!("/v1/drivers/{id}")).await.status, 204);
    }
    assert_eq!(oldest().await, None);
    let exists: bool = redis::cmd("EXISTS")
        .arg(&bucket_key)
        .query_async(&mut app.redis_conn().await)
        .await
        .unwrap();
    assert!(!exists, "an empty bucket is no key");
}

#[tokio::test]
async fn a_driver_moving_city_keeps_its_vehicle_type_and_offline_status() {
    let app = spawn_app().await;
    let t = now_ms();
    let first = app
        .put_location(
            "m2",
            PARIS.0,
            PARIS.1,
            t,
            json!({"vehicle_type": "van", "status": "offline"}),
        )
        .await;
    assert_eq!(first.json["status"], "offline", "{}", first.text);
    let moved = app
        .put_location("m2", BERLIN.0, BERLIN.1, t + 1000, json!({}))
        .await;
    assert_eq!(moved.json["city"], "berlin", "{}", moved.text);
    assert_eq!(moved.json["vehicle_type"], "van", "{}", moved.text);
    assert_eq!(moved.json["status"], "offline", "{}", moved.text);
    let read = app.get("/v1/drivers/m2").await;
    assert_eq!(read.json["city"], "berlin", "{}", read.text);
    assert_eq!(read.json["vehicle_type"], "van", "{}", read.text);
}

/// `geodispatch migrate` brings keys of layout 1 to the current layout: the
/// driver is readable, searchable and updatable afterwards, the old keys are gone, and a
/// second run changes nothing.
#[tokio::test]
async fn migrate_brings_the_old_driver_layout_to_the_current_one() {
    let app = spawn_app().await;
    let k = app.context.store.keys();
    let t = now_ms();
    let mut conn = app.redis_conn().await;
    let () = redis::pipe()
        .cmd("HSET")
        .arg(k.driver_states("paris"))
        .arg("old1")
        .arg(format!(
            "paris|{t}|{}|{}|available|van|5||",
            PARIS.0, PARIS.1
        ))
        .ignore()
        .cmd("ZADD")
        .arg(k.legacy_seen("paris"))
        .arg(t)
        .arg("old1")
        .ignore()
        .cmd("GEOADD")
        .arg(k.geo("paris", DriverStatus::Available))
        .arg(PARIS.1)
        .arg(PARIS.0)
        .arg("v:old1")
        .ignore()
        .cmd("GEOADD")
        .arg(k.legacy_geo_vehicle("paris", "available", "van"))
        .arg(PARIS.1)
        .arg(PARIS.0)
        .arg("old1")
        .ignore()
        .cmd("HSET")
        .arg(k.legacy_driver_directory())
        .arg("old1")
        .arg(format!("paris|{t}"))
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let migrate = || geodispatch::drivers::migrate_layout(&app.context.store, &app.context.cities);
    let report = migrate().await.unwrap();
    assert_eq!(
        report,
        geodispatch::drivers::MigrateReport {
            states_rewritten: 1,
            seen_moved: 1,
            per_vehicle_sets_deleted: 1,
            directory_moved: 1,
        }
    );
    let keys = app.keys().await;
    for old in [
        k.legacy_seen("paris"),
        k.legacy_geo_vehicle("paris", "available", "van"),
        k.legacy_driver_directory(),
    ] {
        assert!(!keys.contains(&old), "{old} is gone: {keys:?}");
    }

    let read = app.get("/v1/drivers/old1").await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.json["city"], "paris");
    assert_eq!(read.json["vehicle_type"], "van");
    assert_eq!(read.json["status"], "available");
    assert_eq!(read.json["accuracy_m"], 5.0);
    assert_eq!(read.json["fresh"], true);
    let near = app.nearby(PARIS, "&vehicle_type=van").await;
    assert_eq!(
        near.json["drivers"][0]["driver_id"], "old1",
        "{}",
        near.text
    );
    let moved = app
        .put_location("old1", BERLIN.0, BERLIN.1, t + 1000, json!({}))
        .await;
    assert_eq!(moved.json["city"], "berlin", "{}", moved.text);
    assert_eq!(moved.json["vehicle_type"], "van", "{}", moved.text);

    assert_eq!(
        migrate().await.unwrap(),
        geodispatch::drivers::MigrateReport::default(),
        "a second run changes nothing"
    );
}
