//! bff-proxy: a backend-for-frontend (BFF) for OAuth 2.0 / OpenID Connect.
//!
//! Single-page apps must not hold OAuth tokens. bff-proxy runs the login
//! (authorization code + PKCE), keeps the tokens server-side in an AES-256-GCM sealed
//! session cookie, refreshes the access token transparently (rotating the refresh
//! token, one refresh at a time however many requests race), and injects
//! `Authorization: Bearer …` into proxied requests. The browser only ever holds an
//! opaque, HttpOnly cookie.
//!
//! The core (this crate without features) knows nothing of tower or pingora; the
//! `tower` and `pingora` features add the front doors.
//!
//! ```
//! use bff_proxy::seal::KeyRing;
//!
//! // What `bff-proxy keygen` prints: a fresh base64 key for `session.keys`.
//! let key = KeyRing::generate_key_base64();
//! assert!(KeyRing::parse_key(&key).is_ok());
//! ```

pub mod bff;
pub mod client_key;
pub mod clock;
pub mod config;
pub mod cookies;
pub mod dev;
pub mod devecho;
pub mod devidp;
pub mod engine;
pub mod error;
mod expiring;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod net;
pub mod oidc;
pub mod paths;
#[cfg(feature = "pingora")]
pub mod pingora;
#[cfg(feature = "tower")]
pub mod proxy;
pub mod random;
pub mod refresh;
pub mod revocation;
pub mod seal;
pub mod session;
pub mod store;
#[cfg(feature = "tower")]
pub mod tower;

pub use bff::{Bff, Decision, Forward, Target};
pub use error::{Error, ErrorKind};
