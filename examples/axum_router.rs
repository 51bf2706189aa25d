//! An axum app protected by bff-proxy's tower layer.
//!
//! ```text
//! cargo run --example axum_router
//! ```
//!
//! Then, in a browser, open <http://127.0.0.1:3000/bff/login?returnUrl=/api/me>: the
//! development IdP logs you in and `/api/me` shows what the app received. Or:
//!
//! ```text
//! curl -i http://127.0.0.1:3000/api/me -H 'X-CSRF: 1'    # 401: no session
//! curl -i http://127.0.0.1:3000/api/me                   # 403: no CSRF header
//! curl -i http://127.0.0.1:3000/hello                    # not a route: passes to the app
//! ```

use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Json, Router};
use bff_proxy::config::{Config, Env};
use bff_proxy::dev::DevServices;
use bff_proxy::tower::{BffLayer, BffSession};
use http::HeaderMap;
use serde_json::{Value, json};

/// What the app sees: the claims the layer hands over, and that a Bearer token came.
async fn me(Extension(session): Extension<BffSession>, headers: HeaderMap) -> Json<Value> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    Json(json!({ "claims": session.claims(), "bearer_token_received": bearer }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/axum.toml");
    let config = Config::load(&path, &Env::from_process())?;
    let _dev = DevServices::start(&config).await?; // the dev IdP, for this example only
    let listen = config.server.listen;

    // The few lines that matter: the BFF core, and its layer over the router.
    let bff = Arc::new(bff_proxy::Bff::new(config)?.pass_unmatched());
    let app = Router::new()
        .route("/api/me", get(me))
        .route("/hello", get(|| async { "hello, anyone" }))
        .layer(BffLayer::new(bff));

    println!("listening on http://{listen}");
    axum::serve(tokio::net::TcpListener::bind(listen).await?, app).await?;
    Ok(())
}
