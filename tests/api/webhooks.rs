//! Webhooks: endpoint administration, and signed at-least-once delivery of order events to a
//! real HTTP receiver started by the test.

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
