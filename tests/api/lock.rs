//! The lock module on real Redis: exclusivity, holder-only release and extension, fencing
//! numbers, the renewal watchdog; Redlock over 5 independent `redis-server` processes.

use std::time::{Duration, Instant};

use geodispatch::lock::Locks;

use geodispatch::lock::redlock::Redlock;
use geodispatch::store::local::LocalRedis;

use crate::helpers::{PARIS, TestApp, spawn_app, spawn_app_with, start_redis};

fn keys(app: &TestApp, name: &str) -> (String, String) {
    let k = app.context.store.keys();
    (k.order_lock("paris", name), k.fence("paris"))
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

async fn five_nodes() -> (Vec<LocalRedis>, Redlock) {
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(start_redis().await);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let redlock = Redlock::new(&urls, Duration::from_millis(50), 0).unwrap();
    (nodes, redlock)
}

/// Which of `nodes` hold `key` with `token`.
async fn holders(nodes: &[LocalRedis], key: &str, token: &str) -> usize {
    let mut n = 0;
    for node in nodes {
        let client = redis::Client::open(node.url()).unwrap();
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let held: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        n += usize::from(held.as_deref() == Some(token));
    }
    n
}

#[tokio::test]
async fn redlock_takes_a_majority_excludes_others_and_releases_everywhere() {
    let (nodes, redlock) = five_nodes().await;
    assert_eq!(redlock.quorum(), 3);
    let ttl = Duration::from_secs(10);
    let lease = redlock.acquire("rl:order:1", ttl).await.expect("acquired");
    assert_eq!(lease.nodes_locked, 5);
    assert!(
        lease.validity < ttl && lease.validity > ttl / 2,
        "{lease:?}"
    );
    assert_eq!(holders(&nodes, "rl:order:1", &lease.token).await, 5);
    assert!(redlock.acquire("rl:order:1", ttl).await.is_none());
    let extended = redlock.extend(&lease, ttl).await.expect("extended");
    assert_eq!(extended.nodes_locked, 5);
    assert_eq!(redlock.release(&lease).await, 5);
    assert_eq!(holders(&nodes, "rl:order:1", &lease.token).await, 0);
    assert!(redlock.acquire("rl:order:1", ttl).await.is_some());
}

#[tokio::test]
async fn redlock_acquires_with_two_of_five_nodes_down_and_refuses_with_three() {
    let (mut nodes, redlock) = five_nodes().await;
    let ttl = Duration::from_secs(10);
    nodes[0].kill().await.unwrap();
    nodes[1].kill().await.unwrap();
    let lease = redlock
        .acquire("rl:order:2", ttl)
        .await
        .expect("3 of 5 is a majority");
    assert_eq!(lease.nodes_locked, 3);
    assert_eq!(redlock.release(&lease).await, 3);

    nodes[2].kill().await.unwrap();
    assert_eq!(
        redlock.try_acquire("rl:order:3", ttl).await,
        Err(2),
        "2 of 5 reachable is not a majority"
    );
    // The failed attempt left nothing behind on the nodes that answered.
    for node in &nodes[3..] {
        let client = redis::Client::open(node.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let exists: i64 = redis::cmd("EXISTS")
            .arg("rl:order:3")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0);
    }
}

#[tokio::test]
async fn redlock_contenders_exactly_one_holds_the_lock() {
    let (nodes, _) = five_nodes().await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    // With retries, a split vote (no majority for anyone) is retried after a random delay;
    // the lock is held for 10 s, so once someone has it the others run out of retries.
    let redlock = Redlock::new(&urls, Duration::from_millis(50), 20).unwrap();
    let ttl = Duration::from_secs(10);
    let attempts = (0..8).map(|_| {
        let r = redlock.clone();
        tokio::spawn(async move { r.acquire("rl:order:race", ttl).await })
    });
    let won: Vec<_> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap())
        .collect();
    assert_eq!(won.len(), 1, "{won:?}");
    assert!(holders(&nodes, "rl:order:race", &won[0].token).await >= 3);
}

#[tokio::test]
async fn dispatch_over_the_redlock_backend_offers_once_and_refuses_without_a_quorum() {
    let (mut nodes, _) = five_nodes().await;
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let app = spawn_app_with(|s| {
        s.lock_backend = "redlock".to_owned();
        s.redlock_nodes = Some(urls.join(","));
        s.dispatch_workers = 0;
    })
    .await;
    app.put_drivers_east_of(&["d0", "d1", "d2", "d3", "d4"], PARIS)
        .await;
    for id in ["rl-1", "rl-2"] {
        let a = app.queue_order(id, PARIS).await;
        assert_eq!(a.status, 201, "{}", a.text);
    }
    let calls = (0..16).map(|_| app.dispatch_order("rl-1"));
    let answers = futures_util::future::join_all(calls).await;
    let offered = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(
        offered,
        1,
        "{:?}",
        answers.iter().map(|a| &a.text).collect::<Vec<_>>()
    );
    assert!(answers.iter().all(|a| a.status == 200 || a.status == 409));

    // The backend is consulted: while someone else holds the Redlock of an order, its
    // dispatch answers 409 although the order's own lock in the data Redis is free.
    let other = Redlock::new(
        &nodes.iter().map(|n| n.url()).collect::<Vec<_>>(),
        Duration::from_millis(50),
        0,
    )
    .unwrap();
    let lock_key = app.context.store.keys().order_lock("paris", "rl-2");
    let held = other
        .acquire(&lock_key, Duration::from_secs(30))
        .await
        .expect("the other holder takes the Redlock");
    app.dispatch_order("rl-2")
        .await
        .assert_problem(409, "dispatch-in-progress");
    assert_eq!(other.release(&held).await, 5);

    for node in &mut nodes[..3] {
        node.kill().await.unwrap();
    }
    let before = app.snapshot().await;
    let a = app.dispatch_order("rl-2").await;
    a.assert_problem(503, "unavailable");
    assert_eq!(
        app.snapshot().await,
        before,
        "nothing written without a lock quorum"
    );
}
