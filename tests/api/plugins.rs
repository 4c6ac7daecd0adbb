//! Plugins through the API and the author kit: listing with health, uploads, quarantine visible
//! and lifted by a reload; `berth plugin test` on every bundled plugin against the vendor corpus;
//! `berth plugin new` producing a crate that builds and passes as generated.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_kernel::plugin::{Occupancy, PluginPortError, SensorUplink};
use reqwest::Method;

use crate::helpers::{ADMIN_KEY, Backend, TestApp};

pub const MULTIPART: &str = "multipart/form-data; boundary=berth-test-boundary";

/// A `multipart/form-data` body with the `manifest` text and the `component` file.
pub fn multipart_body(manifest: &str, component: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--berth-test-boundary\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n{manifest}\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(
        b"--berth-test-boundary\r\nContent-Disposition: form-data; name=\"component\"; filename=\"plugin.wasm\"\r\nContent-Type: application/wasm\r\n\r\n",
    );
    body.extend_from_slice(component);
    body.extend_from_slice(b"\r\n--berth-test-boundary--\r\n");
    body
}

fn test_component(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(berth_plugin_host::TEST_PLUGINS_DIR).join(format!("{name}.wasm"))).unwrap()
}

fn hostile_manifest(version: &str) -> String {
    format!(
        "id = \"hostile\"\nversion = \"{version}\"\nworld = \"sensor-decoder@0.1\"\nvendor = \"Test\"\n[limits]\nmax_consecutive_faults = 2\n[sensor]\nmodels = [\"well-behaved\", \"panic\"]\n"
    )
}

fn uplink(model: &str) -> SensorUplink {
    SensorUplink {
        device_id: "70B3D57ED0000001".into(),
        model: model.into(),
        f_port: 1,
        payload: vec![1],
        received_at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn plugins_are_listed_uploaded_quarantined_and_reloaded() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let listed = app.get("/v1/plugins", ADMIN_KEY).await.expect(200);
    let ids: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bosch", "browan", "dingtek", "elsys", "nwave", "tekzitel"]);
    let nwave = app.get("/v1/plugins/nwave", ADMIN_KEY).await.expect(200);
    assert_eq!(nwave["status"], "active");
    assert_eq!(nwave["world"], "sensor_decoder");
    assert_eq!(nwave["source"], "bundled");
    assert_eq!(nwave["models"], serde_json::json!(["nps310sm", "nps405", "ncc405"]));
    assert_eq!(nwave["sha256"].as_str().unwrap().len(), 64);
    app.get("/v1/plugins/nope", ADMIN_KEY).await.problem(404);

    // The kernel port decodes through them.
    let reading = app.kernel().plugins().decode(uplink("nps310sm")).await.unwrap();
    assert_eq!(reading.occupancy, Occupancy::Occupied);

    // Uploads: bad manifest and bad component are 422 naming the part.
    let upload = |manifest: String, component: Vec<u8>| {
        app.raw(Method::POST, "/v1/plugins", Some(ADMIN_KEY), MULTIPART, multipart_body(&manifest, &component))
    };
    let problem = upload("id = \"x\"".into(), test_component("berth_plugin_hostile")).await.problem(422);
    assert_eq!(problem["field"], "manifest");
    assert!(problem["detail"].as_str().unwrap().contains("missing field"), "{problem}");
    let problem = upload(hostile_manifest("1.0.0"), b"\0asm\x0d\0\x01\0junk".to_vec()).await.problem(422);
    assert_eq!(problem["field"], "component");
    let problem = upload(hostile_manifest("1.0.0"), test_component("berth_plugin_test_payment")).await.problem(422);
    assert!(problem["detail"].as_str().unwrap().contains("sensor-decoder"), "{problem}");
    let conflict = hostile_manifest("1.0.0").replace("\"panic\"", "\"nps405\"");
    let problem = upload(conflict, test_component("berth_plugin_hostile")).await.problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("nwave"), "{problem}");
    let missing =
        app.raw(Method::POST, "/v1/plugins", Some(ADMIN_KEY), MULTIPART, multipart_body("x", b"")).await.problem(422);
    assert_eq!(missing["field"], "component");

    let created = upload(hostile_manifest("1.0.0"), test_component("berth_plugin_hostile")).await.expect(201);
    assert_eq!((created["version"].as_str(), created["source"].as_str()), (Some("1.0.0"), Some("installed")));
    let upgraded = upload(hostile_manifest("1.1.0"), test_component("berth_plugin_hostile")).await.expect(200);
    assert_eq!(upgraded["version"], "1.1.0");
    assert!(app.config.data_dir.join("plugins/hostile/plugin.toml").exists());

    // Faults show in the API; two in a row quarantine it; a reload lifts the quarantine.
    for _ in 0..2 {
        let error = app.kernel().plugins().decode(uplink("panic")).await.unwrap_err();
        assert!(matches!(error, PluginPortError::Fault(_)), "{error:?}");
    }
    let hostile = app.get("/v1/plugins/hostile", ADMIN_KEY).await.expect(200);
    assert_eq!(hostile["status"], "quarantined");
    assert_eq!(hostile["faults_total"], 2);
    assert!(hostile["last_error"].as_str().unwrap().contains("trapped"), "{hostile}");
    let reloaded = app.post("/v1/plugins/hostile/reload", ADMIN_KEY, serde_json::json!({})).await.expect(200);
    assert_eq!((reloaded["status"].as_str(), reloaded["faults_total"].as_u64()), (Some("active"), Some(0)));
    app.kernel().plugins().decode(uplink("well-behaved")).await.unwrap();
    app.post("/v1/plugins/nope/reload", ADMIN_KEY, serde_json::json!({})).await.problem(404);

    // Operators cannot see or touch plugins.
    let tenant = app.new_tenant("acme").await;
    app.get("/v1/plugins", &tenant.admin_key).await.problem(403);
    app.cleanup().await;
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn berth(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().expect("run berth");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// CI's corpus check: every bundled plugin passes every vendor example, through the CLI.
#[test]
fn plugin_test_passes_every_bundled_plugin_on_the_vendor_corpus() {
    let mut total = 0;
    for vendor in ["bosch", "browan", "dingtek", "elsys", "nwave", "tekzitel"] {
        let source = workspace().join("plugins/sensors").join(vendor);
        let component = Path::new(berth_plugin_host::BUNDLED_PLUGINS_DIR).join(vendor).join("plugin.wasm");
        let (ok, stdout, stderr) =
            berth(&["plugin", "test", source.to_str().unwrap(), "--component", component.to_str().unwrap()]);
        assert!(ok, "{vendor}: {stdout}{stderr}");
        assert!(stdout.contains(", 0 failed;"), "{stdout}");
        let examples: usize = stdout.lines().last().unwrap().split(' ').next().unwrap().parse().unwrap();
        total += examples;
    }
    assert!(total >= 27, "only {total} corpus examples ran");
}

#[test]
fn plugin_test_shows_a_diff_and_fails_on_a_wrong_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("nwave");
    std::fs::create_dir_all(&plugin).unwrap();
    let bundled = Path::new(berth_plugin_host::BUNDLED_PLUGINS_DIR).join("nwave");
    std::fs::copy(bundled.join("plugin.wasm"), plugin.join("plugin.wasm")).unwrap();
    let manifest = "id = \"nwave\"\nversion = \"0.1.0\"\nworld = \"sensor-decoder@0.1\"\nvendor = \"Nwave\"\n[sensor]\nmodels = [\"nps310sm\"]\nexamples = \"examples.json\"\n";
    std::fs::write(plugin.join("plugin.toml"), manifest).unwrap();
    // What the plugin makes of an occupied frame, as `plugin run` prints it.
    let (ok, stdout, stderr) = berth(&["plugin", "run", plugin.to_str().unwrap(), "--port", "1", "--hex", "01"]);
    assert!(ok, "{stderr}");
    let decoded: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(decoded["reading"]["occupancy"], "occupied");
    assert_eq!(decoded["object"]["occupied"], true);
    let occupied = &decoded["object"];
    let examples = serde_json::json!([
        {"description": "right", "input": {"fPort": 1, "bytes": [1]}, "output": {"data": occupied}},
        {"description": "wrong", "input": {"fPort": 1, "bytes": [0]}, "output": {"data": occupied}}
    ]);
    std::fs::write(plugin.join("examples.json"), examples.to_string()).unwrap();
    let (ok, stdout, _) = berth(&["plugin", "test", plugin.to_str().unwrap()]);
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("FAIL wrong (port 1, 00)"), "{stdout}");
    assert!(stdout.contains("$.occupied: expected true, actual false"), "{stdout}");
    assert!(stdout.contains("2 examples: 1 passed, 1 failed"), "{stdout}");
}

/// `berth plugin new sensor` writes a crate that builds for wasm32-wasip2 and passes its own
/// examples as generated. It builds in the workspace's plugin target dir with the workspace's
/// lock file, so its dependencies are already compiled.
#[test]
fn a_generated_sensor_plugin_builds_and_passes_as_generated() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = berth(&["plugin", "new", "sensor", "acme-p1", "--dir", dir.path().to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    let crate_dir = dir.path().join("acme-p1");
    let (ok, _, stderr) = berth(&["plugin", "new", "sensor", "acme-p1", "--dir", dir.path().to_str().unwrap()]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let (ok, _, stderr) = berth(&["plugin", "new", "sensor", "Bad Name", "--dir", dir.path().to_str().unwrap()]);
    assert!(!ok && stderr.contains("must start with a-z"), "{stderr}");

    std::fs::copy(workspace().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let target_dir = workspace().join("target/wasm-plugins");
    let status = Command::new(env!("CARGO"))
        .current_dir(&crate_dir)
        .args(["build", "--release", "--offline", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap();
    assert!(status.success(), "the generated crate does not build for wasm32-wasip2");
    let component = target_dir.join("wasm32-wasip2/release/berth_sensor_acme_p1.wasm");
    let (ok, stdout, stderr) =
        berth(&["plugin", "test", crate_dir.to_str().unwrap(), "--component", component.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("3 examples: 3 passed, 0 failed"), "{stdout}");
}

/// The vendor guide's example is exactly what `plugin new` generates, so it is built and tested
/// by the test above.
#[test]
fn the_vendor_guide_shows_the_generated_decoder() {
    let guide = std::fs::read_to_string(workspace().join("docs/plugins.md")).unwrap();
    let sdk = Path::new("../berth/plugins/sdk");
    for (file, template) in berth::plugin_cli::TEMPLATE {
        if matches!(*file, "src/lib.rs" | "plugin.toml" | "examples.json") {
            let rendered = berth::plugin_cli::render(template, "acme-p1", sdk);
            assert!(guide.contains(rendered.trim_end()), "docs/plugins.md does not show the generated {file}");
        }
    }
}
