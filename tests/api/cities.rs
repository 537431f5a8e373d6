use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn cities_lists_paris_and_berlin_with_bounding_boxes() {
    let app = spawn_app().await;
    let answer = app.get("/v1/cities").await;
    assert_eq!(answer.status, 200);
    let cities = answer.json["cities"].as_array().unwrap();
    let ids: Vec<&str> = cities.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["paris", "berlin"]);
    for city in cities {
        let bbox = &city["bbox"];
        assert!(bbox["min_lat"].as_f64().unwrap() < bbox["max_lat"].as_f64().unwrap());
        assert!(bbox["min_lon"].as_f64().unwrap() < bbox["max_lon"].as_f64().unwrap());
    }
}

#[tokio::test]
async fn points_resolve_to_their_city() {
    let app = spawn_app().await;
    for (lat, lon, city) in [
        (48.8566, 2.3522, "paris"),
        (52.52, 13.405, "berlin"),
        (48.75, 2.5, "paris"),
    ] {
        let answer = app
            .post_json("/v1/cities/resolve", &json!({"lat": lat, "lon": lon}))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.json["city"], city);
    }
}

#[tokio::test]
async fn a_point_outside_every_city_is_422_outside_service_area() {
    let app = spawn_app().await;
    let answer = app
        .post_json("/v1/cities/resolve", &json!({"lat": 50.11, "lon": 8.68}))
        .await;
    answer.assert_problem(422, "outside-service-area");
}

#[tokio::test]
async fn coordinates_redis_cannot_store_are_rejected_naming_the_field() {
    let app = spawn_app().await;
    for (lat, lon, field) in [
        (85.06, 2.35, "lat"),
        (-90.0, 2.35, "lat"),
        (48.85, 180.5, "lon"),
        (91.0, -181.0, "lat"),
    ] {
        let answer = app
            .post_json("/v1/cities/resolve", &json!({"lat": lat, "lon": lon}))
            .await;
        answer.assert_problem(422, "validation-error");
        assert!(
            answer.problem_fields().contains(&field.to_owned()),
            "{}",
            answer.text
        );
    }
}
