//! The quickstart command itself: `geodispatch serve --seed seed-data` with no Redis settings.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use geodispatch::redis_local::free_port;

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
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut ready = false;
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "/readyz must answer 200 within 10 s");
    assert!(
        !redis_server_pids_in(&redis_dir).is_empty(),
        "a managed redis-server runs"
    );
    assert!(redis_dir.join("appendonlydir").exists(), "AOF is on");

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
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
