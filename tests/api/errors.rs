//! Bad input gets a precise problem+json and changes nothing.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = spawn_app().await;
    for body in [
        "{",
        "{\"lat\": }",
        "not json",
        "",
        "{\"lat\": 48.85, \"lon\": 2.35} trailing",
    ] {
        app.send_raw(
            Method::POST,
            "/v1/cities/resolve",
            "application/json",
            body.as_bytes().to_vec(),
        )
        .await
        .assert_problem(400, "malformed-json");
    }
}

#[tokio::test]
async fn unknown_missing_and_mistyped_fields_are_named() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"lat": 48.85, "lon": 2.35, "alt": 35}),
            "alt",
            "unknown field",
        ),
        (json!({"lat": 48.85}), "lon", "missing field"),
        (
            json!({"lat": "48.85", "lon": 2.35}),
            "lat",
            "string instead of a number",
        ),
        (json!({"lat": null, "lon": 2.35}), "lat", "null"),
        (
            json!([48.85, 2.35]),
            "body",
            "an array instead of an object",
        ),
    ];
    for (body, field, why) in cases {
        let answer = app.post_json("/v1/cities/resolve", &body).await;
        answer.assert_problem(422, "validation-error");
        assert_eq!(answer.problem_fields(), [field], "{why}: {}", answer.text);
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = spawn_app().await;
    let mut big = b"{\"lat\": 48.85, \"lon\": 2.35, \"pad\": \"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    big.extend(b"\"}");
    app.send_raw(Method::POST, "/v1/cities/resolve", "application/json", big)
        .await
        .assert_problem(413, "payload-too-large");
}

#[tokio::test]
async fn a_non_json_content_type_is_a_415_problem() {
    let app = spawn_app().await;
    app.send_raw(
        Method::POST,
        "/v1/cities/resolve",
        "text/plain",
        b"{}".to_vec(),
    )
    .await
    .assert_problem(415, "unsupported-media-type");
}

#[tokio::test]
async fn unknown_routes_are_a_404_problem() {
    let app = spawn_app().await;
    app.get("/v1/nothing-here")
        .await
        .assert_problem(404, "not-found");
}

#[tokio::test]
async fn a_wrong_method_on_a_route_is_a_405_problem_listing_the_allowed_ones() {
    let app = spawn_app().await;
    let answer = app
        .send_raw(
            Method::POST,
            "/v1/cities",
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    answer.assert_problem(405, "method-not-allowed");
    assert_eq!(answer.headers["allow"], "GET");
    let driver = app
        .send_raw(
            Method::PATCH,
            "/v1/drivers/d1",
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    driver.assert_problem(405, "method-not-allowed");
    assert_eq!(driver.headers["allow"], "DELETE, GET");
}

/// Every operation the published spec gives a JSON body answers a non-JSON body with a
/// documented 415, and a body over the limit with a documented 413; nothing is written.
#[tokio::test]
async fn every_json_body_operation_documents_and_answers_415_and_413() {
    let app = spawn_app_with(|s| s.body_limit_bytes = 1024).await;
    let before = app.snapshot().await;
    let spec: serde_json::Value =
        serde_json::from_str(&geodispatch::http::openapi::spec_json()).unwrap();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["requestBody"]["content"]["application/json"].is_null() {
                continue;
            }
            let url = path
                .replace("{driver_id}", "drv-1")
                .replace("{order_id}", "o-1")
                .replace("{city}", "paris");
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            for (code, problem, content_type, body) in [
                (
                    "415",
                    "unsupported-media-type",
                    "text/plain",
                    b"{}".to_vec(),
                ),
                (
                    "413",
                    "payload-too-large",
                    "application/json",
                    vec![b' '; 2048],
                ),
            ] {
                assert!(
                    op["responses"][code].is_object(),
                    "{method} {path} does not document {code}"
                );
                let answer = app.send_raw(method.clone(), &url, content_type, body).await;
                answer.assert_problem(code.parse().unwrap(), problem);
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} operations with a JSON body");
    assert_eq!(app.snapshot().await, before, "nothing was written");
}

/// A query parameter that does not parse is named with what to send, never with the number
/// parser's own words.
#[tokio::test]
async fn a_query_number_that_does_not_parse_is_named_in_plain_words() {
    let app = spawn_app().await;
    for query in ["limit=-1", "limit=ten", "limit=1.5"] {
        let answer = app
            .get(&format!("/v1/drivers/nearby?lat=48.85&lon=2.35&{query}"))
            .await;
        answer.assert_problem(422, "validation-error");
        assert_eq!(answer.problem_fields(), ["limit"], "{}", answer.text);
        assert!(
            answer.text.contains("must be a whole number"),
            "{query}: {}",
            answer.text
        );
        assert!(!answer.text.contains("invalid digit"), "{}", answer.text);
    }
}

/// The bounds the published spec declares on query parameters are the ones the service
/// enforces: just outside a bound is a 422 naming the parameter, on the bound is accepted.
#[tokio::test]
async fn query_bounds_in_the_spec_are_the_enforced_ones() {
    let app = spawn_app().await;
    app.put_location(
        "drv-1",
        48.8566,
        2.3522,
        crate::helpers::now_ms(),
        json!({}),
    )
    .await;
    let spec: serde_json::Value =
        serde_json::from_str(&geodispatch::http::openapi::spec_json()).unwrap();
    let mut checked = 0;
    for path in ["/v1/drivers/nearby", "/v1/candidates"] {
        for param in spec["paths"][path]["get"]["parameters"].as_array().unwrap() {
            let name = param["name"].as_str().unwrap();
            let schema = &param["schema"];
            let integer = schema["type"] == "integer";
            let mut cases = Vec::new();
            if let Some(max) = schema["maximum"].as_f64() {
                cases.push((max, true));
                cases.push((
                    if integer {
                        max + 1.0
                    } else {
                        max * 1.01 + 0.01
                    },
                    false,
                ));
            }
            if let Some(min) = schema["minimum"].as_f64() {
                cases.push((min, true));
                cases.push((if integer { min - 1.0 } else { min - 0.01 }, false));
            }
            if let Some(min) = schema["exclusiveMinimum"].as_f64() {
                cases.push((min, false));
            }
            for (value, ok) in cases {
                let mut query = vec![("lat", "48.8566".to_owned()), ("lon", "2.3522".to_owned())];
                query.retain(|(k, _)| *k != name);
                query.push((name, value.to_string()));
                if name == "width_m" || name == "height_m" {
                    let other = if name == "width_m" {
                        "height_m"
                    } else {
                        "width_m"
                    };
                    query.push((other, "1000".to_owned()));
                }
                let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let answer = app.get(&format!("{path}?{}", qs.join("&"))).await;
                if ok {
                    // On the bound the parameter is valid (a point there may still lie outside
                    // every service area, which is another check).
                    assert!(
                        answer.status == 200
                            || answer.json["type"] == "/problems/outside-service-area",
                        "{path} {name}={value}: {}",
                        answer.text
                    );
                } else {
                    answer.assert_problem(422, "validation-error");
                    assert!(
                        answer.problem_fields().iter().any(|f| f == name),
                        "{path} {name}={value}: {}",
                        answer.text
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} bounds checked");
}
