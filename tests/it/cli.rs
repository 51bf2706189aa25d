//! The binary's command line: check-config, keygen, and refusing bad configs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bff-proxy"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    // The tests must not see a developer's own BFF_* overrides.
    for (k, _) in std::env::vars() {
        if k.starts_with("BFF_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn root_config_with_key(key: &str) -> tempfile::NamedTempFile {
    let root =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml")).unwrap();
    let start = root.find("keys = [\"").unwrap() + "keys = [\"".len();
    let end = start + root[start..].find('"').unwrap();
    let text = format!("{}{key}{}", &root[..start], &root[end..]).replace(
        "static_dir = \"examples/spa\"",
        &format!(
            "static_dir = {:?}",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/spa")
        ),
    );
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn check_config_accepts_the_root_config() {
    let out = bin()
        .args(["check-config", "--config", "config.toml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_a_broken_key_and_exits_2() {
    let file = root_config_with_key("dG9vIHNob3J0");
    let out = bin()
        .args(["check-config", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("session.keys[0]: must decode to 32 bytes of base64, got 9"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("dG9vIHNob3J0"),
        "the key itself is never printed"
    );
}

#[test]
fn starting_with_a_bad_config_exits_64_with_one_line() {
    let file = root_config_with_key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let out = bin().arg("--config").arg(file.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("session.keys[0]"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = bin()
        .args(["--config", "no/such/config.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");
}

#[test]
fn env_overrides_reach_the_binary() {
    let out = bin()
        .args(["check-config", "--config", "config.toml"])
        .env("BFF_SESSION_KEYS", "c2hvcnQ=")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("session.keys[0]"));
}

#[test]
fn keygen_prints_a_key_the_config_accepts() {
    let out = bin().arg("keygen").output().unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    let key = key.trim();
    assert_eq!(key.len(), 44);
    bff_proxy::seal::KeyRing::parse_key(key).unwrap();
    let again = bin().arg("keygen").output().unwrap();
    assert_ne!(String::from_utf8(again.stdout).unwrap().trim(), key);
    let file = root_config_with_key(key);
    let out = bin()
        .args(["check-config", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Far-off durations once passed check-config and then panicked at start inside
/// the caches: each one is refused at load, by name, both by check-config (exit 2)
/// and at start (exit 64), never a panic.
#[test]
fn far_off_durations_are_refused_at_load() {
    for (setting, env) in [
        ("session.absolute_lifetime", "BFF_SESSION_ABSOLUTE_LIFETIME"),
        ("refresh.grace", "BFF_REFRESH_GRACE"),
        ("refresh.timeout", "BFF_REFRESH_TIMEOUT"),
        ("server.idle_timeout", "BFF_SERVER_IDLE_TIMEOUT"),
    ] {
        for value in ["1001y", "400d", "100000000000000000000s"] {
            let out = bin()
                .args(["check-config", "--config", "config.toml"])
                .env(env, value)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{setting} = {value}: {stderr}");
            assert!(stderr.contains(setting), "{setting} = {value}: {stderr}");
            let out = bin()
                .args(["--config", "config.toml"])
                .env(env, value)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{setting} = {value}: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}
