//! A real nginx (Debian's, with `auth_request`) in front of an upstream, with
//! bff-proxy as its auth service (`GET /bff/auth`): the README's "Forward-auth"
//! nginx configuration, run. Login goes through nginx to the BFF's own endpoints;
//! every other request is asked about, and passes with the Bearer and the identity
//! headers nginx copies from the answer. Then `session.mode = "server"` behind an
//! nginx that does not pass `Set-Cookie` at all: the session lives on through three
//! refreshes, its cookie never changing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use bff_proxy::devidp::{DevIdpSettings, DevUser};
use serde_json::json;

use crate::support::browser::Browser;
use crate::support::stack::{Front, Options, Stack, start};
use crate::support::{Http, free_port};

/// The nginx of the README's "Forward-auth" section, with the BFF at `bff` and
/// the application at `app`; `pass_set_cookie = false` leaves out the line that
/// hands the refreshed cookie to the browser.
fn nginx_conf(
    dir: &std::path::Path,
    port: u16,
    bff: &str,
    app: &str,
    pass_set_cookie: bool,
) -> String {
    let set_cookie = if pass_set_cookie {
        "add_header Set-Cookie $auth_cookie;"
    } else {
        "# (Set-Cookie not passed)"
    };
    let dir = dir.display();
    format!(
        r#"
worker_processes 1;
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir};
  proxy_temp_path {dir};
  server {{
    listen 127.0.0.1:{port};

    # The BFF's own endpoints (login, callback, user, logout).
    location /bff/ {{
      proxy_pass http://{bff};
    }}

    # The question to the BFF: the original method and URI, the request's headers
    # (its cookies, its CSRF header), no body.
    location = /_bff_auth {{
      internal;
      proxy_pass http://{bff}/bff/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Uri $request_uri;
    }}

    location / {{
      auth_request /_bff_auth;
      auth_request_set $auth_authorization $upstream_http_authorization;
      auth_request_set $auth_user $upstream_http_x_user;
      auth_request_set $auth_cookie $upstream_http_set_cookie;
      auth_request_set $auth_location $upstream_http_location;
      # Set here, so a client's own copies never reach the application.
      proxy_set_header Authorization $auth_authorization;
      proxy_set_header X-User $auth_user;
      {set_cookie}
      error_page 401 = @bff_login;
      proxy_pass http://{app};
    }}

    # A navigation without a session: to the login URL the BFF named.
    location @bff_login {{
      if ($auth_location) {{
        return 302 $auth_location;
      }}
      return 401;
    }}
  }}
}}
"#
    )
}

struct Nginx {
    /// Killed when dropped.
    _child: tokio::process::Child,
    base: String,
}

impl Nginx {
    async fn start(dir: &std::path::Path, port: u16, conf: &str) -> Self {
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|p| std::process::Command::new(p).arg("-v").output().is_ok())
            .expect("nginx is needed (scripts/setup installs it)");
        let mut child = tokio::process::Command::new(nginx)
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx ended ({status}) before it listened on {port}: {}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

async fn behind_nginx(mode: &str, pass_set_cookie: bool) -> (Stack, Nginx, tempfile::TempDir) {
    let port = free_port();
    let mut user = DevUser::default();
    user.claims.insert("groups".into(), json!(["staff"]));
    let options = Options {
        public_base: Some(format!("http://127.0.0.1:{port}")),
        ..Options::with_idp(DevIdpSettings {
            user,
            ..DevIdpSettings::default()
        })
    }
    .env("BFF_FORWARD_AUTH_ENABLED", "true")
    .env("BFF_SESSION_MODE", mode)
    .route("/app/", &[r#"identity_headers = { "X-User" = "sub" }"#]);
    let s = start(Front::Hyper, options).await;
    let dir = tempfile::tempdir().unwrap();
    let conf = nginx_conf(
        dir.path(),
        port,
        &s.authority(),
        &s.echo.addr().to_string(),
        pass_set_cookie,
    );
    let nginx = Nginx::start(dir.path(), port, &conf).await;
    (s, nginx, dir)
}

#[tokio::test]
async fn nginx_auth_request_in_front_of_an_upstream() {
    let (s, nginx, _dir) = behind_nginx("cookie", true).await;
    let b = Browser::new(&nginx.base);

    // A navigation without a session goes to the login URL; an API call gets 401.
    let page = b
        .request("GET", "/app/home", &[("sec-fetch-mode", "navigate")])
        .await;
    assert_eq!(page.status, 302);
    // (nginx makes the BFF's relative Location absolute.)
    assert_eq!(
        page.headers["location"],
        format!("{}/bff/login?returnUrl=%2Fapp%2Fhome", nginx.base).as_str()
    );
    assert_eq!(b.api("/app/orders").await.status, 401);

    b.login("/").await;
    // The upstream gets the Bearer and the identity header; the client's own
    // X-User and Authorization never arrive.
    let seen = b
        .request(
            "GET",
            "/app/orders",
            &[
                ("x-csrf", "1"),
                ("x-user", "forged"),
                ("authorization", "Bearer forged"),
            ],
        )
        .await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let seen = seen.json();
    assert_eq!(seen["headers"]["x-user"], "dev-user-1");
    assert!(seen["bearer"]["claims"]["sub"] == "dev-user-1", "{seen}");
    // A CSRF-less API call is refused.
    assert_eq!(b.request("GET", "/app/orders", &[]).await.status, 403);

    // After expiry: refreshed, and the rotated cookie reaches the browser.
    s.bff.clock().advance(Duration::from_secs(290));
    let before = b.jar().header();
    let after = b.api("/app/orders").await;
    assert_eq!(after.status, 200);
    assert!(
        after.headers.get("set-cookie").is_some(),
        "nginx passed the cookie on"
    );
    assert_ne!(b.jar().header(), before);
    assert_eq!(b.api("/app/orders").await.status, 200);

    // A storm of 100 concurrent requests after expiry: one token request.
    s.bff.clock().advance(Duration::from_secs(290));
    s.idp.reset_stats();
    let http = Http::new();
    let cookie = b.jar().header().unwrap();
    let storm: Vec<_> = (0..100)
        .map(|_| {
            let (http, cookie, url) = (
                http.clone(),
                cookie.clone(),
                format!("{}/app/storm", nginx.base),
            );
            tokio::spawn(async move {
                let req = http::Request::get(url)
                    .header("cookie", cookie)
                    .header("x-csrf", "1")
                    .body(http_body_util::Full::default())
                    .unwrap();
                http.send(req).await
            })
        })
        .collect();
    let mut rotated = None;
    for r in storm {
        let reply = r.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        rotated = rotated.or_else(|| reply.headers.get("set-cookie").cloned());
    }
    assert_eq!(
        s.idp.stats().token_refresh,
        1,
        "one token request for the storm"
    );
    b.jar.lock().unwrap().apply(&{
        let mut h = http::HeaderMap::new();
        h.insert("set-cookie", rotated.expect("the rotated cookie came back"));
        h
    });
    assert_eq!(b.api("/app/orders").await.status, 200);

    // Logout through nginx ends the session.
    let out = b.request("POST", "/bff/logout", &[("x-csrf", "1")]).await;
    assert!(out.status.is_redirection(), "{}", out.status);
    assert_eq!(b.api("/app/orders").await.status, 401);
    drop(nginx);
    s.stop().await;
}

/// Server-side sessions behind a gateway that drops `Set-Cookie`: the cookie is a
/// handle that never changes, the store holds the rotated tokens.
#[tokio::test]
async fn nginx_without_set_cookie_and_server_sessions() {
    let (s, nginx, _dir) = behind_nginx("server", false).await;
    let b = Browser::new(&nginx.base);
    b.login("/").await;
    let cookie = b.jar().header();
    s.idp.reset_stats();
    for cycle in 1..=3 {
        s.bff.clock().advance(Duration::from_secs(290));
        let r = b.api("/app/orders").await;
        assert_eq!(r.status, 200, "cycle {cycle}: {}", r.text());
        assert!(
            r.headers.get("set-cookie").is_none(),
            "nginx passes no Set-Cookie"
        );
        assert_eq!(
            s.idp.stats().token_refresh,
            cycle,
            "refreshed in cycle {cycle}"
        );
    }
    assert_eq!(
        b.jar().header(),
        cookie,
        "the browser's cookie never changed"
    );
    assert_eq!(b.api("/app/orders").await.status, 200, "still alive");
    drop(nginx);
    s.stop().await;
}

/// Why: cookie sessions behind a gateway that drops `Set-Cookie` lose the rotated
/// token, and once the grace window is over the old cookie is a replay (the
/// oauth2-proxy failure this mode exists for). The README says to use
/// `session.mode = "server"` there.
#[tokio::test]
async fn nginx_without_set_cookie_loses_cookie_sessions() {
    let (s, nginx, _dir) = behind_nginx("cookie", false).await;
    let b = Browser::new(&nginx.base);
    b.login("/").await;
    s.bff.clock().advance(Duration::from_secs(290));
    assert_eq!(b.api("/app/orders").await.status, 200, "refreshed");
    s.bff.clock().advance(Duration::from_secs(290));
    assert_eq!(
        b.api("/app/orders").await.status,
        401,
        "the browser still sends the cookie of the rotated token"
    );
    drop(nginx);
    s.stop().await;
}
