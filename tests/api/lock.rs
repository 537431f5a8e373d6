//! The lock module on real Redis: exclusivity, holder-only release and extension, fencing
//! numbers, the renewal watchdog.

use std::time::{Duration, Instant};

use geodispatch::lock::Locks;

use crate::helpers::{TestApp, spawn_app};

fn keys(app: &TestApp, name: &str) -> (String, String) {
    let k = app.context.store.keys();
    (
        k.city("paris", &format!("lock:{name}")),
        k.city("paris", "fence"),
    )
}

async fn holder(app: &TestApp, key: &str) -> Option<String> {
    let mut conn = app.redis_conn().await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

async fn wait_until_gone(app: &TestApp, key: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while holder(app, key).await.is_some() {
        assert!(Instant::now() < deadline, "{key} never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exactly_one_of_32_concurrent_acquirers_wins() {
    let app = spawn_app().await;
    let locks = Locks::new(app.context.store.clone());
    let (key, fence) = keys(&app, "order-1");
    let attempts = (0..32).map(|_| locks.acquire(&key, &fence, Duration::from_secs(10)));
    let results = futures_util::future::join_all(attempts).await;
    let winners: Vec<_> = results.into_iter().filter_map(Result::unwrap).collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(
        holder(&app, &key).await.as_deref(),
        Some(winners[0].token.as_str())
    );
}

#[tokio::test]
async fn a_lock_is_released_only_by_its_holder() {
    let app = spawn_app().await;
    let locks = Locks::new(app.context.store.clone());
    let (key, fence) = keys(&app, "order-2");
    let a = locks
        .acquire(&key, &fence, Duration::from_millis(150))
        .await
        .unwrap()
        .unwrap();
    assert!(
        locks
            .acquire(&key, &fence, Duration::from_secs(10))
            .await
            .unwrap()
            .is_none(),
        "held"
    );
    wait_until_gone(&app, &key, Duration::from_secs(5)).await;
    let b = locks
        .acquire(&key, &fence, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !locks.release(&a).await.unwrap(),
        "an expired holder cannot release"
    );
    assert!(
        !locks.extend(&a, Duration::from_secs(10)).await.unwrap(),
        "nor extend"
    );
    assert_eq!(
        holder(&app, &key).await.as_deref(),
        Some(b.token.as_str()),
        "b still holds it"
    );
    assert!(locks.release(&b).await.unwrap());
    assert_eq!(holder(&app, &key).await, None);
    assert!(b.fencing > a.fencing, "fencing numbers strictly increase");
}

#[tokio::test]
async fn fencing_numbers_strictly_increase_across_locks_sharing_a_counter() {
    let app = spawn_app().await;
    let locks = Locks::new(app.context.store.clone());
    let mut seen = Vec::new();
    for i in 0..20 {
        let (key, fence) = keys(&app, &format!("k{}", i % 3));
        let lease = locks
            .acquire(&key, &fence, Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap();
        seen.push(lease.fencing);
        locks.release(&lease).await.unwrap();
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[tokio::test]
async fn the_watchdog_keeps_a_lease_past_its_ttl_and_stops_when_dropped() {
    let app = spawn_app().await;
    let locks = Locks::new(app.context.store.clone());
    let (key, fence) = keys(&app, "long-work");
    let lease = locks
        .acquire(&key, &fence, Duration::from_millis(600))
        .await
        .unwrap()
        .unwrap();
    let renewal = locks.keep_alive(lease.clone());
    // The work under test takes three TTLs.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    assert_eq!(
        holder(&app, &key).await.as_deref(),
        Some(lease.token.as_str()),
        "still held"
    );
    assert!(!renewal.is_lost());
    drop(renewal);
    wait_until_gone(&app, &key, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_watchdog_reports_a_stolen_lease() {
    let app = spawn_app().await;
    let locks = Locks::new(app.context.store.clone());
    let (key, fence) = keys(&app, "stolen");
    let lease = locks
        .acquire(&key, &fence, Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    let mut renewal = locks.keep_alive(lease);
    let mut conn = app.redis_conn().await;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("someone-else")
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), renewal.lost())
        .await
        .expect("the watchdog notices within a renewal period");
    assert_eq!(
        holder(&app, &key).await.as_deref(),
        Some("someone-else"),
        "and leaves the new holder alone"
    );
}
