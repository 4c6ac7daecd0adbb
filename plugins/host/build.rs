//! Builds the plugins as `wasm32-wasip2` components, so a normal `cargo build`/`cargo test`
//! produces them: the bundled plugins, sensor decoders, the PayPal payment provider and the WhatsApp channel (each
//! assembled into a plugin directory with its `plugin.toml`), and the test-only plugins. Uses its
//! own target dir; installs the target with rustup when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Bundled plugins: crate, source directory (holding `plugin.toml`), component name.
const BUNDLED: &[(&str, &str, &str)] = &[
    ("berth-sensor-bosch", "plugins/sensors/bosch", "berth_sensor_bosch"),
    ("berth-sensor-nwave", "plugins/sensors/nwave", "berth_sensor_nwave"),
    ("berth-sensor-tekzitel", "plugins/sensors/tekzitel", "berth_sensor_tekzitel"),
    ("berth-sensor-dingtek", "plugins/sensors/dingtek", "berth_sensor_dingtek"),
    ("berth-sensor-browan", "plugins/sensors/browan", "berth_sensor_browan"),
    ("berth-sensor-elsys", "plugins/sensors/elsys", "berth_sensor_elsys"),
    ("berth-payment-paypal", "plugins/payments/paypal", "berth_payment_paypal"),
    ("berth-chat-whatsapp", "plugins/chat/whatsapp", "berth_chat_whatsapp"),
];

/// Test-only plugins: crate and component name.
const TESTING: &[(&str, &str)] = &[
    ("berth-plugin-hostile", "berth_plugin_hostile"),
    ("berth-plugin-test-payment", "berth_plugin_test_payment"),
    ("berth-plugin-test-chat", "berth_plugin_test_chat"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.join("../..").canonicalize().unwrap();
    for watched in
        ["plugins/sdk", "plugins/sensors", "plugins/payments", "plugins/chat", "plugins/testing", "plugins/wit"]
    {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    ensure_target();
    let target_dir = workspace.join("target/wasm-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for package in BUNDLED.iter().map(|(package, _, _)| package).chain(TESTING.iter().map(|(package, _)| package)) {
        command.args(["-p", package]);
    }
    // The outer build's flags are for the host target (a linker choice, for instance).
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(var);
    }
    command
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    let status = command.status().expect("run cargo for the wasm32-wasip2 plugins");
    assert!(status.success(), "building the plugins for wasm32-wasip2 failed");

    let built = target_dir.join("wasm32-wasip2/release");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let bundled_dir = out_dir.join("plugins");
    let mut embedded = String::from("/// The bundled plugins.\npub static BUNDLED: &[BundledPlugin] = &[\n");
    for (_, source, component) in BUNDLED {
        let manifest = std::fs::read_to_string(workspace.join(source).join("plugin.toml")).unwrap();
        let id = manifest_id(&manifest);
        let dir = bundled_dir.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        copy_if_changed(&built.join(format!("{component}.wasm")), &dir.join("plugin.wasm"));
        write_if_changed(&dir.join("plugin.toml"), manifest.as_bytes());
        embedded.push_str(&format!(
            "    BundledPlugin {{ manifest: include_str!({:?}), component: include_bytes!({:?}) }},\n",
            dir.join("plugin.toml"),
            dir.join("plugin.wasm")
        ));
    }
    embedded.push_str("];\n");
    write_if_changed(&out_dir.join("bundled.rs"), embedded.as_bytes());
    let testing_dir = out_dir.join("test-plugins");
    std::fs::create_dir_all(&testing_dir).unwrap();
    for (_, component) in TESTING {
        let file = format!("{component}.wasm");
        copy_if_changed(&built.join(&file), &testing_dir.join(&file));
    }
    println!("cargo:rustc-env=BERTH_BUNDLED_PLUGINS_DIR={}", bundled_dir.display());
    println!("cargo:rustc-env=BERTH_TEST_PLUGINS_DIR={}", testing_dir.display());
}

/// The `id = "..."` line of a manifest (the host parses manifests properly at load time).
fn manifest_id(manifest: &str) -> &str {
    manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("id = \"").and_then(|rest| rest.strip_suffix('"')))
        .expect("every bundled plugin.toml has an id line")
}

fn copy_if_changed(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).unwrap_or_else(|e| panic!("missing plugin {}: {e}", from.display()));
    write_if_changed(to, &bytes);
}

fn write_if_changed(to: &Path, bytes: &[u8]) {
    if std::fs::read(to).ok().as_deref() != Some(bytes) {
        std::fs::write(to, bytes).unwrap();
    }
}

/// Installs the wasm32-wasip2 standard library if this toolchain lacks it.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output().expect("rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib/wasm32-wasip2").exists() {
        return;
    }
    let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    assert!(
        status.is_ok_and(|status| status.success()),
        "the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed"
    );
}
