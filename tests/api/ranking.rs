//! Scores, leaderboard pagination, rank neighbourhoods and candidate ranking.

use serde_json::{Value, json};

use crate::helpers::{BERLIN, PARIS, TestApp, now_ms, spawn_app};

/// Put drivers `prefix0..n` near `center` with scores `score(i)`.
async fn drivers_with_scores(
    app: &TestApp,
    prefix: &str,
    n: usize,
    center: (f64, f64),
    score: impl Fn(usize) -> f64,
) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let fleet: Vec<(&str, f64, f64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), center.0 + i as f64 * 0.001, center.1))
        .collect();
    app.put_fleet(&fleet).await;
    for (i, id) in ids.iter().enumerate() {
        app.set_score(id, score(i)).await;
    }
}

fn ids(entries: &Value) -> Vec<String> {
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["driver_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn gt_mode_ignores_a_lower_score_and_increment_returns_the_new_score() {
    let app = spawn_app().await;
    drivers_with_scores(&app, "g", 1, PARIS, |_| 4.0).await;
    let lower = app
        .put_json("/v1/drivers/g0/score", &json!({"score": 3.0, "mode": "gt"}))
        .await;
    assert_eq!(lower.json["score"], 4.0);
    assert_eq!(lower.json["changed"], false);
    let higher = app
        .put_json("/v1/drivers/g0/score", &json!({"score": 4.5, "mode": "gt"}))
        .await;
    assert_eq!(higher.json["score"], 4.5);
    assert_eq!(higher.json["changed"], true);
    let set = app
        .put_json("/v1/drivers/g0/score", &json!({"score": 2.0}))
        .await;
    assert_eq!(set.json["score"], 2.0, "set replaces, even downwards");
    let inc = app
        .post_json("/v1/drivers/g0/score/increment", &json!({"by": 0.25}))
        .await;
    assert_eq!(inc.status, 200, "{}", inc.text);
    assert_eq!(inc.json["score"], 2.25);
    assert_eq!(inc.json["city"], "paris");
    app.put_json("/v1/drivers/nobody/score", &json!({"score": 1}))
        .await
        .assert_problem(404, "not-found");
    app.put_json("/v1/drivers/g0/score", &json!({"score": "high"}))
        .await
        .assert_problem(422, "validation-error");
    app.put_json("/v1/drivers/g0/score", &json!({"score": 1, "mode": "lt"}))
        .await
        .assert_problem(422, "validation-error");
}

#[tokio::test]
async fn leaderboard_pages_first_last_empty_and_beyond_the_end() {
    let app = spawn_app().await;
    // 7 drivers with distinct scores: l6 is best.
    drivers_with_scores(&app, "l", 7, PARIS, |i| i as f64).await;
    let page = |p: u64| format!("/v1/cities/paris/leaderboard?page={p}&size=3");
    let first = app.get(&page(1)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(ids(&first.json["entries"]), ["l6", "l5", "l4"]);
    assert_eq!(first.json["entries"][0]["rank"], 1);
    assert_eq!(first.json["total"], 7);
    let last = app.get(&page(3)).await;
    assert_eq!(ids(&last.json["entries"]), ["l0"]);
    assert_eq!(last.json["entries"][0]["rank"], 7);
    let beyond = app.get(&page(4)).await;
    assert_eq!(beyond.status, 200);
    assert!(beyond.json["entries"].as_array().unwrap().is_empty());
    assert_eq!(beyond.json["total"], 7);
    let far = app.get(&page(1000)).await;
    assert!(far.json["entries"].as_array().unwrap().is_empty());

    let empty_city = app.get("/v1/cities/berlin/leaderboard").await;
    assert_eq!(empty_city.json["total"], 0);
    assert!(empty_city.json["entries"].as_array().unwrap().is_empty());

    app.get("/v1/cities/paris/leaderboard?size=101")
        .await
        .assert_problem(422, "validation-error");
    app.get("/v1/cities/paris/leaderboard?page=0")
        .await
        .assert_problem(422, "validation-error");
    app.get("/v1/cities/atlantis/leaderboard")
        .await
        .assert_problem(404, "not-found");
}

#[tokio::test]
async fn ties_are_ordered_by_driver_id_descending() {
    let app = spawn_app().await;
    drivers_with_scores(&app, "t", 3, PARIS, |_| 5.0).await;
    let board = app.get("/v1/cities/paris/leaderboard").await;
    assert_eq!(ids(&board.json["entries"]), ["t2", "t1", "t0"]);
}

#[tokio::test]
async fn a_citys_leaderboard_never_includes_another_citys_drivers() {
    let app = spawn_app().await;
    drivers_with_scores(&app, "p", 3, PARIS, |i| i as f64).await;
    drivers_with_scores(&app, "b", 2, BERLIN, |i| 10.0 + i as f64).await;
    let paris = app.get("/v1/cities/paris/leaderboard?size=100").await;
    assert_eq!(ids(&paris.json["entries"]), ["p2", "p1", "p0"]);
    let berlin = app.get("/v1/cities/berlin/leaderboard?size=100").await;
    assert_eq!(ids(&berlin.json["entries"]), ["b1", "b0"]);

    // A driver moving city takes its score to the new city's leaderboard.
    app.put_location("p2", BERLIN.0, BERLIN.1, now_ms() + 1, json!({}))
        .await;
    let paris = app.get("/v1/cities/paris/leaderboard?size=100").await;
    assert_eq!(ids(&paris.json["entries"]), ["p1", "p0"]);
    let berlin = app.get("/v1/cities/berlin/leaderboard?size=100").await;
    assert_eq!(ids(&berlin.json["entries"]), ["b1", "b0", "p2"]);
    assert_eq!(berlin.json["entries"][2]["score"], 2.0);
}

#[tokio::test]
async fn rank_shows_neighbours_at_the_top_and_at_the_bottom() {
    let app = spawn_app().await;
    drivers_with_scores(&app, "r", 8, PARIS, |i| i as f64).await; // r7 is rank 1, r0 rank 8
    let top = app.get("/v1/drivers/r7/rank?around=2").await;
    assert_eq!(top.status, 200, "{}", top.text);
    assert_eq!(top.json["rank"], 1);
    assert_eq!(top.json["score"], 7.0);
    assert_eq!(ids(&top.json["neighbors"]), ["r7", "r6", "r5"]);
    let ranks: Vec<u64> = top.json["neighbors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, [1, 2, 3]);
    let bottom = app.get("/v1/drivers/r0/rank?around=2").await;
    assert_eq!(bottom.json["rank"], 8);
    assert_eq!(ids(&bottom.json["neighbors"]), ["r2", "r1", "r0"]);
    let middle = app.get("/v1/drivers/r4/rank").await;
    assert_eq!(
        ids(&middle.json["neighbors"]),
        ["r7", "r6", "r5", "r4", "r3", "r2", "r1", "r0"]
    );

    app.get("/v1/drivers/ghost/rank")
        .await
        .assert_problem(404, "not-found");
    app.put_driver_at("unscored", PARIS).await;
    app.get("/v1/drivers/unscored/rank")
        .await
        .assert_problem(404, "not-found");
    app.get("/v1/drivers/r0/rank?around=51")
        .await
        .assert_problem(422, "validation-error");
}

#[tokio::test]
async fn candidate_ranking_explains_itself_and_changes_with_the_weights() {
    let app = spawn_app().await;
    // near: 100 m away, score 3; far: 1.5 km away, score 5.
    app.put_driver_at("near", (PARIS.0 + 100.0 / 111_200.0, PARIS.1))
        .await;
    app.put_driver_at("far", (PARIS.0 + 1_500.0 / 111_200.0, PARIS.1))
        .await;
    app.set_score("near", 3.0).await;
    app.set_score("far", 5.0).await;
    let url = |wd: f64, ws: f64| {
        format!(
            "/v1/candidates?lat={}&lon={}&limit=5&distance_weight={wd}&score_weight={ws}",
            PARIS.0, PARIS.1
        )
    };

    let by_score = app.get(&url(1.0, 1.0)).await;
    assert_eq!(by_score.status, 200, "{}", by_score.text);
    assert_eq!(
        ids(&by_score.json["candidates"]),
        ["far", "near"],
        "{}",
        by_score.text
    );
    let best = &by_score.json["candidates"][0];
    let (d, s, c) = (
        best["distance_m"].as_f64().unwrap(),
        best["driver_score"].as_f64().unwrap(),
        best["composite"].as_f64().unwrap(),
    );
    assert!(
        (c - (s - d / 1000.0)).abs() < 1e-6,
        "composite = score - km: {best}"
    );
    assert_eq!(best["rank"], 1);

    let by_distance = app.get(&url(10.0, 1.0)).await;
    assert_eq!(
        ids(&by_distance.json["candidates"]),
        ["near", "far"],
        "a heavier distance weight favours the near driver"
    );
    assert_eq!(by_distance.json["weights"]["distance_weight"], 10.0);

    // Busy or offline drivers are never candidates; temporary keys do not outlive the call.
    app.put_json("/v1/drivers/far/status", &json!({"status": "offline"}))
        .await;
    let only_near = app.get(&url(1.0, 1.0)).await;
    assert_eq!(ids(&only_near.json["candidates"]), ["near"]);
    assert!(
        app.keys().await.iter().all(|k| !k.contains(":tmp:")),
        "{:?}",
        app.keys().await
    );

    app.get(&format!(
        "/v1/candidates?lat={}&lon={}&limit=0",
        PARIS.0, PARIS.1
    ))
    .await
    .assert_problem(422, "validation-error");
    app.get(&format!(
        "/v1/candidates?lat={}&lon={}&score_weight=-1",
        PARIS.0, PARIS.1
    ))
    .await
    .assert_problem(422, "validation-error");
}

#[tokio::test]
async fn an_unscored_driver_at_the_pickup_outranks_a_rated_driver_km_away() {
    let app = spawn_app().await;
    let unscored = geodispatch::config::Settings::default().ranking_unscored_score;
    // new: at the pickup, no score; twin: at the pickup, scored exactly the unscored score;
    // rated: 3 km away, score 5.
    for id in ["new", "twin"] {
        app.put_driver_at(id, PARIS).await;
    }
    app.put_driver_at("rated", (PARIS.0 + 3_000.0 / 111_200.0, PARIS.1))
        .await;
    for (id, score) in [("twin", unscored), ("rated", 5.0)] {
        app.set_score(id, score).await;
    }

    let answer = app.candidates(PARIS, 5).await;

    assert_eq!(answer.status, 200, "{}", answer.text);
    // An unscored driver counts exactly as one scored the unscored score: new and twin tie,
    // and the tie goes to the driver id that sorts last.
    assert_eq!(
        ids(&answer.json["candidates"]),
        ["twin", "new", "rated"],
        "{}",
        answer.text
    );
    let [twin, new, rated] = [0, 1, 2].map(|i| &answer.json["candidates"][i]);
    assert_eq!(
        new["driver_score"].as_f64(),
        Some(unscored),
        "the score used"
    );
    assert_eq!(new["composite"], twin["composite"], "{}", answer.text);
    let km = new["distance_m"].as_f64().unwrap() / 1000.0;
    assert!(
        (new["composite"].as_f64().unwrap() - (unscored - km)).abs() < 1e-6,
        "composite = unscored score - km: {new}"
    );
    assert_eq!(rated["driver_score"].as_f64(), Some(5.0));
}

#[tokio::test]
async fn the_unscored_score_is_a_setting_and_zero_lets_a_rated_driver_km_away_win() {
    let app = crate::helpers::spawn_app_with(|s| s.ranking_unscored_score = 0.0).await;
    app.put_driver_at("new", PARIS).await;
    app.put_driver_at("rated", (PARIS.0 + 3_000.0 / 111_200.0, PARIS.1))
        .await;
    app.set_score("rated", 5.0).await;

    let answer = app.candidates(PARIS, 5).await;

    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(ids(&answer.json["candidates"]), ["rated", "new"]);
    assert_eq!(
        answer.json["candidates"][1]["driver_score"].as_f64(),
        Some(0.0)
    );
}

#[tokio::test]
async fn candidates_match_a_brute_force_ranking_of_the_nearest_fresh_drivers() {
    use crate::helpers::Rng;
    use geodispatch::domain::{GeoPoint, haversine_m};
    let app = crate::helpers::spawn_app_with(|s| {
        s.driver_ttl_ms = 5_000;
        s.sweep_interval_ms = 3_600_000;
        s.ranking_pool_factor = 3;
    })
    .await;
    let t = now_ms();
    let mut rng = Rng::new(7);
    let vehicles = ["bike", "scooter", "car", "van"];
    // 160 fresh drivers within 3 km of central Paris, with scores 0–5 (every tenth has none:
    // it counts `ranking_unscored_score`).
    let unscored = app.context.settings.ranking_unscored_score;
    let mut fleet = Vec::new();
    let positions: Vec<Value> = (0..160)
        .map(|i| {
            let (lat, lon) = rng.near(PARIS.0, PARIS.1, 3.0);
            let vt = vehicles[i % 4];
            fleet.push((format!("c{i:03}"), lat, lon, vt, (rng.f64() * 5.0 * 100.0).round() / 100.0));
            json!({"driver_id": format!("c{i:03}"), "lat": lat, "lon": lon, "recorded_at": t, "vehicle_type": vt})
        })
        .collect();
    app.post_json("/v1/locations/batch", &json!({"positions": positions}))
        .await;
    for driver in fleet.iter_mut().step_by(10) {
        driver.4 = unscored;
    }
    for (_, (id, .., score)) in fleet.iter().enumerate().filter(|(i, _)| i % 10 != 0) {
        app.set_score(id, *score).await;
    }
    // 40 stale drivers right at the query points, with the best scores: never candidates.
    let stale: Vec<Value> = (0..40)
        .map(|i| json!({"driver_id": format!("old{i}"), "lat": PARIS.0 + i as f64 * 1e-5, "lon": PARIS.1, "recorded_at": t - 10_000}))
        .collect();
    app.post_json("/v1/locations/batch", &json!({"positions": stale}))
        .await;
    for i in 0..40 {
        app.set_score(&format!("old{i}"), 100.0).await;
    }

    // Near the fleet, and 6 km away from it (the search must widen from its start radius).
    for (lat, lon) in [PARIS, (PARIS.0 + 6.0 / 111.32, PARIS.1)] {
        for vehicle in [None, Some("car")] {
            let limit = 5;
            let center = GeoPoint { lat, lon };
            let mut pool: Vec<(f64, &str, f64)> = fleet
                .iter()
                .filter(|(.., vt, _)| vehicle.is_none_or(|v| v == *vt))
                .map(|(id, la, lo, _, score)| {
                    (
                        haversine_m(center, GeoPoint { lat: *la, lon: *lo }),
                        id.as_str(),
                        *score,
                    )
                })
                .collect();
            pool.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
            pool.truncate(limit * 3);
            pool.sort_by(|a, b| {
                let (ca, cb) = (a.2 - a.0 / 1000.0, b.2 - b.0 / 1000.0);
                cb.total_cmp(&ca).then(b.1.cmp(a.1))
            });
            let expected: Vec<&str> = pool.iter().take(limit).map(|p| p.1).collect();
            let url = format!(
                "/v1/candidates?lat={lat}&lon={lon}&limit={limit}&radius_m=20000{}",
                vehicle
                    .map(|v| format!("&vehicle_type={v}"))
                    .unwrap_or_default()
            );
            let answer = app.get(&url).await;
            assert_eq!(answer.status, 200, "{}", answer.text);
            assert_eq!(
                ids(&answer.json["candidates"]),
                expected,
                "{url}: {}",
                answer.text
            );
            for (c, p) in answer.json["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&pool)
            {
                assert!(
                    (c["distance_m"].as_f64().unwrap() - p.0).abs() < 0.5,
                    "{c} vs {p:?}"
                );
                assert_eq!(c["driver_score"].as_f64().unwrap(), p.2, "{c}");
                if let Some(v) = vehicle {
                    assert_eq!(c["vehicle_type"], v, "{c}");
                }
            }
        }
    }
}
