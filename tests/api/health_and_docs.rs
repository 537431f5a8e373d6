use std::time::Duration;

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_200_on_a_running_redis() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json["status"], "ok");
    assert!(health.headers.contains_key("x-request-id"));
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
}

#[tokio::test]
async fn readiness_goes_503_when_redis_stops_and_200_when_it_returns() {
    let mut app = spawn_app().await;
    assert_eq!(app.get("/readyz").await.status, 200);

    app.redis.stop().await.unwrap();
    assert!(
        app.wait_for_status("/readyz", 503, Duration::from_secs(10))
            .await,
        "readyz should report 503 while Redis is down"
    );
    let down = app.get("/readyz").await;
    down.assert_problem(503, "unavailable");
    assert!(down.headers.contains_key("retry-after"));
    assert_eq!(
        app.get("/healthz").await.status,
        200,
        "liveness does not depend on Redis"
    );

    app.redis.restart().await.unwrap();
    assert!(
        app.wait_for_status("/readyz", 200, Duration::from_secs(10))
            .await,
        "readyz should recover by itself once Redis is back"
    );
}

#[tokio::test]
async fn a_request_id_sent_by_the_caller_is_echoed() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn swagger_ui_and_all_its_assets_are_served_by_the_service_itself() {
    let app = spawn_app().await;
    let redirect = app.get("/docs").await;
    assert!(
        matches!(redirect.status, 301 | 302 | 307 | 308),
        "{}",
        redirect.status
    );
    assert_eq!(redirect.headers["location"], "/docs/");

    let page = app.get("/docs/").await;
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.text.contains("swagger-ui"));
    // Every script and stylesheet the page loads is a relative URL served by us (no CDN).
    let assets: Vec<&str> = page
        .text
        .split(['"', '\''])
        .filter(|s| s.ends_with(".js") || s.ends_with(".css"))
        .collect();
    assert!(assets.len() >= 3, "{assets:?}");
    for asset in assets {
        assert!(
            !asset.starts_with("http"),
            "{asset} would need the internet"
        );
        let path = format!("/docs/{}", asset.trim_start_matches("./"));
        let answer = app.get(&path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(answer.text.len() > 100, "{path} is empty");
    }
    let init = app.get("/docs/swagger-initializer.js").await;
    assert!(init.text.contains("/openapi.json"), "{}", init.text);
}

#[tokio::test]
async fn the_served_spec_equals_the_committed_spec() {
    let app = spawn_app().await;
    let served = app.get("/openapi.json").await;
    assert_eq!(served.status, 200);
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        served.json == committed,
        "the served spec differs from openapi/openapi.json: run `cargo run -q -- openapi > openapi/openapi.json`"
    );
}
