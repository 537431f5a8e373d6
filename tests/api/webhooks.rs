//! Webhooks: endpoint administration, and signed at-least-once delivery of order events to a
//! real HTTP receiver started by the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

/// The signing key of the webhook tests.
const SIGNING_KEY: &str = "test-webhook-signing-key-0123456789abcdef";

/// Test settings with webhooks on: a signing key, and the receiver on plain http at loopback.
fn webhook_settings(s: &mut geodispatch::config::Settings) {
    s.webhook_signing_key = Some(SIGNING_KEY.into());
    s.webhook_allow_http = true;
    s.webhook_allow_private = true;
}

#[tokio::test]
async fn an_admin_registers_lists_changes_and_deletes_an_endpoint_and_sees_the_secret_once() {
    let app = spawn_app_with(webhook_settings).await;

    let created = app
        .post_json(
            "/v1/admin/webhooks",
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["order.accepted", "*"], "description": "ops"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_owned();
    let secret = created.json["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created.json["events"], json!(["order.accepted", "*"]));
    assert_eq!(created.json["enabled"], true);

    let listed = app.get("/v1/admin/webhooks").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json["webhooks"][0]["id"], id.as_str());
    assert!(!listed.text.contains(&secret), "the secret is shown once");
    let one = app.get(&format!("/v1/admin/webhooks/{id}")).await;
    assert_eq!(one.status, 200);
    assert!(one.json.get("secret").is_none());

    // Nothing in Redis holds the secret or lets anyone sign: only a salt is stored.
    let mut dump = String::new();
    for (_, bytes) in app.snapshot().await {
        dump.push_str(&String::from_utf8_lossy(&bytes));
    }
    let key_b64 = secret.trim_start_matches("whsec_");
    assert!(!dump.contains(key_b64) && !dump.contains(SIGNING_KEY));

    let patched = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/v1/admin/webhooks/{id}"),
            &json!({"enabled": false, "events": ["order.delivered"]}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json["enabled"], false);
    assert_eq!(patched.json["events"], json!(["order.delivered"]));

    assert_eq!(
        app.delete(&format!("/v1/admin/webhooks/{id}")).await.status,
        204
    );
    app.get(&format!("/v1/admin/webhooks/{id}"))
        .await
        .assert_problem(404, "not-found");
    app.delete(&format!("/v1/admin/webhooks/{id}"))
        .await
        .assert_problem(404, "not-found");
    assert!(
        app.data_keys().await.iter().all(|k| !k.contains(&id)),
        "deleting an endpoint leaves none of its keys"
    );
}

#[tokio::test]
async fn bad_endpoints_are_refused_naming_the_field_and_nothing_is_written() {
    let app = spawn_app_with(|s| {
        s.webhook_signing_key = Some(SIGNING_KEY.into());
    })
    .await;
    let cases: &[(Value, &str, &str)] = &[
        (
            json!({"url": "http://example.com/h", "events": ["*"]}),
            "url",
            "http is off unless allowed",
        ),
        (
            json!({"url": "https://127.0.0.1/h", "events": ["*"]}),
            "url",
            "loopback",
        ),
        (
            json!({"url": "https://169.254.169.254/latest", "events": ["*"]}),
            "url",
            "cloud metadata",
        ),
        (
            json!({"url": "https://10.0.0.7/h", "events": ["*"]}),
            "url",
            "private range",
        ),
        (
            json!({"url": "https://[::1]/h", "events": ["*"]}),
            "url",
            "IPv6 loopback",
        ),
        (
            json!({"url": "https://localhost/h", "events": ["*"]}),
            "url",
            "a name resolving to loopback",
        ),
        (
            json!({"url": "https://u:p@example.com/h", "events": ["*"]}),
            "url",
            "credentials",
        ),
        (
            json!({"url": "not a url", "events": ["*"]}),
            "url",
            "not a URL",
        ),
        (
            json!({"url": "https://93.184.216.34/h", "events": []}),
            "events",
            "empty",
        ),
        (
            json!({"url": "https://93.184.216.34/h", "events": ["order.teleported"]}),
            "events",
            "unknown type",
        ),
        (
            json!({"url": "https://93.184.216.34/h", "events": ["*"], "description": "x".repeat(201)}),
            "description",
            "too long",
        ),
    ];
    for (body, field, why) in cases {
        let answer = app.post_json("/v1/admin/webhooks", body).await;
        answer.assert_problem(422, "validation-error");
        assert_eq!(answer.problem_fields(), [*field], "{why}: {}", answer.text);
    }
    let listed = app.get("/v1/admin/webhooks").await;
    assert_eq!(listed.json["webhooks"], json!([]));
    app.send_json(
        reqwest::Method::PATCH,
        "/v1/admin/webhooks/wh_nope",
        &json!({"enabled": true}),
    )
    .await
    .assert_problem(404, "not-found");
}

#[tokio::test]
async fn webhooks_are_for_admins_only_and_need_a_signing_key() {
    let app = spawn_app().await;
    let dispatcher = app.with_key(&app.create_key("dispatcher", None).await);
    dispatcher
        .get("/v1/admin/webhooks")
        .await
        .assert_problem(403, "forbidden");
    app.post_json(
        "/v1/admin/webhooks",
        &json!({"url": "https://93.184.216.34/h", "events": ["*"]}),
    )
    .await
    .assert_problem(409, "webhooks-not-configured");
}

/// What the test receiver answers to one request.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    delay: Duration,
    retry_after: Option<u64>,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            retry_after: None,
        }
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    /// Which attempt at this webhook id it was (1 for the first).
    attempt: usize,
    at: Instant,
    /// What it was answered.
    status: u16,
}

type Plan = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// A real HTTP receiver on a port of its own, answering each request as `plan` says and
/// recording it.
struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Received>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    fn start(plan: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
        let plan: Plan = Arc::new(plan);
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let state = (plan, log.clone());
        let server = actix_web::HttpServer::new(move || {
            let state = state.clone();
            actix_web::App::new().default_service(actix_web::web::to(
                move |req: actix_web::HttpRequest, body: actix_web::web::Bytes| {
                    let (plan, log) = state.clone();
                    async move {
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let mut r = Received {
                            id: header("webhook-id"),
                            timestamp: header("webhook-timestamp"),
                            signature: header("webhook-signature"),
                            body: String::from_utf8_lossy(&body).into_owned(),
                            attempt: 0,
                            at: Instant::now(),
                            status: 0,
                        };
                        let reply = {
                            let mut log = log.lock().unwrap();
                            r.attempt = 1 + log.iter().filter(|x| x.id == r.id).count();
                            let reply = plan(&r);
                            r.status = reply.status;
                            log.push(r);
                            reply
                        };
                        tokio::time::sleep(reply.delay).await;
                        let mut answer = actix_web::HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(reply.status).unwrap(),
                        );
                        if let Some(secs) = reply.retry_after {
                            answer.insert_header(("retry-after", secs.to_string()));
                        }
                        answer.finish()
                    }
                },
            ))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url, log, handle }
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Wait until `pred` holds on what was received, or fail after `within`.
    async fn wait_for(
        &self,
        within: Duration,
        pred: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver never got there: {:#?}",
                got.iter()
                    .map(|r| (&r.id, r.attempt, r.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The verification recipe of docs/WEBHOOKS.md: HMAC-SHA256, keyed with the base64-decoded
/// secret after `whsec_`, of `<webhook-id>.<webhook-timestamp>.<body>`, base64-encoded, must
/// equal one of the space-separated `v1,<signature>` entries of `webhook-signature`, and the
/// timestamp must be within 5 minutes of now.
fn verify(secret: &str, r: &Received) -> bool {
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    let fresh = r
        .timestamp
        .parse::<i64>()
        .is_ok_and(|t| (t - now_ms() / 1000).abs() < 300);
    fresh && r.signature.split(' ').any(|s| s == expected)
}

/// Register an endpoint for `events` at `url`; returns (id, secret).
async fn register(app: &Instance, url: &str, events: Value) -> (String, String) {
    let a = app
        .post_json("/v1/admin/webhooks", &json!({"url": url, "events": events}))
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    (
        a.json["id"].as_str().unwrap().to_owned(),
        a.json["secret"].as_str().unwrap().to_owned(),
    )
}

/// Run orders `ids` from creation to delivery, each by its own driver.
async fn run_orders(app: &Instance, ids: &[&str]) {
    let drivers: Vec<String> = ids.iter().map(|id| format!("drv-{id}")).collect();
    let names: Vec<&str> = drivers.iter().map(String::as_str).collect();
    app.put_drivers_east_of(&names, PARIS).await;
    for id in ids {
        let o = app.create_order_at(id, PARIS).await;
        assert_eq!(o.status, 201, "{}", o.text);
        let driver = o.json["driver_id"].as_str().unwrap().to_owned();
        let fence = o.json["fencing_token"].as_u64().unwrap();
        for step in ["accept", "pickup", "deliver"] {
            let a = app.answer_offer(id, &driver, fence, step).await;
            assert_eq!(a.status, 200, "{step}: {}", a.text);
        }
    }
}

/// The webhook ids of the city's events of `order`, in stream order.
async fn event_ids(app: &Instance, order: &str) -> Vec<String> {
    geodispatch::events::read_history(&app.context.store, "paris")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.order_id == order)
        .map(|e| format!("evt_paris_{}", e.id))
        .collect()
}

/// The ids the receiver accepted (2xx), first acceptance of each, in the order received.
fn accepted_ids(got: &[Received]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in got {
        if (200..300).contains(&r.status) && !out.contains(&r.id) {
            out.push(r.id.clone());
        }
    }
    out
}

#[tokio::test]
async fn events_arrive_signed_in_each_orders_order_and_failures_are_retried_on_the_schedule() {
    let app = spawn_app_with(|s| {
        webhook_settings(s);
        s.webhook_retry_schedule_ms = "200,400,800".to_owned();
        s.webhook_timeout_ms = 500;
        s.webhook_lanes = 2;
    })
    .await;
    // Every message fails first with a 500; `created` ones then get a 429 asking for 1 s (more
    // than the schedule's longest delay: capped at 800 ms), then an answer slower than the
    // timeout, then a 200; the others are accepted at their second attempt.
    let receiver = Receiver::start(|r| {
        let created = r.body.contains(r#""type":"created""#);
        match (r.attempt, created) {
            (1, _) => Reply::status(500),
            (2, true) => Reply {
                retry_after: Some(1),
                ..Reply::status(429)
            },
            (3, true) => Reply {
                delay: Duration::from_millis(900),
                ..Reply::status(200)
            },
            _ => Reply::status(204),
        }
    });
    let (_, secret) = register(&app, &receiver.url, json!(["*"])).await;
    let orders = ["w1", "w2", "w3"];
    run_orders(&app, &orders).await;
    let mut expected = Vec::new();
    for o in orders {
        expected.push(event_ids(&app, o).await);
    }
    let all: usize = expected.iter().map(Vec::len).sum();
    assert_eq!(all, 15, "five events per order");
    let got = receiver
        .wait_for(Duration::from_secs(60), |got| {
            accepted_ids(got).len() == all
        })
        .await;

    for r in &got {
        assert!(verify(&secret, r), "bad signature on {r:?}");
    }
    let accepted = accepted_ids(&got);
    for ids in &expected {
        let arrived: Vec<&String> = accepted.iter().filter(|id| ids.contains(id)).collect();
        assert_eq!(
            arrived,
            ids.iter().collect::<Vec<_>>(),
            "one order's events in order"
        );
    }
    // The schedule: 200 ms (±20%) after a 500, the capped Retry-After of 800 ms after the 429,
    // and a timed-out slow answer retried too.
    for id in expected.iter().flatten() {
        let attempts: Vec<&Received> = got.iter().filter(|r| &r.id == id).collect();
        let gap = |a: usize| attempts[a].at - attempts[a - 1].at;
        assert!(gap(1) >= Duration::from_millis(160), "{id}: {:?}", gap(1));
        if attempts[0].body.contains(r#""type":"created""#) {
            assert_eq!(attempts.len(), 4, "{id}");
            assert!(gap(2) >= Duration::from_millis(780), "{id}: {:?}", gap(2));
            assert!(
                gap(3) >= Duration::from_millis(500 + 320),
                "{id}: {:?}",
                gap(3)
            );
        } else {
            assert_eq!(attempts.len(), 2, "{id}");
        }
        // The payload is the event as the event stream shows it.
        let body: Value = serde_json::from_str(&attempts[0].body).unwrap();
        assert_eq!(format!("evt_paris_{}", body["id"].as_str().unwrap()), *id);
    }
    receiver.handle.stop(false).await;
}

#[tokio::test]
async fn nothing_is_lost_when_an_instance_dies_mid_delivery() {
    let app = spawn_app_with(|s| {
        webhook_settings(s);
        s.webhook_retry_schedule_ms = "100".to_owned();
        // Longer than the held answer below: the first sender does not time out, it dies.
        s.webhook_timeout_ms = 3_000;
    })
    .await;
    // The very first request is held for 2 s: the instance sending it dies meanwhile, and
    // the other one sends it again once the lane's lease has ended.
    let receiver = Receiver::start(|r| {
        if r.attempt == 1 && r.body.contains(r#""type":"created""#) {
            Reply {
                delay: Duration::from_millis(2_000),
                ..Reply::status(200)
            }
        } else {
            Reply::status(200)
        }
    });
    let (_, secret) = register(&app, &receiver.url, json!(["*"])).await;
    let survivor = app.peer(|_| {});
    run_orders(&app, &["k1"]).await;
    receiver
        .wait_for(Duration::from_secs(10), |got| !got.is_empty())
        .await;
    app.stop().await;
    let expected = event_ids(&survivor, "k1").await;
    let got = receiver
        .wait_for(Duration::from_secs(30), |got| {
            accepted_ids(got).len() == expected.len()
                && got.iter().filter(|r| r.id == expected[0]).count() >= 2
        })
        .await;
    assert_eq!(accepted_ids(&got), expected, "every event, in order");
    assert!(got.iter().all(|r| verify(&secret, r)));
    survivor.stop().await;
    receiver.handle.stop(false).await;
}

/// A delta of a `/metrics` series between two scrapes.
async fn metric(app: &Instance, series: &str) -> f64 {
    metric_value(&app.get("/metrics").await.text, series)
}

/// Poll endpoint `id` until `pred` holds on it, or fail after `within`.
async fn wait_endpoint(
    app: &Instance,
    id: &str,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let a = app.get(&format!("/v1/admin/webhooks/{id}")).await;
        if pred(&a.json) {
            return a.json;
        }
        assert!(
            Instant::now() < deadline,
            "endpoint never got there: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn failing_endpoints_are_dead_lettered_disabled_listed_and_resumed_and_one_message_re_sent() {
    let app = spawn_app_with(|s| {
        webhook_settings(s);
        s.webhook_retry_schedule_ms = "50,50".to_owned();
        s.webhook_disable_after = 2;
    })
    .await;
    let gone = Receiver::start(|_| Reply::status(410));
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flaky = Receiver::start({
        let healthy = healthy.clone();
        move |_| {
            if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                Reply::status(200)
            } else {
                Reply::status(500)
            }
        }
    });
    let watcher = Receiver::start(|_| Reply::status(200));
    let (gone_id, _) = register(&app, &gone.url, json!(["*"])).await;
    let order_events: Vec<&str> = geodispatch::webhooks::EVENT_TYPES
        .into_iter()
        .filter(|t| t.starts_with("order."))
        .collect();
    let (flaky_id, secret) = register(&app, &flaky.url, json!(order_events)).await;
    let (_, watcher_secret) = register(&app, &watcher.url, json!(["endpoint.disabled"])).await;
    let dead_before = metric(
        &app,
        &format!("geodispatch_webhook_dead_letters_total{{endpoint=\"{flaky_id}\"}}"),
    )
    .await;
    let disabled_before = metric(&app, "geodispatch_webhook_endpoints_disabled_total").await;
    let latencies_before = metric(&app, "geodispatch_webhook_delivery_seconds_count").await;

    run_orders(&app, &["f1"]).await;
    let ids = event_ids(&app, "f1").await;

    // 410: dead-lettered and disabled at the first answer.
    wait_endpoint(&app, &gone_id, Duration::from_secs(10), |e| {
        e["enabled"] == false
    })
    .await;
    let log = app
        .get(&format!("/v1/admin/webhooks/{gone_id}/deliveries"))
        .await;
    assert_eq!(log.status, 200, "{}", log.text);
    assert_eq!(log.json["deliveries"][0]["outcome"], "gone");
    assert_eq!(log.json["deliveries"][0]["status_code"], 410);

    // 500 every time: each message is tried 3 times (the schedule has 2 delays), then
    // dead-lettered; the second dead letter in a row disables the endpoint.
    let e = wait_endpoint(&app, &flaky_id, Duration::from_secs(10), |e| {
        e["enabled"] == false
    })
    .await;
    assert_eq!(e["consecutive_failures"], 2);
    assert_eq!(e["backlog"], ids.len() - 2, "the rest waits");
    let log = app
        .get(&format!(
            "/v1/admin/webhooks/{flaky_id}/deliveries?limit=100"
        ))
        .await;
    let attempts = log.json["deliveries"].as_array().unwrap().clone();
    let outcomes: Vec<(&str, &str, u64)> = attempts
        .iter()
        .rev()
        .map(|a| {
            (
                a["delivery_id"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
                a["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (ids[0].as_str(), "retry", 1),
            (ids[0].as_str(), "retry", 2),
            (ids[0].as_str(), "dead", 3),
            (ids[1].as_str(), "retry", 1),
            (ids[1].as_str(), "retry", 2),
            (ids[1].as_str(), "dead", 3),
        ]
    );
    let retry = attempts.iter().find(|a| a["outcome"] == "retry").unwrap();
    assert_eq!(retry["status_code"], 500);
    assert!(retry["next_retry_at"].is_string() && retry["latency_ms"].is_u64());
    assert!(
        metric(
            &app,
            &format!("geodispatch_webhook_dead_letters_total{{endpoint=\"{flaky_id}\"}}")
        )
        .await
            >= dead_before + 2.0
    );
    assert!(
        metric(&app, "geodispatch_webhook_endpoints_disabled_total").await >= disabled_before + 2.0
    );
    assert!(
        metric(
            &app,
            &format!("geodispatch_webhook_backlog{{endpoint=\"{flaky_id}\"}}")
        )
        .await
            == (ids.len() - 2) as f64
    );

    // Each disabling was announced to the endpoint that asked for it.
    let notices = watcher
        .wait_for(Duration::from_secs(10), |got| accepted_ids(got).len() == 2)
        .await;
    let disabled: Vec<Value> = notices
        .iter()
        .map(|r| {
            assert!(verify(&watcher_secret, r));
            serde_json::from_str(&r.body).unwrap()
        })
        .collect();
    assert_eq!(disabled[0]["type"], "endpoint.disabled");
    assert_eq!(disabled[0]["endpoint_id"], gone_id.as_str());
    assert_eq!(disabled[1]["endpoint_id"], flaky_id.as_str());

    // Mended and enabled again: the backlog goes out, then the first message, re-sent.
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let enabled = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/v1/admin/webhooks/{flaky_id}"),
            &json!({"enabled": true}),
        )
        .await;
    assert_eq!(enabled.status, 200, "{}", enabled.text);
    assert_eq!(enabled.json["consecutive_failures"], 0);
    let resent = app
        .post_json(
            &format!("/v1/admin/webhooks/{flaky_id}/deliveries/{}/retry", ids[0]),
            &json!({}),
        )
        .await;
    assert_eq!(resent.status, 202, "{}", resent.text);
    let got = flaky
        .wait_for(Duration::from_secs(10), |got| {
            accepted_ids(got).len() == ids.len() - 1
        })
        .await;
    assert_eq!(accepted_ids(&got), [&ids[2..], &ids[..1]].concat());
    let series = |outcome: &str| {
        format!(
            "geodispatch_webhook_deliveries_total{{endpoint=\"{flaky_id}\",outcome=\"{outcome}\"}}"
        )
    };
    // The receiver has the requests; the service counts each once it has read its answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, &series("delivered")).await < (ids.len() - 1) as f64 {
        assert!(Instant::now() < deadline, "deliveries not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&app, &series("delivered")).await,
        (ids.len() - 1) as f64
    );
    assert_eq!(metric(&app, &series("retry")).await, 4.0);
    assert_eq!(metric(&app, &series("dead")).await, 2.0);
    assert!(
        metric(&app, "geodispatch_webhook_delivery_seconds_count").await
            >= latencies_before + (ids.len() - 1 + 6) as f64
    );
    assert!(got.iter().all(|r| verify(&secret, r)));
    app.post_json(
        &format!("/v1/admin/webhooks/{flaky_id}/deliveries/evt_paris_1-0/retry"),
        &json!({}),
    )
    .await
    .assert_problem(404, "not-found");
    app.get(&format!("/v1/admin/webhooks/{flaky_id}/deliveries?limit=0"))
        .await
        .assert_problem(422, "validation-error");
    gone.handle.stop(false).await;
    flaky.handle.stop(false).await;
    watcher.handle.stop(false).await;
}

#[tokio::test]
async fn a_slow_endpoint_delays_no_other() {
    let app = spawn_app_with(webhook_settings).await;
    let slow = Receiver::start(|_| Reply {
        delay: Duration::from_millis(1_500),
        ..Reply::status(200)
    });
    let fast = Receiver::start(|_| Reply::status(200));
    register(&app, &slow.url, json!(["*"])).await;
    register(&app, &fast.url, json!(["*"])).await;

    run_orders(&app, &["s1"]).await;
    let ids = event_ids(&app, "s1").await;
    fast.wait_for(Duration::from_secs(10), |got| accepted_ids(got) == ids)
        .await;
    assert!(
        slow.received().len() < ids.len(),
        "the fast endpoint got everything while the slow one was still answering"
    );
    slow.wait_for(Duration::from_secs(20), |got| accepted_ids(got) == ids)
        .await;
    slow.handle.stop(false).await;
    fast.handle.stop(false).await;
}

#[tokio::test]
async fn a_full_backlog_drops_new_events_for_that_endpoint_and_says_so() {
    let app = spawn_app_with(|s| {
        webhook_settings(s);
        s.webhook_max_backlog = 2;
    })
    .await;
    let slow = Receiver::start(|_| Reply {
        delay: Duration::from_millis(1_000),
        ..Reply::status(200)
    });
    let (slow_id, _) = register(&app, &slow.url, json!(["*"])).await;
    let dropped_before = metric(&app, "geodispatch_webhook_dropped_total").await;

    run_orders(&app, &["b1", "b2"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        let log = app
            .get(&format!(
                "/v1/admin/webhooks/{slow_id}/deliveries?limit=100"
            ))
            .await;
        let dropped = log.json["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "dropped")
            .count();
        if dropped > 0 {
            break dropped;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was dropped: {}",
            log.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let e = app.get(&format!("/v1/admin/webhooks/{slow_id}")).await;
    assert!(e.json["backlog"].as_u64().unwrap() <= 2, "{}", e.text);
    assert!(
        metric(&app, "geodispatch_webhook_dropped_total").await >= dropped_before + dropped as f64
    );
    slow.handle.stop(false).await;
}

#[tokio::test]
async fn an_endpoint_gets_only_the_event_types_it_asked_for_and_a_change_applies_to_later_events() {
    let app = spawn_app_with(webhook_settings).await;
    let receiver = Receiver::start(|_| Reply::status(200));
    let (id, _) = register(&app, &receiver.url, json!(["order.delivered"])).await;
    run_orders(&app, &["t1"]).await;
    let delivered = event_ids(&app, "t1").await.pop().unwrap();
    receiver
        .wait_for(Duration::from_secs(10), |got| {
            accepted_ids(got) == [delivered.clone()]
        })
        .await;

    let patched = app
        .send_json(
            reqwest::Method::PATCH,
            &format!("/v1/admin/webhooks/{id}"),
            &json!({"events": ["order.created"]}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    run_orders(&app, &["t2"]).await;
    let created = event_ids(&app, "t2").await.remove(0);
    let got = receiver
        .wait_for(Duration::from_secs(10), |got| accepted_ids(got).len() == 2)
        .await;
    assert_eq!(accepted_ids(&got), [delivered, created]);
    receiver.handle.stop(false).await;
}

#[tokio::test]
async fn a_serve_process_killed_mid_delivery_loses_nothing() {
    // The API instance of the test has no signing key: it neither fans out nor sends, so the
    // first sender is the `geodispatch serve` process below, killed with SIGKILL while the
    // receiver holds its first request.
    let app = spawn_app_with(|s| {
        s.webhook_allow_http = true;
        s.webhook_allow_private = true;
    })
    .await;
    let receiver = Receiver::start(|r| {
        if r.attempt == 1 && r.body.contains(r#""type":"created""#) {
            Reply {
                delay: Duration::from_millis(2_000),
                ..Reply::status(200)
            }
        } else {
            Reply::status(200)
        }
    });
    let port = geodispatch::store::local::free_port().unwrap();
    let mut victim = std::process::Command::new(env!("CARGO_BIN_EXE_geodispatch"))
        .arg("serve")
        .env("GEODISPATCH_REDIS_URL", app.redis.url())
        .env("GEODISPATCH_KEY_PREFIX", &app.context.settings.key_prefix)
        .env("GEODISPATCH_LISTEN", format!("127.0.0.1:{port}"))
        .env("GEODISPATCH_ADMIN_KEY", TEST_ADMIN_KEY)
        .env("GEODISPATCH_WEBHOOK_SIGNING_KEY", SIGNING_KEY)
        .env("GEODISPATCH_WEBHOOK_ALLOW_HTTP", "true")
        .env("GEODISPATCH_WEBHOOK_ALLOW_PRIVATE", "true")
        .env("GEODISPATCH_WEBHOOK_TIMEOUT_MS", "3000")
        .env("GEODISPATCH_WEBHOOK_RETRY_SCHEDULE_MS", "100")
        .env("GEODISPATCH_RATE_LIMITS_ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = client_with(Some(TEST_ADMIN_KEY));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        if Instant::now() > deadline {
            let _ = victim.kill();
            panic!("geodispatch serve never got ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created: Value = client
        .post(format!("{base}/v1/admin/webhooks"))
        .json(&json!({"url": receiver.url, "events": ["*"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();

    run_orders(&app, &["p1"]).await;
    receiver
        .wait_for(Duration::from_secs(10), |got| !got.is_empty())
        .await;
    victim.kill().unwrap();
    victim.wait().unwrap();
    // Another instance with the signing key takes the lane over once its lease ends.
    let survivor = app.peer(|s| s.webhook_signing_key = Some(SIGNING_KEY.into()));
    let expected = event_ids(&app, "p1").await;
    let got = receiver
        .wait_for(Duration::from_secs(30), |got| {
            accepted_ids(got).len() == expected.len()
                && got.iter().filter(|r| r.id == expected[0]).count() >= 2
        })
        .await;
    assert_eq!(accepted_ids(&got), expected, "every event, in order");
    assert!(got.iter().all(|r| verify(&secret, r)));
    survivor.stop().await;
    receiver.handle.stop(false).await;
}

#[tokio::test]
async fn events_trimmed_before_their_fan_out_are_logged_and_counted_and_fan_out_goes_on() {
    let app = spawn_app_with(webhook_settings).await;
    let rx = Receiver::start(|_| Reply::status(200));
    register(&app, &rx.url, json!(["*"])).await;
    let gaps_before = metric(&app, "geodispatch_webhook_fanout_gaps_total").await;
    let keys = app.context.store.keys();
    let mut conn = app.redis_conn().await;
    // Fan-out falls behind the stream's trimming: its cursor names an event no longer kept.
    let _: () = redis::cmd("SET")
        .arg(keys.webhook_cursor("paris"))
        .arg("1-1")
        .query_async(&mut conn)
        .await
        .unwrap();
    run_orders(&app, &["g1"]).await;
    // It says so, and goes on with the events still in the stream.
    let want = event_ids(&app, "g1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want
        .iter()
        .all(|id| accepted_ids(&rx.received()).contains(id))
    {
        assert!(Instant::now() < deadline, "{:?}", rx.received());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&app, "geodispatch_webhook_fanout_gaps_total").await >= gaps_before + 1.0);
    rx.handle.stop(false).await;
}
