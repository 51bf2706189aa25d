//! The smallest complete axum app behind bff-proxy (README "Tower / axum"): the layer
//! runs the login and keeps the tokens; handlers take the user's `Session`.
//!
//! The builder reads its settings from the environment here, as the binary does:
//! BFF_OIDC_ISSUER, BFF_OIDC_CLIENT_ID, BFF_OIDC_CLIENT_SECRET, BFF_SESSION_KEYS
//! (`bff-proxy keygen`) and BFF_SERVER_PUBLIC_URL; LISTEN is the address to serve
//! on. In code they are `.issuer(…)`, `.client_id(…)`, … (examples/axum_router.rs).
//! CI runs it against the dev IdP (tests/layer/example.rs).

use axum::{Router, routing::get};
use bff_proxy::{Bff, axum::Session, tower::BffLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bff = Bff::builder().build().await?;
    let app = Router::new()
        .route("/", get(|| async { "a public page" }))
        .route("/me", get(|s: Session| async move { s.sub().to_owned() }))
        .layer(BffLayer::new(bff));
    let listener = tokio::net::TcpListener::bind(std::env::var("LISTEN")?).await?;
    println!("listening on http://{}", listener.local_addr()?);
    Ok(axum::serve(listener, app).await?)
}
