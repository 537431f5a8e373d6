//! `geodispatch-tools replay mdrp <instance-dir>`: replay a real meal-delivery day (the
//! Grubhub / Georgia Tech MDRP instances, Reyes et al. 2018) through the service, with the
//! couriers played by the tool, and measure the quality of the service's dispatch decisions
//! with the authors' measures.
//!
//! **Clock.** One simulated clock: `t_sim = t_begin + (real − t0) × speed / 60 000` minutes,
//! so `--speed N` runs simulated time N times faster than real time (1 simulated minute =
//! 60 000 / N real ms). The day starts a minute before its first order (`t_begin`; nothing
//! happens earlier: couriers already on duty simply wait at their start) and ends when every
//! order is delivered or failed, or when every courier has gone off duty and none carries an
//! order. Each action (an order placed, a courier coming on duty, a pickup, a drop-off, a
//! courier going off duty, the position reports every simulated minute) is executed over
//! HTTP at the real time of its simulated minute.
//!
//! **Couriers.** A courier comes on duty at its `on_time` at its start point (an `available`
//! position), reports its position every simulated minute (interpolated along straight
//! lines), and accepts every offer it can honour. Its schedule follows the instance's rules
//! in whole simulated minutes ([`schedule`]): the assignment time is the simulated minute of
//! the offer (the service's own time of the transition, rounded to the nearest whole minute
//! and never before the order's placement); it leaves then, or when its previous drop-off
//! service ends; travel takes `ceil(metres / metres_per_minute)` minutes; it picks up at
//! `max(ready, arrival + pickup_service / 2)` (`POST …/pickup` at that minute) and drops off
//! at the customer's arrival + `dropoff_service / 2` (`POST …/deliver`), then waits at the
//! customer for the next offer. The schedule is therefore feasible by construction; the
//! tool still checks the solution it wrote ([`solution`]) and refuses an infeasible day.
//!
//! **Off-time.** No pickup may fall after a courier's `off_time`. A courier goes off duty
//! (`offline`) at `off_time − pickup_service / 2`: an instruction received later could not
//! reach a pickup by the off-time anyway. An offer received earlier whose pickup would fall
//! after the off-time is rejected (counted as `refused_off_time`); the service then offers
//! the order to someone else. A courier carrying an order at its off-duty time delivers it
//! first, then goes offline.
//!
//! **Repositioning** (`--reposition`: the service's `reposition_idle_drivers`, the last 60
//! simulated minutes of orders as demand, 15 ahead). A courier told by a `driver.reposition`
//! event to move to a restaurant does so when it is on duty, idle and not already moving (the
//! rules allow no diversion): it leaves at the event's whole minute (or when free) and takes
//! the travel rule's time; an offer received on the way starts from the restaurant once it is
//! there. The solution files carry such moves as moves to a restaurant between instructions.
//!
//! **Settings** (a service the tool starts; [`service::settings_env`]): each interval and time
//! to live is a simulated duration, so the service behaves the same at every speed: matching
//! rounds every `--round-min` simulated minutes (default 1), `match_lookahead_ms` 180 minutes
//! (every order is in the pool from its placement), `match_speed_mps` the instance's speed in
//! real time (`metres_per_minute × speed / 60`), offers live 5 minutes, retries every 0.5,
//! the timer scan every 0.1, drivers stay fresh 10 minutes (they report every minute),
//! `dispatch_max_attempts` 10⁹ (an order waits for a courier rather than failing), the
//! dispatch radius covers the whole instance, couriers are ranked by distance alone
//! (`ranking_score_weight = 0`), and arrivals are detected within 50 m after half a simulated
//! minute (`service::ARRIVAL_DWELL_MIN`; the summary counts them, [`arrivals`]). Against a
//! running service (`--url`) none of this can be set: start it with the variables the tool
//! writes to `service.env` and the service area in `cities.geojson` (`--write-service-files`
//! writes both and exits).
//!
//! The output directory receives the three solution files in the authors' format
//! (`solution_info_assignments.txt`, `solution_info_orders.txt`,
//! `solution_info_couriers.txt`), `summary.json` and, for a service the tool started, its log.

pub mod arrivals;
pub mod instance;
pub mod measures;
pub mod schedule;
mod service;

pub use service::service_binary;
pub mod solution;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use geodispatch::events::{InvariantReport, OrderEvent, check_invariants};
use geodispatch_testkit::load::Conn;
use geodispatch_testkit::now_ms;

use instance::{Instance, Point};
use measures::{Measures, measure};
use schedule::{Leg, Place, Reposition, plan, plan_reposition};
pub use service::{CITY, Plane, Timing};
use solution::Solution;

/// Where the instance's plane is placed on the globe (its centre): Chicago.
pub const ORIGIN: (f64, f64) = (41.88, -87.63);

/// Default `--speed`: a 1,000-order day (about 17 simulated hours from first order to last
/// delivery) replays in under 15 minutes.
pub const DEFAULT_SPEED: f64 = 80.0;
/// Default `--busy-horizon-min`.
pub const DEFAULT_BUSY_HORIZON_MIN: f64 = 10.0;
/// Default `--lead-margin-min`: a round and a half (travel is rounded up to whole minutes, and
/// a courier is noticed free one round late), which measured better than half a minute on
/// `0o100t100s1p100` (docs/DISPATCH-QUALITY.md).
pub const DEFAULT_LEAD_MARGIN_MIN: f64 = 1.5;

/// Every knob of a replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The instance directory.
    pub instance: PathBuf,
    /// `greedy` or `batched` (the service's `dispatch_policy`; ignored with `url`).
    pub policy: String,
    /// Simulated time runs this many times faster than real time.
    pub speed: f64,
    /// Simulated minutes between two matching rounds (batched policy).
    pub round_min: f64,
    /// Rounds count on couriers who will be free within this many simulated minutes (0: only
    /// free couriers).
    pub busy_horizon_min: f64,
    /// Simulated minutes a round aims to have the courier at the restaurant before the food is
    /// ready, beyond half the pickup service.
    pub lead_margin_min: f64,
    /// Rounds send idle couriers toward the restaurants of recent orders
    /// (`reposition_idle_drivers`; batched policy).
    pub reposition: bool,
    /// A running service (`http://host:port`) instead of one started by the tool.
    pub url: Option<String>,
    /// API key for `url`.
    pub key: Option<String>,
    /// Output directory (default: a new temporary directory).
    pub out: Option<PathBuf>,
    /// The `geodispatch` binary to start (default: next to this executable).
    pub service_binary: Option<PathBuf>,
    /// Show a progress line on stderr.
    pub progress: bool,
}

impl ReplayOptions {
    /// The durations behind the service's settings.
    pub fn timing(&self) -> Timing {
        Timing {
            speed: self.speed,
            round_min: self.round_min,
            busy_horizon_min: self.busy_horizon_min,
            lead_margin_min: self.lead_margin_min,
            reposition: self.reposition,
        }
    }

    /// Defaults for `instance`.
    pub fn new(instance: PathBuf) -> Self {
        Self {
            instance,
            policy: "greedy".to_owned(),
            speed: DEFAULT_SPEED,
            round_min: 1.0,
            busy_horizon_min: DEFAULT_BUSY_HORIZON_MIN,
            lead_margin_min: DEFAULT_LEAD_MARGIN_MIN,
            reposition: false,
            url: None,
            key: None,
            out: None,
            service_binary: None,
            progress: true,
        }
    }
}

/// How the couriers answered the offers they saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Offers {
    /// Offers seen (events `offered` of the replay's orders).
    pub seen: u64,
    /// Accepted.
    pub accepted: u64,
    /// Rejected: the pickup would have fallen after the courier's off-time.
    pub refused_off_time: u64,
    /// Rejected: the courier was off duty, or (a service error) already carrying an order.
    pub refused_unavailable: u64,
    /// Accepts the service refused (the offer had expired).
    pub accept_failed: u64,
    /// Offers that expired unanswered (events `expired`).
    pub expired: u64,
    /// `driver.reposition` events of the replay's couriers.
    pub repositions_seen: u64,
    /// Of those, the moves the couriers made (the others came while a courier was busy, on
    /// another move, off duty, or already there).
    pub repositions_followed: u64,
}

/// The service's own figures, from `GET /metrics` at the end of the day.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceFigures {
    /// `geodispatch_dispatch_outcomes_total` by outcome (greedy dispatches and retries).
    pub dispatch_outcomes: BTreeMap<String, f64>,
    /// `geodispatch_match_rounds_total`.
    pub match_rounds: f64,
    /// `geodispatch_match_claims_total{result="offered"}`.
    pub match_offered: f64,
    /// `geodispatch_match_claims_total{result="conflict"}`.
    pub match_conflicts: f64,
    /// `geodispatch_match_waiting_total`: order-rounds spent waiting for a driver about to be
    /// free.
    pub match_waiting: f64,
    /// `geodispatch_timers_fired_total`.
    pub timers_fired: f64,
    /// `geodispatch_match_repositions_total`: idle couriers sent toward a restaurant.
    pub match_repositions: f64,
}

/// What a replay measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Instance name.
    pub instance: String,
    /// Dispatch policy (`greedy`, `batched`, or `external` for `--url`).
    pub policy: String,
    /// Speed (time compression).
    pub speed: f64,
    /// Simulated minutes between rounds.
    pub round_min: f64,
    /// Simulated minutes ahead rounds count on couriers about to be free.
    pub busy_horizon_min: f64,
    /// Simulated minutes of arrival before the ready time aimed at, beyond half the pickup
    /// service.
    pub lead_margin_min: f64,
    /// Whether rounds sent idle couriers toward restaurants.
    pub reposition: bool,
    /// Where the files are.
    pub out: PathBuf,
    /// Wall time of the day, seconds.
    pub wall_s: f64,
    /// Simulated minutes from the first to the last action.
    pub simulated_min: f64,
    /// Orders placed (answered 201).
    pub placed: usize,
    /// Orders delivered.
    pub delivered: usize,
    /// Orders the service failed.
    pub failed: usize,
    /// Orders neither delivered nor failed when the day ended (cancelled then).
    pub unserved: usize,
    /// The couriers' answers.
    pub offers: Offers,
    /// Measures of the solution written.
    pub measures: Measures,
    /// The service's figures.
    pub service: ServiceFigures,
    /// The invariant check of the event history.
    pub invariants: InvariantReport,
    /// Arrival events against pickups and drop-offs.
    pub arrivals: arrivals::Arrivals,
}

/// Something to do at a simulated minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    /// Courier comes on duty.
    OnDuty(usize),
    /// Order placed.
    Place(usize),
    /// Courier picks up its current order.
    Pickup(usize),
    /// Courier drops off its current order.
    Deliver(usize),
    /// Courier goes off duty (after its current order).
    Retire(usize),
    /// Every courier reports its position.
    Tick,
}

/// Simulated minutes ↔ real time.
struct Clock {
    start: Instant,
    epoch0: i64,
    begin: f64,
    speed: f64,
}

impl Clock {
    fn now(&self) -> f64 {
        self.begin + self.start.elapsed().as_secs_f64() * self.speed / 60.0
    }

    fn instant(&self, t: f64) -> Instant {
        self.start + Duration::from_secs_f64(((t - self.begin) * 60.0 / self.speed).max(0.0))
    }

    fn epoch_ms(&self, t: f64) -> i64 {
        self.epoch0 + ((t - self.begin) * 60_000.0 / self.speed).round() as i64
    }

    fn of_epoch_ms(&self, ms: i64) -> f64 {
        self.begin + (ms - self.epoch0) as f64 * self.speed / 60_000.0
    }
}

/// One courier during the day.
struct CourierState {
    on_duty: bool,
    retired: bool,
    place: Place,
    at: Point,
    free_at: f64,
    current: Option<(Leg, u64)>,
    legs: Vec<Leg>,
    /// The reposition moves made, the last one possibly under way.
    moves: Vec<Reposition>,
}

impl CourierState {
    /// Where the courier is at simulated minute `t`.
    fn position_at(&self, inst: &Instance, t: f64) -> Point {
        if let Some(p) = self.moves.last().and_then(|m| m.position_at(inst, t)) {
            return p;
        }
        match &self.current {
            Some((leg, _)) => leg.position_at(inst, t),
            None => self.at,
        }
    }
}

/// A keep-alive connection that reconnects once when the server closed it.
struct Http {
    conn: Conn,
}

impl Http {
    async fn open(addr: &str, key: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            conn: Conn::open(addr).await?.with_bearer(key),
        })
    }

    async fn send(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("json"));
        for _ in 0..3 {
            match self.conn.request(method, path, bytes.as_deref()).await {
                Ok((status, answer)) => {
                    return (
                        status,
                        serde_json::from_slice(answer).unwrap_or(Value::Null),
                    );
                }
                Err(_) => {
                    let _ = self.conn.reconnect().await;
                }
            }
        }
        (0, Value::Null)
    }
}

/// The day in progress.
struct Day<'a> {
    inst: &'a Instance,
    plane: Plane,
    clock: Clock,
    tag: String,
    http: Http,
    couriers: Vec<CourierState>,
    queue: BinaryHeap<Reverse<(i64, u64, Action)>>,
    seq: u64,
    placed: Vec<bool>,
    placed_count: usize,
    ended: Vec<bool>,
    delivered: usize,
    failed: usize,
    retire_pending: usize,
    offers: Offers,
    orders_by_id: HashMap<String, usize>,
    couriers_by_id: HashMap<String, usize>,
    errors: BTreeMap<String, u64>,
    last_action: f64,
}

fn key_of(t: f64) -> i64 {
    (t * 1_000_000.0).round() as i64
}

impl Day<'_> {
    fn schedule(&mut self, t: f64, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse((key_of(t), self.seq, action)));
    }

    fn order_id(&self, o: usize) -> String {
        format!("{}{}", self.tag, self.inst.orders[o].id)
    }

    fn driver_id(&self, c: usize) -> String {
        format!("{}{}", self.tag, self.inst.couriers[c].id)
    }

    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }

    /// Report positions (with a status, or keeping the current one).
    async fn post_positions(&mut self, items: &[(usize, Point, Option<&str>)]) {
        for chunk in items.chunks(1_000) {
            let now = now_ms();
            let positions: Vec<Value> = chunk
                .iter()
                .map(|&(c, p, status)| {
                    let (lat, lon) = self.plane.to_geo(p);
                    let mut v = json!({"driver_id": self.driver_id(c), "lat": lat, "lon": lon, "recorded_at": now});
                    if let Some(s) = status {
                        v["status"] = json!(s);
                    }
                    v
                })
                .collect();
            let (status, answer) = self
                .http
                .send(
                    "POST",
                    "/v1/locations/batch",
                    Some(&json!({ "positions": positions })),
                )
                .await;
            if status != 200 {
                self.error(format!("positions {status}"));
            } else if let Some(results) = answer["results"].as_array() {
                for r in results {
                    if r["status"].as_str().is_some_and(|s| s != "accepted") {
                        self.error(format!("position {}", r["status"]));
                    }
                }
            }
        }
    }

    async fn answer(&mut self, o: usize, op: &str, c: usize, fence: u64) -> u16 {
        let path = format!("/v1/orders/{}/{op}", self.order_id(o));
        let body = json!({"driver_id": self.driver_id(c), "fencing_token": fence});
        let (status, _) = self.http.send("POST", &path, Some(&body)).await;
        if status != 200 {
            self.error(format!("{op} {status}"));
        }
        status
    }

    async fn act(&mut self, t: f64, action: Action) {
        self.last_action = self.last_action.max(t);
        match action {
            Action::OnDuty(c) => {
                self.couriers[c].on_duty = true;
                let at = self.couriers[c].at;
                self.post_positions(&[(c, at, Some("available"))]).await;
            }
            Action::Place(o) => {
                let order = &self.inst.orders[o];
                let (plat, plon) = self.plane.to_geo(self.inst.pickup_of(order));
                let (dlat, dlon) = self.plane.to_geo(order.at);
                let body = json!({"order_id": self.order_id(o),
                    "pickup": {"lat": plat, "lon": plon}, "dropoff": {"lat": dlat, "lon": dlon},
                    "ready_at": self.clock.epoch_ms(order.ready)});
                let (status, answer) = self.http.send("POST", "/v1/orders", Some(&body)).await;
                self.placed[o] = true;
                self.placed_count += 1;
                if status != 201 {
                    self.ended[o] = true;
                    self.error(format!("create {status} {}", answer["type"]));
                }
            }
            Action::Pickup(c) => {
                if let Some((leg, fence)) = self.couriers[c].current {
                    // Still at the restaurant when handed the food (a position there, as at the
                    // customer before a drop-off).
                    let restaurant = self.inst.pickup_of(&self.inst.orders[leg.order]);
                    self.post_positions(&[(c, restaurant, None)]).await;
                    self.answer(leg.order, "pickup", c, fence).await;
                }
            }
            Action::Deliver(c) => {
                let Some((leg, fence)) = self.couriers[c].current else {
                    return;
                };
                let customer = self.inst.orders[leg.order].at;
                self.post_positions(&[(c, customer, None)]).await;
                if self.answer(leg.order, "deliver", c, fence).await == 200 {
                    self.delivered += 1;
                    self.ended[leg.order] = true;
                    let st = &mut self.couriers[c];
                    st.legs.push(leg);
                }
                let st = &mut self.couriers[c];
                st.current = None;
                st.place = Place::Customer(leg.order);
                st.at = customer;
                st.free_at = leg.free;
                if st.retired {
                    self.post_positions(&[(c, customer, Some("offline"))]).await;
                }
            }
            Action::Retire(c) => {
                self.retire_pending -= 1;
                let st = &mut self.couriers[c];
                st.retired = true;
                if st.on_duty && st.current.is_none() {
                    let at = st.at;
                    self.post_positions(&[(c, at, Some("offline"))]).await;
                }
            }
            Action::Tick => {
                let items: Vec<(usize, Point, Option<&str>)> = self
                    .couriers
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.on_duty && !(s.retired && s.current.is_none()))
                    .map(|(c, s)| (c, s.position_at(self.inst, t), None))
                    .collect();
                self.post_positions(&items).await;
                if !self.done() {
                    self.schedule(t + 1.0, Action::Tick);
                }
            }
        }
    }

    async fn on_event(&mut self, e: &OrderEvent) {
        if e.kind == "driver.reposition" {
            self.on_reposition(e);
            return;
        }
        let Some(&o) = self.orders_by_id.get(&e.order_id) else {
            return;
        };
        match e.kind.as_str() {
            "offered" => self.on_offer(o, e).await,
            "failed" | "cancelled" if !self.ended[o] => {
                self.ended[o] = true;
                self.failed += 1;
            }
            "expired" => self.offers.expired += 1,
            _ => {}
        }
    }

    async fn on_offer(&mut self, o: usize, e: &OrderEvent) {
        self.offers.seen += 1;
        let Some(&c) = self.couriers_by_id.get(&e.driver_id) else {
            return;
        };
        let order = &self.inst.orders[o];
        let st = &self.couriers[c];
        if !st.on_duty || st.retired || st.current.is_some() {
            self.offers.refused_unavailable += 1;
            self.answer(o, "reject", c, e.fencing_token).await;
            let st = &self.couriers[c];
            if st.retired && st.current.is_none() {
                let at = st.at;
                self.post_positions(&[(c, at, Some("offline"))]).await;
            }
            return;
        }
        let assignment = self.clock.of_epoch_ms(e.at_ms).round().max(order.placement);
        let leg = plan(self.inst, st.place, st.at, st.free_at, assignment, o);
        if leg.pickup > self.inst.couriers[c].off {
            self.offers.refused_off_time += 1;
            self.answer(o, "reject", c, e.fencing_token).await;
            return;
        }
        if self.answer(o, "accept", c, e.fencing_token).await != 200 {
            self.offers.accept_failed += 1;
            return;
        }
        self.offers.accepted += 1;
        self.couriers[c].current = Some((leg, e.fencing_token));
        self.schedule(leg.pickup, Action::Pickup(c));
        self.schedule(leg.dropoff, Action::Deliver(c));
    }

    /// A courier told to move to a restaurant goes there if it is idle, on duty and not on
    /// another move (a move cannot be diverted), and the restaurant is not where it is.
    fn on_reposition(&mut self, e: &OrderEvent) {
        let (Some(&c), Some(lat), Some(lon)) =
            (self.couriers_by_id.get(&e.driver_id), e.lat, e.lon)
        else {
            return;
        };
        self.offers.repositions_seen += 1;
        let told = self.clock.of_epoch_ms(e.at_ms).round();
        let st = &self.couriers[c];
        let moving = st.moves.last().is_some_and(|m| m.arrive > told);
        if !st.on_duty || st.retired || st.current.is_some() || moving {
            return;
        }
        // The restaurant at the spot (the service's spots are the orders' pickups).
        let Some(r) = (0..self.inst.restaurants.len()).min_by(|&a, &b| {
            let d = |r: usize| {
                let (la, lo) = self.plane.to_geo(self.inst.restaurants[r].at);
                (la - lat).powi(2) + (lo - lon).powi(2)
            };
            d(a).total_cmp(&d(b))
        }) else {
            return;
        };
        if st.place == Place::Restaurant(r) {
            return;
        }
        let before_leg = st.legs.len();
        let m = plan_reposition(self.inst, st.place, st.at, st.free_at, told, r, before_leg);
        let st = &mut self.couriers[c];
        st.moves.push(m);
        st.place = Place::Restaurant(r);
        st.at = self.inst.restaurants[r].at;
        st.free_at = m.arrive;
        self.offers.repositions_followed += 1;
    }

    fn in_flight(&self) -> usize {
        self.couriers.iter().filter(|s| s.current.is_some()).count()
    }

    fn done(&self) -> bool {
        self.placed_count == self.placed.len()
            && self.in_flight() == 0
            && (self.ended.iter().all(|e| *e) || self.retire_pending == 0)
    }
}

/// Write the service area and the settings a service needs for this instance into `out`.
pub fn write_service_files(opts: &ReplayOptions, out: &std::path::Path) -> anyhow::Result<()> {
    let inst = Instance::load(&opts.instance)?;
    std::fs::create_dir_all(out)?;
    let plane = Plane::new(&inst, ORIGIN.0, ORIGIN.1);
    let cities = out.join("cities.geojson");
    std::fs::write(
        &cities,
        serde_json::to_string_pretty(&plane.cities_geojson(&inst, 2_000.0))?,
    )?;
    let env = service::settings_env(&inst, &opts.policy, opts.timing(), &cities);
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(out.join("service.env"), text)?;
    Ok(())
}

/// Replay a day and measure it. Fails, after writing the solution files, when the solution
/// is infeasible or the event history breaks an invariant.
pub async fn run(opts: ReplayOptions) -> anyhow::Result<ReplayReport> {
    let inst = Instance::load(&opts.instance)?;
    if !(opts.speed > 0.0 && opts.speed.is_finite()) {
        bail!("--speed must be a positive number");
    }
    if opts.url.is_none() && !matches!(opts.policy.as_str(), "greedy" | "batched") {
        bail!("--policy is greedy or batched");
    }
    let out = match &opts.out {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!(
            "gd-replay-{}-{}",
            inst.name,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    write_service_files(&opts, &out)?;
    let plane = Plane::new(&inst, ORIGIN.0, ORIGIN.1);

    let (local, addr, key) = match &opts.url {
        Some(url) => (None, crate::sim::address_of(url), opts.key.clone()),
        None => {
            let binary = service::service_binary(opts.service_binary.clone())?;
            let env = service::settings_env(
                &inst,
                &opts.policy,
                opts.timing(),
                &out.join("cities.geojson"),
            );
            let svc = service::LocalService::start(&binary, &env, &out).await?;
            let addr = svc.addr.clone();
            (Some(svc), addr, None)
        }
    };
    let result = play(&opts, &inst, plane, &out, &addr, key, local.as_ref()).await;
    if let Some(svc) = local {
        svc.stop().await;
        let _ = std::fs::remove_dir_all(out.join("redis"));
    }
    result
}

async fn play(
    opts: &ReplayOptions,
    inst: &Instance,
    plane: Plane,
    out: &std::path::Path,
    addr: &str,
    key: Option<String>,
    local: Option<&service::LocalService>,
) -> anyhow::Result<ReplayReport> {
    // Events first, so that no offer is missed.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (conn_tx, conn_rx) = tokio::sync::oneshot::channel();
    let follower = tokio::spawn(crate::sim::follow_events(
        addr.to_owned(),
        key.clone(),
        CITY.to_owned(),
        ev_tx,
        conn_tx,
    ));
    tokio::time::timeout(Duration::from_secs(10), conn_rx)
        .await
        .context("the event stream did not open")?
        .context("the event stream closed")?;

    let tag = format!("rp{}-", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let begin = inst
        .orders
        .iter()
        .map(|o| o.placement)
        .fold(f64::INFINITY, f64::min)
        .floor()
        - 1.0;
    let half_pickup = inst.params.pickup_service / 2.0;
    let started = Instant::now();
    let mut day = Day {
        inst,
        plane,
        clock: Clock {
            start: started,
            epoch0: now_ms(),
            begin,
            speed: opts.speed,
        },
        http: Http::open(addr, key.as_deref()).await?,
        couriers: inst
            .couriers
            .iter()
            .map(|c| CourierState {
                on_duty: false,
                retired: false,
                place: Place::Start,
                at: c.at,
                free_at: c.on,
                current: None,
                legs: Vec::new(),
                moves: Vec::new(),
            })
            .collect(),
        queue: BinaryHeap::new(),
        seq: 0,
        placed: vec![false; inst.orders.len()],
        placed_count: 0,
        ended: vec![false; inst.orders.len()],
        delivered: 0,
        failed: 0,
        retire_pending: 0,
        offers: Offers::default(),
        orders_by_id: HashMap::new(),
        couriers_by_id: HashMap::new(),
        errors: BTreeMap::new(),
        last_action: begin,
        tag,
    };
    day.orders_by_id = (0..inst.orders.len())
        .map(|o| (day.order_id(o), o))
        .collect();
    day.couriers_by_id = (0..inst.couriers.len())
        .map(|c| (day.driver_id(c), c))
        .collect();
    for (c, courier) in inst.couriers.iter().enumerate() {
        let retire = courier.off - half_pickup;
        if retire <= begin || retire <= courier.on {
            continue;
        }
        day.schedule(courier.on.max(begin), Action::OnDuty(c));
        day.schedule(retire, Action::Retire(c));
        day.retire_pending += 1;
    }
    for (o, order) in inst.orders.iter().enumerate() {
        day.schedule(order.placement, Action::Place(o));
    }
    day.schedule(begin, Action::Tick);

    let mut events: Vec<OrderEvent> = Vec::new();
    let mut last_progress = Instant::now();
    while !day.done() {
        // Every action due, in time order.
        while let Some(Reverse((k, _, _))) = day.queue.peek() {
            let t = *k as f64 / 1_000_000.0;
            if t > day.clock.now() {
                break;
            }
            let Some(Reverse((_, _, action))) = day.queue.pop() else {
                break;
            };
            day.act(t, action).await;
        }
        if day.done() {
            break;
        }
        let next = day
            .queue
            .peek()
            .map(|Reverse((k, _, _))| day.clock.instant(*k as f64 / 1_000_000.0))
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
        match tokio::time::timeout_at(next.into(), ev_rx.recv()).await {
            Ok(Some(e)) => {
                day.on_event(&e).await;
                events.push(e);
            }
            Ok(None) => bail!("the event stream ended"),
            Err(_) => {}
        }
        if opts.progress && last_progress.elapsed() > Duration::from_millis(500) {
            last_progress = Instant::now();
            eprint!(
                "\r{} {}: minute {:>5.0}  placed {:>5}/{}  delivered {:>5}  carrying {:>4}   ",
                inst.name,
                opts.policy,
                day.clock.now(),
                day.placed_count,
                inst.orders.len(),
                day.delivered,
                day.in_flight()
            );
        }
    }
    if opts.progress {
        eprintln!();
    }
    let wall_s = started.elapsed().as_secs_f64();

    // Orders nobody served: cancel them, so that a shared service is left clean.
    let mut unserved = 0;
    for o in 0..inst.orders.len() {
        if day.placed[o] && !day.ended[o] {
            unserved += 1;
            let path = format!("/v1/orders/{}/cancel", day.order_id(o));
            day.http.send("POST", &path, Some(&json!({}))).await;
        }
    }
    // The last events (the cancellations), then the history.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(e) = ev_rx.try_recv() {
        events.push(e);
    }
    follower.abort();
    let (_, metrics_text) = {
        let mut conn = Conn::open(addr).await?.with_bearer(key.as_deref());
        let (status, body) = conn.request("GET", "/metrics", None).await?;
        (status, String::from_utf8_lossy(body).into_owned())
    };
    let history = match local {
        Some(svc) => {
            let store = geodispatch::store::Store::connect_to(
                &geodispatch::store::Topology::Standalone(svc.redis_url()),
                "replay",
                Duration::from_secs(5),
                2,
            )?;
            geodispatch::events::read_history(&store, CITY).await?
        }
        None => events
            .into_iter()
            .filter(|e| day.orders_by_id.contains_key(&e.order_id))
            .collect(),
    };
    let invariants = check_invariants(&history);
    let arrivals = arrivals::count(&history);

    // The solution, written, read back and checked.
    let legs: Vec<Vec<Leg>> = day.couriers.iter().map(|s| s.legs.clone()).collect();
    let moves: Vec<Vec<Reposition>> = day.couriers.iter().map(|s| s.moves.clone()).collect();
    Solution::from_legs(inst, &legs, &moves).write(inst, out)?;
    let solution = Solution::read(out)?;
    let violations = solution.violations(inst);
    if !violations.is_empty() {
        bail!(
            "the day's solution is infeasible ({} violations; files in {}): {}",
            violations.len(),
            out.display(),
            violations
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if !invariants.ok() {
        bail!(
            "the event history breaks the service's invariants: {}",
            invariants.violations.join("; ")
        );
    }
    let measures = measure(inst, &solution);

    let mut service_figures = ServiceFigures {
        match_rounds: service::metric(&metrics_text, "geodispatch_match_rounds_total"),
        match_offered: service::metric(
            &metrics_text,
            "geodispatch_match_claims_total{result=\"offered\"}",
        ),
        match_conflicts: service::metric(
            &metrics_text,
            "geodispatch_match_claims_total{result=\"conflict\"}",
        ),
        match_waiting: service::metric(&metrics_text, "geodispatch_match_waiting_total"),
        timers_fired: service::metric(&metrics_text, "geodispatch_timers_fired_total"),
        match_repositions: service::metric(&metrics_text, "geodispatch_match_repositions_total"),
        ..ServiceFigures::default()
    };
    for outcome in [
        "offered",
        "no_driver",
        "locked",
        "not_pending",
        "lock_lost",
        "error",
    ] {
        let v = service::metric(
            &metrics_text,
            &format!("geodispatch_dispatch_outcomes_total{{outcome=\"{outcome}\""),
        );
        if v > 0.0 {
            service_figures
                .dispatch_outcomes
                .insert(outcome.to_owned(), v);
        }
    }
    if !day.errors.is_empty() {
        tracing::warn!(errors = ?day.errors, "requests the service refused");
    }
    let report = ReplayReport {
        instance: inst.name.clone(),
        policy: if opts.url.is_some() {
            "external".to_owned()
        } else {
            opts.policy.clone()
        },
        speed: opts.speed,
        round_min: opts.round_min,
        busy_horizon_min: opts.busy_horizon_min,
        lead_margin_min: opts.lead_margin_min,
        reposition: opts.reposition,
        out: out.to_owned(),
        wall_s,
        simulated_min: day.last_action - begin,
        placed: day.placed_count
            - day
                .errors
                .iter()
                .filter(|(k, _)| k.starts_with("create"))
                .map(|(_, n)| *n as usize)
                .sum::<usize>(),
        delivered: day.delivered,
        failed: day.failed,
        unserved,
        offers: day.offers.clone(),
        measures,
        service: service_figures,
        invariants,
        arrivals,
    };
    let mut json = serde_json::to_value(&report)?;
    json["request_errors"] = json!(day.errors);
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(report)
}

/// A human-readable summary of a report.
pub fn summary(r: &ReplayReport) -> String {
    let m = &r.measures;
    let row = |name: &str, s: &measures::Stats| {
        format!(
            "  {name:<22} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
            s.mean, s.sd, s.min, s.p10, s.median, s.p90, s.max
        )
    };
    let mut s = format!(
        "{} — policy {}, speed {}×, {:.0} simulated minutes in {:.0} s\n\
         orders: {} placed, {} delivered, {} failed, {} unserved at the end\n\
         offers: {} seen, {} accepted, {} refused (pickup after off-time), {} refused (off duty), {} accepts refused, {} expired\n\
         \n  {:<22} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        r.instance,
        r.policy,
        r.speed,
        r.simulated_min,
        r.wall_s,
        r.placed,
        r.delivered,
        r.failed,
        r.unserved,
        r.offers.seen,
        r.offers.accepted,
        r.offers.refused_off_time,
        r.offers.refused_unavailable,
        r.offers.accept_failed,
        r.offers.expired,
        "minutes",
        "mean",
        "sd",
        "min",
        "p10",
        "median",
        "p90",
        "max"
    );
    s.push_str(&row("click-to-door", &m.click_to_door));
    s.push_str(&row("click-to-door overage", &m.click_to_door_overage));
    s.push_str(&row("ready-to-door", &m.ready_to_door));
    s.push_str(&row("ready-to-pickup", &m.ready_to_pickup));
    s.push_str(&row("ideal click-to-door", &m.ideal_click_to_door));
    s.push_str(&row("excess over ideal", &m.excess));
    s.push_str(&format!("  {:<22}\n", "per courier"));
    s.push_str(&row("utilisation", &m.utilisation));
    s.push_str(&row("earnings", &m.earnings));
    s.push_str(&row("compensation", &m.compensation));
    s.push_str(&format!(
        "\ngoal: excess mean {:.2} p90 {:.2}; over the {}-minute target {} ({} of them even at the ideal); ready-to-pickup mean {:.2} p90 {:.2}\n\
         fleet utilisation {:.3}; {:.3} orders per courier-hour; total compensation {:.2}\n\
         service: dispatch outcomes {:?}; rounds {}, round offers {}, claim conflicts {}; repositions {} sent, {} seen by couriers, {} followed\n\
         invariants over {} events: double assignments {}, drivers with two orders {}, events after an order ended {}, fence regressions {}\n\
         arrivals: {} at pickups for {} pickups ({} pickups without one), {} at drop-offs for {} drop-offs ({} without one), {} left pickup, {} flaps\n\
         files in {}\n",
        m.excess.mean,
        m.excess.p90,
        m.target,
        m.over_target,
        m.over_target_at_ideal,
        m.ready_to_pickup.mean,
        m.ready_to_pickup.p90,
        m.fleet_utilisation,
        m.orders_per_courier_hour,
        m.total_compensation,
        r.service.dispatch_outcomes,
        r.service.match_rounds,
        r.service.match_offered,
        r.service.match_conflicts,
        r.service.match_repositions,
        r.offers.repositions_seen,
        r.offers.repositions_followed,
        r.invariants.events,
        r.invariants.double_assignments,
        r.invariants.driver_double_orders,
        r.invariants.after_terminal,
        r.invariants.fence_regressions,
        r.arrivals.arrived_pickup,
        r.arrivals.pickups,
        r.arrivals.pickups_without_arrival,
        r.arrivals.arrived_dropoff,
        r.arrivals.dropoffs,
        r.arrivals.dropoffs_without_arrival,
        r.arrivals.left_pickup,
        r.arrivals.flaps,
        r.out.display()
    ));
    s
}
