//! Exactly-one dispatch under real concurrency: 500 orders and 100 drivers, three service
//! instances on one Redis with four queue workers each, drivers that accept, reject or ignore
//! offers and complete at once, clients that cancel some orders. The invariants are checked
//! over the whole event history, not only the end state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use geodispatch::events::{OrderEvent, check_invariants, read_history};
use serde_json::json;

use crate::helpers::{Instance, PARIS, Rng, spawn_app_with};

const ORDERS: usize = 500;
const DRIVERS: usize = 100;

fn settings(s: &mut geodispatch::config::Settings) {
    s.dispatch_workers = 4;
    s.timer_interval_ms = 20;
    s.dispatch_retry_ms = 100;
    s.dispatch_max_attempts = 1_000;
    s.offer_ttl_ms = 400;
    s.lock_ttl_ms = 2_000;
    s.events_maxlen = 1_000_000;
}

/// Plays every driver: answers each offer seen on the event stream on a random instance.
async fn drivers(instances: Arc<Vec<Instance>>, stop: Arc<AtomicBool>) -> usize {
    let first = &instances[0];
    let mut conn = first.redis_conn_pub().await;
    let key = first.context.store.keys().events("paris");
    let mut last = "0".to_owned();
    let mut rng = Rng::new(7);
    let mut answered = 0;
    let mut tasks = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let read: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(200)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last)
            .query_async(&mut conn)
            .await
            .unwrap();
        let Some(read) = read else { continue };
        for entry in read.keys.into_iter().flat_map(|k| k.ids) {
            last = entry.id.clone();
            if entry.get::<String>("type").as_deref() != Some("offered") {
                continue;
            }
            let order: String = entry.get("order").unwrap();
            let driver: String = entry.get("driver").unwrap();
            let fence: u64 = entry.get::<String>("fence").unwrap().parse().unwrap();
            let roll = rng.f64();
            let target = (rng.f64() * instances.len() as f64) as usize;
            let instances = instances.clone();
            answered += 1;
            tasks.push(tokio::spawn(async move {
                let app = &instances[target];
                if roll < 0.05 {
                    return; // ignores the offer: it expires
                }
                if roll < 0.15 {
                    app.answer_offer(&order, &driver, fence, "reject").await;
                    return;
                }
                for op in ["accept", "pickup", "deliver"] {
                    let a = app.answer_offer(&order, &driver, fence, op).await;
                    if a.status != 200 {
                        // Cancelled meanwhile, or the offer expired: both are legitimate.
                        assert_eq!(a.status, 409, "{op} {order}: {}", a.text);
                        return;
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_orders_on_three_instances_keep_every_invariant() {
    let app = spawn_app_with(settings).await;
    let peers = [app.peer(|_| {}), app.peer(|_| {})];
    // 100 drivers within 2 km of the centre.
    let mut rng = Rng::new(42);
    let ids: Vec<String> = (0..DRIVERS).map(|i| format!("drv-{i}")).collect();
    let fleet: Vec<(&str, f64, f64)> = ids
        .iter()
        .map(|id| {
            let (lat, lon) = rng.near(PARIS.0, PARIS.1, 2.0);
            (id.as_str(), lat, lon)
        })
        .collect();
    app.put_fleet(&fleet).await;

    let instances: Arc<Vec<Instance>> =
        Arc::new(std::iter::once(app.clone_instance()).chain(peers).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let driver_task = tokio::spawn(drivers(instances.clone(), stop.clone()));

    // Clients: 500 orders over the three instances, 16 at a time; every 20th is cancelled.
    let mut created: Vec<String> = Vec::new();
    let mut cancelled = 0;
    for chunk in (0..ORDERS).collect::<Vec<_>>().chunks(16) {
        let calls = chunk.iter().map(|&i| {
            let app = &instances[i % 3];
            let (lat, lon) = Rng::new(i as u64).near(PARIS.0, PARIS.1, 1.5);
            let mode = if i % 2 == 0 { "queued" } else { "now" };
            async move {
                let a = app
                    .post_json("/v1/orders", &json!({"order_id": format!("ord-{i}"), "pickup": {"lat": lat, "lon": lon}, "dispatch": mode}))
                    .await;
                assert_eq!(a.status, 201, "{}", a.text);
                a.json["order_id"].as_str().unwrap().to_owned()
            }
        });
        created.extend(futures_util::future::join_all(calls).await);
        for &i in chunk.iter().filter(|&&i| i % 20 == 7) {
            let a = instances[(i + 1) % 3]
                .post_json(&format!("/v1/orders/ord-{i}/cancel"), &json!({}))
                .await;
            if a.status == 200 {
                cancelled += 1;
            } else {
                assert_eq!(a.status, 409, "{}", a.text); // already picked up or delivered
            }
        }
    }
    assert_eq!(created.len(), ORDERS);

    // Every order must end; poll the states with a deadline.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conn = app.redis_conn().await;
    let keys = app.context.store.keys();
    loop {
        let mut pipe = redis::pipe();
        for id in &created {
            pipe.cmd("HGET").arg(keys.order("paris", id)).arg("state");
        }
        let states: Vec<String> = pipe.query_async(&mut conn).await.unwrap();
        let open = states
            .iter()
            .filter(|s| !matches!(s.as_str(), "delivered" | "cancelled" | "failed"))
            .count();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} orders never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let answered = driver_task.await.unwrap();

    let history: Vec<OrderEvent> = read_history(&app.context.store, "paris").await.unwrap();
    let report = check_invariants(&history);
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for e in &history {
        *kinds.entry(e.kind.as_str()).or_default() += 1;
    }
    eprintln!("events by type: {kinds:?}; terminal: {:?}", report.terminal);
    assert!(report.ok(), "invariants violated: {:#?}", report.violations);
    // I3: every order answered 201 was created once and ended exactly once.
    let mut terminal: HashMap<&str, usize> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for e in &history {
        if e.kind == "created" {
            assert!(seen.insert(&e.order_id), "{} created twice", e.order_id);
        }
        if matches!(e.kind.as_str(), "delivered" | "cancelled" | "failed") {
            *terminal.entry(&e.order_id).or_default() += 1;
        }
    }
    for id in &created {
        assert_eq!(
            terminal.get(id.as_str()),
            Some(&1),
            "order {id} must end exactly once"
        );
    }
    let delivered = report.terminal.get("delivered").copied().unwrap_or(0);
    assert!(delivered > ORDERS / 2, "{report:?}");
    assert_eq!(
        report.terminal.get("cancelled").copied().unwrap_or(0),
        cancelled
    );
    assert!(answered >= delivered);
    // Nobody is left busy and no assignment is left behind.
    let busy: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.geo("paris", geodispatch::drivers::DriverStatus::Busy))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(busy.is_empty(), "{busy:?}");
    let assigned: i64 = redis::cmd("HLEN")
        .arg(keys.assignments("paris"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(assigned, 0);
    for p in instances.iter().skip(1) {
        p.stop().await;
    }
}
