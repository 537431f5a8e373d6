//! The key schema: every Redis key and channel the service uses, each with one builder.
//!
//! City data lives under `{prefix}:{<city>}:…`: the braces are a Redis Cluster hash tag, so
//! every key of one city lies in one hash slot and a script may take several of them. Global
//! data lives under `{prefix}:…`, and the keys that one script or transaction takes together
//! share a tag of their own (`{drivers}`, `{auth}`). The prefix (`key_prefix`, `gd` by default)
//! lets tenants and tests share one Redis.
//!
//! The KEYS of each multi-key script are assembled here too ([`Keys::order_script`],
//! [`Keys::driver_script`], …), and [`Keys::script_key_sets`] lists them for the startup check
//! that each set lies in one Cluster slot, so the check can never drift from what the scripts
//! are given. [`Keys::templates`] renders every builder with placeholders, which the
//! architecture document's key table is checked against.

use std::fmt::Display;
use std::sync::Arc;

use crate::domain::DriverStatus;

/// Buckets the per-driver liveness index and the driver directory are split into. Sized so
/// that a city of 1M drivers averages 61 per bucket, well under the 128 entries Redis keeps in
/// the compact listpack encoding (`zset-max-listpack-entries`, `hash-max-listpack-entries`);
/// beyond about 1.5M drivers in one city (liveness) or in all (directory) buckets turn into
/// ordinary sorted sets and hashes: still correct, with the memory of one big key. Changing it
/// orphans existing buckets, so it is a constant, not a setting.
pub(crate) const DRIVER_BUCKETS: u16 = 16384;

/// The bucket of a driver's liveness and directory entries: CRC16 of its id, modulo
/// [`DRIVER_BUCKETS`].
pub fn driver_bucket(id: &str) -> u16 {
    super::crc16(id.as_bytes()) % DRIVER_BUCKETS
}

/// The layout of the data this build reads and writes, stored at [`Keys::layout`]. Layout 1
/// kept one big last-seen sorted set per city, one directory hash for the deployment and
/// city-prefixed packed states; layout 2 splits the first two into buckets and drops the city
/// from the packed state. `geodispatch migrate` brings layout 1 to 2.
pub const LAYOUT_VERSION: u32 = 2;

/// Hash tag of the driver directory buckets (one script may take several).
const DRIVERS_TAG: &str = "drivers";
/// Hash tag of API keys, their index and sessions (written together in one transaction).
const AUTH_TAG: &str = "auth";
/// Hash tag of every webhook key (endpoints, lanes, schedule, cursors, logs): the webhook
/// scripts take several of them together.
const WEBHOOKS_TAG: &str = "webhooks";

/// Builds every Redis key and channel name (cheap to clone).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: Arc<str>,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    fn city(&self, city: impl Display, suffix: impl Display) -> String {
        format!("{}:{{{city}}}:{suffix}", self.prefix)
    }

    fn tagged(&self, tag: &str, suffix: impl Display) -> String {
        format!("{}:{{{tag}}}:{suffix}", self.prefix)
    }

    fn global(&self, suffix: impl Display) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    // ---- layout ----

    /// String: the layout version of the data ([`LAYOUT_VERSION`]), written by the first
    /// instance that finds a Redis without one (and no layout-1 data) and by `migrate`.
    pub(crate) fn layout(&self) -> String {
        self.global("layout")
    }

    // ---- drivers ----

    /// Hash `driver_id → recorded_ms|lat|lon|S|V|accuracy|heading|speed`: the state of every
    /// driver of a city.
    pub fn driver_states(&self, city: impl Display) -> String {
        self.city(city, "drivers")
    }

    /// Hash `driver_id → city|recorded_ms`: the directory bucket holding driver `id`'s entry
    /// (which city keeps its state).
    pub fn driver_directory(&self, id: &str) -> String {
        self.driver_directory_bucket(driver_bucket(id))
    }

    /// Directory bucket number `bucket` (see [`Keys::driver_directory`]).
    pub(crate) fn driver_directory_bucket(&self, bucket: impl Display) -> String {
        self.tagged(DRIVERS_TAG, format_args!("city:{bucket}"))
    }

    /// String with a TTL: the lease of a driver moving from one city to another.
    pub(crate) fn driver_move_lease(&self, id: impl Display) -> String {
        self.global(format_args!("drivers:moving:{id}"))
    }

    /// Sorted set `bucket → lower bound of its oldest recorded_ms` (exact after a sweep): which
    /// liveness buckets of a city may hold stale drivers.
    pub fn seen_index(&self, city: impl Display) -> String {
        self.city(city, "seen:oldest")
    }

    /// String `epoch µs`, with a TTL: the earliest time a city's next sweep call may work, kept
    /// by `sweep_stale.lua` so that every instance together holds the sweeper to its share of
    /// the Redis thread (`sweep_redis_share`).
    pub fn sweep_pace(&self, city: impl Display) -> String {
        self.city(city, "sweep:pace")
    }

    /// Sorted set `driver_id → recorded_ms`: liveness bucket `bucket` of a city.
    pub fn seen_bucket(&self, city: impl Display, bucket: impl Display) -> String {
        self.city(city, format_args!("seen:{bucket}"))
    }

    /// GEO set of a city's drivers with `status`, members tagged with the vehicle type
    /// (`c:drv-1`).
    pub fn geo(&self, city: impl Display, status: DriverStatus) -> String {
        self.geo_named(city, status.as_str())
    }

    fn geo_named(&self, city: impl Display, status: impl Display) -> String {
        self.city(city, format_args!("geo:{status}"))
    }

    /// A city's GEO sets in the order the scripts take them: available, busy, offline.
    pub(crate) fn geo_all(&self, city: &str) -> Vec<String> {
        DriverStatus::ALL
            .iter()
            .map(|&status| self.geo(city, status))
            .collect()
    }

    /// Sorted set `driver_id → score`: a city's leaderboard.
    pub fn scores(&self, city: impl Display) -> String {
        self.city(city, "scores")
    }

    /// Sorted set, deleted in the same transaction: scratch space of one candidate ranking.
    pub(crate) fn rank_scratch(&self, city: impl Display, suffix: impl Display) -> String {
        self.city(city, format_args!("tmp:rank:{suffix}"))
    }

    // ---- orders and dispatch ----

    /// Hash `order_id → city`: the order directory.
    pub(crate) fn order_directory(&self) -> String {
        self.global("orders")
    }

    /// Hash: one order.
    pub fn order(&self, city: impl Display, order: impl Display) -> String {
        self.city(city, format_args!("order:{order}"))
    }

    /// Set: the drivers an order may not be offered to again (they rejected it or let it
    /// expire).
    pub(crate) fn order_excluded(&self, city: impl Display, order: impl Display) -> String {
        self.city(city, format_args!("order:{order}:excluded"))
    }

    /// String with a TTL: an order's dispatch lock (its value is the holder's token).
    pub fn order_lock(&self, city: impl Display, order: impl Display) -> String {
        self.city(city, format_args!("lock:order:{order}"))
    }

    /// Counter: a city's fencing numbers (INCR per lock acquisition).
    pub fn fence(&self, city: impl Display) -> String {
        self.city(city, "fence")
    }

    /// Hash `driver_id → order_id`: a city's active assignments.
    pub fn assignments(&self, city: impl Display) -> String {
        self.city(city, "assignments")
    }

    /// Sorted set `order_id → due ms`: a city's timers (offer expiry, dispatch retry).
    pub(crate) fn timers(&self, city: impl Display) -> String {
        self.city(city, "timers")
    }

    /// Sorted set `order_id → ms from which it is considered`: a city's pending orders under
    /// the batched policy, read by the matching rounds.
    pub fn match_pool(&self, city: impl Display) -> String {
        self.city(city, "match:pool")
    }

    /// GEO set `driver_id → drop-off`: a city's drivers carrying a picked-up order (batched
    /// policy), at the drop-off where rounds expect them to be free soon.
    pub fn match_soon_free(&self, city: impl Display) -> String {
        self.city(city, "match:soon")
    }

    /// Sorted set `"order_id|lat|lon" → ms first seen`: the pickups of a city's recent orders
    /// (batched policy, `reposition_idle_drivers`), where rounds expect the next orders.
    pub fn match_demand(&self, city: impl Display) -> String {
        self.city(city, "match:demand")
    }

    /// Hash `driver_id → "lat|lon|until_ms"`: the idle drivers of a city a round sent toward a
    /// pickup spot, and until when that instruction holds.
    pub fn match_repositions(&self, city: impl Display) -> String {
        self.city(city, "match:repositions")
    }

    /// String: a city's matching lease (the instance that runs the city's rounds).
    pub fn match_lease(&self, city: impl Display) -> String {
        self.city(city, "match:lease")
    }

    /// Stream: a city's dispatch queue, read by the consumer group [`DISPATCH_GROUP`].
    pub fn dispatch_queue(&self, city: impl Display) -> String {
        self.city(city, "dispatch")
    }

    /// Stream: a city's dead letters, the dispatch queue entries taken out of the queue after
    /// `queue_max_deliveries` deliveries that none acknowledged (their orders failed).
    pub fn dead_letters(&self, city: impl Display) -> String {
        self.city(city, "dispatch:dead")
    }

    /// Stream: a city's order events.
    pub fn events(&self, city: impl Display) -> String {
        self.city(city, "events")
    }

    /// Hash `driver_id → order|fence|phase|lat|lon|since_ms|arrived`: the pickup or drop-off
    /// each busy driver of a city is heading to and its arrival there so far, read by
    /// `set_position.lua` for busy drivers only.
    pub fn arrivals(&self, city: impl Display) -> String {
        self.city(city, "arrivals")
    }

    /// Hash `order_id → pickup_ms|dropoff_ms`: the arrival times detected for a city's open
    /// orders, copied into the order hash at pickup and at the order's end.
    pub fn arrival_times(&self, city: impl Display) -> String {
        self.city(city, "arrivals:times")
    }

    /// Pub/Sub channel: every order event of a city, for ops.
    pub(crate) fn ops_channel(&self, city: impl Display) -> String {
        self.global(format_args!("events:{city}"))
    }

    /// Pub/Sub channel: the offers of one driver and their fate.
    pub(crate) fn driver_channel(&self, id: impl Display) -> String {
        format!("{}{id}", self.driver_channel_prefix())
    }

    /// The prefix of every [`Keys::driver_channel`] (scripts append the driver id).
    pub fn driver_channel_prefix(&self) -> String {
        self.global("driver:")
    }

    /// String with a TTL: the remembered answer of an `Idempotency-Key` of `POST /v1/orders`.
    pub(crate) fn idempotency(&self, key: impl Display) -> String {
        self.global(format_args!("idem:{key}"))
    }

    // ---- protection ----

    /// Hash: an API key's record, named after the SHA-256 of the secret.
    pub(crate) fn api_key(&self, digest: impl Display) -> String {
        self.tagged(AUTH_TAG, format_args!("apikey:{digest}"))
    }

    /// Hash `key id → metadata JSON`: the index of API keys.
    pub(crate) fn api_key_index(&self) -> String {
        self.tagged(AUTH_TAG, "apikeys")
    }

    /// Hash with a TTL: a driver session, named after the SHA-256 of its token.
    pub(crate) fn session(&self, digest: impl Display) -> String {
        self.tagged(AUTH_TAG, format_args!("session:{digest}"))
    }

    /// The state of one rate limit (a counter, a log or a bucket, by algorithm) of one subject
    /// in one route class.
    pub(crate) fn rate_limit(&self, class: impl Display, subject: impl Display) -> String {
        self.global(format_args!("rl:{class}:{subject}"))
    }

    // ---- webhooks ----

    /// Set: the ids of every webhook endpoint.
    pub(crate) fn webhook_endpoints(&self) -> String {
        self.tagged(WEBHOOKS_TAG, "endpoints")
    }

    /// Hash: one webhook endpoint (url, events, description, enabled, salt of its secret,
    /// creation time, dead letters in a row, backlog).
    pub(crate) fn webhook_endpoint(&self, id: impl Display) -> String {
        self.tagged(WEBHOOKS_TAG, format_args!("endpoint:{id}"))
    }

    /// List: the undelivered messages of one lane of an endpoint, oldest first (the head is
    /// the one being sent).
    pub(crate) fn webhook_lane(&self, id: impl Display, lane: impl Display) -> String {
        self.tagged(WEBHOOKS_TAG, format_args!("lane:{id}:{lane}"))
    }

    /// Sorted set `<endpoint>:<lane> → ms`: when each non-empty lane is next due; a claimed
    /// lane's score is pushed to the end of its lease, so a lane whose sender died is due
    /// again then.
    pub(crate) fn webhook_due(&self) -> String {
        self.tagged(WEBHOOKS_TAG, "due")
    }

    /// Hash `<endpoint>:<lane> → token` (the sender holding the lane) and
    /// `<endpoint>:<lane>:tries → n` (failed attempts of the lane's head).
    pub(crate) fn webhook_leases(&self) -> String {
        self.tagged(WEBHOOKS_TAG, "leases")
    }

    /// String: the id of the last event of a city's stream fanned out to the endpoints.
    pub fn webhook_cursor(&self, city: impl Display) -> String {
        self.tagged(WEBHOOKS_TAG, format_args!("cursor:{city}"))
    }

    /// Stream: an endpoint's recent delivery attempts (trimmed to about 1000), with each
    /// message's payload so that one can be sent again.
    pub(crate) fn webhook_log(&self, id: impl Display) -> String {
        self.tagged(WEBHOOKS_TAG, format_args!("log:{id}"))
    }

    /// The KEYS `webhook_fanout.lua` takes per message for lane `lane` of endpoint `id` (after
    /// the city's cursor and [`Keys::webhook_due`]): the endpoint, the lane, the log.
    pub(crate) fn webhook_fanout_target(&self, id: &str, lane: u32) -> [String; 3] {
        [
            self.webhook_endpoint(id),
            self.webhook_lane(id, lane),
            self.webhook_log(id),
        ]
    }

    /// KEYS of `webhook_settle.lua` for lane `lane` of endpoint `id`.
    pub(crate) fn webhook_settle_script(&self, id: &str, lane: u32) -> Vec<String> {
        vec![
            self.webhook_due(),
            self.webhook_leases(),
            self.webhook_lane(id, lane),
            self.webhook_endpoint(id),
            self.webhook_log(id),
        ]
    }

    // ---- layout 1 (read by `migrate` only) ----

    /// Layout 1: one sorted set of every driver's last-seen time in a city.
    pub fn legacy_seen(&self, city: impl Display) -> String {
        self.city(city, "seen")
    }

    /// Layout 1: one hash `driver_id → city|recorded_ms` for the whole deployment.
    pub fn legacy_driver_directory(&self) -> String {
        self.global("drivers:city")
    }

    /// Layout 1: a GEO set per status and vehicle type.
    pub fn legacy_geo_vehicle(
        &self,
        city: impl Display,
        status: impl Display,
        vehicle: impl Display,
    ) -> String {
        self.city(city, format_args!("geo:{status}:{vehicle}"))
    }

    // ---- the KEYS of multi-key scripts ----

    /// KEYS of a script that works on one city's drivers: state hash, liveness bucket index,
    /// score set, the 3 GEO sets (scripts that write liveness buckets take those after these).
    pub(crate) fn city_script(&self, city: &str) -> Vec<String> {
        let mut out = Vec::with_capacity(7);
        out.push(self.driver_states(city));
        out.push(self.seen_index(city));
        out.push(self.scores(city));
        out.extend(self.geo_all(city));
        out
    }

    /// KEYS of `set_position.lua` before the liveness buckets: [`Keys::city_script`], then the
    /// city's arrival tracking and arrival times hashes and its event stream.
    pub(crate) fn position_script(&self, city: &str) -> Vec<String> {
        let mut out = self.city_script(city);
        out.push(self.arrivals(city));
        out.push(self.arrival_times(city));
        out.push(self.events(city));
        out
    }

    /// KEYS of a script that works on one driver of a city: [`Keys::city_script`], then the
    /// driver's liveness bucket.
    pub(crate) fn driver_script(&self, city: &str, id: &str) -> Vec<String> {
        let mut out = self.city_script(city);
        out.push(self.seen_bucket(city, driver_bucket(id)));
        out
    }

    /// KEYS of `sweep_stale.lua` for `buckets` of `city`: [`Keys::city_script`], the city's
    /// sweep pace, then the liveness buckets.
    pub(crate) fn sweep_script(&self, city: &str, buckets: &[u16]) -> Vec<String> {
        let mut out = self.city_script(city);
        out.push(self.sweep_pace(city));
        out.extend(buckets.iter().map(|&b| self.seen_bucket(city, b)));
        out
    }

    /// KEYS of `set_score.lua`: the city's driver states and score set.
    pub(crate) fn score_script(&self, city: &str) -> Vec<String> {
        vec![self.driver_states(city), self.scores(city)]
    }

    /// KEYS of `lock_order.lua`: the order's lock, the city's fence counter, the order.
    pub(crate) fn lock_order_script(&self, city: &str, order: &str) -> Vec<String> {
        vec![
            self.order_lock(city, order),
            self.fence(city),
            self.order(city, order),
        ]
    }

    /// KEYS of `claim_offer.lua` and `order_transition.lua` for `order` in `city` (the driver
    /// keys are the city's too: a busy driver stays in its order's city).
    pub(crate) fn order_script(&self, city: &str, order: &str) -> Vec<String> {
        let mut out = Vec::with_capacity(18);
        out.push(self.order(city, order));
        out.push(self.driver_states(city));
        out.push(self.assignments(city));
        out.push(self.order_excluded(city, order));
        out.push(self.timers(city));
        out.push(self.events(city));
        out.push(self.dispatch_queue(city));
        out.push(self.order_lock(city, order));
        out.push(self.scores(city));
        out.extend(self.geo_all(city));
        out.push(self.fence(city));
        out.push(self.match_pool(city));
        out.push(self.dead_letters(city));
        out.push(self.match_soon_free(city));
        out.push(self.arrivals(city));
        out.push(self.arrival_times(city));
        out
    }

    /// KEYS of `reposition.lua` in `city`.
    pub(crate) fn reposition_script(&self, city: &str) -> Vec<String> {
        vec![
            self.driver_states(city),
            self.assignments(city),
            self.match_repositions(city),
            self.events(city),
        ]
    }

    /// KEYS of `touch_session.lua`.
    pub(crate) fn session_script(&self, digest: &str) -> Vec<String> {
        vec![self.session(digest), self.api_key_index()]
    }

    /// Every multi-key script's or transaction's KEYS, for every city in `cities`, named, so
    /// that startup can prove each set lies in one Redis Cluster hash slot (a probe id stands
    /// for any order, driver or secret).
    pub(crate) fn script_key_sets<'a>(
        &self,
        cities: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for c in cities {
            let mut driver_scripts = self.position_script(c);
            let probes: Vec<u16> = (0..DRIVER_BUCKETS).step_by(4099).collect();
            driver_scripts.extend(self.sweep_script(c, &probes));
            out.push((
                format!("set_position/set_status/delete_driver/sweep_stale in {c}"),
                driver_scripts,
            ));
            out.push((format!("set_score in {c}"), self.score_script(c)));
            out.push((
                format!("claim_offer/order_transition in {c}"),
                self.order_script(c, "probe"),
            ));
            out.push((format!("reposition in {c}"), self.reposition_script(c)));
            out.push((
                format!("lock_order in {c}"),
                self.lock_order_script(c, "probe"),
            ));
            out.push((
                format!("candidate ranking in {c}"),
                vec![self.rank_scratch(c, "probe"), self.scores(c)],
            ));
        }
        out.push((
            "driver_city_cas (directory buckets)".to_owned(),
            ["a", "b", "probe", "drv-1"]
                .iter()
                .map(|id| self.driver_directory(id))
                .collect(),
        ));
        out.push(("touch_session".to_owned(), self.session_script("probe")));
        out.push((
            "webhook_settle/webhook_fanout/webhook_claim".to_owned(),
            [
                self.webhook_settle_script("probe", 0),
                self.webhook_settle_script("other", 3),
                vec![
                    self.webhook_endpoints(),
                    self.webhook_cursor("paris"),
                    self.webhook_cursor("berlin"),
                ],
            ]
            .concat(),
        ));
        out.push((
            "API key create/revoke (MULTI)".to_owned(),
            vec![self.api_key("probe"), self.api_key_index()],
        ));
        out
    }

    /// Every key and channel template, as `(builder, template)`, with `<placeholders>` for
    /// the variable parts (`gd:{<city>}:order:<order>`). Layout 1's keys are marked `legacy_`.
    pub fn templates(&self) -> Vec<(&'static str, String)> {
        let (c, o, d) = ("<city>", "<order>", "<driver>");
        vec![
            ("layout", self.layout()),
            ("driver_states", self.driver_states(c)),
            ("driver_directory", self.driver_directory_bucket("<bucket>")),
            ("driver_move_lease", self.driver_move_lease(d)),
            ("seen_index", self.seen_index(c)),
            ("seen_bucket", self.seen_bucket(c, "<bucket>")),
            ("sweep_pace", self.sweep_pace(c)),
            ("geo", self.geo_named(c, "<status>")),
            ("scores", self.scores(c)),
            ("rank_scratch", self.rank_scratch(c, "<uuid>")),
            ("order_directory", self.order_directory()),
            ("order", self.order(c, o)),
            ("order_excluded", self.order_excluded(c, o)),
            ("order_lock", self.order_lock(c, o)),
            ("fence", self.fence(c)),
            ("assignments", self.assignments(c)),
            ("timers", self.timers(c)),
            ("dispatch_queue", self.dispatch_queue(c)),
            ("dead_letters", self.dead_letters(c)),
            ("match_pool", self.match_pool(c)),
            ("match_soon_free", self.match_soon_free(c)),
            ("match_demand", self.match_demand(c)),
            ("match_repositions", self.match_repositions(c)),
            ("match_lease", self.match_lease(c)),
            ("events", self.events(c)),
            ("arrivals", self.arrivals(c)),
            ("arrival_times", self.arrival_times(c)),
            ("ops_channel", self.ops_channel(c)),
            ("driver_channel", self.driver_channel(d)),
            ("idempotency", self.idempotency("<idempotency-key>")),
            ("api_key", self.api_key("<sha256>")),
            ("api_key_index", self.api_key_index()),
            ("session", self.session("<sha256>")),
            ("rate_limit", self.rate_limit("<class>", "<subject>")),
            ("webhook_endpoints", self.webhook_endpoints()),
            ("webhook_endpoint", self.webhook_endpoint("<endpoint>")),
            ("webhook_lane", self.webhook_lane("<endpoint>", "<lane>")),
            ("webhook_due", self.webhook_due()),
            ("webhook_leases", self.webhook_leases()),
            ("webhook_cursor", self.webhook_cursor(c)),
            ("webhook_log", self.webhook_log("<endpoint>")),
            ("legacy_seen", self.legacy_seen(c)),
            ("legacy_driver_directory", self.legacy_driver_directory()),
            (
                "legacy_geo_vehicle",
                self.legacy_geo_vehicle(c, "<status>", "<vehicle>"),
            ),
        ]
    }
}

/// The consumer group of the dispatch workers on each city's [`Keys::dispatch_queue`].
pub const DISPATCH_GROUP: &str = "dispatchers";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn city_keys_carry_the_city_as_hash_tag_and_global_keys_their_own() {
        let keys = Keys::new("gd");
        assert_eq!(keys.driver_states("paris"), "gd:{paris}:drivers");
        assert_eq!(keys.order("paris", "o-1"), "gd:{paris}:order:o-1");
        assert_eq!(keys.seen_bucket("paris", 7), "gd:{paris}:seen:7");
        assert_eq!(keys.dead_letters("paris"), "gd:{paris}:dispatch:dead");
        assert_eq!(
            keys.geo("paris", DriverStatus::Available),
            "gd:{paris}:geo:available"
        );
        assert_eq!(keys.api_key_index(), "gd:{auth}:apikeys");
        assert_eq!(keys.driver_channel("drv-1"), "gd:driver:drv-1");
        assert_eq!(
            keys.driver_directory("drv-1"),
            format!("gd:{{drivers}}:city:{}", driver_bucket("drv-1"))
        );
    }

    #[test]
    fn every_script_key_set_lies_in_one_cluster_slot() {
        let keys = Keys::new("gd");
        super::super::check_slots(keys.script_key_sets(["paris", "berlin"])).unwrap();
    }

    #[test]
    fn templates_are_distinct() {
        let templates = Keys::new("gd").templates();
        let mut seen = std::collections::HashSet::new();
        for (name, template) in &templates {
            assert!(seen.insert(template.clone()), "{name}: {template} twice");
        }
    }
}
