//! Builds the bundled plugins (`plugins/sensors/*`) as `wasm32-wasip2` components, so a normal
//! `cargo build`/`cargo test` produces them. Uses its own target dir; installs the target with
//! rustup when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Crate and output names of every component the build produces: the bundled sensor plugins and
/// the hostile test plugin.
const PLUGINS: &[(&str, &str)] = &[
    ("berth-sensor-bosch", "berth_sensor_bosch"),
    ("berth-sensor-nwave", "berth_sensor_nwave"),
    ("berth-sensor-tekzitel", "berth_sensor_tekzitel"),
    ("berth-sensor-dingtek", "berth_sensor_dingtek"),
    ("berth-sensor-browan", "berth_sensor_browan"),
    ("berth-sensor-elsys", "berth_sensor_elsys"),
    ("berth-plugin-hostile", "berth_plugin_hostile"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.join("../..").canonicalize().unwrap();
    for watched in ["plugins/sdk", "plugins/sensors", "plugins/testing", "plugins/wit"] {
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
    for (package, _) in PLUGINS {
        command.args(["-p", package]);
    }
    // The outer build's flags are for the host target (a linker choice, for instance).
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(var);
    }
    command.env("CARGO_PROFILE_RELEASE_STRIP", "true").env("CARGO_PROFILE_RELEASE_LTO", "true");
    let status = command.status().expect("run cargo for the wasm32-wasip2 plugins");
    assert!(status.success(), "building the bundled plugins for wasm32-wasip2 failed");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("plugins");
    std::fs::create_dir_all(&out_dir).unwrap();
    for (_, output) in PLUGINS {
        let file = format!("{output}.wasm");
        copy_if_changed(&target_dir.join("wasm32-wasip2/release").join(&file), &out_dir.join(&file));
    }
    println!("cargo:rustc-env=BERTH_BUNDLED_PLUGINS_DIR={}", out_dir.display());
}

fn copy_if_changed(from: &Path, to: &Path) {
    let bytes = std::fs::read(from).unwrap_or_else(|e| panic!("missing plugin {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&bytes[..]) {
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
