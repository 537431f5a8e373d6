//! The live map and the API docs in a real browser: runs `tests/browser/map.mjs` (Debian's
//! chromium driven by playwright-core from npm) against the real binary with seed data.
//!
//! It needs `node`, `/usr/bin/chromium` and `npm ci --prefix tests/browser`; `.ci/run`
//! installs them and sets `GEODISPATCH_REQUIRE_BROWSER=1`, so in CI a missing piece fails the
//! test. Elsewhere, without them, the test says what is missing and passes without running.

use std::path::Path;
use std::process::Command;

#[test]
fn the_map_shows_the_seed_fleet_and_a_dispatched_order_and_the_docs_render_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing: Vec<&str> = [
        (
            Command::new("node").arg("--version").output().is_err(),
            "node",
        ),
        (
            !Path::new("/usr/bin/chromium").exists(),
            "chromium (apt-get install -y chromium)",
        ),
        (
            !root
                .join("tests/browser/node_modules/playwright-core")
                .exists(),
            "playwright-core (npm ci --prefix tests/browser)",
        ),
    ]
    .into_iter()
    .filter_map(|(gone, what)| gone.then_some(what))
    .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("GEODISPATCH_REQUIRE_BROWSER").is_none(),
            "the browser test is required here but these are missing: {missing:?}"
        );
        eprintln!("browser test not run: missing {missing:?} (.ci/run installs them)");
        return;
    }
    let out = Command::new("node")
        .arg(root.join("tests/browser/map.mjs"))
        .env("GEODISPATCH_BIN", env!("CARGO_BIN_EXE_geodispatch"))
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    assert_eq!(report["ok"], true);
    assert!(
        report["drawn"]["drivers"].as_u64().unwrap() >= 1_000,
        "{report}"
    );
    assert!(report["appeared_ms"].as_u64().unwrap() <= 2_000, "{report}");
    eprintln!("browser test: {report}");
}
