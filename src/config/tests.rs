use std::path::Path;

use super::*;
use std::time::Duration;

const KEY_A: &str = "vUqhFABZp5xGtuGc//zqNm1RE5BdmW8dWI70Hto8GV8=";

fn minimal() -> String {
    format!(
        r#"
[oidc]
issuer = "https://idp.example.com"
client_id = "bff"
client_secret = "env:SECRET"
[session]
keys = ["{KEY_A}"]
[[routes]]
path = "/api/"
upstream = "http://127.0.0.1:9001"
"#
    )
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut pairs: Vec<(&str, &str)> = vec![("SECRET", "s3cret")];
    pairs.extend_from_slice(env);
    Config::from_toml(text, Path::new("."), &Env::from_pairs(pairs))
}

fn paths(err: &ConfigError) -> Vec<&str> {
    err.problems.iter().map(|p| p.path.as_str()).collect()
}

#[test]
fn defaults_follow_the_design() {
    let c = load(&minimal(), &[]).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.engine, Engine::Pingora);
    assert_eq!(c.server.prefix, "/bff");
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(c.oidc.client_auth, ClientAuth::ClientSecretBasic);
    assert_eq!(c.session.cookie_name, "__Host-Http-bff");
    assert!(c.session.secure);
    assert_eq!(c.session.same_site, SameSiteSetting::Strict);
    assert_eq!(c.session.absolute_lifetime, Duration::from_secs(12 * 3600));
    assert_eq!(c.session.mode, SessionMode::Cookie);
    assert_eq!(c.refresh.skew, Duration::from_secs(30));
    assert_eq!(c.refresh.grace, Duration::from_secs(60));
    assert_eq!(c.refresh.timeout, Duration::from_secs(5));
    assert_eq!(c.csrf.header, "X-CSRF");
    assert_eq!(c.csrf.value, "1");
    assert_eq!(c.store.kind, StoreKind::Memory);
    assert_eq!(c.store.key_prefix, "bff:");
    assert!(c.routes[0].csrf_required());
    assert_eq!(
        c.resolved.redirect_uri.as_str(),
        "http://127.0.0.1:8080/bff/callback"
    );
    assert_eq!(
        c.resolved.client_secret.as_ref().unwrap().expose(),
        "s3cret"
    );
    assert_eq!(c.key_ring().unwrap().len(), 1);
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = minimal()
        .replace(KEY_A, "c2hvcnQ=")
        .replace("https://idp.example.com", "ftp://idp")
        + "\n[csrf]\nheader = \"Accept\"\n";
    let err = load(&text, &[]).unwrap_err();
    let p = paths(&err);
    assert!(p.contains(&"session.keys[0]"), "{p:?}");
    assert!(p.contains(&"oidc.issuer"), "{p:?}");
    assert!(p.contains(&"csrf.header"), "{p:?}");
    // Type errors in several sections are each reported too.
    let text = minimal() + "\n[refresh]\nskew = 3\n[csrf]\nvalue = 1\n";
    let err = load(&text, &[]).unwrap_err();
    let p = paths(&err);
    assert!(
        p.contains(&"refresh.skew") && p.contains(&"csrf.value"),
        "{p:?}"
    );
}

#[test]
fn env_overrides_each_kind_of_value() {
    let env = [
        ("BFF_SERVER_LISTEN", "127.0.0.1:7000"),
        ("BFF_SERVER_ENGINE", "hyper"),
        ("BFF_SERVER_THREADS", "3"),
        ("BFF_SESSION_SECURE", "true"),
        ("BFF_SESSION_MAX_REFRESHES", "10"),
        ("BFF_OIDC_SCOPES", "openid, offline_access"),
        ("BFF_OIDC_AUTH_PARAMS", "{ prompt = \"consent\" }"),
        ("BFF_REFRESH_GRACE", "2m"),
        ("BFF_CSRF_HEADER", "X-Requested-With"),
        // A section whose name holds an underscore.
        ("BFF_FORWARD_AUTH_ENABLED", "true"),
        ("BFF_LOG_ACCESS", "false"),
    ];
    let c = load(&minimal(), &env).unwrap();
    assert!(c.forward_auth.enabled);
    assert!(!c.log.access);
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(c.server.engine, Engine::Hyper);
    assert_eq!(c.server.threads, Some(3));
    assert_eq!(c.session.max_refreshes, 10);
    assert_eq!(c.oidc.scopes, ["openid", "offline_access"]);
    assert_eq!(c.oidc.auth_params.get("prompt").unwrap(), "consent");
    assert_eq!(c.refresh.grace, Duration::from_secs(120));
    assert_eq!(c.csrf.header, "X-Requested-With");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn env_can_supply_a_whole_setting_the_file_lacks() {
    let text = minimal().replace(&format!("keys = [\"{KEY_A}\"]"), "");
    let c = load(&text, &[("BFF_SESSION_KEYS", &format!("[\"{KEY_A}\"]"))]).unwrap();
    assert_eq!(c.key_ring().unwrap().len(), 1);
}

#[test]
fn bad_env_values_name_the_variable() {
    let err = load(&minimal(), &[("BFF_SESSION_SECURE", "maybe")]).unwrap_err();
    assert_eq!(paths(&err), ["BFF_SESSION_SECURE"]);
    let err = load(&minimal(), &[("BFF_REFRESH_SKEW", "soon")]).unwrap_err();
    assert_eq!(paths(&err), ["refresh.skew"]);
    let err = load(&minimal(), &[("BFF_OIDC_AUTH_PARAMS", "prompt=consent")]).unwrap_err();
    assert_eq!(paths(&err), ["BFF_OIDC_AUTH_PARAMS"]);
}

#[test]
fn unknown_bff_variables_warn_unless_an_env_reference_uses_them() {
    let text = minimal().replace(KEY_A, "env:BFF_SESSION_KEY");
    let c = load(
        &text,
        &[("BFF_SESSION_KEY", KEY_A), ("BFF_SERVER_LISTN", "x")],
    )
    .unwrap();
    let w: Vec<&str> = c.warnings.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(w, ["BFF_SERVER_LISTN"]);
}

/// Every setting in the reference fixture can be overridden from the environment, and
/// the override table names nothing the schema lacks.
#[test]
fn the_env_table_covers_every_setting() {
    let all: toml::Table = include_str!("../../tests/fixtures/config/all-keys.toml")
        .parse()
        .unwrap();
    let mut in_fixture = Vec::new();
    for (section, value) in &all {
        if section == "routes" {
            continue;
        }
        for key in value.as_table().unwrap().keys() {
            in_fixture.push(format!("{section}.{key}"));
        }
    }
    let mut in_table: Vec<String> = SETTINGS
        .iter()
        .flat_map(|(s, keys)| keys.iter().map(move |(k, _)| format!("{s}.{k}")))
        .collect();
    in_fixture.sort();
    in_table.sort();
    assert_eq!(in_fixture, in_table);
}

/// The reference fixture's keys are exactly what the schema accepts: each section of
/// it deserializes with `deny_unknown_fields`.
#[test]
fn the_reference_fixture_matches_the_schema() {
    let all: toml::Table = include_str!("../../tests/fixtures/config/all-keys.toml")
        .parse()
        .unwrap();
    let mut problems = Vec::new();
    assert!(section::<ServerConfig>(&all, "server", &mut problems).is_some());
    assert!(section::<OidcConfig>(&all, "oidc", &mut problems).is_some());
    assert!(section::<SessionConfig>(&all, "session", &mut problems).is_some());
    assert!(section::<RefreshConfig>(&all, "refresh", &mut problems).is_some());
    assert!(section::<CsrfConfig>(&all, "csrf", &mut problems).is_some());
    assert!(section::<StoreConfig>(&all, "store", &mut problems).is_some());
    assert!(section::<DevConfig>(&all, "dev", &mut problems).is_some());
    assert!(section::<LogConfig>(&all, "log", &mut problems).is_some());
    assert!(section::<ForwardAuthConfig>(&all, "forward_auth", &mut problems).is_some());
    assert!(routes(&all, &mut problems).is_some());
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn key_rotation_by_config() {
    let key_b = crate::seal::KeyRing::generate_key_base64();
    let old = load(&minimal(), &[]).unwrap().key_ring().unwrap();
    let sealed = old.seal("c", b"v");
    let text = minimal().replace(
        &format!("[\"{KEY_A}\"]"),
        &format!("[\"{key_b}\", \"{KEY_A}\"]"),
    );
    let rotated = load(&text, &[]).unwrap().key_ring().unwrap();
    assert_eq!(rotated.open("c", &sealed).unwrap(), b"v");
    let text = minimal().replace(
        &format!("[\"{KEY_A}\"]"),
        &format!("[\"{KEY_A}\", \"{KEY_A}\"]"),
    );
    let err = load(&text, &[]).unwrap_err();
    assert_eq!(paths(&err), ["session.keys[1]"]);
}

#[test]
fn public_client_is_allowed_with_a_warning() {
    let text = minimal().replace("client_secret = \"env:SECRET\"", "client_auth = \"none\"");
    let c = load(&text, &[]).unwrap();
    assert!(c.warnings.iter().any(|w| w.path == "oidc.client_auth"));
}

#[test]
fn debug_of_a_loaded_config_shows_no_secret() {
    let text = minimal().replace("env:SECRET", "literal-client-secret");
    let c = load(&text, &[]).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("literal-client-secret"), "{shown}");
    assert!(!shown.contains(KEY_A), "{shown}");
}

#[test]
fn error_display_is_one_line_with_a_count() {
    let text = minimal().replace(KEY_A, "c2hvcnQ=").replace("bff\"", "\"");
    let err = load(&text, &[]).unwrap_err();
    let line = err.to_string();
    assert!(!line.contains('\n'));
    assert!(
        line.contains("more; run `bff-proxy check-config`"),
        "{line}"
    );
}

/// A reload is refused for what only a restart can change, and allowed for the
/// rest (keys, routes, timeouts, log level).
#[test]
fn restart_only_changes_are_named() {
    let base = load(&minimal(), &[]).unwrap();
    let key_b = crate::seal::KeyRing::generate_key_base64();
    let reloadable = minimal().replace(
        &format!("[\"{KEY_A}\"]"),
        &format!("[\"{key_b}\", \"{KEY_A}\"]"),
    ) + "\n[refresh]\ntimeout = \"9s\"\n[log]\nlevel = \"debug\"\n";
    assert!(
        base.restart_only_changes(&load(&reloadable, &[]).unwrap())
            .is_empty()
    );
    let moved = load(&minimal(), &[("BFF_SERVER_LISTEN", "127.0.0.1:9999")]).unwrap();
    assert_eq!(base.restart_only_changes(&moved), vec!["server.listen"]);
    let renamed = load(
        &minimal(),
        &[
            ("BFF_SESSION_COOKIE_NAME", "other"),
            ("BFF_LOG_FORMAT", "json"),
            ("BFF_SERVER_ENGINE", "hyper"),
        ],
    )
    .unwrap();
    assert_eq!(
        base.restart_only_changes(&renamed),
        vec!["server.engine", "session.cookie_name", "log.format"]
    );
}

#[test]
fn log_level_must_parse() {
    let text = minimal() + "\n[log]\nlevel = \"info,=[\"\n";
    let err = load(&text, &[]).unwrap_err();
    assert_eq!(paths(&err), vec!["log.level"]);
    let text = minimal() + "\n[log]\nformat = \"xml\"\n";
    let err = load(&text, &[]).unwrap_err();
    assert_eq!(paths(&err), vec!["log.format"]);
}

#[test]
fn step_up_settings_are_checked() {
    let with = |lines: &str| format!("{}{lines}\n", minimal());
    let c = load(&with("acr = [\"urn:example:mfa\"]\nmax_age = \"5m\""), &[]).unwrap();
    assert_eq!(c.routes[0].acr, ["urn:example:mfa"]);
    assert_eq!(c.routes[0].max_age, Some(Duration::from_secs(300)));
    for (lines, path) in [
        ("acr = [\"a b\"]", "routes[0].acr[0]"),
        ("acr = [\"a\\\"b\"]", "routes[0].acr[0]"),
        ("acr = [\"\"]", "routes[0].acr[0]"),
        ("acr = [\"x\"]\nauth = \"optional\"", "routes[0].acr"),
        ("max_age = \"5m\"\nauth = \"none\"", "routes[0].max_age"),
        ("max_age = \"400days\"", "routes[0].max_age"),
    ] {
        let err = load(&with(lines), &[]).unwrap_err();
        assert!(paths(&err).contains(&path), "{lines}: {err}");
    }
    let text = minimal().replace(
        "client_secret = \"env:SECRET\"",
        "client_secret = \"env:SECRET\"\nauth_params = { prompt = \"sometimes\", max_age = \"soon\" }",
    );
    let err = load(&text, &[]).unwrap_err();
    assert!(paths(&err).contains(&"oidc.auth_params.prompt"), "{err}");
    assert!(paths(&err).contains(&"oidc.auth_params.max_age"), "{err}");
}

#[test]
fn audience_settings_are_checked() {
    let with = |lines: &str| format!("{}{lines}\n", minimal());
    let c = load(&with("resource = \"https://api.example.com/\""), &[]).unwrap();
    assert_eq!(
        c.routes[0].resource.as_deref(),
        Some("https://api.example.com/")
    );
    let c = load(
        &with("token_exchange = { audience = \"orders\", scope = \"orders:read orders:list\" }"),
        &[],
    )
    .unwrap();
    let x = c.routes[0].token_exchange.as_ref().unwrap();
    assert_eq!(
        (x.audience.as_str(), x.scope.as_deref()),
        ("orders", Some("orders:read orders:list"))
    );
    for (lines, path) in [
        ("resource = \"api\"", "routes[0].resource"),
        (
            "resource = \"https://api.example.com/#x\"",
            "routes[0].resource",
        ),
        (
            "resource = \"https://a.example/\"\nauth = \"none\"",
            "routes[0].resource",
        ),
        (
            "resource = \"https://a.example/\"\ntoken_exchange = { audience = \"b\" }",
            "routes[0].token_exchange",
        ),
        (
            "token_exchange = { audience = \"\" }",
            "routes[0].token_exchange.audience",
        ),
        (
            "token_exchange = { audience = \"a b\" }",
            "routes[0].token_exchange.audience",
        ),
        (
            "token_exchange = { audience = \"a\", scope = \"x  y\" }",
            "routes[0].token_exchange.scope",
        ),
    ] {
        let err = load(&with(lines), &[]).unwrap_err();
        assert!(paths(&err).contains(&path), "{lines}: {err}");
    }
    let err = load(
        &with("token_exchange = { audience = \"a\", other = 1 }"),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("other"), "{err}");
}
