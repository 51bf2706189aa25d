//! One front door (hyper engine, pingora engine, or the tower layer in an axum app)
//! with the dev IdP and real upstreams, all on 127.0.0.1:0.

use std::net::SocketAddr;
use std::sync::Arc;

use bff_proxy::Bff;
use bff_proxy::config::Env;
use bff_proxy::devecho::DevEcho;
use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings};
use bff_proxy::engine::lifecycle::Running;
use bff_proxy::pingora::PingoraServer;
use bff_proxy::proxy::ProxyServer;
use bff_proxy::tower::{BffLayer, Session};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpListener;

use super::browser::Browser;
use super::config::TestConfig;

pub use super::{KEY, SECRET};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    Hyper,
    Pingora,
    Axum,
}

pub enum Server {
    Hyper(Running),
    Pingora(Running),
}

impl Server {
    pub async fn shutdown(&self) {
        match self {
            Server::Hyper(s) => s.shutdown().await,
            Server::Pingora(s) => s.shutdown().await,
        }
    }
}

pub struct Stack {
    pub idp: DevIdp,
    pub bff: Arc<Bff>,
    pub base: String,
    pub admin: Option<String>,
    pub server: Option<Server>,
    pub echo: DevEcho,
}

impl Stack {
    pub fn browser(&self) -> Browser {
        Browser::new(&self.base)
    }

    /// host:port of the front door.
    pub fn authority(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    pub async fn stop(self) {
        if let Some(server) = &self.server {
            server.shutdown().await;
        }
        self.idp.shutdown().await;
        self.echo.shutdown().await;
    }
}

/// What a stack is made of beyond the defaults.
#[derive(Default)]
pub struct Options {
    /// BFF_* overrides.
    pub env: Vec<(String, String)>,
    /// The dev IdP (its client list is filled in).
    pub idp: DevIdpSettings,
    /// More routes to the echo upstream (the application behind the layer): path
    /// and setting lines.
    pub routes: Vec<(String, Vec<String>)>,
    /// The public base URL when something stands in front of the BFF (a gateway):
    /// the redirect URIs and `server.public_url` use it.
    pub public_base: Option<String>,
    /// Public routes to upstreams of the test's own (the proxy engines): path and URL.
    pub upstreams: Vec<(String, String)>,
}

impl Options {
    /// Options with this dev IdP.
    pub fn with_idp(idp: DevIdpSettings) -> Self {
        Self {
            idp,
            ..Self::default()
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// One more route to the echo (or the application behind the layer).
    pub fn route(mut self, path: &str, lines: &[&str]) -> Self {
        self.routes.push((
            path.to_owned(),
            lines.iter().map(|l| (*l).to_owned()).collect(),
        ));
        self
    }
}

/// A WebSocket upstream that echoes messages, and reports what the handshake carried
/// as its first message.
pub async fn ws_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = String::new();
                let callback =
                    |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("Bearer "));
                        let cookie = req
                            .headers()
                            .get("cookie")
                            .map(|v| v.to_str().unwrap_or("").to_owned())
                            .unwrap_or_default();
                        seen = format!("bearer={auth} cookie={cookie}");
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                let _ = ws.send(seen.into()).await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    addr
}

/// An upstream that accepts connections and never answers.
pub async fn silent_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// The app behind the tower layer: echoes what reached it, plus the claims the
/// layer handed over.
pub async fn axum_echo(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let stream = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "stream_bytes")
            .and_then(|(_, v)| v.parse::<u64>().ok())
    });
    if let Some(n) = stream {
        return axum::body::Body::new(bff_proxy::devecho::EchoBody::Stream(n)).into_response();
    }
    let claims = req
        .extensions()
        .get::<Session>()
        .and_then(|s| s.claims::<Value>().ok());
    let (parts, _) = req.into_parts();
    let mut answer = bff_proxy::devecho::describe(&parts, 0);
    answer["claims"] = claims.unwrap_or(Value::Null);
    axum::Json(answer).into_response()
}

pub async fn stack(front: Front, env: &[(&str, &str)]) -> Stack {
    let mut options = Options::default();
    for (k, v) in env {
        options = options.env(k, v);
    }
    start(front, options).await
}

pub async fn start(front: Front, options: Options) -> Stack {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let echo = DevEcho::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let public = options.public_base.clone().unwrap_or_else(|| base.clone());
    let mut client = DevClient::new(
        "bff",
        DevClientAuth::SecretBasic(SECRET.into()),
        &format!("{public}/bff/callback"),
    );
    client.post_logout_redirect_uris.push(format!("{public}/"));
    client.backchannel_logout_uri = Some(format!("{base}/bff/backchannel-logout"));
    let idp = DevIdp::start(DevIdpSettings {
        clients: vec![client],
        ..options.idp
    })
    .await
    .unwrap();
    let spa = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/spa");
    let config = TestConfig::new(idp.issuer(), &public)
        .secret(SECRET)
        .set("server", r#"upstream_timeout = "1s""#)
        .set("oidc", format!("post_logout_redirect_uri = \"{public}/\""))
        .set("refresh", r#"timeout = "1s""#);
    let none = r#"auth = "none""#;
    let mut config = config;
    for (path, lines) in &options.routes {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        config = match front {
            Front::Hyper | Front::Pingora => {
                config.upstream(path, &format!("http://{}", echo.addr()), &lines)
            }
            Front::Axum => config.route(path, &lines),
        };
    }
    for (path, url) in &options.upstreams {
        config = config.upstream(path, url, &[none]);
    }
    let config = match front {
        Front::Hyper | Front::Pingora => {
            let echo = format!("http://{}", echo.addr());
            config
                .upstream("/api/", &echo, &[])
                .upstream("/sp/", &format!("{echo}/base"), &["strip_prefix = true"])
                .upstream(
                    "/ws/",
                    &format!("http://{}", ws_upstream().await),
                    &["csrf = false"],
                )
                .upstream("/pub/", &echo, &[none])
                .upstream(
                    "/slow/",
                    &format!("http://{}", silent_upstream().await),
                    &[none],
                )
                .upstream("/down/", "http://127.0.0.1:1", &[none])
                .route("/", &[&format!("static_dir = {spa:?}"), none])
        }
        Front::Axum => config.route("/api/", &[]).route("/pub/", &[none]),
    }
    .load_in(".".as_ref(), &Env::from_pairs(options.env));
    match front {
        Front::Hyper | Front::Pingora => {
            let bff = Arc::new(Bff::new(config).unwrap());
            let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (server, admin) = if front == Front::Hyper {
                // Two worker threads of their own, as the binary runs the engine.
                let server =
                    ProxyServer::start_on_threads(Arc::clone(&bff), listener, Some(admin), 2)
                        .unwrap();
                let admin = server.admin_addr();
                (Server::Hyper(server), admin)
            } else {
                let std_listener = listener.into_std().unwrap();
                let server =
                    PingoraServer::start_with(Arc::clone(&bff), std_listener, Some(admin)).unwrap();
                let admin = server.admin_addr();
                (Server::Pingora(server), admin)
            };
            Stack {
                idp,
                admin: admin.map(|a| format!("http://{a}")),
                bff,
                base,
                server: Some(server),
                echo,
            }
        }
        Front::Axum => {
            let bff = Arc::new(Bff::new(config).unwrap());
            let app = axum::Router::new()
                .fallback(axum_echo)
                .layer(BffLayer::new(Arc::clone(&bff)));
            tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            Stack {
                idp,
                admin: None,
                bff,
                base,
                server: None,
                echo,
            }
        }
    }
}
