//! The command line: help at every level, config printing with redaction, unknown keys named.

use std::process::Command;

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

#[test]
fn openapi_command_prints_the_spec() {
    let (ok, stdout, _) = berth(&["openapi"], &[]);
    assert!(ok);
    assert_eq!(stdout.trim_end(), berth_openapi::spec_json().trim_end());
}
