//! A short city simulation against the in-process service: moving drivers, Poisson orders,
//! drivers accepting, rejecting and ignoring offers; the event history must show no invariant
//! violation and every order answered 201 must be seen.

use std::time::Duration;

use geodispatch_tools::sim::{SimOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_simulation_keeps_every_invariant_and_loses_no_order() {
    let report = run(SimOptions {
        drivers: 300,
        duration: Duration::from_secs(4),
        report_every: Duration::from_secs(1),
        orders_per_s: 25.0,
        offer_ttl_ms: 500,
        drain: Duration::from_secs(20),
        progress: false,
        ..SimOptions::default()
    })
    .await
    .expect("the simulation runs");
    eprintln!("{}", geodispatch_tools::sim::summary(&report));
    assert!(report.ok(), "{:#?}", report.invariants.violations);
    assert_eq!(report.orders.lost, 0);
    assert!(report.orders.created >= 50, "{:?}", report.orders);
    assert!(
        report.orders.delivered > 0 && report.orders.rejected > 0,
        "{:?}",
        report.orders
    );
    assert_eq!(
        report.orders.open_at_end, 0,
        "every order ended within the drain time"
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.ops["positions"].ok >= 3);
}
