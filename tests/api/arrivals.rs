//! Arrival detection on real Redis: a busy driver's positions, stored by the same script that
//! checks them against its order's pickup or drop-off, emit `driver.arrived_pickup`,
//! `driver.left_pickup` and `driver.arrived_dropoff` into the city's event stream, and set the
//! order's `arrived_pickup_at` / `arrived_dropoff_at`. The dwell is measured on the positions'
//! `recorded_at`, so every test drives it with explicit timestamps: no sleeps.

use geodispatch::events::read_history;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{Instance, PARIS, TestApp, now_ms, spawn_app_with};

/// The sphere Redis measures on (GEODIST), in metres.
const EARTH_M: f64 = 6_372_797.560856;

/// The point `metres` east of `at`.
fn east_of(at: (f64, f64), metres: f64) -> (f64, f64) {
    let per_degree = EARTH_M * std::f64::consts::PI / 180.0 * at.0.to_radians().cos();
    (at.0, at.1 + metres / per_degree)
}

/// The drop-off of every order here: about 1.2 km north-west of the pickup.
const DROPOFF: (f64, f64) = (48.8606, 2.3376);

/// Arrival within 50 m after 20 s there; drivers stay fresh for an hour, so positions can be
/// dated from half an hour ago onwards.
fn arrivals(s: &mut geodispatch::config::Settings) {
    s.arrival_detection = true;
    s.arrival_radius_m = 50.0;
    s.arrival_dwell_ms = 20_000;
    s.driver_ttl_ms = 3_600_000;
    s.offer_ttl_ms = 600_000;
}

/// A driver `d1` at `t0` 300 m east of the pickup, holding order `o-1` (accepted); its
/// fencing token.
async fn accepted_order(app: &Instance, t0: i64) -> u64 {
    let start = east_of(PARIS, 300.0);
    let a = app
        .put_location("d1", start.0, start.1, t0, Value::Null)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let created = app
        .create_order(
            json!({"order_id": "o-1", "pickup": {"lat": PARIS.0, "lon": PARIS.1},
            "dropoff": {"lat": DROPOFF.0, "lon": DROPOFF.1}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["driver_id"], "d1", "{}", created.text);
    let fence = created.json["fencing_token"].as_u64().unwrap();
    let accepted = app.answer_offer("o-1", "d1", fence, "accept").await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    fence
}

/// PUT `d1` at `metres` east of `target`, recorded at `at`.
async fn put_near(app: &Instance, target: (f64, f64), metres: f64, at: i64) {
    let p = east_of(target, metres);
    let a = app.put_location("d1", p.0, p.1, at, Value::Null).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

/// The driver events of the city's stream, in order, as `(type, order, driver)`.
async fn driver_events(app: &TestApp) -> Vec<(String, String, String)> {
    read_history(&app.context.store, "paris")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("driver."))
        .map(|e| (e.kind, e.order_id, e.driver_id))
        .collect()
}

fn kinds(events: &[(String, String, String)]) -> Vec<&str> {
    events.iter().map(|e| e.0.as_str()).collect()
}

/// Epoch ms of an RFC 3339 timestamp of the API.
fn ms(v: &Value) -> i64 {
    let t = OffsetDateTime::parse(v.as_str().expect("a timestamp"), &Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn a_driver_staying_at_the_pickup_for_the_dwell_arrives_exactly_once() {
    let app = spawn_app_with(arrivals).await;
    let t0 = now_ms() - 1_800_000;
    accepted_order(&app, t0).await;

    put_near(&app, PARIS, 20.0, t0 + 1_000).await;
    put_near(&app, PARIS, 10.0, t0 + 11_000).await;
    assert!(
        driver_events(&app).await.is_empty(),
        "10 s there is shorter than the dwell"
    );
    let order = app.get("/v1/orders/o-1").await;
    assert!(
        order.json.get("arrived_pickup_at").is_none(),
        "{}",
        order.text
    );

    put_near(&app, PARIS, 5.0, t0 + 21_000).await;
    put_near(&app, PARIS, 0.0, t0 + 31_000).await;
    put_near(&app, PARIS, 15.0, t0 + 61_000).await;

    let events = driver_events(&app).await;
    assert_eq!(kinds(&events), ["driver.arrived_pickup"]);
    assert_eq!(events[0].1, "o-1");
    assert_eq!(events[0].2, "d1");
    let order = app.get("/v1/orders/o-1").await;
    assert_eq!(order.json["state"], "accepted");
    assert_eq!(
        ms(&order.json["arrived_pickup_at"]),
        t0 + 1_000,
        "the arrival is the visit's first position: {}",
        order.text
    );
    assert!(order.json.get("arrived_dropoff_at").is_none());
    // The event carries the order's state and offer like an order event.
    let history = read_history(&app.context.store, "paris").await.unwrap();
    let arrived = history
        .iter()
        .find(|e| e.kind == "driver.arrived_pickup")
        .unwrap();
    assert_eq!(
        arrived.fencing_token,
        order.json["fencing_token"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn jitter_across_the_radius_edge_neither_flaps_nor_delays_the_arrival() {
    let app = spawn_app_with(arrivals).await;
    let t0 = now_ms() - 1_800_000;
    accepted_order(&app, t0).await;

    // In at 45 m, then GPS noise between 45 and 70 m (inside 1.5 × 50 m) for a minute.
    for (i, metres) in [45.0, 60.0, 48.0, 70.0, 52.0, 44.0, 66.0, 58.0]
        .into_iter()
        .enumerate()
    {
        put_near(&app, PARIS, metres, t0 + 1_000 + 8_000 * i as i64).await;
    }
    assert_eq!(kinds(&driver_events(&app).await), ["driver.arrived_pickup"]);
    let order = app.get("/v1/orders/o-1").await;
    assert_eq!(ms(&order.json["arrived_pickup_at"]), t0 + 1_000);

    // Outside the radius but inside the margin before ever entering: no visit starts.
    let app2 = spawn_app_with(arrivals).await;
    accepted_order(&app2, t0).await;
    for i in 0..6 {
        put_near(
            &app2,
            PARIS,
            55.0 + (i % 2) as f64 * 15.0,
            t0 + 1_000 + 10_000 * i,
        )
        .await;
    }
    assert!(driver_events(&app2).await.is_empty());
}

#[tokio::test]
async fn leaving_the_pickup_after_arriving_emits_left_pickup_once() {
    let app = spawn_app_with(arrivals).await;
    let t0 = now_ms() - 1_800_000;
    accepted_order(&app, t0).await;
    put_near(&app, PARIS, 0.0, t0 + 1_000).await;
    put_near(&app, PARIS, 0.0, t0 + 25_000).await;

    put_near(&app, PARIS, 200.0, t0 + 40_000).await;
    put_near(&app, PARIS, 400.0, t0 + 50_000).await;

    let events = driver_events(&app).await;
    assert_eq!(
        kinds(&events),
        ["driver.arrived_pickup", "driver.left_pickup"]
    );
    assert!(events.iter().all(|e| e.1 == "o-1" && e.2 == "d1"));
    // The first arrival stays the order's arrival.
    let order = app.get("/v1/orders/o-1").await;
    assert_eq!(ms(&order.json["arrived_pickup_at"]), t0 + 1_000);
}

#[tokio::test]
async fn after_pickup_the_drop_off_is_the_target_and_both_arrivals_stay_on_the_order() {
    let app = spawn_app_with(arrivals).await;
    let t0 = now_ms() - 1_800_000;
    let fence = accepted_order(&app, t0).await;
    put_near(&app, PARIS, 0.0, t0 + 1_000).await;
    put_near(&app, PARIS, 0.0, t0 + 30_000).await;
    let picked = app.answer_offer("o-1", "d1", fence, "pickup").await;
    assert_eq!(picked.status, 200, "{}", picked.text);
    assert_eq!(ms(&picked.json["arrived_pickup_at"]), t0 + 1_000);

    // Leaving the pickup once picked up is no event; the drop-off is reached through the
    // batch endpoint, beside a driver without an order.
    put_near(&app, PARIS, 300.0, t0 + 60_000).await;
    for (i, at) in [t0 + 300_000, t0 + 325_000].into_iter().enumerate() {
        let p = east_of(DROPOFF, 10.0 * i as f64);
        let batch = app
            .post_json(
                "/v1/locations/batch",
                &json!({"positions": [
                    {"driver_id": "free", "lat": DROPOFF.0, "lon": DROPOFF.1, "recorded_at": at},
                    {"driver_id": "d1", "lat": p.0, "lon": p.1, "recorded_at": at},
                ]}),
            )
            .await;
        assert_eq!(batch.status, 200, "{}", batch.text);
        assert!(
            batch.json["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "accepted"),
            "{}",
            batch.text
        );
    }
    let events = driver_events(&app).await;
    assert_eq!(
        kinds(&events),
        ["driver.arrived_pickup", "driver.arrived_dropoff"]
    );
    assert!(events.iter().all(|e| e.2 == "d1"));

    let delivered = app.answer_offer("o-1", "d1", fence, "deliver").await;
    assert_eq!(delivered.status, 200, "{}", delivered.text);
    assert_eq!(ms(&delivered.json["arrived_pickup_at"]), t0 + 1_000);
    assert_eq!(ms(&delivered.json["arrived_dropoff_at"]), t0 + 300_000);
    let order = app.get("/v1/orders/o-1").await;
    assert_eq!(
        order.json["arrived_dropoff_at"],
        delivered.json["arrived_dropoff_at"]
    );
    // The order let go of the driver: its positions are no longer checked.
    put_near(&app, DROPOFF, 0.0, t0 + 400_000).await;
    assert_eq!(driver_events(&app).await.len(), 2);
    let keys = app.data_keys().await;
    assert!(
        !keys.iter().any(|k| k.contains(":arrivals")),
        "no tracking state is left once the order ended: {keys:?}"
    );
}

#[tokio::test]
async fn delivery_before_the_arrival_at_the_drop_off_is_refused_when_required() {
    let app = spawn_app_with(|s| {
        arrivals(s);
        s.require_arrival_for_delivery = true;
    })
    .await;
    let t0 = now_ms() - 1_800_000;
    let fence = accepted_order(&app, t0).await;
    let picked = app.answer_offer("o-1", "d1", fence, "pickup").await;
    assert_eq!(picked.status, 200, "{}", picked.text);
    put_near(&app, DROPOFF, 0.0, t0 + 60_000).await;
    let events_before = read_history(&app.context.store, "paris")
        .await
        .unwrap()
        .len();

    let early = app.answer_offer("o-1", "d1", fence, "deliver").await;
    early.assert_problem(409, "not-arrived");
    assert!(
        early.json["detail"].as_str().unwrap().contains("drop-off"),
        "{}",
        early.text
    );
    let order = app.get("/v1/orders/o-1").await;
    assert_eq!(order.json["state"], "picked_up", "nothing changed");
    assert_eq!(app.driver_status("d1").await, "busy");
    assert_eq!(
        read_history(&app.context.store, "paris")
            .await
            .unwrap()
            .len(),
        events_before,
        "no event"
    );

    put_near(&app, DROPOFF, 0.0, t0 + 80_000).await;
    let delivered = app.answer_offer("o-1", "d1", fence, "deliver").await;
    assert_eq!(delivered.status, 200, "{}", delivered.text);
    assert_eq!(delivered.json["state"], "delivered");
    assert_eq!(ms(&delivered.json["arrived_dropoff_at"]), t0 + 60_000);
}

#[tokio::test]
async fn a_driver_without_an_order_is_unaffected_by_arrival_detection() {
    let app = spawn_app_with(arrivals).await;
    let t0 = now_ms() - 1_800_000;
    accepted_order(&app, t0).await;
    // Another driver sits at d1's pickup for minutes, through both ingest paths.
    for i in 0..4 {
        let at = t0 + 1_000 + 30_000 * i;
        let a = app
            .put_location("idle", PARIS.0, PARIS.1, at, Value::Null)
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        let b = app
            .post_json(
                "/v1/locations/batch",
                &json!({"positions": [{"driver_id": "idle", "lat": PARIS.0, "lon": PARIS.1, "recorded_at": at + 500}]}),
            )
            .await;
        assert_eq!(b.status, 200, "{}", b.text);
    }
    assert!(driver_events(&app).await.is_empty());
    assert_eq!(app.driver_status("idle").await, "available");
    let order = app.get("/v1/orders/o-1").await;
    assert!(order.json.get("arrived_pickup_at").is_none());
    let mut conn = app.redis_conn().await;
    let tracked: Vec<String> = redis::cmd("HKEYS")
        .arg(app.context.store.keys().arrivals("paris"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        tracked,
        ["d1"],
        "only the driver with an open order is tracked"
    );
}

#[tokio::test]
async fn with_detection_off_positions_emit_nothing() {
    let app = spawn_app_with(|s| {
        arrivals(s);
        s.arrival_detection = false;
    })
    .await;
    let t0 = now_ms() - 1_800_000;
    accepted_order(&app, t0).await;
    put_near(&app, PARIS, 0.0, t0 + 1_000).await;
    put_near(&app, PARIS, 0.0, t0 + 60_000).await;
    assert!(driver_events(&app).await.is_empty());
}
