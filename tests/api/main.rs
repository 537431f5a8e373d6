//! Integration tests: the real app on real `redis-server` processes (one per test, on a free
//! loopback port). Nothing here touches the machine's own Redis on 6379.

mod arrivals;
mod browser;
mod cities;
mod dispatch_load;
mod drivers;
mod errors;
mod faults;
mod health_and_docs;
#[allow(dead_code)] // helpers are shared by test modules; not every one uses every helper
mod helpers;
mod layout;
mod lock;
mod matching;
mod observability;
mod orders;
mod project;
mod protection;
mod queue;
mod quickstart;
mod ranking;
mod search;
mod stale;
mod topology;
mod webhooks;
