//! Orders and locked dispatch on real Redis: the order life, idempotency, exactly one offer
//! under concurrency, exclusion after reject and expiry, fencing against late workers, worker
//! crash recovery, races and bad input, events over SSE and Pub/Sub.

use std::time::{Duration, Instant};

use geodispatch::dispatch::{Claim, DispatchResult};
use geodispatch::events::{check_invariants, read_history};
use serde_json::{Value, json};

use crate::helpers::{Answer, Instance, PARIS, spawn_app_with, wait_order};

/// Test settings: fast timers, offers that do not expire unless a test wants them to.
fn fast(s: &mut geodispatch::config::Settings) {
    s.timer_interval_ms = 20;
    s.dispatch_retry_ms = 200;
    s.offer_ttl_ms = 60_000;
}

#[tokio::test]
async fn an_order_dispatched_now_goes_to_the_best_driver_and_runs_to_delivery() {
    let app = spawn_app_with(fast).await;
    app.put_drivers_east_of(&["near", "far"], PARIS).await;
    // The driver has no score yet: its first delivery starts from the unscored default.
    let score_before: f64 = app.context.settings.ranking_unscored_score;

    let created = app.create_order(json!({"order_id": "o-1", "pickup": {"lat": PARIS.0, "lon": PARIS.1}, "dropoff": {"lat": 48.86, "lon": 2.34}}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["state"], "offered");
    assert_eq!(
        created.json["driver_id"], "near",
        "nearest wins when scores are equal"
    );
    assert_eq!(created.json["city"], "paris");
    let fence = created.json["fencing_token"].as_u64().unwrap();
    assert!(fence > 0);
    assert!(created.json["distance_m"].as_f64().unwrap() > 50.0);
    assert_eq!(app.driver_status("near").await, "busy");
    assert!(app.geo_members("paris", "available", "car").await == ["far"]);

    for (op, state) in [
        ("accept", "accepted"),
        ("pickup", "picked_up"),
        ("deliver", "delivered"),
    ] {
        let a = app.answer_offer("o-1", "near", fence, op).await;
        assert_eq!(a.status, 200, "{op}: {}", a.text);
        assert_eq!(a.json["state"], state);
    }
    assert_eq!(app.driver_status("near").await, "available");
    assert_eq!(
        app.geo_members("paris", "available", "car").await,
        ["far", "near"]
    );
    let score = app.get("/v1/drivers/near/rank").await;
    assert_eq!(score.status, 200, "{}", score.text);
    let after = score.json["score"].as_f64().unwrap();
    assert!((after - score_before - app.context.settings.score_per_delivery).abs() < 1e-9);

    let history = read_history(&app.context.store, "paris").await.unwrap();
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["created", "offered", "accepted", "picked_up", "delivered"]
    );
    assert!(check_invariants(&history).ok());
}

#[tokio::test]
async fn the_same_idempotency_key_replays_the_answer_and_another_body_is_refused() {
    let app = spawn_app_with(fast).await;
    app.put_drivers_east_of(&["d1"], PARIS).await;
    let body = json!({"pickup": {"lat": PARIS.0, "lon": PARIS.1}, "vehicle_type": "car"});
    let send = |body: Value| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(format!("{}/v1/orders", app.address))
                .header("idempotency-key", "abc-123")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s1, first) = send(body.clone()).await;
    let (s2, again) = send(body.clone()).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, again, "the same answer, not a second order");
    let (s3, other) = send(json!({"pickup": {"lat": PARIS.0, "lon": 2.36}})).await;
    assert_eq!(s3, 422, "{other}");
    assert!(
        other["type"]
            .as_str()
            .unwrap()
            .ends_with("validation-error")
    );
    assert_eq!(other["errors"][0]["field"], "Idempotency-Key");
    let history = read_history(&app.context.store, "paris").await.unwrap();
    assert_eq!(history.iter().filter(|e| e.kind == "created").count(), 1);
}

#[tokio::test]
async fn thirty_two_concurrent_dispatches_of_one_order_make_exactly_one_offer() {
    let app = spawn_app_with(fast).await;
    let ids: Vec<String> = (0..8).map(|i| format!("d{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    app.put_drivers_east_of(&refs, PARIS).await;
    let created = app.queue_order("race", PARIS).await;
    assert_eq!(created.status, 201);
    // Queue workers run too (2 of them): they compete with the 32 requests.
    let calls = (0..32).map(|_| app.dispatch_order("race"));
    let answers = futures_util::future::join_all(calls).await;
    let ok: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    for a in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(a.status, 409, "{}", a.text);
        let t = a.json["type"].as_str().unwrap();
        assert!(
            t.ends_with("dispatch-in-progress") || t.ends_with("order-not-pending"),
            "{t}"
        );
    }
    assert!(ok.len() <= 1, "{} offers", ok.len());
    let order = wait_order(&app, "race", Duration::from_secs(5), |o| {
        o["state"] == "offered"
    })
    .await;
    if let Some(a) = ok.first() {
        let r: DispatchResult = a.body();
        assert_eq!(order["driver_id"].as_str(), Some(r.driver_id.as_str()));
    }
    let history = read_history(&app.context.store, "paris").await.unwrap();
    assert_eq!(history.iter().filter(|e| e.kind == "offered").count(), 1);
    let busy = app.geo_members("paris", "busy", "car").await;
    assert_eq!(busy.len(), 1, "exactly one driver taken: {busy:?}");
}

#[tokio::test]
async fn a_dispatch_without_drivers_is_409_and_the_order_stays_pending() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_retry_ms = 60_000;
    })
    .await;
    app.put_drivers_east_of(&["far-away"], (48.95, 2.35)).await; // about 10 km north: beyond 5 km
    let created = app.create_order_at("lonely", PARIS).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.json["state"], "pending");
    let a = app.dispatch_order("lonely").await;
    a.assert_problem(409, "no-driver-available");
    assert_eq!(app.get("/v1/orders/lonely").await.json["state"], "pending");
    assert_eq!(app.driver_status("far-away").await, "available");
}

#[tokio::test]
async fn a_rejected_order_goes_to_another_driver_and_never_back() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_retry_ms = 60_000;
    })
    .await;
    app.put_drivers_east_of(&["first", "second"], PARIS).await;
    let o = app.create_order_at("rej", PARIS).await;
    assert_eq!(o.json["driver_id"], "first");
    let fence = o.json["fencing_token"].as_u64().unwrap();
    let r = app.answer_offer("rej", "first", fence, "reject").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.driver_status("first").await, "available");
    // Re-queued at once; a queue worker offers it to the only other driver.
    let again = wait_order(&app, "rej", Duration::from_secs(5), |o| {
        o["state"] == "offered"
    })
    .await;
    assert_eq!(again["driver_id"], "second");
    assert!(again["fencing_token"].as_u64().unwrap() > fence);
    // The first driver's old token is now stale.
    app.answer_offer("rej", "first", fence, "accept")
        .await
        .assert_problem(409, "stale-fencing-token");
    // The second rejects too: nobody is left who has not declined.
    let f2 = again["fencing_token"].as_u64().unwrap();
    assert_eq!(
        app.answer_offer("rej", "second", f2, "reject").await.status,
        200
    );
    // The worker that picks the re-queued order up finds nobody and counts an attempt.
    wait_order(&app, "rej", Duration::from_secs(5), |o| o["attempts"] == 1).await;
    app.dispatch_order("rej")
        .await
        .assert_problem(409, "no-driver-available");
}

#[tokio::test]
async fn an_unanswered_offer_expires_frees_the_driver_and_is_offered_again() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.offer_ttl_ms = 300;
    })
    .await;
    app.put_drivers_east_of(&["sleepy", "awake"], PARIS).await;
    let o = app.create_order_at("exp", PARIS).await;
    assert_eq!(o.json["driver_id"], "sleepy");
    let fence = o.json["fencing_token"].as_u64().unwrap();
    let again = wait_order(&app, "exp", Duration::from_secs(5), |o| {
        o["driver_id"] == "awake"
    })
    .await;
    assert_eq!(again["state"], "offered");
    assert_eq!(app.driver_status("sleepy").await, "available");
    app.answer_offer("exp", "sleepy", fence, "accept")
        .await
        .assert_problem(409, "stale-fencing-token");
    let kinds: Vec<String> = read_history(&app.context.store, "paris")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds[..4], ["created", "offered", "expired", "offered"]);
}

#[tokio::test]
async fn a_worker_paused_past_its_lock_ttl_has_its_late_claim_rejected() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.lock_ttl_ms = 200;
        s.dispatch_workers = 0;
        s.dispatch_retry_ms = 60_000;
    })
    .await;
    app.put_drivers_east_of(&["a", "b"], PARIS).await;
    let created = app.queue_order("slow", PARIS).await;
    assert_eq!(created.status, 201);
    let d = &app.context.dispatcher;
    // The slow worker takes the lock and ranks, then stalls (no watchdog) past the TTL.
    let stale = d
        .lock_order("paris", "slow")
        .await
        .unwrap()
        .expect("lock is free");
    let ranked = d
        .candidates(
            "paris",
            geodispatch::domain::GeoPoint {
                lat: PARIS.0,
                lon: PARIS.1,
            },
            None,
            &[],
        )
        .await
        .unwrap();
    let key = stale.key.clone();
    let mut conn = app.redis_conn().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis::cmd("EXISTS")
        .arg(&key)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap()
        == 1
    {
        assert!(Instant::now() < deadline, "lock never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Meanwhile another dispatch takes over and offers the order.
    let fresh = app.dispatch_order("slow").await;
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    let fresh: DispatchResult = fresh.body();
    assert!(fresh.fencing_token > stale.fencing);
    let before = app.snapshot().await;
    // The slow worker wakes up and claims with its old lease: refused, nothing written.
    let late = d
        .claim("paris", "slow", &stale, &ranked, false)
        .await
        .unwrap();
    assert_eq!(late, Claim::LockLost);
    assert_eq!(app.snapshot().await, before);
    assert_eq!(
        app.get("/v1/orders/slow").await.json["driver_id"],
        fresh.driver_id.as_str()
    );
    // The order goes back to pending (the driver declines). Even a worker that holds the lock
    // again cannot claim with a fencing number older than the order's last offer.
    let declined = app
        .answer_offer("slow", &fresh.driver_id, fresh.fencing_token, "reject")
        .await;
    assert_eq!(declined.status, 200, "{}", declined.text);
    let mut older = d
        .lock_order("paris", "slow")
        .await
        .unwrap()
        .expect("pending and unlocked");
    older.fencing = stale.fencing;
    let unlocked = |snap: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        snap.into_iter()
            .filter(|(k, _)| !k.contains(":lock:"))
            .collect()
    };
    let before = unlocked(app.snapshot().await);
    assert_eq!(
        d.claim("paris", "slow", &older, &ranked, false)
            .await
            .unwrap(),
        Claim::StaleFence
    );
    assert_eq!(
        unlocked(app.snapshot().await),
        before,
        "only the lock was released"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_dispatch_leaves_its_order_to_another_worker() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_workers = 0;
        s.dispatch_retry_ms = 60_000; // only XAUTOCLAIM can save the order here
        s.lock_ttl_ms = 300;
        s.queue_claim_idle_ms = 400;
    })
    .await;
    app.put_drivers_east_of(&["d1"], PARIS).await;
    let created = app.queue_order("orphan", PARIS).await;
    assert_eq!(created.status, 201);
    // A worker reads the entry and takes the lock, then dies (no ack, no renewal, no release).
    let d = &app.context.dispatcher;
    geodispatch::dispatch::workers::ensure_groups(d)
        .await
        .unwrap();
    let mut conn = app.redis_conn().await;
    let queue = app.context.store.keys().dispatch_queue("paris");
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(geodispatch::store::keys::DISPATCH_GROUP)
        .arg("crashed-worker")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&queue)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(read.keys[0].ids.len(), 1);
    let dead = d.lock_order("paris", "orphan").await.unwrap().unwrap();
    // Another instance with workers starts; it must take the entry over and dispatch it.
    let rescuer = app.peer(|s| s.dispatch_workers = 2);
    let order = wait_order(&rescuer, "orphan", Duration::from_secs(10), |o| {
        o["state"] == "offered"
    })
    .await;
    assert_eq!(order["driver_id"], "d1");
    assert!(order["fencing_token"].as_u64().unwrap() > dead.fencing);
    let pending: (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&queue)
        .arg(geodispatch::store::keys::DISPATCH_GROUP)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending.0, 0, "the entry was taken over and acknowledged");
    rescuer.stop().await;
}

#[tokio::test]
async fn races_and_wrong_answers_get_precise_problems_and_change_nothing() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_retry_ms = 60_000;
    })
    .await;
    app.put_drivers_east_of(&["x", "y"], PARIS).await;
    let o = app.create_order_at("r1", PARIS).await;
    let (driver, fence) = (
        o.json["driver_id"].as_str().unwrap().to_owned(),
        o.json["fencing_token"].as_u64().unwrap(),
    );
    let other = if driver == "x" { "y" } else { "x" };
    let cancelled = app.queue_order("gone", PARIS).await;
    assert_eq!(cancelled.status, 201);
    let c = app.post_json("/v1/orders/gone/cancel", &json!({})).await;
    assert_eq!(c.status, 200, "{}", c.text);

    let before = app.snapshot().await;
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "/v1/orders/gone/dispatch",
            json!({}),
            409,
            "order-not-pending",
            "dispatching a cancelled order",
        ),
        (
            "/v1/orders/r1/dispatch",
            json!({}),
            409,
            "order-not-pending",
            "dispatching an offered order",
        ),
        (
            "/v1/orders/r1/accept",
            json!({"driver_id": other, "fencing_token": fence}),
            409,
            "stale-fencing-token",
            "accepting another driver's offer",
        ),
        (
            "/v1/orders/r1/accept",
            json!({"driver_id": driver, "fencing_token": fence + 100}),
            409,
            "stale-fencing-token",
            "a fencing token never issued",
        ),
        (
            "/v1/orders/r1/pickup",
            json!({"driver_id": driver, "fencing_token": fence}),
            409,
            "invalid-transition",
            "pickup before accept",
        ),
        (
            "/v1/orders/gone/cancel",
            json!({}),
            409,
            "invalid-transition",
            "cancelling twice",
        ),
        (
            "/v1/orders/nope/accept",
            json!({"driver_id": driver, "fencing_token": fence}),
            404,
            "not-found",
            "an unknown order",
        ),
        (
            "/v1/orders/nope/dispatch",
            json!({}),
            404,
            "not-found",
            "dispatching an unknown order",
        ),
        (
            "/v1/orders/bad:id/dispatch",
            json!({}),
            422,
            "validation-error",
            "an id that would forge a key",
        ),
        (
            "/v1/orders/r1/accept",
            json!({"driver_id": "a b", "fencing_token": fence}),
            422,
            "validation-error",
            "a bad driver id",
        ),
        (
            "/v1/orders/r1/accept",
            json!({"driver_id": driver}),
            422,
            "validation-error",
            "no fencing token",
        ),
        (
            "/v1/orders/r1/accept",
            json!({"driver_id": driver, "fencing_token": -1}),
            422,
            "validation-error",
            "a negative token",
        ),
    ];
    for (path, body, status, code, why) in cases {
        let a = app.post_json(path, &body).await;
        assert_eq!(a.status, status, "{why}: {}", a.text);
        a.assert_problem(status, code);
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "no refused request changed anything"
    );

    // Accepting twice: the second is a repeat, answered 200, and changes nothing.
    assert_eq!(
        app.answer_offer("r1", &driver, fence, "accept")
            .await
            .status,
        200
    );
    let before = app.snapshot().await;
    let again = app.answer_offer("r1", &driver, fence, "accept").await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(app.snapshot().await, before);
    // Delivered orders cannot be dispatched or cancelled.
    assert_eq!(
        app.answer_offer("r1", &driver, fence, "pickup")
            .await
            .status,
        200
    );
    assert_eq!(
        app.answer_offer("r1", &driver, fence, "deliver")
            .await
            .status,
        200
    );
    app.dispatch_order("r1")
        .await
        .assert_problem(409, "order-not-pending");
    app.post_json("/v1/orders/r1/cancel", &json!({}))
        .await
        .assert_problem(409, "invalid-transition");
}

#[tokio::test]
async fn cancelling_during_a_dispatch_wins_over_the_claim() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_workers = 0;
    })
    .await;
    app.put_drivers_east_of(&["z"], PARIS).await;
    app.queue_order("c1", PARIS).await;
    let d = &app.context.dispatcher;
    let lease = d.lock_order("paris", "c1").await.unwrap().unwrap();
    let ranked = d
        .candidates(
            "paris",
            geodispatch::domain::GeoPoint {
                lat: PARIS.0,
                lon: PARIS.1,
            },
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ranked.len(), 1);
    assert_eq!(
        app.post_json("/v1/orders/c1/cancel", &json!({}))
            .await
            .status,
        200
    );
    let claim = d
        .claim("paris", "c1", &lease, &ranked, false)
        .await
        .unwrap();
    assert_eq!(claim, Claim::NotPending("cancelled".to_owned()));
    assert_eq!(app.driver_status("z").await, "available");
}

#[tokio::test]
async fn bad_order_input_is_rejected_and_writes_nothing() {
    let app = spawn_app_with(fast).await;
    let before = app.snapshot().await;
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"pickup": {"lat": 91.0, "lon": 2.35}}),
            422,
            "pickup.lat",
            "latitude out of range",
        ),
        (
            json!({"pickup": {"lat": 85.06, "lon": 2.35}}),
            422,
            "pickup.lat",
            "beyond Redis' GEO limit",
        ),
        (
            json!({"pickup": {"lat": 48.85, "lon": 181.0}}),
            422,
            "pickup.lon",
            "longitude out of range",
        ),
        (
            json!({"pickup": {"lat": 48.85, "lon": 2.35}, "dropoff": {"lat": -91.0, "lon": 2.35}}),
            422,
            "dropoff.lat",
            "bad dropoff",
        ),
        (
            json!({"pickup": {"lat": "48.85", "lon": 2.35}}),
            422,
            "pickup.lat",
            "a string",
        ),
        (
            json!({"pickup": {"lat": 48.85}}),
            422,
            "pickup.lon",
            "missing field",
        ),
        (
            json!({"pickup": {"lat": 48.85, "lon": 2.35}, "tip": 5}),
            422,
            "tip",
            "unknown field",
        ),
        (
            json!({"pickup": {"lat": 48.85, "lon": 2.35}, "dispatch": "later"}),
            422,
            "dispatch",
            "unknown mode",
        ),
        (
            json!({"pickup": {"lat": 48.85, "lon": 2.35}, "order_id": "no spaces"}),
            422,
            "order_id",
            "bad id",
        ),
        (
            json!({"pickup": {"lat": 0.0, "lon": 0.0}}),
            422,
            "lat",
            "outside every city",
        ),
    ];
    for (body, status, field, why) in cases {
        let a = app.create_order(body).await;
        assert_eq!(a.status, status, "{why}: {}", a.text);
        assert!(
            a.problem_fields().iter().any(|f| f == field),
            "{why}: {}",
            a.text
        );
    }
    let a = app
        .send_raw(
            reqwest::Method::POST,
            "/v1/orders",
            "application/json",
            b"{\"pickup\": {".to_vec(),
        )
        .await;
    a.assert_problem(400, "malformed-json");
    assert_eq!(app.snapshot().await, before);
    // A taken id is 409 and changes nothing.
    assert_eq!(app.create_order_at("dup", PARIS).await.status, 201);
    let before = app.snapshot().await;
    app.create_order_at("dup", PARIS)
        .await
        .assert_problem(409, "order-exists");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn a_queued_order_without_drivers_fails_after_the_configured_attempts() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_retry_ms = 50;
        s.dispatch_max_attempts = 3;
    })
    .await;
    let o = app.queue_order("nobody", PARIS).await;
    assert_eq!(o.status, 201);
    let failed = wait_order(&app, "nobody", Duration::from_secs(10), |o| {
        o["state"] == "failed"
    })
    .await;
    assert_eq!(failed["attempts"], 3);
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("3 attempts")
    );
    let history = read_history(&app.context.store, "paris").await.unwrap();
    assert_eq!(history.last().unwrap().kind, "failed");
    assert_eq!(check_invariants(&history).terminal.get("failed"), Some(&1));
}

#[tokio::test]
async fn events_stream_as_sse_resume_after_last_event_id_and_reach_the_driver_channel() {
    let app = spawn_app_with(fast).await;
    app.put_drivers_east_of(&["ev"], PARIS).await;
    let client = redis::Client::open(app.redis_url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channel = format!("{}ev", app.context.store.keys().driver_channel_prefix());
    pubsub.subscribe(&channel).await.unwrap();

    let o = app.create_order_at("e1", PARIS).await;
    assert_eq!(o.json["state"], "offered");
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut pubsub.on_message()),
    )
    .await
    .expect("an offer on the driver channel")
    .unwrap();
    let payload: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(payload["type"], "offered");
    assert_eq!(payload["order_id"], "e1");

    let history = read_history(&app.context.store, "paris").await.unwrap();
    assert_eq!(history.len(), 2);
    // Resume after the first event: the next frame is the offer.
    let mut response = app
        .client
        .get(format!("{}/v1/events?city=paris", app.address))
        .header("last-event-id", &history[0].id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    assert!(
        text.starts_with(&format!("id: {}\nevent: offered\ndata: ", history[1].id)),
        "{text}"
    );
    assert!(!text.contains("event: created"));
    // A live event arrives on the open stream.
    let f = o.json["fencing_token"].as_u64().unwrap();
    assert_eq!(app.answer_offer("e1", "ev", f, "accept").await.status, 200);
    let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("event: accepted"));
    app.get("/v1/events?city=atlantis")
        .await
        .assert_problem(404, "not-found");
    let bad = app
        .client
        .get(format!("{}/v1/events?city=paris", app.address))
        .header("last-event-id", "$")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn dispatch_ranks_like_the_candidates_endpoint_and_a_better_score_beats_a_shorter_trip() {
    let app = spawn_app_with(fast).await;
    app.put_drivers_east_of(&["close", "star"], PARIS).await;
    for (id, score) in [("close", 1.0), ("star", 5.0)] {
        app.set_score(id, score).await;
    }
    let ranked = app.candidates(PARIS, 2).await;
    assert_eq!(ranked.json["candidates"][0]["driver_id"], "star");
    let o = app.create_order_at("rank", PARIS).await;
    assert_eq!(o.json["driver_id"], "star", "{}", o.text);
    let top = &ranked.json["candidates"][0];
    for field in ["distance_m", "driver_score", "composite"] {
        let (a, b) = (
            o.json[field].as_f64().unwrap(),
            top[field].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-6,
            "{field}: dispatch {a} vs candidates {b}"
        );
    }
}

#[tokio::test]
async fn dispatch_counts_an_unscored_driver_like_the_candidates_endpoint() {
    let app = spawn_app_with(fast).await;
    app.put_drivers_east_of(&["new"], PARIS).await;
    app.put_drivers_east_of(&["rated"], (PARIS.0 + 3_000.0 / 111_200.0, PARIS.1))
        .await;
    app.set_score("rated", 5.0).await;
    let ranked = app.candidates(PARIS, 2).await;
    assert_eq!(
        ranked.json["candidates"][0]["driver_id"], "new",
        "{}",
        ranked.text
    );
    let o = app.create_order_at("fresh", PARIS).await;
    assert_eq!(o.json["driver_id"], "new", "{}", o.text);
    let top = &ranked.json["candidates"][0];
    for field in ["distance_m", "driver_score", "composite"] {
        let (a, b) = (
            o.json[field].as_f64().unwrap(),
            top[field].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-6,
            "{field}: dispatch {a} vs candidates {b}"
        );
    }
}
#[tokio::test]
async fn a_busy_driver_cannot_be_deleted_and_a_picked_up_order_can_still_be_cancelled() {
    let app = spawn_app_with(fast).await;
    app.put_drivers_east_of(&["held"], PARIS).await;
    let o = app.create_order_at("pk", PARIS).await;
    let fence = o.json["fencing_token"].as_u64().unwrap();
    for op in ["accept", "pickup"] {
        assert_eq!(app.answer_offer("pk", "held", fence, op).await.status, 200);
    }
    let before = app.snapshot().await;
    app.delete("/v1/drivers/held")
        .await
        .assert_problem(409, "driver-busy");
    assert_eq!(app.snapshot().await, before, "nothing deleted");
    let c = app.post_json("/v1/orders/pk/cancel", &json!({})).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.json["state"], "cancelled");
    assert_eq!(app.driver_status("held").await, "available");
    assert_eq!(app.delete("/v1/drivers/held").await.status, 204);
}

/// An order `id` offered to the nearest of `drivers` (placed east of Paris' centre); returns
/// the driver and the fencing token.
async fn offered(app: &Instance, id: &str, drivers: &[&str]) -> (String, u64) {
    app.put_drivers_east_of(drivers, PARIS).await;
    let o = app.create_order_at(id, PARIS).await;
    assert_eq!(o.status, 201, "{}", o.text);
    assert_eq!(o.json["state"], "offered", "{}", o.text);
    (
        o.json["driver_id"].as_str().unwrap().to_owned(),
        o.json["fencing_token"].as_u64().unwrap(),
    )
}

/// How many events of `kind` the city's event stream holds for order `id`.
async fn events_of(app: &Instance, id: &str, kind: &str) -> usize {
    read_history(&app.context.store, "paris")
        .await
        .unwrap()
        .iter()
        .filter(|e| e.order_id == id && e.kind == kind)
        .count()
}

#[tokio::test]
async fn an_accept_sent_twice_with_the_same_token_is_answered_200_twice_and_applied_once() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_retry_ms = 60_000;
    })
    .await;
    let (driver, fence) = offered(&app, "acc2", &["d1", "d2"]).await;

    let first = app.answer_offer("acc2", &driver, fence, "accept").await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json["state"], "accepted");
    let before = app.snapshot().await;
    // The phone never saw the first answer and sends the same one again.
    let again = app.answer_offer("acc2", &driver, fence, "accept").await;

    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json, first.json, "the order as it is, unchanged");
    assert_eq!(
        app.snapshot().await,
        before,
        "a repeated answer writes nothing: no event, no timer, no driver change"
    );
    assert_eq!(events_of(&app, "acc2", "accepted").await, 1);
    assert_eq!(app.driver_status(&driver).await, "busy");
}

#[tokio::test]
async fn a_delivery_sent_twice_is_answered_200_twice_and_scores_the_driver_once() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_retry_ms = 60_000;
    })
    .await;
    let (driver, fence) = offered(&app, "dlv2", &["d1"]).await;
    for op in ["accept", "pickup"] {
        let a = app.answer_offer("dlv2", &driver, fence, op).await;
        assert_eq!(a.status, 200, "{op}: {}", a.text);
    }

    let first = app.answer_offer("dlv2", &driver, fence, "deliver").await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json["state"], "delivered");
    let before = app.snapshot().await;
    let again = app.answer_offer("dlv2", &driver, fence, "deliver").await;

    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json, first.json);
    assert_eq!(
        app.snapshot().await,
        before,
        "a repeated delivery writes nothing"
    );
    assert_eq!(events_of(&app, "dlv2", "delivered").await, 1);
    let rank = app.get(&format!("/v1/drivers/{driver}/rank")).await;
    assert_eq!(rank.status, 200, "{}", rank.text);
    let score = rank.json["score"].as_f64().unwrap();
    // Scored once, from the unscored default the driver was ranked by.
    let s = &app.context.settings;
    assert!(
        (score - s.ranking_unscored_score - s.score_per_delivery).abs() < 1e-9,
        "scored once: {score}"
    );
    assert_eq!(app.driver_status(&driver).await, "available");
    let history = read_history(&app.context.store, "paris").await.unwrap();
    assert!(check_invariants(&history).ok());
}

#[tokio::test]
async fn a_repeat_by_another_driver_with_another_token_or_of_another_step_is_still_refused() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_retry_ms = 60_000;
    })
    .await;
    let (driver, fence) = offered(&app, "rep", &["x", "y"]).await;
    let other = if driver == "x" { "y" } else { "x" };
    let other_phone = app.as_driver(other).await;
    let accepted = app.answer_offer("rep", &driver, fence, "accept").await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);

    let admin: &Instance = &app;
    let before = app.snapshot().await;
    let cases: Vec<(&Instance, &str, &str, u64, u16, &str, &str)> = vec![
        (
            &other_phone,
            "accept",
            driver.as_str(),
            fence,
            403,
            "forbidden",
            "another driver's key answering for the driver",
        ),
        (
            &other_phone,
            "accept",
            other,
            fence,
            409,
            "stale-fencing-token",
            "another driver with the driver's token",
        ),
        (
            admin,
            "accept",
            driver.as_str(),
            fence + 1,
            409,
            "stale-fencing-token",
            "the driver with another token",
        ),
        (
            admin,
            "reject",
            driver.as_str(),
            fence,
            409,
            "invalid-transition",
            "another step than the one that produced the state",
        ),
        (
            admin,
            "deliver",
            driver.as_str(),
            fence,
            409,
            "invalid-transition",
            "a step not taken yet",
        ),
    ];
    for (client, op, who, token, status, code, why) in cases {
        let a = client.answer_offer("rep", who, token, op).await;
        assert_eq!(a.status, status, "{why}: {}", a.text);
        a.assert_problem(status, code);
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "no refused answer wrote anything"
    );

    // Once the order has moved on, the earlier answer is no longer a repeat.
    let picked = app.answer_offer("rep", &driver, fence, "pickup").await;
    assert_eq!(picked.status, 200, "{}", picked.text);
    app.answer_offer("rep", &driver, fence, "accept")
        .await
        .assert_problem(409, "invalid-transition");
    assert_eq!(events_of(&app, "rep", "accepted").await, 1);
}

#[tokio::test]
async fn a_rejection_sent_twice_is_answered_200_twice_and_excludes_the_driver_once() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_workers = 0;
        s.dispatch_retry_ms = 60_000;
    })
    .await;
    let (driver, fence) = offered(&app, "rej2", &["first", "second"]).await;

    let first = app.answer_offer("rej2", &driver, fence, "reject").await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.json["state"], "pending");
    let before = app.snapshot().await;
    let again = app.answer_offer("rej2", &driver, fence, "reject").await;

    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json, first.json);
    assert_eq!(
        app.snapshot().await,
        before,
        "no second event, exclusion or re-queue"
    );
    assert_eq!(events_of(&app, "rej2", "rejected").await, 1);

    // Offered to the other driver, the order has moved on: the old rejection is stale.
    let offer = app.dispatch_order("rej2").await;
    assert_eq!(offer.status, 200, "{}", offer.text);
    assert_ne!(offer.json["driver_id"], driver.as_str());
    app.answer_offer("rej2", &driver, fence, "reject")
        .await
        .assert_problem(409, "stale-fencing-token");
}

#[tokio::test]
async fn a_rejection_after_the_offer_expired_is_not_taken_for_a_repeat() {
    let app = spawn_app_with(|s| {
        fast(s);
        s.dispatch_workers = 0;
        s.dispatch_retry_ms = 60_000;
        s.offer_ttl_ms = 300;
    })
    .await;
    let (driver, fence) = offered(&app, "late", &["slow"]).await;
    // The expiry, not a rejection, leaves the order pending with the same token.
    let order = wait_order(&app, "late", Duration::from_secs(5), |o| {
        o["state"] == "pending"
    })
    .await;
    assert_eq!(order["attempts"], 0);
    assert_eq!(events_of(&app, "late", "expired").await, 1);

    let before = app.snapshot().await;
    app.answer_offer("late", &driver, fence, "reject")
        .await
        .assert_problem(409, "stale-fencing-token");
    assert_eq!(app.snapshot().await, before);
    assert_eq!(events_of(&app, "late", "rejected").await, 0);
}
