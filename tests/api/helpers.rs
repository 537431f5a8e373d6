//! Test harness: a real `redis-server` per test on a free loopback port, the app in-process on
//! port 0 with a unique key prefix, and typed request helpers.

use std::time::{Duration, Instant};

use geodispatch::app::{AppContext, Application};
use geodispatch::config::Settings;
use geodispatch::store::local::{LocalRedis, LocalRedisOptions};
pub use geodispatch_testkit::now_ms;
use geodispatch_testkit::rng::SplitMix64;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A running app on its own Redis (the first instance; more can share it with [`TestApp::peer`]).
pub struct TestApp {
    /// The test's own Redis.
    pub redis: LocalRedis,
    instance: Instance,
}

/// One running service instance: its address, an HTTP client and its context.
pub struct Instance {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// HTTP client (follows no redirects).
    pub client: reqwest::Client,
    /// The app's shared context (store, cities, settings).
    pub context: AppContext,
    /// URL of the Redis it uses.
    pub redis_url: String,
    handle: actix_web::dev::ServerHandle,
}

impl std::ops::Deref for TestApp {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.instance
    }
}

/// A parsed HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Content-Type header.
    pub content_type: String,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body as JSON (`Value::Null` when the body is not JSON).
    pub json: Value,
    /// Raw body.
    pub text: String,
}

impl Answer {
    /// Deserialize the body.
    pub fn body<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.json.clone())
            .unwrap_or_else(|e| panic!("unexpected body {}: {e}", self.text))
    }

    /// Assert this is a problem+json with `status` whose type ends with `code`.
    pub fn assert_problem(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(
            self.content_type, "application/problem+json",
            "body: {}",
            self.text
        );
        let type_ = self.json["type"].as_str().unwrap_or_default();
        assert!(
            type_.ends_with(code),
            "type {type_:?} should end with {code:?}: {}",
            self.text
        );
        assert_eq!(self.json["status"], status);
        assert!(self.json["title"].is_string() && self.json["detail"].is_string());
        self
    }

    /// The `field` names of a validation problem's `errors`.
    pub fn problem_fields(&self) -> Vec<String> {
        self.json["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The bootstrap admin key of every test app; its client sends it by default.
pub const TEST_ADMIN_KEY: &str = "test-admin-key-0123456789";

/// Start Redis and the app with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Start Redis and the app, letting the test adjust the settings first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let redis = start_redis().await;
    spawn_app_on(redis, adjust).await
}

/// Start a fresh `redis-server` (in-memory, own temp dir).
pub async fn start_redis() -> LocalRedis {
    let dir = std::env::temp_dir().join(format!("gd-test-{}", uuid::Uuid::new_v4()));
    LocalRedis::start(LocalRedisOptions {
        data_dir: dir,
        appendonly: false,
        extra_args: Vec::new(),
    })
    .await
    .expect("starting redis-server for the test")
}

/// Start the app on an existing Redis.
pub async fn spawn_app_on(redis: LocalRedis, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    adjust(&mut settings);
    let instance = start_instance(settings, &redis.url());
    // The queue workers create their consumer groups (and streams) as they start; do it now so
    // that a test's "nothing changed" snapshot never races with it.
    geodispatch::dispatch::workers::ensure_groups(&instance.context.dispatcher)
        .await
        .expect("creating the consumer groups");
    TestApp { redis, instance }
}

/// Default test settings: port 0, a unique key prefix, one HTTP worker, the test admin key,
/// rate limits off.
pub fn test_settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".to_owned(),
        key_prefix: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        http_workers: 1,
        admin_key: Some(TEST_ADMIN_KEY.into()),
        // Rate limits are tested on their own (tests/api/protection.rs); elsewhere they would
        // only make load tests depend on timing.
        rate_limits_enabled: false,
        ..Settings::default()
    }
}

/// Start one service instance with `settings` on the Redis at `url`.
pub fn start_instance(settings: Settings, url: &str) -> Instance {
    let app_admin_key = settings
        .admin_key
        .as_ref()
        .map(|k| secrecy::ExposeSecret::expose_secret(k).to_owned());
    let app = Application::build(settings, url, false).expect("building the app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let context = app.context().clone();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    let client = client_with(settings_key(&app_admin_key));
    Instance {
        address,
        client,
        context,
        redis_url: url.to_owned(),
        handle,
    }
}

fn settings_key(key: &Option<String>) -> Option<&str> {
    key.as_deref()
}

/// An HTTP client (no redirects) that sends `Authorization: Bearer <key>` when given one.
pub fn client_with(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(
            "authorization",
            reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .unwrap()
}

impl TestApp {
    /// Another service instance on the same Redis with the same key prefix (and settings,
    /// adjusted by `adjust`): a second replica of the stateless service.
    pub fn peer(&self, adjust: impl FnOnce(&mut Settings)) -> Instance {
        let mut settings = (*self.context.settings).clone();
        settings.listen = "127.0.0.1:0".to_owned();
        adjust(&mut settings);
        start_instance(settings, &self.redis.url())
    }
}

impl Instance {
    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let text = response.text().await.expect("reading the body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            headers,
            json,
            text,
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Answer {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET");
        Self::answer(response).await
    }

    /// Send `method path` with a JSON body.
    pub async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> Answer {
        let response = self
            .client
            .request(method, format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request");
        Self::answer(response).await
    }

    /// POST a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    /// PUT a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> Answer {
        self.send_json(reqwest::Method::PUT, path, body).await
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> Answer {
        let response = self
            .client
            .delete(format!("{}{path}", self.address))
            .send()
            .await
            .expect("DELETE");
        Self::answer(response).await
    }

    /// Send raw bytes with a content type.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let response = self
            .client
            .request(method, format!("{}{path}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        Self::answer(response).await
    }

    /// Poll `path` until it answers `status` or `within` passes; returns whether it did.
    pub async fn wait_for_status(&self, path: &str, status: u16, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.get(path).await.status == status {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A handle on the same running instance (to put it in a list with peers).
    pub fn clone_instance(&self) -> Instance {
        Instance {
            address: self.address.clone(),
            client: self.client.clone(),
            context: self.context.clone(),
            redis_url: self.redis_url.clone(),
            handle: self.handle.clone(),
        }
    }

    /// A dedicated Redis connection without a response timeout (for blocking reads).
    pub async fn redis_conn_pub(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new().set_response_timeout(None),
            )
            .await
            .unwrap()
    }

    /// A direct Redis connection for assertions about stored state.
    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Every data key under this app's prefix: [`Instance::keys`] without the dispatch queue
    /// streams, which the workers create empty at startup.
    pub async fn data_keys(&self) -> Vec<String> {
        let queues: Vec<String> = self
            .context
            .cities
            .all()
            .iter()
            .map(|c| self.context.store.keys().dispatch_queue(c.id.as_str()))
            .collect();
        let mut keys = self.keys().await;
        keys.retain(|k| !queues.contains(k));
        keys
    }

    /// Every key under this app's prefix (tests only: KEYS is fine on a test server).
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.redis_conn().await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.context.settings.key_prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.sort();
        keys
    }

    /// Stop the HTTP server.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// Read a child process's output to its end on a thread, so that a full pipe never blocks the
/// child (its logging, say); join the handle for the text.
pub fn drain(mut output: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        output.read_to_string(&mut text).ok();
        text
    })
}

/// A small deterministic PRNG for test data (the test kit's SplitMix64).
pub struct Rng(SplitMix64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        self.0.next_f64()
    }

    /// A point within `km` kilometres (in each axis) of a centre.
    pub fn near(&mut self, lat: f64, lon: f64, km: f64) -> (f64, f64) {
        let dlat = km / 111.32;
        let dlon = km / (111.32 * lat.to_radians().cos());
        (
            lat + (self.f64() * 2.0 - 1.0) * dlat,
            lon + (self.f64() * 2.0 - 1.0) * dlon,
        )
    }
}

/// Central Paris.
pub const PARIS: (f64, f64) = (48.8566, 2.3522);
/// Central Berlin.
pub const BERLIN: (f64, f64) = (52.52, 13.405);

impl Instance {
    /// PUT a position; returns the answer.
    pub async fn put_location(
        &self,
        id: &str,
        lat: f64,
        lon: f64,
        recorded_at: i64,
        extra: Value,
    ) -> Answer {
        let mut body = serde_json::json!({"lat": lat, "lon": lon, "recorded_at": recorded_at});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        self.put_json(&format!("/v1/drivers/{id}/location"), &body)
            .await
    }

    /// The drivers of `vehicle` type in one of this app's GEO sets (members are tagged with
    /// the vehicle type: `c:drv-1`).
    pub async fn geo_members(&self, city: &str, status: &str, vehicle: &str) -> Vec<String> {
        let mut conn = self.redis_conn().await;
        let key = self.context.store.keys().geo(
            city,
            geodispatch::domain::DriverStatus::parse(status).expect("a driver status"),
        );
        let tag = geodispatch::drivers::VehicleType::parse(vehicle)
            .expect("a vehicle type")
            .tag();
        let all: Vec<String> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut members: Vec<String> = all
            .iter()
            .filter_map(|m| m.strip_prefix(tag).map(str::to_owned))
            .collect();
        members.sort();
        members
    }

    /// Every GEO set that holds `id`, tagged (`c:id`) or not (a plain id would be a bug),
    /// once per member found. An indexed driver is in exactly one, once.
    pub async fn indexes_of(&self, id: &str) -> Vec<String> {
        let mut conn = self.redis_conn().await;
        let mut out = Vec::new();
        for key in self.keys().await {
            if !key.contains(":geo:") {
                continue;
            }
            for tag in ["", "b:", "s:", "c:", "v:"] {
                let score: Option<f64> = redis::cmd("ZSCORE")
                    .arg(&key)
                    .arg(format!("{tag}{id}"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if score.is_some() {
                    out.push(key.clone());
                }
            }
        }
        out
    }

    /// A snapshot of every key and value under this app's prefix (to assert nothing changed).
    pub async fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.redis_conn().await;
        let mut out = Vec::new();
        for key in self.keys().await {
            let dump: Vec<u8> = redis::cmd("DUMP")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            out.push((key, dump));
        }
        out
    }
}

/// Domain verbs: how the tests arrange and act, written once.
impl Instance {
    /// Create an API key with the admin client (`driver` binds a driver key); returns the secret.
    pub async fn create_key(&self, role: &str, driver: Option<&str>) -> String {
        let mut body = serde_json::json!({"role": role, "name": "test"});
        if let Some(d) = driver {
            body["driver_id"] = serde_json::json!(d);
        }
        let a = self.post_json("/v1/admin/keys", &body).await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.json["key"].as_str().unwrap().to_owned()
    }

    /// This instance seen through another key (or token).
    pub fn with_key(&self, key: &str) -> Instance {
        let mut other = self.clone_instance();
        other.client = client_with(Some(key));
        other
    }

    /// This instance seen through a new driver key bound to `driver` (the driver's phone).
    pub async fn as_driver(&self, driver: &str) -> Instance {
        self.with_key(&self.create_key("driver", Some(driver)).await)
    }

    /// Report a batch of fresh positions (`(driver, lat, lon)`, all available, recorded now);
    /// every one must be accepted.
    pub async fn put_fleet(&self, fleet: &[(&str, f64, f64)]) {
        let positions: Vec<Value> = fleet
            .iter()
            .map(|(id, lat, lon)| {
                serde_json::json!({"driver_id": id, "lat": lat, "lon": lon,
                                   "recorded_at": now_ms(), "status": "available"})
            })
            .collect();
        self.put_positions(&positions).await;
    }

    /// Report a batch of fresh positions of drivers with a vehicle type
    /// (`(driver, lat, lon, vehicle)`, recorded now); every one must be accepted.
    pub async fn put_vehicles(&self, fleet: &[(&str, f64, f64, &str)]) {
        let t = now_ms();
        let positions: Vec<Value> = fleet
            .iter()
            .map(|(id, lat, lon, vehicle)| {
                serde_json::json!({"driver_id": id, "lat": lat, "lon": lon,
                                   "recorded_at": t, "vehicle_type": vehicle})
            })
            .collect();
        self.put_positions(&positions).await;
    }

    async fn put_positions(&self, positions: &[Value]) {
        let a = self
            .post_json(
                "/v1/locations/batch",
                &serde_json::json!({"positions": positions}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert!(
            a.json["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "accepted"),
            "{}",
            a.text
        );
    }

    /// Report one fresh position of `id` at `at` (recorded now, nothing else set).
    pub async fn put_driver_at(&self, id: &str, at: (f64, f64)) -> Answer {
        self.put_location(id, at.0, at.1, now_ms(), Value::Null)
            .await
    }

    /// Put drivers `ids` about 100 m × (index + 1) east of `at`, fresh and available.
    pub async fn put_drivers_east_of(&self, ids: &[&str], at: (f64, f64)) {
        let fleet: Vec<(&str, f64, f64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, at.0, at.1 + 0.0014 * (i as f64 + 1.0)))
            .collect();
        self.put_fleet(&fleet).await;
    }

    /// POST an order.
    pub async fn create_order(&self, body: Value) -> Answer {
        self.post_json("/v1/orders", &body).await
    }

    /// Create order `id` picked up at `at`, dispatched now.
    pub async fn create_order_at(&self, id: &str, at: (f64, f64)) -> Answer {
        self.create_order(serde_json::json!({"order_id": id, "pickup": {"lat": at.0, "lon": at.1}}))
            .await
    }

    /// Create order `id` picked up at `at`, queued for the dispatch workers.
    pub async fn queue_order(&self, id: &str, at: (f64, f64)) -> Answer {
        self.create_order(
            serde_json::json!({"order_id": id, "pickup": {"lat": at.0, "lon": at.1}, "dispatch": "queued"}),
        )
        .await
    }

    /// Dispatch order `id` now (`POST /v1/orders/{id}/dispatch`).
    pub async fn dispatch_order(&self, id: &str) -> Answer {
        self.post_json(&format!("/v1/orders/{id}/dispatch"), &serde_json::json!({}))
            .await
    }

    /// Answer an offer as `driver` with its fencing token: `step` is accept, reject, pickup or
    /// deliver.
    pub async fn answer_offer(&self, order: &str, driver: &str, fence: u64, step: &str) -> Answer {
        self.post_json(
            &format!("/v1/orders/{order}/{step}"),
            &serde_json::json!({"driver_id": driver, "fencing_token": fence}),
        )
        .await
    }

    /// Set a driver's score; it must be taken.
    pub async fn set_score(&self, driver: &str, score: f64) {
        let a = self
            .put_json(
                &format!("/v1/drivers/{driver}/score"),
                &serde_json::json!({"score": score}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }

    /// The driver's status as the API reads it (empty when it has none).
    pub async fn driver_status(&self, id: &str) -> String {
        let a = self.get(&format!("/v1/drivers/{id}")).await;
        a.json["status"].as_str().unwrap_or_default().to_owned()
    }

    /// GET the ranked candidates for a pickup at `at`.
    pub async fn candidates(&self, at: (f64, f64), limit: usize) -> Answer {
        self.get(&format!(
            "/v1/candidates?lat={}&lon={}&limit={limit}",
            at.0, at.1
        ))
        .await
    }

    /// GET the drivers nearest `at` (`query` is appended as is, e.g. `&limit=5`).
    pub async fn nearby(&self, at: (f64, f64), query: &str) -> Answer {
        self.get(&format!(
            "/v1/drivers/nearby?lat={}&lon={}{query}",
            at.0, at.1
        ))
        .await
    }
}

/// The value of `series` (a metric name with its labels, as `/metrics` prints it) in a
/// scrape's text; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Poll an order until `pred` holds on it or `within` passes.
pub async fn wait_order(
    app: &Instance,
    order: &str,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let a = app.get(&format!("/v1/orders/{order}")).await;
        if pred(&a.json) {
            return a.json;
        }
        assert!(
            Instant::now() < deadline,
            "order {order} never got there: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
