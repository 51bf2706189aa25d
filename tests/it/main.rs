//! The integration tests, in one binary (the crate, pingora included, is linked
//! once): each module is one suite, `support` is what they share (an HTTP client,
//! a browser jar, the stack builder, the one test key).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod audiences;
mod browser;
mod builder;
mod claims;
mod cli;
mod config_fixtures;
mod core_flow;
mod demo;
mod deploy;
mod devidp;
mod dpop;
mod forward_auth;
mod gateway;
mod hardening;
mod idle;
mod interop;
mod logs;
mod operations;
mod par;
mod proxy;
mod scaleout;
mod sessions;
mod step_up;
mod store;
mod tls;
