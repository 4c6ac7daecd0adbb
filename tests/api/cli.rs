//! The command line: help at every level, config printing with redaction, unknown keys named.

use std::process::Command;

use crate::helpers::KillOnDrop;

fn berth(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("run berth");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_at_every_level() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["demo", "--help"],
        &["admin", "--help"],
        &["admin", "create-key", "--help"],
    ] {
        let (ok, stdout, _) = berth(args, &[]);
        assert!(ok && stdout.contains("Usage:"), "{args:?}: {stdout}");
    }
}

#[test]
fn config_is_printed_with_secrets_redacted() {
    let (ok, stdout, stderr) = berth(
        &["config"],
        &[("BERTH__AUTH__ADMIN_KEY", "berth_adm_very-secret-value"), ("BERTH__HTTP__LISTEN", "0.0.0.0:9000")],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("listen = \"0.0.0.0:9000\""), "{stdout}");
    assert!(stdout.contains("admin_key = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains("very-secret-value"));
}

#[test]
fn unknown_config_keys_are_named() {
    let (ok, _, stderr) = berth(&["config"], &[("BERTH__HTTP__LISTN", "0.0.0.0:9000")]);
    assert!(!ok);
    assert!(stderr.to_lowercase().contains("listn") && stderr.contains("listen"), "{stderr}");
    let (ok, _, stderr) = berth(&["config"], &[("BERTH__DATABASE__MAX_CONNECTIONS", "many")]);
    assert!(!ok);
    assert!(stderr.to_lowercase().contains("max_connections") && stderr.contains("many"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

/// `berth rules test` runs every template's cases; a failing case fails the command and says why;
/// `berth rules explain` shows what fired, line by line.
#[test]
fn rules_test_and_explain() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/examples");
    let (ok, stdout, stderr) = berth(&["rules", "test", examples], &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("PASS busy mornings rise") && stdout.ends_with(" passed, 0 failed\n"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| std::fs::copy(format!("{examples}/time-of-day/{name}"), dir.path().join(name)).unwrap();
    copy("ruleset.toml");
    copy("rules.rhai");
    let wrong = "[[test]]\nname = \"wrong total\"\n[test.context]\nstart = \"2026-03-02T09:00\"\nend = \"2026-03-02T10:00\"\n[test.expect]\ntotal_minor = 1\n";
    std::fs::write(dir.path().join("tests.toml"), wrong).unwrap();
    let target = dir.path().to_str().unwrap();
    let (ok, stdout, _) = berth(&["rules", "test", target], &[]);
    assert!(!ok);
    assert!(stdout.contains("FAIL wrong total: total is 240, expected 1"), "{stdout}");

    let (ok, stdout, stderr) = berth(&["rules", "explain", target, "--test", "wrong total"], &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("  11 | 2026-03-02 Weekday daytime: 60 min → 1 × 240 per 60 min = 240"), "{stdout}");
    assert!(stdout.contains("=> total 240 EUR"), "{stdout}");
    let (ok, _, stderr) = berth(&["rules", "explain", target, "--test", "nope"], &[]);
    assert!(!ok && stderr.contains("no test case named 'nope'"), "{stderr}");
}

#[test]
fn openapi_command_prints_the_spec() {
    let (ok, stdout, _) = berth(&["openapi"], &[]);
    assert!(ok);
    assert_eq!(stdout.trim_end(), berth_openapi::spec_json().trim_end());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_admin_create_key() {
    let data_dir = tempfile::tempdir().unwrap();
    let dir = data_dir.path().to_str().unwrap();
    let (ok, stdout, stderr) = berth(&["migrate"], &[("BERTH__DATA_DIR", dir)]);
    assert!(ok && stdout.contains("migrations applied (sqlite)"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = berth(&["admin", "create-key", "--name", "ops team"], &[("BERTH__DATA_DIR", dir)]);
    assert!(ok, "{stderr}");
    let token =
        stdout.split_whitespace().find(|word| word.starts_with("berth_adm_")).expect("token printed").to_owned();

    let (mut child, base) = crate::persistence::spawn_binary(data_dir.path());
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/v1/operators"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "Acme", "slug": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Runs `berth demo` until it prints its banner; returns the child and the banner lines.
fn start_demo(data_dir: &std::path::Path) -> (KillOnDrop, Vec<String>) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("BERTH__DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn berth demo");
    let reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for line in reader.lines() {
        let line = line.unwrap();
        let done = line.contains("stop with Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    (KillOnDrop(child), lines)
}

fn banner_value(lines: &[String], label: &str) -> String {
    let line = lines
        .iter()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no '{label}' in {lines:?}"));
    line.trim_start()[label.len()..].trim().to_owned()
}

/// The demo seeds once, prints URLs and keys, and prints the same keys after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_is_idempotent_across_restarts() {
    let data_dir = tempfile::tempdir().unwrap();
    let (first, lines) = start_demo(data_dir.path());
    drop(first);
    let (second, again) = start_demo(data_dir.path());

    let key = banner_value(&again, "operator admin key");
    assert_eq!(key, banner_value(&lines, "operator admin key"), "restart printed different keys");
    let api = banner_value(&again, "API");
    assert!(banner_value(&again, "Swagger UI").ends_with("/docs"));
    let base = api.trim_end_matches("/v1");

    let client = reqwest::Client::new();
    let get = |path: String| client.get(format!("{base}{path}")).bearer_auth(&key).send();
    let sites: serde_json::Value = get("/v1/sites".into()).await.unwrap().json().await.unwrap();
    let sites = sites["items"].as_array().unwrap();
    assert_eq!(sites.len(), 2, "a restart must not seed again");
    let kinds: Vec<&str> = sites.iter().map(|site| site["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["off_street", "on_street"]);
    let spaces: serde_json::Value = get("/v1/spaces?limit=1000".into()).await.unwrap().json().await.unwrap();
    let n_spaces = spaces["items"].as_array().unwrap().len();
    assert!((200..=1000).contains(&n_spaces), "{n_spaces} demo spaces");

    // The simulated sensors publish through the embedded broker (on a free port when 1883 is
    // taken, as on CI): the garage's ground floor fills in.
    assert!(banner_value(&again, "MQTT broker").starts_with("mqtt://127.0.0.1:"));
    let garage = banner_value(&again, "off-street site");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let shown: serde_json::Value =
            get(format!("/v1/sites/{garage}/availability")).await.unwrap().json().await.unwrap();
        let sensed = shown["by_status"]["free"].as_u64().unwrap() + shown["by_status"]["occupied"].as_u64().unwrap();
        if sensed >= 30 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the simulator never filled the garage: {}", shown["by_status"]);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let driver_login = banner_value(&again, "driver login");
    let (email, password) = driver_login.split_once(" / ").unwrap();
    let login = client
        .post(format!("{base}/v1/drivers/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);

    // The garage is priced by the bundled time-of-day template, published once.
    let rule_sets: serde_json::Value = get("/v1/rulesets".into()).await.unwrap().json().await.unwrap();
    assert_eq!(rule_sets["items"].as_array().map(Vec::len), Some(1), "{rule_sets}");
    assert_eq!(rule_sets["items"][0]["site_id"], garage.as_str());
    let start = chrono::Utc::now() + chrono::Duration::days(1);
    let quote = client
        .post(format!("{base}/v1/quotes"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"site_id": garage, "start": start.to_rfc3339(),
                                  "end": (start + chrono::Duration::hours(2)).to_rfc3339()}))
        .send()
        .await
        .unwrap();
    assert_eq!(quote.status(), 201);
    let quote: serde_json::Value = quote.json().await.unwrap();
    assert!(quote["total_minor"].as_i64().is_some_and(|total| total > 0), "{quote}");
    drop(second);
}

/// Every benchmark runs end to end at a small size and prints its figures (the real sizes are
/// for release builds; see docs/operations.md).
#[test]
fn benchmarks_run_at_small_sizes() {
    for (args, expect) in [
        (
            &[
                "bench",
                "ingest",
                "--messages",
                "200",
                "--devices",
                "20",
                "--rate",
                "100",
                "--seconds",
                "1",
                "--subscribers",
                "10",
                "--changes",
                "25",
                "--rounds",
                "2",
            ][..],
            "medians of 2 rounds",
        ),
        (
            &["bench", "search", "--sites", "5", "--spaces-per-site", "5", "--rate", "5", "--seconds", "1"],
            "search latency",
        ),
        (&["bench", "bookings", "--spaces", "2", "--requests", "20", "--concurrency", "4"], "double bookings: 0"),
        (&["bench", "chat", "--rate", "5", "--seconds", "1"], "answered 5 (refused 0, unanswered 0)"),
        (&["bench", "history", "--events", "3001", "--spaces", "10", "--days", "60"], "last 28 days (1400 events)"),
    ] {
        let (ok, stdout, stderr) = berth(args, &[]);
        assert!(ok && stdout.contains(expect), "{args:?}: {stdout}\n{stderr}");
    }
}
