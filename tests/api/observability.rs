//! Observability: `/metrics` in the Prometheus text format moves with dispatches, fence and
//! rate-limit rejections and never labels by driver or order id; JSON logs let one follow a
//! dispatch by request id and order id through lock, claim and events.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Instance, PARIS, client_with, metric_value, now_ms, spawn_app_with};

async fn scrape(app: &Instance) -> String {
    let mut open = app.clone_instance();
    open.client = client_with(None);
    let a = open.get("/metrics").await;
    assert_eq!(a.status, 200);
    assert!(
        a.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        a.content_type
    );
    a.text
}

#[tokio::test]
async fn metrics_move_after_a_dispatch_and_carry_no_ids() {
    let app = spawn_app_with(|s| {
        s.rate_limits_enabled = true;
        s.rate_limit_default = "fixed:1000:60000".to_owned();
        s.rate_limit_dispatch = "sliding:1000:60000".to_owned();
        s.rate_limit_location = "token_bucket:1:0.01".to_owned();
    })
    .await;
    let offered = "geodispatch_dispatch_outcomes_total{outcome=\"offered\",source=\"request\"}";
    let acquired = "geodispatch_lock_acquisitions_total{result=\"acquired\"}";
    let fenced = "geodispatch_fence_rejections_total{stage=\"answer\"}";
    let limited = "geodispatch_rate_limit_rejections_total{class=\"location\"}";
    let created =
        "geodispatch_http_requests_total{method=\"POST\",route=\"/v1/orders\",status=\"201\"}";
    let before = scrape(&app).await;

    assert_eq!(app.put_driver_at("metric-driver", PARIS).await.status, 200);
    let o = app.create_order_at("metric-order", PARIS).await;
    assert_eq!(o.json["state"], "offered", "{}", o.text);
    let wrong = app
        .answer_offer("metric-order", "metric-driver", 999, "accept")
        .await;
    assert_eq!(wrong.status, 409);
    let limited_answer = app
        .put_location("metric-driver", PARIS.0, PARIS.1, now_ms() + 1, json!({}))
        .await;
    assert_eq!(limited_answer.status, 429);

    let after = scrape(&app).await;
    for series in [offered, acquired, fenced, limited, created] {
        assert!(
            metric_value(&after, series) >= metric_value(&before, series) + 1.0,
            "{series} did not move:\n{after}"
        );
    }
    assert!(after.contains("geodispatch_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/orders/{order_id}/accept\""));
    assert!(after.contains("geodispatch_redis_pool_connections{state=\"max\"} 64"));
    for family in [
        "geodispatch_lock_lost_total",
        "geodispatch_stale_drivers_swept_total",
        "geodispatch_queue_entries_reclaimed_total",
    ] {
        assert!(
            after.contains(&format!("# TYPE {family} counter")),
            "{family}"
        );
    }
    assert!(
        !after.contains("metric-order") && !after.contains("metric-driver"),
        "no ids as labels"
    );
}

#[tokio::test]
async fn json_logs_trace_a_dispatch_by_request_id_and_order_id() {
    let dir = std::env::temp_dir().join(format!("gd-logs-{}", uuid::Uuid::new_v4()));
    let port = geodispatch::store::local::free_port().unwrap();
    let admin = "log-test-admin-key-0123456789";
    let mut child = Command::new(env!("CARGO_BIN_EXE_geodispatch"))
        .arg("serve")
        .env_remove("GEODISPATCH_REDIS_URL")
        .env("GEODISPATCH_LISTEN", format!("127.0.0.1:{port}"))
        .env("GEODISPATCH_REDIS_DATA_DIR", dir.join("redis"))
        .env("GEODISPATCH_ADMIN_KEY", admin)
        .env("GEODISPATCH_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,geodispatch::dispatch=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log_reader = crate::helpers::drain(child.stderr.take().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let client = client_with(Some(admin));
    let started = Instant::now();
    while !matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(started.elapsed() < Duration::from_secs(10), "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let put = client
        .put(format!("{base}/v1/drivers/log-driver/location"))
        .json(&json!({"lat": PARIS.0, "lon": PARIS.1, "recorded_at": now_ms()}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let order = client
        .post(format!("{base}/v1/orders"))
        .header("x-request-id", "trace-me-42")
        .json(&json!({"order_id": "log-order", "pickup": {"lat": PARIS.0, "lon": PARIS.1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), 201);
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let log = log_reader.join().unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["span"]["request_id"] == "trace-me-42")
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in ["created and locked", "claim: offered (event appended)"] {
        assert!(
            lines
                .iter()
                .any(|l| l["message"] == expected && l["order"] == "log-order"),
            "no {expected:?} line with the request id and the order id: {messages:?}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}
