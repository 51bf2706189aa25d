//! bff-proxy: a backend-for-frontend (BFF) for OAuth 2.0 / OpenID Connect.
//!
//! Single-page apps must not hold OAuth tokens. bff-proxy runs the login
//! (authorization code + PKCE), keeps the tokens server-side in an AES-256-GCM sealed
//! session cookie, refreshes the access token transparently (rotating the refresh
//! token, one refresh at a time however many requests race), and injects
//! `Authorization: Bearer …` into proxied requests. The browser only ever holds an
//! opaque, HttpOnly cookie.
//!
//! The core ([`Bff`]) knows nothing of tower or pingora; the `tower` and `pingora`
//! features add the front doors, `axum` the extractor and admin router, `dev` the
//! development IdP and echo upstream. ARCHITECTURE.md maps the crate.
//!
//! In an axum app (`bff-proxy = { default-features = false, features = ["tower",
//! "axum"] }`): the layer answers `/bff/login`, `/bff/callback`, `/bff/logout`…,
//! keeps the tokens, and hands handlers the user's [`axum::Session`]; paths with
//! no route pass to the app, `/api/` here gets the rules of a route (a session and
//! the CSRF header, the Bearer token added):
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use bff_proxy::{Bff, RouteSpec, axum::Session, tower::BffLayer};
//!
//! let bff = Bff::builder()
//!     .issuer("https://idp.example.com")
//!     .client_id("spa")
//!     .client_secret("env:CLIENT_SECRET")
//!     .keys(["env:SESSION_KEY"]) // `bff-proxy keygen`
//!     .public_url("https://app.example.com")
//!     .route(RouteSpec::new("/api/"))
//!     .build()
//!     .await?;
//! let app = Router::new()
//!     .route("/", get(|user: Option<Session>| async move { format!("{:?}", user.map(|u| u.sub().to_owned())) }))
//!     .route("/api/me", get(|user: Session| async move { user.sub().to_owned() }))
//!     .layer(BffLayer::new(bff.clone()));
//! let admin: Router = bff.admin_router(); // /metrics, /healthz, /readyz
//! axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app).await?;
//! # let _ = admin;
//! # Ok(())
//! # }
//! ```
//!
//! Keys for `session.keys`:
//!
//! ```
//! use bff_proxy::seal::KeyRing;
//!
//! // What `bff-proxy keygen` prints: a fresh base64 key.
//! let key = KeyRing::generate_key_base64();
//! assert!(KeyRing::parse_key(&key).is_ok());
//! ```

// The core and what it is made of.
mod bff;
mod builder;
mod client_key;
#[cfg(feature = "test-util")]
pub mod clock;
#[cfg(not(feature = "test-util"))]
mod clock;
pub mod config;
#[cfg(feature = "test-util")]
pub mod cookies;
#[cfg(not(feature = "test-util"))]
mod cookies;
pub mod dpop;
mod endpoints;
pub mod error;
mod expiring;
mod login;
pub mod metrics;
mod net;
mod oidc;
mod paths;
mod random;
mod refresh;
mod revocation;
mod schema;
pub mod seal;
#[cfg(feature = "test-util")]
pub mod session;
#[cfg(not(feature = "test-util"))]
mod session;
mod start;
pub mod store;

// What the front doors share, and the doors.
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(any(feature = "tower", feature = "pingora"))]
pub mod engine;
#[cfg(feature = "pingora")]
pub mod pingora;
#[cfg(feature = "tower")]
pub mod proxy;
#[cfg(feature = "tower")]
pub mod tower;

// Operations and development.
#[cfg(feature = "dev")]
pub mod dev;
#[cfg(feature = "dev")]
pub mod devecho;
#[cfg(feature = "dev")]
pub mod devidp;
#[cfg(feature = "dev")]
mod devstate;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod logging;
pub mod tls;

pub use bff::{Bff, Decision, DoorRequest, Forward, ReloadError, Target, Upstream};
pub use builder::{BffBuilder, RouteSpec};
pub use error::{Error, ErrorKind};
pub use start::StartError;
