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
//! features add the front doors, `dev` the development IdP and echo upstream.
//! ARCHITECTURE.md maps the crate.
//!
//! ```
//! use bff_proxy::seal::KeyRing;
//!
//! // What `bff-proxy keygen` prints: a fresh base64 key for `session.keys`.
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

pub use bff::{Bff, Decision, DoorRequest, Forward, Target, Upstream};
pub use builder::{BffBuilder, RouteSpec};
pub use error::{Error, ErrorKind};
pub use start::StartError;
