//! Replays of small days generated here, end to end against a real `geodispatch serve`
//! started by the tool: a synthetic day under both policies (and batched with idle couriers
//! repositioned) must come out feasible with every order delivered, and a day whose schedule is forced must give the measures computed by
//! hand.
//!
//! The service binary is the workspace's `geodispatch` (`GEODISPATCH_BIN`, or next to the
//! test executable's directory, where `cargo test --workspace` builds it).

use std::path::PathBuf;

use geodispatch_testkit::rng::SplitMix64;
use geodispatch_tools::replay::instance::{Courier, Instance, Order, Params, Point, Restaurant};
use geodispatch_tools::replay::solution::Solution;
use geodispatch_tools::replay::{ReplayOptions, ReplayReport, run};

fn service_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GEODISPATCH_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = dir.join("geodispatch");
    assert!(
        path.is_file(),
        "no service binary at {}: run `cargo test --workspace` (or `cargo build --bin geodispatch`) or set GEODISPATCH_BIN",
        path.display()
    );
    path
}

fn params() -> Params {
    Params {
        metres_per_minute: 320.0,
        pickup_service: 4.0,
        dropoff_service: 4.0,
        target: 40.0,
        max_click_to_door: 90.0,
        pay_per_order: 10.0,
        pay_per_hour: 15.0,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gd-replay-test-{name}-{}", uuid_like()))
}

fn uuid_like() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
        ^ u64::from(std::process::id())
}

async fn replay(inst: &Instance, name: &str, policy: &str, speed: f64) -> (ReplayReport, PathBuf) {
    replay_with(inst, name, policy, speed, false).await
}

async fn replay_with(
    inst: &Instance,
    name: &str,
    policy: &str,
    speed: f64,
    reposition: bool,
) -> (ReplayReport, PathBuf) {
    let dir = temp_dir(name);
    inst.write(&dir.join("instance")).expect("instance written");
    let out = dir.join(format!("out-{policy}"));
    let report = run(ReplayOptions {
        policy: policy.to_owned(),
        speed,
        reposition,
        out: Some(out.clone()),
        service_binary: Some(service_binary()),
        progress: false,
        ..ReplayOptions::new(dir.join("instance"))
    })
    .await
    .unwrap_or_else(|e| panic!("the {policy} replay of {name}: {e:#}"));
    (report, out)
}

/// Five restaurants and four couriers in a 6 km square, twelve orders over an hour.
fn synthetic_day() -> Instance {
    let mut rng = SplitMix64::new(42);
    let mut point = || Point {
        x: (rng.next_f64() * 6_000.0).round(),
        y: (rng.next_f64() * 6_000.0).round(),
    };
    let restaurants: Vec<Restaurant> = (1..=5)
        .map(|i| Restaurant {
            id: format!("r{i}"),
            at: point(),
        })
        .collect();
    let couriers: Vec<Courier> = (1..=4)
        .map(|i| Courier {
            id: format!("c{i}"),
            at: point(),
            on: 0.0,
            off: 150.0,
        })
        .collect();
    let orders: Vec<Order> = (1..=12)
        .map(|i| {
            let placement = 5.0 * i as f64;
            Order {
                id: format!("o{i}"),
                at: point(),
                placement,
                restaurant: i % 5,
                ready: placement + 8.0 + (i % 3) as f64 * 2.0,
            }
        })
        .collect();
    Instance {
        name: "synthetic".into(),
        params: params(),
        restaurants,
        orders,
        couriers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synthetic_day_replays_feasibly_under_both_policies() {
    let inst = synthetic_day();
    for (policy, reposition) in [("greedy", false), ("batched", false), ("batched", true)] {
        let (report, out) = replay_with(&inst, "synthetic", policy, 300.0, reposition).await;
        let policy = if reposition {
            "batched with repositioning"
        } else {
            policy
        };
        eprintln!("{}", geodispatch_tools::replay::summary(&report));
        assert_eq!(report.placed, 12, "{policy}");
        assert_eq!(report.delivered, 12, "{policy}: {:?}", report.offers);
        assert!(report.invariants.ok(), "{policy}");
        // Every courier reports its position at each stop while it waits there: each pickup
        // and drop-off follows its arrival, once.
        let arrivals = &report.arrivals;
        assert_eq!(
            (arrivals.pickups, arrivals.dropoffs),
            (12, 12),
            "{policy}: {arrivals:?}"
        );
        assert_eq!(
            (arrivals.arrived_pickup, arrivals.arrived_dropoff),
            (12, 12),
            "{policy}: {arrivals:?}"
        );
        assert_eq!(
            (
                arrivals.pickups_without_arrival,
                arrivals.dropoffs_without_arrival,
                arrivals.left_pickup,
                arrivals.flaps
            ),
            (0, 0, 0, 0),
            "{policy}: {arrivals:?}"
        );
        let solution = Solution::read(&out).expect("the files read back");
        assert!(solution.violations(&inst).is_empty());
        assert_eq!(solution.deliveries.len(), 12);
        assert_eq!(report.measures.delivered, 12);
        assert!(report.measures.excess.min >= 0.0, "{policy}");
        if policy != "greedy" {
            assert!(report.service.match_rounds > 0.0);
        }
        // Idle couriers were sent toward restaurants and went; their moves are in the
        // solution, which is still feasible (checked above).
        if reposition {
            assert!(
                report.service.match_repositions > 0.0 && report.offers.repositions_followed > 0,
                "{:?} {:?}",
                report.service,
                report.offers
            );
            // Two moves per delivered order; the rest are the repositions.
            assert!(
                solution.moves.len() > 2 * solution.deliveries.len(),
                "no reposition move in the solution"
            );
        } else {
            assert_eq!(report.offers.repositions_seen, 0, "{policy}");
        }
    }
}

/// One courier at the origin on duty 0–300; three orders so far apart in time that the
/// schedule is forced. 320 m a minute; services of 4 minutes (2 before, 2 after).
///
/// - o1, placed 5, ready 15, restaurant 3,200 m east (10 minutes away), customer 3,200 m
///   north of it (10 minutes): told at 5, at the restaurant at 15, picks up at 17, leaves
///   at 19, arrives at 29, drops off at 31 (free at 33). Click-to-door 26, ready-to-pickup
///   2, ready-to-door 16; ideal 10 + 2 + 10 + 2 = 24, excess 2.
/// - o2, placed 50, ready 52, same restaurant, customer at the restaurant (0 minutes): from
///   o1's customer, 10 minutes back: at 60, picks up at 62, leaves 64, drops off at 66.
///   Click-to-door 16, ready-to-pickup 10, ready-to-door 14; ideal 2 + 2 + 0 + 2 = 6,
///   excess 10.
/// - o3, placed 100, ready 140, at a restaurant 640 m west of the origin (3,840 m, 12
///   minutes, from o2's customer), customer at the origin (2 minutes from the restaurant):
///   told at 100, at the restaurant at 112, picks up at 140 (the food is late),
///   leaves 142, arrives 144, drops off at 146. Click-to-door 46 (over the 40 target, and
///   so is its ideal, 40 + 2 + 2 + 2 = 46: excess 0), ready-to-pickup 0, ready-to-door 6.
fn forced_day() -> Instance {
    Instance {
        name: "forced".into(),
        params: params(),
        restaurants: vec![
            Restaurant {
                id: "r1".into(),
                at: Point { x: 3_200.0, y: 0.0 },
            },
            Restaurant {
                id: "r2".into(),
                at: Point { x: -640.0, y: 0.0 },
            },
        ],
        orders: vec![
            Order {
                id: "o1".into(),
                at: Point {
                    x: 3_200.0,
                    y: 3_200.0,
                },
                placement: 5.0,
                restaurant: 0,
                ready: 15.0,
            },
            Order {
                id: "o2".into(),
                at: Point { x: 3_200.0, y: 0.0 },
                placement: 50.0,
                restaurant: 0,
                ready: 52.0,
            },
            Order {
                id: "o3".into(),
                at: Point { x: 0.0, y: 0.0 },
                placement: 100.0,
                restaurant: 1,
                ready: 140.0,
            },
        ],
        couriers: vec![Courier {
            id: "c1".into(),
            at: Point { x: 0.0, y: 0.0 },
            on: 0.0,
            off: 300.0,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_three_order_day_gives_the_measures_computed_by_hand() {
    let inst = forced_day();
    // Offers come within the same simulated minute as the order (a minute is 250 ms here).
    let (report, out) = replay(&inst, "forced", "greedy", 240.0).await;
    eprintln!("{}", geodispatch_tools::replay::summary(&report));
    let solution = Solution::read(&out).expect("the files read back");
    let times: Vec<(String, f64, f64, f64)> = solution
        .assignments
        .iter()
        .map(|a| {
            let d = solution
                .deliveries
                .iter()
                .find(|d| d.order == a.order)
                .expect("delivered");
            (a.order.clone(), a.assignment, a.pickup, d.dropoff)
        })
        .collect();
    assert_eq!(
        times,
        vec![
            ("o1".to_owned(), 5.0, 17.0, 31.0),
            ("o2".to_owned(), 50.0, 62.0, 66.0),
            ("o3".to_owned(), 100.0, 140.0, 146.0),
        ]
    );
    let m = &report.measures;
    assert_eq!(m.delivered, 3);
    // Click-to-door 26, 16, 46.
    assert_eq!(
        (
            m.click_to_door.min,
            m.click_to_door.median,
            m.click_to_door.max
        ),
        (16.0, 26.0, 46.0)
    );
    assert!((m.click_to_door.mean - 88.0 / 3.0).abs() < 1e-9);
    // Overage: 0, 0, 6.
    assert_eq!(m.click_to_door_overage.max, 6.0);
    assert!((m.click_to_door_overage.mean - 2.0).abs() < 1e-9);
    // Ready-to-pickup 2, 10, 0; ready-to-door 16, 14, 6.
    assert!((m.ready_to_pickup.mean - 4.0).abs() < 1e-9);
    assert_eq!(m.ready_to_pickup.max, 10.0);
    assert!((m.ready_to_door.mean - 12.0).abs() < 1e-9);
    // Ideal 24, 6, 46; excess 2, 10, 0.
    assert_eq!(m.ideal_click_to_door.max, 46.0);
    assert!((m.excess.mean - 4.0).abs() < 1e-9);
    assert_eq!((m.over_target, m.over_target_at_ideal), (1, 1));
    // Driving 10 + 10 + 10 + 0 + 12 + 2 = 44 minutes, services 3 × 8 = 24, over 300 on duty.
    assert!((m.fleet_utilisation - 68.0 / 300.0).abs() < 1e-9);
    // Earnings 30, guaranteed 15 × 5 h = 75.
    assert_eq!(m.total_compensation, 75.0);
    assert!((m.orders_per_courier_hour - 3.0 / 5.0).abs() < 1e-9);
}
