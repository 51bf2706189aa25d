//! Environment overrides: `BFF_<SECTION>_<KEY>` for every setting, typed as the
//! setting is, and the `env:NAME` references a file makes.

#![allow(clippy::wildcard_imports)]

use super::*;

/// The kind of value a setting takes, for turning an environment variable into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Str,
    Bool,
    Int,
    List,
    Table,
}

/// Every setting an environment variable can override: `BFF_<SECTION>_<KEY>`.
/// `[[routes]]` cannot be overridden this way (it is a list of tables).
pub(super) const SETTINGS: &[(&str, &[(&str, Kind)])] = &[
    (
        "server",
        &[
            ("listen", Kind::Str),
            ("public_url", Kind::Str),
            ("admin_listen", Kind::Str),
            ("engine", Kind::Str),
            ("prefix", Kind::Str),
            ("shutdown_timeout", Kind::Str),
            ("drain_delay", Kind::Str),
            ("tls_cert", Kind::Str),
            ("tls_key", Kind::Str),
            ("threads", Kind::Int),
            ("upstream_connect_timeout", Kind::Str),
            ("upstream_timeout", Kind::Str),
            ("upstream_keepalive", Kind::Int),
            ("header_timeout", Kind::Str),
            ("idle_timeout", Kind::Str),
            ("max_connections", Kind::Int),
            ("trusted_proxies", Kind::List),
            ("path_check", Kind::Str),
        ],
    ),
    (
        "oidc",
        &[
            ("issuer", Kind::Str),
            ("client_id", Kind::Str),
            ("client_secret", Kind::Str),
            ("client_auth", Kind::Str),
            ("private_key", Kind::Str),
            ("scopes", Kind::List),
            ("auth_params", Kind::Table),
            ("post_logout_redirect_uri", Kind::Str),
            ("revocation_endpoint", Kind::Str),
            ("par", Kind::Bool),
            ("dpop", Kind::Bool),
        ],
    ),
    (
        "session",
        &[
            ("cookie_name", Kind::Str),
            ("secure", Kind::Bool),
            ("same_site", Kind::Str),
            ("keys", Kind::List),
            ("absolute_lifetime", Kind::Str),
            ("max_refreshes", Kind::Int),
            ("mode", Kind::Str),
            ("idle_timeout", Kind::Str),
        ],
    ),
    (
        "refresh",
        &[
            ("skew", Kind::Str),
            ("grace", Kind::Str),
            ("timeout", Kind::Str),
            ("on_reuse", Kind::Str),
        ],
    ),
    ("csrf", &[("header", Kind::Str), ("value", Kind::Str)]),
    (
        "store",
        &[
            ("kind", Kind::Str),
            ("url", Kind::Str),
            ("key_prefix", Kind::Str),
            ("timeout", Kind::Str),
        ],
    ),
    (
        "dev",
        &[
            ("idp", Kind::Bool),
            ("echo", Kind::Str),
            ("access_token_lifetime", Kind::Str),
            ("login_form", Kind::Bool),
        ],
    ),
    ("forward_auth", &[("enabled", Kind::Bool)]),
    (
        "log",
        &[
            ("format", Kind::Str),
            ("level", Kind::Str),
            ("access", Kind::Bool),
        ],
    ),
];

/// Applies `BFF_<SECTION>_<KEY>` variables to the parsed table.
pub(super) fn apply_env_overrides(
    table: &mut toml::Table,
    env: &Env,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) {
    let referenced = env_references(table);
    for (var, raw) in env.bff_vars() {
        let rest = var["BFF_".len()..].to_ascii_lowercase();
        // A section's name may hold an underscore itself (`forward_auth`): the
        // longest section name that prefixes the variable wins.
        let Some((section, keys)) = SETTINGS
            .iter()
            .filter(|(s, _)| {
                rest.strip_prefix(s)
                    .is_some_and(|after| after.starts_with('_'))
            })
            .max_by_key(|(s, _)| s.len())
            .map(|(s, keys)| (*s, keys))
        else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        let Some(&(_, kind)) = keys.iter().find(|(k, _)| *k == key) else {
            // Variables like BFF_SESSION_KEY are often secrets named by `env:`; only
            // one that nothing uses is worth a word (it may be a typo).
            if !referenced.iter().any(|r| r == var) {
                warnings.push(Problem::new(
                    var,
                    format!(
                        "is set but {section}.{key} is no setting, and no env: reference uses it"
                    ),
                ));
            }
            continue;
        };
        match env_value(raw, kind) {
            Ok(value) => {
                let entry = table
                    .entry(section.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(t) = entry.as_table_mut() {
                    t.insert(key.to_owned(), value);
                }
            }
            Err(why) => problems.push(Problem::new(var, why)),
        }
    }
}

pub(super) fn env_value(raw: &str, kind: Kind) -> Result<toml::Value, String> {
    match kind {
        Kind::Str => Ok(toml::Value::String(raw.to_owned())),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Kind::Int => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, got {raw:?}")),
        Kind::List => {
            let trimmed = raw.trim();
            if trimmed.starts_with('[') {
                parse_toml_value(trimmed).and_then(|v| {
                    if v.is_array() {
                        Ok(v)
                    } else {
                        Err("expected a TOML array".into())
                    }
                })
            } else {
                Ok(toml::Value::Array(
                    trimmed
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                ))
            }
        }
        Kind::Table => parse_toml_value(raw.trim()).and_then(|v| {
            if v.is_table() {
                Ok(v)
            } else {
                Err("expected a TOML inline table, like { prompt = \"consent\" }".into())
            }
        }),
    }
}

pub(super) fn parse_toml_value(text: &str) -> Result<toml::Value, String> {
    let doc: toml::Table = format!("v = {text}")
        .parse()
        .map_err(|e: toml::de::Error| format!("not a TOML value: {}", one_line(e.message())))?;
    doc.get("v")
        .cloned()
        .ok_or_else(|| "not a TOML value".to_owned())
}

/// The names of every `env:NAME` the table refers to.
pub(super) fn env_references(table: &toml::Table) -> Vec<String> {
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => {
                if let Some(name) = s.strip_prefix("env:") {
                    out.push(name.to_owned());
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            toml::Value::Table(t) => t.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    table.values().for_each(|v| walk(v, &mut out));
    out
}
