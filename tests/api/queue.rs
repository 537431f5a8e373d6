//! The dispatch queue's take-over of idle entries: a pass follows the XAUTOCLAIM cursor through
//! every page (within its bound, then resumes), an entry that fails every delivery is
//! dead-lettered after `queue_max_deliveries` with its order failed, and pending entries
//! trimmed from the stream are dropped: nothing is taken over forever.

use std::time::{Duration, Instant};

use geodispatch::config::Settings;
use geodispatch::dispatch::workers::Reclaimer;
use geodispatch::events::read_history;
use geodispatch::store::keys::DISPATCH_GROUP;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};

use crate::helpers::{Instance, PARIS, metric_value, spawn_app_with, wait_order};

const DEAD_LETTERS: &str = "geodispatch_queue_dead_letters_total";

/// The test runs the take-over passes itself (no workers), takes over pages of 2 entries
/// idle for 100 ms, and dead-letters after 3 deliveries; no retry timer queues an order again
/// during the test.
fn passes_by_hand(s: &mut Settings) {
    s.dispatch_workers = 0;
    s.dispatch_retry_ms = 60_000;
    s.queue_claim_idle_ms = 100;
    s.queue_claim_count = 2;
    s.queue_max_deliveries = 3;
}

/// Queue order `id`, then move its pickup near the pole, as an import that checked latitudes
/// against ±90 rather than the ±85.05° Redis GEO indexes could: the order reads fine, but
/// every dispatch of it fails (Redis refuses the search), so its queue entry is never
/// acknowledged.
async fn queue_poison_order(app: &Instance, id: &str) {
    assert_eq!(app.queue_order(id, PARIS).await.status, 201);
    let _: () = redis::cmd("HSET")
        .arg(app.context.store.keys().order("paris", id))
        .arg("plat")
        .arg("89.9")
        .query_async(&mut app.redis_conn().await)
        .await
        .unwrap();
}

/// Read every new entry of Paris' queue as a worker that then dies: the entries stay pending,
/// each delivered once.
async fn read_as_a_crashed_worker(app: &Instance) -> Vec<StreamId> {
    let read: StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(DISPATCH_GROUP)
        .arg("crashed-worker")
        .arg("COUNT")
        .arg(1000)
        .arg("STREAMS")
        .arg(app.context.store.keys().dispatch_queue("paris"))
        .arg(">")
        .query_async(&mut app.redis_conn().await)
        .await
        .unwrap();
    read.keys.into_iter().flat_map(|k| k.ids).collect()
}

/// The pending entries of Paris' queue as `(id, delivery count)`, those idle for at least
/// `min_idle_ms` only.
async fn pending(app: &Instance, min_idle_ms: u64) -> Vec<(String, u64)> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(app.context.store.keys().dispatch_queue("paris"))
        .arg(DISPATCH_GROUP)
        .arg("IDLE")
        .arg(min_idle_ms)
        .arg("-")
        .arg("+")
        .arg(1000)
        .query_async(&mut app.redis_conn().await)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, _, _, deliveries)| (id, deliveries))
        .collect()
}

/// Wait until every pending entry of Paris' queue is idle long enough to be taken over.
async fn wait_until_all_idle(app: &Instance) {
    let idle = app.context.settings.queue_claim_idle_ms;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending(app, idle).await.len() < pending(app, 0).await.len() {
        assert!(Instant::now() < deadline, "entries never went idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Paris' dead letters.
async fn dead_letters(app: &Instance) -> Vec<StreamId> {
    let range: StreamRangeReply = redis::cmd("XRANGE")
        .arg(app.context.store.keys().dead_letters("paris"))
        .arg("-")
        .arg("+")
        .query_async(&mut app.redis_conn().await)
        .await
        .unwrap();
    range.ids
}

/// The process's dead-letter count (the registry is shared by the tests of this binary).
async fn dead_letter_count(app: &Instance) -> f64 {
    metric_value(&app.get("/metrics").await.text, DEAD_LETTERS)
}

#[tokio::test]
async fn a_take_over_pass_follows_the_cursor_and_a_poison_entry_is_dead_lettered_after_its_deliveries()
 {
    let app = spawn_app_with(passes_by_hand).await;
    let drivers = ["d1", "d2", "d3", "d4", "d5"];
    app.put_drivers_east_of(&drivers, PARIS).await;
    // Two poison entries first: they fill the first page, and every take-over of them fails.
    queue_poison_order(&app, "poison-1").await;
    queue_poison_order(&app, "poison-2").await;
    for i in 1..=5 {
        assert_eq!(app.queue_order(&format!("ok-{i}"), PARIS).await.status, 201);
    }
    let read = read_as_a_crashed_worker(&app).await;
    assert_eq!(read.len(), 7);
    let poison_entry = read[0].id.clone();
    let dead_before = dead_letter_count(&app).await;
    let mut reclaimer = Reclaimer::new("paris", "rescuer");
    let d = &app.context.dispatcher;

    // One pass takes over all 7 entries, 4 pages of 2, not just the page of failing ones.
    wait_until_all_idle(&app).await;
    let first = reclaimer.pass(d).await.unwrap();
    assert_eq!(
        (first.claimed, first.dead_lettered, first.complete),
        (7, 0, true)
    );
    for i in 1..=5 {
        let order = app.get(&format!("/v1/orders/ok-{i}")).await;
        assert_eq!(order.json["state"], "offered", "{}", order.text);
    }
    assert_eq!(
        pending(&app, 0).await,
        vec![(read[0].id.clone(), 2), (read[1].id.clone(), 2)],
        "only the poison entries stay pending, delivered twice"
    );

    // The third delivery fails too; the take-over after it dead-letters both.
    wait_until_all_idle(&app).await;
    let third = reclaimer.pass(d).await.unwrap();
    assert_eq!((third.claimed, third.dead_lettered), (2, 0));
    assert!(dead_letters(&app).await.is_empty());
    assert_eq!(
        app.get("/v1/orders/poison-1").await.json["state"],
        "pending"
    );
    wait_until_all_idle(&app).await;
    let last = reclaimer.pass(d).await.unwrap();
    assert_eq!((last.claimed, last.dead_lettered), (2, 2));

    let failed = wait_order(&app, "poison-1", Duration::from_secs(1), |o| {
        o["state"] == "failed"
    })
    .await;
    assert_eq!(
        failed["failure_reason"],
        "dispatch failed on each of 3 deliveries from the queue"
    );
    let history = read_history(&app.context.store, "paris").await.unwrap();
    for order in ["poison-1", "poison-2"] {
        let kinds: Vec<&str> = history
            .iter()
            .filter(|e| e.order_id == order)
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(kinds, ["created", "failed"], "{order}");
    }
    let letters = dead_letters(&app).await;
    assert_eq!(letters.len(), 2);
    let letter = &letters[0];
    assert_eq!(letter.get::<String>("order").as_deref(), Some("poison-1"));
    assert_eq!(letter.get::<String>("entry"), Some(poison_entry.clone()));
    assert_eq!(letter.get::<String>("deliveries").as_deref(), Some("3"));
    assert!(dead_letter_count(&app).await >= dead_before + 2.0);

    // Nothing is left to take over: the entries left the queue with their acknowledgement.
    assert!(pending(&app, 0).await.is_empty());
    let gone: StreamRangeReply = redis::cmd("XRANGE")
        .arg(app.context.store.keys().dispatch_queue("paris"))
        .arg(&poison_entry)
        .arg(&poison_entry)
        .query_async(&mut app.redis_conn().await)
        .await
        .unwrap();
    assert!(gone.ids.is_empty(), "the dead letter was moved, not copied");
    let after = reclaimer.pass(d).await.unwrap();
    assert_eq!((after.claimed, after.complete), (0, true));
}

#[tokio::test]
async fn a_take_over_pass_stops_after_eight_pages_and_the_next_pass_resumes_there() {
    let app = spawn_app_with(|s| {
        passes_by_hand(s);
        s.queue_claim_count = 1;
    })
    .await;
    // No drivers: each dispatch counts an attempt and its entry is acknowledged.
    for i in 1..=10 {
        assert_eq!(app.queue_order(&format!("o-{i}"), PARIS).await.status, 201);
    }
    assert_eq!(read_as_a_crashed_worker(&app).await.len(), 10);
    wait_until_all_idle(&app).await;
    let mut reclaimer = Reclaimer::new("paris", "rescuer");
    let d = &app.context.dispatcher;

    let bounded = reclaimer.pass(d).await.unwrap();
    assert_eq!((bounded.claimed, bounded.complete), (8, false));
    assert_eq!(pending(&app, 0).await.len(), 2);
    let rest = reclaimer.pass(d).await.unwrap();
    assert_eq!((rest.claimed, rest.complete), (2, true));
    assert!(pending(&app, 0).await.is_empty());
    for i in 1..=10 {
        let order = app.get(&format!("/v1/orders/o-{i}")).await;
        assert_eq!(order.json["attempts"], 1, "{}", order.text);
    }
}

#[tokio::test]
async fn pending_entries_trimmed_from_the_stream_are_dropped_not_taken_over_again() {
    let app = spawn_app_with(passes_by_hand).await;
    for i in 1..=3 {
        assert_eq!(app.queue_order(&format!("o-{i}"), PARIS).await.status, 201);
    }
    assert_eq!(read_as_a_crashed_worker(&app).await.len(), 3);
    // The stream is trimmed (MAXLEN) past entries its group still holds as pending.
    let _: u64 = redis::cmd("XTRIM")
        .arg(app.context.store.keys().dispatch_queue("paris"))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut app.redis_conn().await)
        .await
        .unwrap();
    wait_until_all_idle(&app).await;
    let mut reclaimer = Reclaimer::new("paris", "rescuer");

    let pass = reclaimer.pass(&app.context.dispatcher).await.unwrap();
    assert_eq!((pass.claimed, pass.deleted, pass.complete), (0, 3, true));
    assert!(pending(&app, 0).await.is_empty());
}

#[tokio::test]
async fn queue_workers_take_over_every_idle_entry_and_dead_letter_the_poison_one() {
    let app = spawn_app_with(passes_by_hand).await;
    let drivers = ["d1", "d2", "d3", "d4", "d5"];
    app.put_drivers_east_of(&drivers, PARIS).await;
    queue_poison_order(&app, "poison").await;
    for i in 1..=5 {
        assert_eq!(app.queue_order(&format!("ok-{i}"), PARIS).await.status, 201);
    }
    assert_eq!(read_as_a_crashed_worker(&app).await.len(), 6);
    let dead_before = dead_letter_count(&app).await;

    // One worker per city on another instance takes everything over by itself.
    let rescuer = app.peer(|s| s.dispatch_workers = 1);
    for i in 1..=5 {
        wait_order(&rescuer, &format!("ok-{i}"), Duration::from_secs(10), |o| {
            o["state"] == "offered"
        })
        .await;
    }
    let failed = wait_order(&rescuer, "poison", Duration::from_secs(10), |o| {
        o["state"] == "failed"
    })
    .await;
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("3 deliveries"),
        "{failed}"
    );
    assert_eq!(dead_letters(&app).await.len(), 1);
    assert!(
        pending(&app, 0).await.is_empty(),
        "nothing left to take over"
    );
    assert!(dead_letter_count(&app).await >= dead_before + 1.0);
    rescuer.stop().await;
}
