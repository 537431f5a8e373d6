//! Ready times and batched matching on real Redis: `ready_at` is validated, stored and shown;
//! under `dispatch_policy = batched` a round assigns all due orders at least total distance
//! where one-at-a-time dispatch would not, waits for an order's ready time, counts attempts
//! for orders nobody can take, lets an order wait for a driver about to be free nearby, keeps
//! the pool in step with the orders' states, and sends idle drivers toward the pickups of
//! recent orders.

use std::time::Duration;

use geodispatch::config::Settings;
use geodispatch::domain::DispatchPolicy;
use serde_json::{Value, json};

use crate::helpers::{PARIS, now_ms, spawn_app_with, wait_order};

/// Batched settings with rounds every 50 ms and a fast, predictable travel-time estimate.
fn batched(s: &mut Settings) {
    s.dispatch_policy = DispatchPolicy::Batched;
    s.match_interval_ms = 50;
    s.timer_interval_ms = 20;
    s.dispatch_retry_ms = 100;
    s.offer_ttl_ms = 60_000;
    s.match_pickup_lead_ms = 0;
}

/// A point `m` metres east of `at`.
fn east(at: (f64, f64), m: f64) -> (f64, f64) {
    (at.0, at.1 + m / (111_320.0 * at.0.to_radians().cos()))
}

#[tokio::test]
async fn ready_at_is_stored_shown_and_must_not_precede_the_creation() {
    let app = spawn_app_with(|_| {}).await;
    let ready = now_ms() + 900_000;
    let a = app
        .create_order(
            json!({"order_id": "r1", "pickup": {"lat": PARIS.0, "lon": PARIS.1},
                             "ready_at": ready, "dispatch": "queued"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let shown = app.get("/v1/orders/r1").await.json;
    let parsed = time::OffsetDateTime::parse(
        shown["ready_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        (parsed.unix_timestamp_nanos() / 1_000_000) as i64,
        ready,
        "{shown}"
    );

    // RFC 3339 works too; absent, the order is ready when created.
    let a = app
        .create_order(
            json!({"order_id": "r2", "pickup": {"lat": PARIS.0, "lon": PARIS.1},
                             "ready_at": "2999-01-01T00:00:00Z", "dispatch": "queued"}),
        )
        .await;
    assert_eq!(a.json["ready_at"], "2999-01-01T00:00:00Z", "{}", a.text);
    let a = app
        .create_order(
            json!({"order_id": "r3", "pickup": {"lat": PARIS.0, "lon": PARIS.1},
                             "dispatch": "queued"}),
        )
        .await;
    assert_eq!(a.json["ready_at"], a.json["created_at"], "{}", a.text);

    // An hour before the creation: 422 naming the field, and no order.
    let a = app
        .create_order(
            json!({"order_id": "r4", "pickup": {"lat": PARIS.0, "lon": PARIS.1},
                             "ready_at": now_ms() - 3_600_000}),
        )
        .await;
    a.assert_problem(422, "validation-error");
    assert_eq!(a.problem_fields(), ["ready_at"]);
    app.get("/v1/orders/r4")
        .await
        .assert_problem(404, "not-found");
    let a = app
        .create_order(
            json!({"order_id": "r5", "pickup": {"lat": PARIS.0, "lon": PARIS.1},
                             "ready_at": "yesterday"}),
        )
        .await;
    a.assert_problem(422, "validation-error");
    assert_eq!(a.problem_fields(), ["ready_at"]);
}

#[tokio::test]
async fn a_round_assigns_all_due_orders_at_least_total_distance() {
    let app = spawn_app_with(|s| {
        batched(s);
        // Travel time negligible (a few ms): an order is due about one interval before it is
        // ready.
        s.match_speed_mps = 100_000.0;
    })
    .await;
    // Orders A at 0 m and B at 1,000 m; driver D1 at 500 m, D2 at −600 m. One at a time, A
    // takes its nearest (D1, 500 m) and B is left with D2 (1,600 m): 2,100 m. Together: A←D2,
    // B←D1, 1,100 m.
    let a_at = PARIS;
    let b_at = east(PARIS, 1_000.0);
    let d1 = east(PARIS, 500.0);
    let d2 = east(PARIS, -600.0);
    app.put_fleet(&[("d1", d1.0, d1.1), ("d2", d2.0, d2.1)])
        .await;
    let ready = now_ms() + 1_500;
    for (id, at) in [("A", a_at), ("B", b_at)] {
        let a = app
            .create_order(json!({"order_id": id, "pickup": {"lat": at.0, "lon": at.1},
                                 "ready_at": ready}))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        // Not dispatched in the request: it waits for a round.
        assert_eq!(a.json["state"], "pending", "{}", a.text);
    }
    let offered = |o: &Value| o["state"] == "offered";
    let a = wait_order(&app, "A", Duration::from_secs(10), offered).await;
    let b = wait_order(&app, "B", Duration::from_secs(10), offered).await;
    assert_eq!(
        (a["driver_id"].as_str(), b["driver_id"].as_str()),
        (Some("d2"), Some("d1"))
    );
    // Not before the ready time less one round.
    let offered_at = |o: &Value| {
        time::OffsetDateTime::parse(
            o["updated_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp_nanos() as i64
            / 1_000_000
    };
    assert!(offered_at(&a) >= ready - 200, "{a}");

    // Both left the pool.
    let pool = app.context.store.keys().match_pool("paris");
    let mut conn = app.redis_conn().await;
    let left: i64 = redis::cmd("ZCARD")
        .arg(&pool)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn due_orders_nobody_can_take_count_attempts_and_fail() {
    let app = spawn_app_with(|s| {
        batched(s);
        s.dispatch_max_attempts = 3;
    })
    .await;
    let a = app
        .create_order(json!({"order_id": "lonely", "pickup": {"lat": PARIS.0, "lon": PARIS.1}}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let failed = wait_order(&app, "lonely", Duration::from_secs(10), |o| {
        o["state"] == "failed"
    })
    .await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    let pool = app.context.store.keys().match_pool("paris");
    let mut conn = app.redis_conn().await;
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(&pool)
        .arg("lonely")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(score, None, "a failed order leaves the pool");
}

#[tokio::test]
async fn a_rejected_offer_returns_the_order_to_the_pool_and_another_driver_gets_it() {
    let app = spawn_app_with(batched).await;
    let d1 = east(PARIS, 100.0);
    app.put_fleet(&[("d1", d1.0, d1.1)]).await;
    app.create_order(json!({"order_id": "o", "pickup": {"lat": PARIS.0, "lon": PARIS.1}}))
        .await;
    let first = wait_order(&app, "o", Duration::from_secs(10), |o| {
        o["state"] == "offered"
    })
    .await;
    assert_eq!(first["driver_id"], "d1");
    let fence = first["fencing_token"].as_u64().unwrap();
    let a = app.answer_offer("o", "d1", fence, "reject").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let d2 = east(PARIS, 300.0);
    app.put_fleet(&[("d2", d2.0, d2.1)]).await;
    let second = wait_order(&app, "o", Duration::from_secs(10), |o| {
        o["state"] == "offered"
    })
    .await;
    assert_eq!(
        second["driver_id"], "d2",
        "the driver who rejected is excluded"
    );
    assert!(second["fencing_token"].as_u64().unwrap() > fence);

    // A cancelled pending order leaves the pool too.
    app.create_order(
        json!({"order_id": "c", "pickup": {"lat": PARIS.0, "lon": PARIS.1},
                            "ready_at": now_ms() + 3_600_000}),
    )
    .await;
    let pool = app.context.store.keys().match_pool("paris");
    let mut conn = app.redis_conn().await;
    let before: Option<f64> = redis::cmd("ZSCORE")
        .arg(&pool)
        .arg("c")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(before.is_some());
    let a = app.post_json("/v1/orders/c/cancel", &json!({})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let after: Option<f64> = redis::cmd("ZSCORE")
        .arg(&pool)
        .arg("c")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(after, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_matching_leader_is_replaced_by_another_instance() {
    use geodispatch::store::keys::Keys;
    use geodispatch_testkit::faults::Instance;

    let redis = crate::helpers::start_redis().await;
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let env: Vec<(String, String)> = [
        ("GEODISPATCH_REDIS_URL", redis.url()),
        ("GEODISPATCH_KEY_PREFIX", prefix.clone()),
        ("GEODISPATCH_AUTH_ENABLED", "false".into()),
        ("GEODISPATCH_RATE_LIMITS_ENABLED", "false".into()),
        ("GEODISPATCH_DISPATCH_POLICY", "batched".into()),
        ("GEODISPATCH_MATCH_INTERVAL_MS", "50".into()),
        ("GEODISPATCH_MATCH_LEASE_TTL_MS", "1000".into()),
        ("GEODISPATCH_OFFER_TTL_MS", "60000".into()),
        ("RUST_LOG", "error".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_geodispatch"));
    let lease = Keys::new(&prefix).match_lease("paris");
    let conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let holder = |mut conn: redis::aio::MultiplexedConnection, key: String| async move {
        redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(&mut conn)
            .await
            .unwrap()
    };

    // The first instance takes the lease; the second starts while it holds it.
    let mut first = Instance::start(&binary, env.clone()).await.unwrap();
    let mut first_token = None;
    for _ in 0..200 {
        first_token = holder(conn.clone(), lease.clone()).await;
        if first_token.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first_token = first_token.expect("the first instance took the matching lease");
    let second = Instance::start(&binary, env).await.unwrap();
    assert_eq!(
        holder(conn.clone(), lease.clone()).await.as_deref(),
        Some(first_token.as_str()),
        "the second instance waits while the lease is held"
    );

    // Killed, the leader's lease expires and the second instance runs the rounds.
    first.kill().await;
    let base = format!("http://{}", second.addr());
    let client = reqwest::Client::new();
    let d = east(PARIS, 100.0);
    let a = client
        .post(format!("{base}/v1/locations/batch"))
        .json(
            &json!({"positions": [{"driver_id": "d1", "lat": d.0, "lon": d.1,
                                     "recorded_at": now_ms(), "status": "available"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    let a = client
        .post(format!("{base}/v1/orders"))
        .json(&json!({"order_id": "after-kill", "pickup": {"lat": PARIS.0, "lon": PARIS.1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 201);
    let mut order = Value::Null;
    for _ in 0..400 {
        order = client
            .get(format!("{base}/v1/orders/after-kill"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if order["state"] == "offered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(order["state"], "offered", "{order}");
    assert_eq!(order["driver_id"], "d1", "{order}");
    let now_holder = holder(conn.clone(), lease.clone()).await;
    assert!(
        now_holder.is_some() && now_holder.as_deref() != Some(first_token.as_str()),
        "{now_holder:?}"
    );
    drop(second);
}

#[tokio::test]
async fn an_order_waits_for_a_driver_about_to_be_free_nearby_rather_than_take_a_far_one() {
    let app = spawn_app_with(|s| {
        batched(s);
        // Rounds run when the test calls them (the loop's first round finds nothing), so a
        // round's wait for a driver to be noticed free is an hour; travel at 0.1 m/s.
        s.match_interval_ms = 3_600_000;
        s.match_speed_mps = 0.1;
        s.match_dropoff_service_ms = 1_000;
        s.match_busy_horizon_ms = 2_000_000;
    })
    .await;
    let dispatcher = &app.context.dispatcher;
    let soon = app.context.store.keys().match_soon_free("paris");
    let mut conn = app.redis_conn().await;
    let near = east(PARIS, 100.0);
    let drop = east(PARIS, 200.0);
    let far = east(PARIS, 4_000.0);

    // "near" carries an order to `drop`, 100 m away (dispatched at once by an operator).
    app.put_fleet(&[("near", near.0, near.1)]).await;
    let a = app
        .create_order(
            json!({"order_id": "carry", "pickup": {"lat": near.0, "lon": near.1},
                             "dropoff": {"lat": drop.0, "lon": drop.1}}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let a = app.dispatch_order("carry").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let carry = wait_order(&app, "carry", Duration::from_secs(10), |o| {
        o["state"] == "offered"
    })
    .await;
    let fence = carry["fencing_token"].as_u64().unwrap();
    for step in ["accept", "pickup"] {
        let a = app.answer_offer("carry", "near", fence, step).await;
        assert_eq!(a.status, 200, "{step}: {}", a.text);
    }
    let at: Vec<Option<(f64, f64)>> = redis::cmd("GEOPOS")
        .arg(&soon)
        .arg("near")
        .query_async(&mut conn)
        .await
        .unwrap();
    let (lon, lat) = at[0].expect("a picked-up batched order puts its driver in the soon-free set");
    assert!((lat - drop.0).abs() < 1e-4 && (lon - drop.1).abs() < 1e-4);

    // A new order next to the drop-off: "far" is free now, 40,000 s from the pickup; "near"
    // would be there in 6,601 s (1,000 s to its drop-off, 1 s there, a round, 2,000 s back).
    // The order waits.
    app.put_fleet(&[("far", far.0, far.1)]).await;
    let a = app
        .create_order(json!({"order_id": "next", "pickup": {"lat": PARIS.0, "lon": PARIS.1}}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let round = dispatcher.match_round("paris").await.unwrap();
    assert_eq!(
        (round.due, round.waiting, round.offered),
        (1, 1, 0),
        "{round:?}"
    );
    let next = app.get("/v1/orders/next").await.json;
    assert_eq!(next["state"], "pending", "{next}");
    assert_eq!(
        next["attempts"], 0,
        "waiting for a driver is not a failed attempt: {next}"
    );

    // Delivered, "near" is free at the drop-off and the next round offers it the order.
    let a = app.answer_offer("carry", "near", fence, "deliver").await;
    assert_eq!(a.status, 200, "{}", a.text);
    let at: Vec<Option<(f64, f64)>> = redis::cmd("GEOPOS")
        .arg(&soon)
        .arg("near")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(at, vec![None], "a freed driver leaves the soon-free set");
    let round = dispatcher.match_round("paris").await.unwrap();
    assert_eq!((round.waiting, round.offered), (0, 1), "{round:?}");
    let next = app.get("/v1/orders/next").await.json;
    assert_eq!(
        (next["state"].as_str(), next["driver_id"].as_str()),
        (Some("offered"), Some("near")),
        "{next}"
    );
}

#[tokio::test]
async fn idle_drivers_are_sent_toward_the_pickups_of_recent_orders_that_lack_one() {
    let app = spawn_app_with(|s| {
        batched(s);
        // Rounds run when the test calls them; orders ready in two hours are in the pool and
        // not due.
        s.match_interval_ms = 3_600_000;
        s.match_lookahead_ms = 3 * 3_600_000;
        s.reposition_idle_drivers = true;
        s.reposition_cover_m = 300.0;
        s.reposition_max_m = 3_000.0;
    })
    .await;
    let dispatcher = &app.context.dispatcher;
    let keys = app.context.store.keys();
    let spot_b = east(PARIS, 2_000.0);
    // "at-a" waits 100 m from spot A; "near-b" is 700 m past spot B; "far" is 5 km from both.
    let at_a = east(PARIS, 100.0);
    let near_b = east(PARIS, 2_700.0);
    let far = east(PARIS, -5_000.0);
    app.put_fleet(&[
        ("at-a", at_a.0, at_a.1),
        ("near-b", near_b.0, near_b.1),
        ("far", far.0, far.1),
    ])
    .await;
    let ready = now_ms() + 2 * 3_600_000;
    for (id, at) in [("a1", PARIS), ("a2", PARIS), ("b1", spot_b)] {
        let a = app
            .create_order(json!({"order_id": id, "pickup": {"lat": at.0, "lon": at.1},
                                 "ready_at": ready, "dispatch": "queued"}))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
    }

    // Spot A (2 orders) and spot B (1) each ask for one driver (an hour's window, a quarter
    // of an hour ahead): "at-a" covers A where it is, "near-b" is sent to B, "far" is beyond
    // reach.
    let round = dispatcher.match_round("paris").await.unwrap();
    assert_eq!((round.due, round.repositioned), (0, 1), "{round:?}");
    let history = geodispatch::events::read_history(&app.context.store, "paris")
        .await
        .unwrap();
    let sent: Vec<_> = history
        .iter()
        .filter(|e| e.kind == "driver.reposition")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].driver_id, "near-b");
    assert_eq!(sent[0].order_id, "");
    let (lat, lon) = (sent[0].lat.unwrap(), sent[0].lon.unwrap());
    assert!(
        (lat - spot_b.0).abs() < 1e-6 && (lon - spot_b.1).abs() < 1e-6,
        "sent to {lat},{lon}"
    );
    let mut conn = app.redis_conn().await;
    let held: Vec<String> = redis::cmd("HKEYS")
        .arg(keys.match_repositions("paris"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, ["near-b"]);
    // Sent drivers stay available: an instruction is advice.
    let d = app.get("/v1/drivers/near-b").await.json;
    assert_eq!(d["status"], "available", "{d}");

    // On its way, "near-b" fills spot B: the next round sends nobody.
    let round = dispatcher.match_round("paris").await.unwrap();
    assert_eq!(round.repositioned, 0, "{round:?}");

    // Off: nobody is sent, whatever the demand.
    let off = spawn_app_with(|s| {
        batched(s);
        s.match_interval_ms = 3_600_000;
        s.match_lookahead_ms = 3 * 3_600_000;
    })
    .await;
    off.put_fleet(&[("near-b", near_b.0, near_b.1)]).await;
    let a = off
        .create_order(
            json!({"order_id": "b1", "pickup": {"lat": spot_b.0, "lon": spot_b.1},
                             "ready_at": ready, "dispatch": "queued"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let round = off.context.dispatcher.match_round("paris").await.unwrap();
    assert_eq!(round.repositioned, 0, "{round:?}");
}
