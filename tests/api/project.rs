//! Checks on the repository itself: the committed spec, the settings table of
//! docs/CONFIGURATION.md, the compose file.

use std::collections::BTreeSet;

use geodispatch::config::Settings;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn committed_openapi_json_equals_what_the_binary_prints() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_geodispatch"))
        .arg("openapi")
        .output()
        .expect("running geodispatch openapi");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed == read("openapi/openapi.json"),
        "openapi/openapi.json is stale: run `cargo run -q -- openapi > openapi/openapi.json`"
    );
}

#[test]
fn every_setting_is_in_the_configuration_table() {
    let doc = read("docs/CONFIGURATION.md");
    for name in Settings::names() {
        let row = format!("| `GEODISPATCH_{}` |", name.to_ascii_uppercase());
        assert!(
            doc.contains(&row),
            "docs/CONFIGURATION.md lacks a settings row for {row}"
        );
    }
}

/// The targets of the Markdown links `[text](target)` in `text` that point into the repository
/// (no scheme, no pure `#anchor`), without their `#anchor`.
fn relative_link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or_default();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            out.push(target.to_owned());
        }
    }
    out
}

#[test]
fn relative_links_in_the_docs_point_to_existing_files() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{doc:?}: {e}"));
        let dir = doc.parent().expect("a file has a directory");
        for target in relative_link_targets(&text) {
            assert!(
                dir.join(&target).exists(),
                "{} links to {target}, which does not exist",
                doc.display()
            );
        }
    }
}

#[test]
fn compose_file_wires_redis_and_the_service_with_real_setting_names() {
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&read("docker-compose.yml")).expect("valid YAML");
    let services = &compose["services"];
    let redis = &services["redis"];
    let image = redis["image"].as_str().expect("redis image");
    assert!(image.starts_with("redis:7"), "{image}");
    let command = serde_yaml::to_string(&redis["command"]).unwrap();
    assert!(
        command.contains("--appendonly") && command.contains("yes"),
        "AOF on: {command}"
    );
    assert!(
        redis["healthcheck"]["test"].is_sequence(),
        "redis healthcheck"
    );

    let app = &services["geodispatch"];
    assert!(
        app["build"].is_mapping() || app["build"].is_string(),
        "built from the Dockerfile"
    );
    let env = app["environment"]
        .as_mapping()
        .expect("environment as a mapping");
    let known: BTreeSet<String> = Settings::names()
        .into_iter()
        .map(|n| format!("GEODISPATCH_{}", n.to_ascii_uppercase()))
        .collect();
    for key in env.keys() {
        let key = key.as_str().unwrap();
        assert!(known.contains(key), "{key} is not a setting");
    }
    let url = env[&serde_yaml::Value::from("GEODISPATCH_REDIS_URL")]
        .as_str()
        .unwrap();
    assert!(url.starts_with("redis://redis:6379"), "{url}");
    let listen = env[&serde_yaml::Value::from("GEODISPATCH_LISTEN")]
        .as_str()
        .unwrap();
    let port = listen.rsplit(':').next().unwrap();
    let ports = serde_yaml::to_string(&app["ports"]).unwrap();
    assert!(
        ports.contains(&format!(":{port}")),
        "published port {ports} must reach {listen}"
    );
    let health = serde_yaml::to_string(&app["healthcheck"]["test"]).unwrap();
    assert!(health.contains("/readyz"), "{health}");
    let depends = serde_yaml::to_string(&app["depends_on"]).unwrap();
    assert!(
        depends.contains("redis") && depends.contains("service_healthy"),
        "{depends}"
    );
    assert!(read("Dockerfile").contains("FROM"), "Dockerfile present");
}

#[test]
fn compose_profiles_match_the_tested_topologies() {
    let mut compose: serde_yaml::Value =
        serde_yaml::from_str(&read("docker-compose.yml")).expect("valid YAML");
    compose.apply_merge().expect("YAML merge keys");
    let services = compose["services"].as_mapping().unwrap();
    let in_profile = |profile: &str| -> Vec<(String, String)> {
        services
            .iter()
            .filter(|(_, s)| {
                s["profiles"]
                    .as_sequence()
                    .is_some_and(|p| p.iter().any(|x| x.as_str() == Some(profile)))
            })
            .map(|(name, s)| {
                (
                    name.as_str().unwrap().to_owned(),
                    serde_yaml::to_string(&s["command"]).unwrap(),
                )
            })
            .collect()
    };
    let known: BTreeSet<String> = Settings::names()
        .into_iter()
        .map(|n| format!("GEODISPATCH_{}", n.to_ascii_uppercase()))
        .collect();
    let app_env = |name: &str| -> Vec<(String, String)> {
        let env = compose["services"][name]["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{name} environment"));
        env.iter()
            .map(|(k, v)| {
                let k = k.as_str().unwrap().to_owned();
                assert!(known.contains(&k), "{k} is not a setting");
                (k, v.as_str().unwrap_or_default().to_owned())
            })
            .collect()
    };

    let sentinel = in_profile("sentinel");
    let count = |list: &[(String, String)], needle: &str| {
        list.iter().filter(|(_, c)| c.contains(needle)).count()
    };
    assert_eq!(count(&sentinel, "redis-sentinel"), 3, "{sentinel:?}");
    assert_eq!(count(&sentinel, "--replicaof"), 2, "{sentinel:?}");
    let env = app_env("geodispatch-sentinel");
    let sentinels = &env
        .iter()
        .find(|(k, _)| k == "GEODISPATCH_REDIS_SENTINELS")
        .expect("sentinels setting")
        .1;
    assert_eq!(sentinels.split(',').count(), 3);

    let cluster = in_profile("cluster");
    assert_eq!(count(&cluster, "--cluster-enabled"), 6, "{cluster:?}");
    assert_eq!(count(&cluster, "--cluster-replicas 1"), 1, "{cluster:?}");
    let env = app_env("geodispatch-cluster");
    assert!(
        env.iter()
            .any(|(k, v)| k == "GEODISPATCH_REDIS_CLUSTER_NODES" && !v.is_empty())
    );
}

/// The key table of docs/ARCHITECTURE.md lists exactly the keys and channels the key schema
/// builds (rendered with `<placeholders>` by `Keys::templates`).
#[test]
fn the_architecture_key_table_matches_the_key_schema() {
    let doc = read("docs/ARCHITECTURE.md");
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `gd"))
        .filter_map(|rest| rest.split('`').next())
        .map(|rest| format!("gd{rest}"))
        .collect();
    let built: BTreeSet<String> = geodispatch::store::Keys::new("gd")
        .templates()
        .into_iter()
        .map(|(_, template)| template)
        .collect();
    let undocumented: Vec<_> = built.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&built).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "keys built but not in docs/ARCHITECTURE.md: {undocumented:?}; documented but not built: {unknown:?}"
    );
}
