//! panva's oidc-provider as a child process (tests/interop/provider.mjs).

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;

pub struct Provider {
    pub issuer: String,
    _child: tokio::process::Child,
}

/// Starts tests/interop/provider.mjs for a BFF at `proxy_base`, with access tokens
/// of `access_ttl` seconds.
pub async fn start_provider(proxy_base: &str, access_ttl: u64) -> Provider {
    start_provider_with(proxy_base, access_ttl, &[]).await
}

/// [`start_provider`] with more environment for provider.mjs (`REQUIRE_PAR`).
pub async fn start_provider_with(
    proxy_base: &str,
    access_ttl: u64,
    env: &[(&str, &str)],
) -> Provider {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "oidc-provider is not installed: run `npm ci --prefix tests/interop` (.ci/run does)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("PROXY_BASE", proxy_base)
        .env("ACCESS_TTL", access_ttl.to_string())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for the interop tests");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let issuer = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(issuer) = line.strip_prefix("ISSUER ") {
                return issuer.to_owned();
            }
        }
        panic!("oidc-provider exited without printing its issuer");
    })
    .await
    .expect("oidc-provider did not start within 30 s");
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Provider {
        issuer,
        _child: child,
    }
}
