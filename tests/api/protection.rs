//! Protection on real Redis: authentication, roles, BOLA (a driver writing another driver),
//! revocation, sessions and their expiry, the three rate limiters at their edges with their
//! headers, bounded event streams, and the whole API under the least-privilege Redis ACL.

use std::time::{Duration, Instant};

use geodispatch::ratelimit::{self, Policy};
use serde_json::{Value, json};

use crate::helpers::{
    Answer, Instance, PARIS, TestApp, client_with, now_ms, spawn_app_with, start_redis,
};

#[tokio::test]
async fn every_v1_route_needs_a_valid_key_and_says_so_in_problem_json() {
    let app = spawn_app_with(|_| {}).await;
    let anonymous = app.with_key("");
    let mut anonymous = anonymous;
    anonymous.client = client_with(None);
    for path in [
        "/v1/cities",
        "/v1/drivers/nearby?lat=48.85&lon=2.35",
        "/v1/admin/keys",
    ] {
        let a = anonymous.get(path).await;
        a.assert_problem(401, "unauthorized");
        assert!(
            a.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    app.with_key("gdk_00000000000000000000000000000000")
        .get("/v1/cities")
        .await
        .assert_problem(401, "unauthorized");
    // Percent-encoding cannot route around the checks: the router decodes `%76` to `v`.
    let raw = |method: reqwest::Method, path: &str, key: Option<&str>| {
        let mut r = reqwest::Client::new().request(method, format!("{}{path}", app.address));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.json(&json!({"role": "admin"})).send()
    };
    let sneaky = raw(reqwest::Method::POST, "/%761/admin/keys", None)
        .await
        .unwrap();
    assert_eq!(sneaky.status(), 401, "an encoded /v1 needs a key too");
    let sneaky = raw(reqwest::Method::PUT, "/%761/drivers/someone/location", None)
        .await
        .unwrap();
    assert_eq!(sneaky.status(), 401);
    let dispatcher = app.create_key("dispatcher", None).await;
    let sneaky = raw(reqwest::Method::POST, "/v1/%61dmin/keys", Some(&dispatcher))
        .await
        .unwrap();
    assert_eq!(
        sneaky.status(),
        403,
        "an encoded admin route is still an admin route"
    );
    // Health and docs stay open.
    assert_eq!(anonymous.get("/healthz").await.status, 200);
    assert_eq!(anonymous.get("/openapi.json").await.status, 200);
}

#[tokio::test]
async fn roles_decide_what_a_key_may_call() {
    let app = spawn_app_with(|_| {}).await;
    let dispatcher = app.with_key(&app.create_key("dispatcher", None).await);
    let driver = app.as_driver("me").await;
    dispatcher
        .post_json("/v1/admin/keys", &json!({"role": "admin"}))
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        dispatcher
            .get("/v1/drivers/nearby?lat=48.85&lon=2.35")
            .await
            .status,
        200
    );
    for (method, path, body) in [
        ("GET", "/v1/drivers/nearby?lat=48.85&lon=2.35", Value::Null),
        ("GET", "/v1/candidates?lat=48.85&lon=2.35", Value::Null),
        (
            "POST",
            "/v1/orders",
            json!({"pickup": {"lat": PARIS.0, "lon": PARIS.1}}),
        ),
        ("POST", "/v1/orders/o1/dispatch", json!({})),
        ("POST", "/v1/locations/batch", json!({"positions": []})),
        ("GET", "/v1/events?city=paris", Value::Null),
        ("GET", "/v1/admin/keys", Value::Null),
        ("PUT", "/v1/drivers/me/score", json!({"score": 5.0})),
    ] {
        let a = if method == "GET" {
            driver.get(path).await
        } else {
            driver.post_json(path, &body).await
        };
        let a = if method == "PUT" {
            driver.put_json(path, &body).await
        } else {
            a
        };
        a.assert_problem(403, "forbidden");
    }
    // Key administration: validation and listing without secrets.
    app.post_json("/v1/admin/keys", &json!({"role": "driver"}))
        .await
        .assert_problem(422, "validation-error");
    app.post_json(
        "/v1/admin/keys",
        &json!({"role": "dispatcher", "driver_id": "x"}),
    )
    .await
    .assert_problem(422, "validation-error");
    let list = app.get("/v1/admin/keys").await;
    assert_eq!(list.json["keys"].as_array().unwrap().len(), 2);
    assert!(
        !list.text.contains("gdk_"),
        "no secret is ever listed: {}",
        list.text
    );
}

#[tokio::test]
async fn a_driver_key_cannot_write_another_driver_and_nothing_is_written() {
    let app = spawn_app_with(|_| {}).await;
    let a = app.as_driver("drv-a").await;
    assert_eq!(app.put_driver_at("drv-b", PARIS).await.status, 200);
    assert_eq!(
        a.put_driver_at("drv-a", (PARIS.0, PARIS.1 + 0.001))
            .await
            .status,
        200
    );
    assert_eq!(a.get("/v1/drivers/drv-a").await.status, 200);
    // An offer for driver b.
    let o = app.create_order_at("ob", PARIS).await;
    assert_eq!(o.json["driver_id"], "drv-b", "{}", o.text);
    let fence = o.json["fencing_token"].as_u64().unwrap();

    let before = app.snapshot().await;
    let attempts: Vec<Answer> = vec![
        a.put_driver_at("drv-b", PARIS).await,
        a.put_json("/v1/drivers/drv-b/status", &json!({"status": "offline"}))
            .await,
        a.get("/v1/drivers/drv-b").await,
        a.answer_offer("ob", "drv-b", fence, "accept").await,
        a.answer_offer("ob", "drv-b", fence, "reject").await,
    ];
    for answer in attempts {
        answer.assert_problem(403, "forbidden");
    }
    assert_eq!(
        app.snapshot().await,
        before,
        "a refused request writes nothing"
    );
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let app = spawn_app_with(|_| {}).await;
    let created = app
        .post_json("/v1/admin/keys", &json!({"role": "dispatcher"}))
        .await;
    let k = app.with_key(created.json["key"].as_str().unwrap());
    assert_eq!(k.get("/v1/cities").await.status, 200);
    let id = created.json["key_id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/v1/admin/keys/{id}")).await.status,
        204
    );
    k.get("/v1/cities")
        .await
        .assert_problem(401, "unauthorized");
    app.delete(&format!("/v1/admin/keys/{id}"))
        .await
        .assert_problem(404, "not-found");
    // The key is stored only as its SHA-256.
    let secret = created.json["key"].as_str().unwrap();
    for (k, v) in app.snapshot().await {
        assert!(!k.contains(secret) && !String::from_utf8_lossy(&v).contains(secret));
    }
}

#[tokio::test]
async fn sessions_slide_expire_end_at_their_maximum_age_and_log_out() {
    let app = spawn_app_with(|s| {
        s.session_idle_ms = 400;
        s.session_max_age_ms = 2_000;
    })
    .await;
    let driver_key = app.create_key("driver", Some("drv-s")).await;
    let driver = app.with_key(&driver_key);
    let s = driver.post_json("/v1/sessions", &json!({})).await;
    assert_eq!(s.status, 201, "{}", s.text);
    let token = s.json["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("gds_"));
    let session = app.with_key(&token);
    // The record holds no secret: neither the token nor the key.
    for (_, v) in app.snapshot().await {
        let v = String::from_utf8_lossy(&v);
        assert!(!v.contains(&token) && !v.contains(&driver_key));
    }
    // Sliding: used every 150 ms for 1.2 s (three idle timeouts), it stays alive.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1_200) {
        let a = session.put_driver_at("drv-s", PARIS).await;
        assert_eq!(a.status, 200, "{}", a.text);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // It still acts only for its driver.
    session
        .put_driver_at("drv-x", PARIS)
        .await
        .assert_problem(403, "forbidden");
    // Absolute maximum age: it ends 2 s after creation however it is used.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = session.get("/v1/drivers/drv-s").await;
        if a.status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session outlived its maximum age"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "not before its time"
    );

    // Idle expiry: a new session left alone dies after 400 ms.
    let idle = driver.post_json("/v1/sessions", &json!({})).await;
    let idle = app.with_key(idle.json["token"].as_str().unwrap());
    assert_eq!(idle.get("/v1/drivers/drv-s").await.status, 200);
    tokio::time::sleep(Duration::from_millis(700)).await; // waiting *is* the test: idle time passes
    idle.get("/v1/drivers/drv-s")
        .await
        .assert_problem(401, "unauthorized");

    // Logout.
    let third = driver.post_json("/v1/sessions", &json!({})).await;
    let third = app.with_key(third.json["token"].as_str().unwrap());
    assert_eq!(third.delete("/v1/sessions/current").await.status, 204);
    third
        .get("/v1/drivers/drv-s")
        .await
        .assert_problem(401, "unauthorized");
    driver
        .delete("/v1/sessions/current")
        .await
        .assert_problem(422, "validation-error");
}

async fn hits(app: &TestApp, policy: &Policy, subject: &str, n: usize) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            ratelimit::check(&app.context.store, "t", policy, subject)
                .await
                .unwrap()
                .allowed,
        );
    }
    out
}

async fn wait_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

#[tokio::test]
async fn a_fixed_window_lets_about_twice_its_limit_through_across_an_edge_and_a_sliding_log_does_not()
 {
    let app = spawn_app_with(|_| {}).await;
    let fixed = Policy::parse("fixed:5:1000").unwrap();
    let sliding = Policy::parse("sliding:5:1000").unwrap();
    for (policy, subject) in [(fixed, "f"), (sliding, "s")] {
        let t0 = Instant::now();
        let first = hits(&app, &policy, subject, 1).await;
        wait_until(t0 + Duration::from_millis(750)).await;
        let late = hits(&app, &policy, subject, 4).await;
        wait_until(t0 + Duration::from_millis(1_100)).await;
        let next = hits(&app, &policy, subject, 5).await;
        assert!(
            t0.elapsed() < Duration::from_millis(1_700),
            "too slow to test the edge"
        );
        let passed = [first, late, next].concat().iter().filter(|a| **a).count();
        // 9 of 10 requests inside ~350 ms for the fixed window (its counter restarted at the
        // edge); the log still holds the 4 late ones, so only 1 more passes.
        match policy {
            Policy::Fixed { .. } => {
                assert_eq!(passed, 10, "fixed window: 2x the limit across the edge")
            }
            _ => assert_eq!(passed, 6, "sliding log: the limit holds across the edge"),
        }
    }
}

#[tokio::test]
async fn a_sliding_log_does_not_count_rejected_requests() {
    let app = spawn_app_with(|_| {}).await;
    let policy = Policy::parse("sliding:2:600").unwrap();
    let t0 = Instant::now();
    assert_eq!(hits(&app, &policy, "x", 2).await, [true, true]);
    assert!(
        hits(&app, &policy, "x", 10).await.iter().all(|a| !a),
        "over the limit"
    );
    wait_until(t0 + Duration::from_millis(700)).await;
    assert_eq!(
        hits(&app, &policy, "x", 3).await,
        [true, true, false],
        "the 10 rejected ones left no trace"
    );
}

#[tokio::test]
async fn a_token_bucket_allows_its_burst_and_then_only_its_refill_rate() {
    let app = spawn_app_with(|_| {}).await;
    let policy = Policy::parse("token_bucket:10:2").unwrap();
    let burst = hits(&app, &policy, "b", 15).await;
    let t_empty = Instant::now();
    assert_eq!(burst.iter().filter(|a| **a).count(), 10, "{burst:?}");
    assert!(burst[..10].iter().all(|a| *a) && burst[10..].iter().all(|a| !*a));
    wait_until(t_empty + Duration::from_millis(1_000)).await;
    let after = hits(&app, &policy, "b", 6).await;
    let elapsed = t_empty.elapsed().as_secs_f64();
    let allowed = after.iter().filter(|a| **a).count();
    // 2 tokens per second: 2 after one second (3 if the machine was slow to get here).
    assert!(
        allowed >= 2 && allowed as f64 <= (2.0 * elapsed).floor() + 1.0,
        "{allowed} after {elapsed:.2} s"
    );
    let d = ratelimit::check(&app.context.store, "t", &policy, "b")
        .await
        .unwrap();
    assert!(
        !d.allowed && d.retry_after_ms > 0 && d.retry_after_ms <= 500,
        "{d:?}"
    );
}

#[tokio::test]
async fn rate_limited_answers_are_429_problems_with_the_standard_headers_and_write_nothing() {
    let app = spawn_app_with(|s| {
        s.rate_limits_enabled = true;
        s.rate_limit_location = "token_bucket:3:1".to_owned();
        s.rate_limit_default = "fixed:100:60000".to_owned();
    })
    .await;
    let driver = app.as_driver("drv-r").await;
    let mut t = now_ms();
    for i in 0..3 {
        t += 1;
        let a = driver
            .put_json(
                "/v1/drivers/drv-r/location",
                &json!({"lat": PARIS.0, "lon": PARIS.1, "recorded_at": t}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.headers["ratelimit-policy"], "\"location\";q=3;w=3");
        let rl = a.headers["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            rl.starts_with(&format!("\"location\";r={};t=", 2 - i)),
            "{rl}"
        );
    }
    let before = app.snapshot().await;
    let limited = driver
        .put_json(
            "/v1/drivers/drv-r/location",
            &json!({"lat": PARIS.0, "lon": PARIS.1, "recorded_at": t + 1}),
        )
        .await;
    limited.assert_problem(429, "rate-limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 1);
    assert_eq!(limited.json["retry_after"], 1);
    assert!(limited.headers.contains_key("ratelimit"));
    let after: Vec<_> = app
        .snapshot()
        .await
        .into_iter()
        .filter(|(k, _)| !k.contains(":rl:"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(k, _)| !k.contains(":rl:"))
        .collect();
    assert_eq!(after, before, "the limited update was not stored");
    // Another class has its own policy and headers.
    let other = app.get("/v1/cities").await;
    assert_eq!(other.headers["ratelimit-policy"], "\"default\";q=100;w=60");
}

#[tokio::test]
async fn event_streams_per_key_are_bounded() {
    let app = spawn_app_with(|s| s.sse_max_per_key = 1).await;
    let first = app
        .client
        .get(format!("{}/v1/events?city=paris", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    app.get("/v1/events?city=paris")
        .await
        .assert_problem(429, "rate-limited");
    drop(first);
    // The server notices the closed stream at its next keep-alive (5 s) and frees the slot.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let again = app
            .client
            .get(format!("{}/v1/events?city=paris", app.address))
            .send()
            .await
            .unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ACL the README documents, for key prefix `prefix`.
pub fn least_privilege_acl(prefix: &str, password: &str) -> Vec<String> {
    format!(
        "geodispatch on >{password} resetkeys ~{prefix}:* resetchannels &{prefix}:* -@all +@read +@write +@stream +@pubsub +@scripting +@transaction +@connection -@dangerous +time -script|flush -script|kill -function"
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// Create the service's least-privilege ACL user on the Redis at `url` (as its default user);
/// returns that admin connection.
async fn add_acl_user(
    url: &str,
    prefix: &str,
    password: &str,
) -> redis::aio::MultiplexedConnection {
    let mut admin = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(least_privilege_acl(prefix, password))
        .query_async(&mut admin)
        .await
        .unwrap();
    admin
}

#[tokio::test]
async fn the_api_runs_under_the_least_privilege_acl() {
    let redis = start_redis().await;
    let prefix = "aclgd";
    add_acl_user(&redis.url(), prefix, "s3cret-pass").await;
    let url = format!("redis://geodispatch:s3cret-pass@127.0.0.1:{}", redis.port());

    // What the service may not do.
    let mut limited = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for cmd in [
        vec!["FLUSHALL"],
        vec!["KEYS", "*"],
        vec!["CONFIG", "GET", "maxmemory"],
        vec!["ACL", "LIST"],
        vec!["GET", "other:key"],
        vec!["SCRIPT", "FLUSH"],
    ] {
        let mut c = redis::cmd(cmd[0]);
        for a in &cmd[1..] {
            c.arg(*a);
        }
        let r: redis::RedisResult<redis::Value> = c.query_async(&mut limited).await;
        let err = r.expect_err(&format!("{cmd:?} must be refused"));
        assert!(
            err.to_string().contains("NOPERM") || err.to_string().contains("permission"),
            "{cmd:?}: {err}"
        );
    }

    let app = app_on(prefix, &url);
    exercise_the_api(&app).await;
    app.stop().await;
}

/// The service on the Redis at `url` with key prefix `prefix`, rate limits on.
fn app_on(prefix: &str, url: &str) -> Instance {
    let settings = geodispatch::config::Settings {
        listen: "127.0.0.1:0".to_owned(),
        key_prefix: prefix.to_owned(),
        http_workers: 1,
        admin_key: Some(crate::helpers::TEST_ADMIN_KEY.into()),
        rate_limits_enabled: true,
        timer_interval_ms: 20,
        redis_url: Some(url.to_owned()),
        ..Default::default()
    };
    crate::helpers::start_instance(settings, url)
}

/// Ingest, search, ranking, keys, sessions, orders (now and queued), answers, events and rate
/// limits, each checked.
async fn exercise_the_api(app: &Instance) {
    assert!(
        app.wait_for_status("/readyz", 200, Duration::from_secs(10))
            .await
    );
    app.put_drivers_east_of(&["d0", "d1", "d2", "d3", "d4"], PARIS)
        .await;
    let near = app.nearby(PARIS, "&limit=3").await;
    assert_eq!(
        near.json["drivers"].as_array().unwrap().len(),
        3,
        "{}",
        near.text
    );
    app.set_score("d0", 4.0).await;
    assert_eq!(
        app.get(&format!("/v1/candidates?lat={}&lon={}", PARIS.0, PARIS.1))
            .await
            .status,
        200
    );
    let driver = app.as_driver("d0").await;
    let s = driver.post_json("/v1/sessions", &json!({})).await;
    assert_eq!(s.status, 201, "{}", s.text);
    let q = app.queue_order("q1", PARIS).await;
    assert_eq!(q.status, 201, "{}", q.text);
    let o = app.create_order_at("n1", PARIS).await;
    assert_eq!(o.json["state"], "offered", "{}", o.text);
    let (d, f) = (
        o.json["driver_id"].as_str().unwrap(),
        o.json["fencing_token"].as_u64().unwrap(),
    );
    let accepted = app.answer_offer("n1", d, f, "accept").await;
    assert_eq!(accepted.status, 200, "{}", accepted.text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/v1/orders/q1").await.json["state"] != "offered" {
        assert!(Instant::now() < deadline, "the queue worker dispatches too");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let history = geodispatch::events::read_history(&app.context.store, "paris")
        .await
        .unwrap();
    assert!(history.len() >= 5);
    assert!(
        app.get("/v1/cities")
            .await
            .headers
            .contains_key("ratelimit")
    );
    app.stop().await;
}

#[tokio::test]
async fn the_api_runs_over_tls_as_an_acl_user() {
    // A self-signed certificate for 127.0.0.1 (openssl CLI).
    let dir = std::env::temp_dir().join(format!("gd-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key_file)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl; .ci/run installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tls_port = geodispatch::store::local::free_port().unwrap();
    let redis = geodispatch::store::local::LocalRedis::start(
        geodispatch::store::local::LocalRedisOptions {
            data_dir: dir.join("redis"),
            appendonly: false,
            extra_args: vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                cert.display().to_string(),
                "--tls-key-file".into(),
                key_file.display().to_string(),
                "--tls-ca-cert-file".into(),
                cert.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        },
    )
    .await
    .expect("redis-server with TLS (Debian's is built with it)");
    let mut admin = add_acl_user(&redis.url(), "tlsgd", "tls-pass").await;
    // `#insecure`: the certificate is self-signed here; with a CA the system trusts, drop it.
    let url = format!("rediss://geodispatch:tls-pass@127.0.0.1:{tls_port}/#insecure");
    // The TLS port does not speak plain RESP.
    let plain =
        redis::Client::open(format!("redis://geodispatch:tls-pass@127.0.0.1:{tls_port}")).unwrap();
    let plain = tokio::time::timeout(Duration::from_secs(3), async {
        let mut c = plain.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "a plain connection to the TLS port must fail"
    );
    let app = app_on("tlsgd", &url);
    exercise_the_api(&app).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        clients
            .lines()
            .filter(|l| l.contains("user=geodispatch"))
            .count()
            >= 1,
        "the service connected as the ACL user: {clients}"
    );
    drop(redis);
    std::fs::remove_dir_all(dir).ok();
}
