//! A fleet gone stale all at once (phones stopped by an upstream outage): a search bounds its
//! own work and says when its answer is partial, dispatch waits for a complete answer, and
//! the sweeper clears the mass in calls bounded by a count and a time budget.

use serde_json::{Value, json};

use crate::helpers::{PARIS, Rng, TestApp, now_ms, spawn_app_with};

/// Report `n` drivers `s0000…` within `km` of `at`, recorded long before the TTL (stale at
/// once; the service stores and indexes them as any position, and only search sees them as
/// stale). Returns their ids.
async fn put_stale_mass(app: &TestApp, n: usize, at: (f64, f64), km: f64) -> Vec<String> {
    let ttl = app.context.settings.driver_ttl_ms as i64;
    let old = now_ms() - ttl - 60_000;
    let mut rng = Rng::new(5);
    let ids: Vec<String> = (0..n).map(|i| format!("s{i:04}")).collect();
    for chunk in ids.chunks(500) {
        let positions: Vec<Value> = chunk
            .iter()
            .map(|id| {
                let (lat, lon) = rng.near(at.0, at.1, km);
                json!({"driver_id": id, "lat": lat, "lon": lon, "recorded_at": old, "vehicle_type": "car"})
            })
            .collect();
        let a = app
            .post_json("/v1/locations/batch", &json!({"positions": positions}))
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    ids
}

fn ids(answer: &Value, list: &str) -> Vec<String> {
    answer[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["driver_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The GEOSEARCH commands Redis logged since the slow log was reset with a threshold of 0
/// (every command), and how many members they read: each is run again on the unchanged data.
async fn geosearch_reads(app: &TestApp) -> (usize, usize) {
    let mut conn = app.redis_conn().await;
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut searches = Vec::new();
    for entry in entries {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let Some(redis::Value::Array(args)) = fields.get(3) else {
            continue;
        };
        let words: Vec<String> = args
            .iter()
            .filter_map(|a| match a {
                redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect();
        if words
            .first()
            .is_some_and(|w| w.eq_ignore_ascii_case("GEOSEARCH"))
        {
            searches.push(words);
        }
    }
    let mut read = 0;
    for words in &searches {
        let mut cmd = redis::cmd(&words[0]);
        for w in &words[1..] {
            cmd.arg(w);
        }
        let members: Vec<redis::Value> = cmd.query_async(&mut conn).await.unwrap();
        read += members.len();
    }
    (searches.len(), read)
}

async fn log_every_command(app: &TestApp) {
    let mut conn = app.redis_conn().await;
    for (name, value) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "100000"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_search_among_a_stale_majority_returns_only_fresh_drivers_within_its_member_cap() {
    let app = spawn_app_with(|s| {
        s.sweep_interval_ms = 3_600_000; // no background sweep: the mass stays indexed
        s.search_max_limit = 20;
        s.search_max_members = 60;
    })
    .await;
    let stale = put_stale_mass(&app, 600, PARIS, 1.0).await;
    // Fresh drivers: two in the middle of the stale mass, three about 4 km north of it.
    app.put_fleet(&[
        ("fresh-in-0", PARIS.0, PARIS.1 + 0.0005),
        ("fresh-in-1", PARIS.0 + 0.0005, PARIS.1),
        ("fresh-out-0", PARIS.0 + 0.036, PARIS.1),
        ("fresh-out-1", PARIS.0 + 0.037, PARIS.1),
        ("fresh-out-2", PARIS.0 + 0.038, PARIS.1),
    ])
    .await;

    log_every_command(&app).await;
    let answer = app.nearby(PARIS, "&limit=5&radius_m=10000").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let found = ids(&answer.json, "drivers");
    assert!(
        found.iter().all(|id| id.starts_with("fresh-")),
        "only fresh drivers: {found:?}"
    );
    assert!(
        !found.iter().any(|id| stale.contains(id)),
        "no stale driver: {found:?}"
    );
    assert_eq!(answer.json["partial"], true, "{}", answer.text);
    let covered = answer.json["radius_covered_m"].as_f64().unwrap();
    assert!(covered > 0.0 && covered < 10_000.0, "{}", answer.text);
    // Every fresh driver within the distance covered is in the answer.
    for (id, lat) in [("fresh-in-0", PARIS.0), ("fresh-in-1", PARIS.0 + 0.0005)] {
        let d = geodispatch::domain::haversine_m(
            geodispatch::domain::GeoPoint {
                lat: PARIS.0,
                lon: PARIS.1,
            },
            geodispatch::domain::GeoPoint {
                lat,
                lon: if id == "fresh-in-0" {
                    PARIS.1 + 0.0005
                } else {
                    PARIS.1
                },
            },
        );
        if d < covered {
            assert!(
                found.contains(&id.to_owned()),
                "{id} at {d} m: {}",
                answer.text
            );
        }
    }
    let (searches, read) = geosearch_reads(&app).await;
    assert!(searches > 1, "{searches} steps");
    assert!(
        read <= 60,
        "the steps read {read} members in all, more than the cap"
    );

    // The candidates answer carries the same flag.
    let ranked = app.candidates(PARIS, 5).await;
    assert_eq!(ranked.status, 200, "{}", ranked.text);
    assert_eq!(ranked.json["partial"], true, "{}", ranked.text);
    assert!(ranked.json["radius_covered_m"].as_f64().unwrap() > 0.0);
    assert!(
        ids(&ranked.json, "candidates")
            .iter()
            .all(|id| id.starts_with("fresh-"))
    );

    // Once swept, the same search is complete and finds the five fresh drivers.
    geodispatch::drivers::sweep_city(&app.context.store, &app.context.settings, "paris")
        .await
        .unwrap();
    let answer = app.nearby(PARIS, "&limit=5&radius_m=10000").await;
    assert_eq!(answer.json["partial"], false, "{}", answer.text);
    assert!(answer.json.get("radius_covered_m").is_none());
    assert_eq!(ids(&answer.json, "drivers").len(), 5, "{}", answer.text);
}

#[tokio::test]
async fn a_search_with_fresh_drivers_near_answers_completely_without_reading_the_stale_mass() {
    let app = spawn_app_with(|s| {
        s.sweep_interval_ms = 3_600_000;
        s.search_max_limit = 20;
        s.search_max_members = 60;
    })
    .await;
    put_stale_mass(&app, 300, (PARIS.0 + 0.05, PARIS.1), 1.0).await; // about 5.5 km north
    app.put_drivers_east_of(&["a", "b", "c"], PARIS).await;
    let answer = app.nearby(PARIS, "&limit=3").await;
    assert_eq!(answer.json["partial"], false, "{}", answer.text);
    assert_eq!(ids(&answer.json, "drivers"), ["a", "b", "c"]);
}

#[tokio::test]
async fn dispatch_with_only_a_partial_answer_assigns_no_driver_and_retries_later() {
    let app = spawn_app_with(|s| {
        s.sweep_interval_ms = 3_600_000;
        s.search_max_limit = 20;
        s.search_max_members = 40;
        s.dispatch_retry_ms = 60_000;
        s.offer_ttl_ms = 60_000;
    })
    .await;
    put_stale_mass(&app, 600, PARIS, 1.0).await;
    // One fresh driver 3 km north: within the dispatch radius, beyond what the cap lets a
    // search read through the stale mass.
    app.put_fleet(&[("fresh", PARIS.0 + 0.027, PARIS.1)]).await;
    let created = app.create_order_at("waits", PARIS).await;
    assert_eq!(created.status, 201, "{}", created.text);
    app.dispatch_order("waits")
        .await
        .assert_problem(409, "no-driver-available");
    assert_eq!(app.get("/v1/orders/waits").await.json["state"], "pending");
    assert_eq!(app.driver_status("fresh").await, "available");

    // Swept, the next attempt finds the driver.
    geodispatch::drivers::sweep_city(&app.context.store, &app.context.settings, "paris")
        .await
        .unwrap();
    let offered = app.dispatch_order("waits").await;
    assert_eq!(offered.status, 200, "{}", offered.text);
    assert_eq!(
        app.get("/v1/orders/waits").await.json["driver_id"],
        "fresh",
        "{}",
        offered.text
    );
}

/// The sweep calls Redis logged (EVALSHA with the city's sweep pace among its keys).
async fn sweep_calls(app: &TestApp) -> usize {
    let pace = app.context.store.keys().sweep_pace("paris");
    let mut conn = app.redis_conn().await;
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .iter()
        .filter(|e| {
            let redis::Value::Array(fields) = e else {
                return false;
            };
            let Some(redis::Value::Array(args)) = fields.get(3) else {
                return false;
            };
            args.iter()
                .any(|a| matches!(a, redis::Value::BulkString(b) if b == pace.as_bytes()))
        })
        .count()
}

#[tokio::test]
async fn a_sweep_call_stops_at_its_driver_cap_or_time_budget_and_the_sweeper_clears_everything() {
    // A cap of 7 drivers per call, no time limit to speak of, no pause.
    let app = spawn_app_with(|s| {
        s.sweep_interval_ms = 3_600_000;
        s.sweep_batch = 7;
        s.sweep_call_budget_us = 1_000_000;
        s.sweep_redis_share = 1.0;
    })
    .await;
    put_stale_mass(&app, 100, PARIS, 1.0).await;
    app.put_drivers_east_of(&["keeps"], PARIS).await;
    log_every_command(&app).await;
    let swept =
        geodispatch::drivers::sweep_city(&app.context.store, &app.context.settings, "paris")
            .await
            .unwrap();
    assert_eq!(swept, 100);
    let calls = sweep_calls(&app).await;
    assert!(
        calls >= 100usize.div_ceil(7),
        "{calls} calls for 100 drivers"
    );
    assert_eq!(
        app.geo_members("paris", "available", "car").await,
        ["keeps"],
        "only the fresh driver is left"
    );

    // A budget of 1 µs: each call finishes at most one bucket, then stops; the default share
    // paces the calls, and the pace key shows it.
    let app = spawn_app_with(|s| {
        s.sweep_interval_ms = 3_600_000;
        s.sweep_call_budget_us = 1;
    })
    .await;
    let stale = put_stale_mass(&app, 200, PARIS, 1.0).await;
    let buckets: std::collections::HashSet<u16> = stale
        .iter()
        .map(|id| geodispatch::drivers::driver_bucket(id))
        .collect();
    log_every_command(&app).await;
    let swept =
        geodispatch::drivers::sweep_city(&app.context.store, &app.context.settings, "paris")
            .await
            .unwrap();
    assert_eq!(swept, 200);
    let calls = sweep_calls(&app).await;
    assert!(
        calls >= buckets.len(),
        "{calls} calls for {} buckets",
        buckets.len()
    );
    assert!(
        app.geo_members("paris", "available", "car")
            .await
            .is_empty()
    );
    let mut conn = app.redis_conn().await;
    let pace: Option<i64> = redis::cmd("GET")
        .arg(app.context.store.keys().sweep_pace("paris"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(pace.is_some(), "the city's sweep pace is set");
    let mut open = app.clone_instance();
    open.client = crate::helpers::client_with(None);
    let metrics = open.get("/metrics").await;
    assert!(
        crate::helpers::metric_value(&metrics.text, "geodispatch_sweeper_redis_seconds_total ")
            > 0.0,
        "the sweeper's Redis time is counted"
    );
}
