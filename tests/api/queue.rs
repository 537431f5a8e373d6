//! The dispatch queue's take-over of idle entries: a pass follows the XAUTOCLAIM cursor through
//! every page (within its bound, then resumes), and pending entries trimmed from the stream are
//! dropped, not taken over forever.

use std::time::{Duration, Instant};

use geodispatch::config::Settings;
use geodispatch::dispatch::workers::Reclaimer;
use geodispatch::store::keys::DISPATCH_GROUP;
use redis::streams::{StreamId, StreamReadReply};

use crate::helpers::{Instance, PARIS, spawn_app_with};

/// The test runs the take-over passes itself (no workers) and takes over pages of 2 entries
/// idle for 100 ms; no retry timer queues an order again during the test.
fn passes_by_hand(s: &mut Settings) {
    s.dispatch_workers = 0;
    s.dispatch_retry_ms = 60_000;
    s.queue_claim_idle_ms = 100;
    s.queue_claim_count = 2;
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
