//! The quickstart command itself: `geodispatch serve --seed seed-data` with no Redis settings.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geodispatch::store::local::free_port;

fn redis_server_pids_in(dir: &std::path::Path) -> Vec<String> {
    // redis-server rewrites its process title, but it chdirs into its --dir: match on cwd.
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    let out = Command::new("pgrep").arg("redis-server").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn serve_without_a_redis_url_starts_its_own_redis_and_stops_it_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("gd-quickstart-{}", uuid::Uuid::new_v4()));
    let redis_dir = dir.join("redis");
    let port = free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_geodispatch"))
        .args([
            "serve",
            "--seed",
            concat!(env!("CARGO_MANIFEST_DIR"), "/seed-data"),
        ])
        .env_remove("GEODISPATCH_REDIS_URL")
        .env("GEODISPATCH_LISTEN", format!("127.0.0.1:{port}"))
        .env("GEODISPATCH_REDIS_DATA_DIR", &redis_dir)
        .env("GEODISPATCH_KEY_PREFIX", "quickstart")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log_reader = crate::helpers::drain(child.stderr.take().unwrap());
    // The development keys it prints (no GEODISPATCH_ADMIN_KEY is set).
    let stdout = child.stdout.take().unwrap();
    let keys = tokio::task::spawn_blocking(move || {
        let mut keys = std::collections::HashMap::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.unwrap();
            let mut words = line.split_whitespace();
            if let (Some(role @ ("admin" | "dispatcher" | "driver")), Some(key)) =
                (words.next(), words.next())
            {
                keys.insert(role.to_owned(), key.to_owned());
            }
            if keys.len() == 3 {
                break;
            }
        }
        keys
    });

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut ready = false;
    while started.elapsed() < Duration::from_secs(10) {
        let attempt = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await;
        if let Ok(r) = attempt
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        let _ = child.kill();
        let log = log_reader.join().unwrap();
        panic!("/readyz must answer 200 within 10 s; log:\n{log}");
    }
    assert!(
        !redis_server_pids_in(&redis_dir).is_empty(),
        "a managed redis-server runs"
    );
    assert!(redis_dir.join("appendonlydir").exists(), "AOF is on");
    let keys = tokio::time::timeout(Duration::from_secs(10), keys)
        .await
        .expect("the development keys are printed")
        .unwrap();
    let nearby =
        format!("http://127.0.0.1:{port}/v1/drivers/nearby?lat=48.8566&lon=2.3522&limit=5");
    let anonymous = client.get(&nearby).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "every /v1 route needs a key");
    let found: serde_json::Value = client
        .get(&nearby)
        .bearer_auth(&keys["dispatcher"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        found["drivers"].as_array().map(Vec::len),
        Some(5),
        "seed drivers are searchable: {found}"
    );
    let other = client
        .put(format!(
            "http://127.0.0.1:{port}/v1/drivers/paris-d00002/location"
        ))
        .bearer_auth(&keys["driver"])
        .json(&serde_json::json!({"lat": 48.85, "lon": 2.35, "recorded_at": 1_900_000_000_000_i64}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        403,
        "the driver key is bound to paris-d00001"
    );

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let log = log_reader.join().unwrap();
    assert!(
        log.contains("started and supervising a local redis-server"),
        "says so in the log:\n{log}"
    );
    assert!(
        redis_server_pids_in(&redis_dir).is_empty(),
        "the managed redis-server is stopped"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn serve_without_redis_server_installed_names_the_package_to_install() {
    let output = Command::new(env!("CARGO_BIN_EXE_geodispatch"))
        .arg("serve")
        .env_remove("GEODISPATCH_REDIS_URL")
        .env("PATH", "/nonexistent")
        .env("GEODISPATCH_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("apt-get install -y redis-server"),
        "{stderr}"
    );
}
