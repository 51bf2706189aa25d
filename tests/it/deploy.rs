//! deploy/ against the real thing: `promtool check rules` on the alert rules, a real
//! Prometheus (Debian's `prometheus` package, installed by scripts/setup) scraping a
//! running bff-proxy's admin listener, and every PromQL expression of the alert
//! rules and of the Grafana dashboard evaluated against what it scraped. An
//! expression that does not parse, or that names a metric bff-proxy does not
//! export, fails. The Kubernetes example's config is checked by the config loader.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Http;
use crate::support::stack::{Front, stack};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn need(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is needed: Debian's `prometheus` package (scripts/setup installs it)"
    );
}

#[test]
fn the_alert_rules_pass_promtool() {
    need("promtool");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root().join("deploy/prometheus/alerts.yml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 9 rules found"), "{text}");
}

/// The alert rules' and the dashboard's expressions.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let mut alert = String::new();
    for line in rules.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = name.to_owned();
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            out.push((format!("alert {alert}"), expr.to_owned()));
        }
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/bff-proxy.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push((
                format!("panel {}", panel["title"].as_str().unwrap()),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(out.len() >= 20, "{out:?}");
    out
}

/// The metric names an expression selects: identifiers outside label matchers,
/// grouping clauses and ranges, minus PromQL's functions and keywords.
fn metric_names(expr: &str) -> Vec<String> {
    const NOT_METRICS: &[&str] = &[
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "rate",
        "increase",
        "irate",
        "histogram_quantile",
        "by",
        "without",
        "on",
        "ignoring",
        "and",
        "or",
        "unless",
    ];
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    for c in expr.chars() {
        match c {
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            _ => cleaned.push(c),
        }
    }
    // Grouping clauses: `by (a, b)`.
    let mut names = Vec::new();
    let tokens: Vec<&str> = cleaned
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| !t.is_empty())
        .collect();
    let grouped = {
        let mut g = Vec::new();
        let mut rest = cleaned.as_str();
        while let Some(at) = rest.find(" by (").or_else(|| rest.find("by (")) {
            let after = &rest[at..];
            let open = after.find('(').unwrap();
            let close = after.find(')').unwrap();
            g.extend(
                after[open + 1..close]
                    .split(',')
                    .map(|l| l.trim().to_owned()),
            );
            rest = &after[close..];
        }
        g
    };
    for t in tokens {
        if NOT_METRICS.contains(&t)
            || t.chars().next().is_some_and(|c| c.is_ascii_digit())
            || grouped.iter().any(|g| g == t)
        {
            continue;
        }
        names.push(t.to_owned());
    }
    names
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(bff_upstream_duration_seconds_bucket{route="/api/"}[5m]))) > 2"#
        ),
        ["bff_upstream_duration_seconds_bucket"]
    );
    assert_eq!(metric_names(r#"up{job="bff-proxy"} == 0"#), ["up"]);
}

struct Prometheus {
    child: std::process::Child,
    base: String,
    http: Http,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: &str) -> Self {
        need("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: bff-proxy\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: Http::new(),
            _dir: dir,
        }
    }

    async fn query(&self, expr: &str) -> Value {
        let q: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let reply = self
            .http
            .get(&format!("{}/api/v1/query?query={q}", self.base))
            .await;
        serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("{}", reply.text()))
    }

    async fn wait_for(&self, expr: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(reply) = self
                .http
                .try_send(
                    http::Request::get(format!(
                        "{}/api/v1/query?query={}",
                        self.base,
                        url::form_urlencoded::byte_serialize(expr.as_bytes()).collect::<String>()
                    ))
                    .body(http_body_util::Full::default())
                    .unwrap(),
                )
                .await
            {
                let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
                if v["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
                {
                    return;
                }
            }
            assert!(start.elapsed() < limit, "Prometheus never saw {expr}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn every_alert_and_dashboard_expression_evaluates_against_a_real_scrape() {
    let s = stack(Front::Hyper, &[]).await;
    let admin = s.admin.clone().unwrap();
    let prometheus = Prometheus::start(admin.trim_start_matches("http://"));
    // Traffic for every family: a login (IdP requests), API calls (requests,
    // upstream time), a refresh, a logout (a session ended).
    let b = s.browser();
    b.login("/").await;
    assert_eq!(b.api("/api/one").await.status, 200);
    s.bff.clock().advance(Duration::from_secs(290));
    assert_eq!(b.api("/api/two").await.status, 200);
    assert_eq!(
        b.request("POST", "/bff/logout", &[("x-csrf", "1")])
            .await
            .status
            .as_u16()
            / 100,
        3
    );
    prometheus
        .wait_for(r#"up{job="bff-proxy"} == 1"#, Duration::from_secs(60))
        .await;
    // Two scrapes after the traffic, so rate() over them has data.
    prometheus
        .wait_for(
            r#"count_over_time(bff_sessions_ended_total{reason="logout"}[1m]) >= 2"#,
            Duration::from_secs(30),
        )
        .await;
    let names: Vec<String> = {
        let reply = prometheus
            .http
            .get(&format!("{}/api/v1/label/__name__/values", prometheus.base))
            .await;
        let v: Value = serde_json::from_slice(&reply.body).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    let mut with_data = 0;
    for (what, expr) in expressions() {
        for name in metric_names(&expr) {
            assert!(
                names.contains(&name),
                "{what}: `{expr}` names {name}, which bff-proxy does not export"
            );
        }
        let v = prometheus.query(&expr).await;
        assert_eq!(v["status"], "success", "{what}: `{expr}`: {v}");
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            with_data += 1;
        }
    }
    // The dashboard's panels mostly show something after that traffic.
    assert!(with_data >= 12, "{with_data} expressions had data");
    s.stop().await;
}

/// The Kubernetes example's config.toml is one the proxy accepts.
#[test]
fn the_kubernetes_example_config_loads() {
    let yaml = std::fs::read_to_string(root().join("deploy/kubernetes/sidecar.yaml")).unwrap();
    let start = yaml.find("  config.toml: |\n").unwrap() + "  config.toml: |\n".len();
    let end = start + yaml[start..].find("\n---").unwrap();
    let toml: String = yaml[start..end]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let env = bff_proxy::config::Env::from_pairs([
        ("BFF_OIDC_CLIENT_SECRET", "s3cret"),
        ("BFF_SESSION_KEY", crate::support::KEY),
    ]);
    let config = bff_proxy::config::Config::from_toml(&toml, root(), &env)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.server.drain_delay, Duration::from_secs(5));
    assert!(
        config.proxy_problems().is_empty(),
        "{:?}",
        config.proxy_problems()
    );
}
