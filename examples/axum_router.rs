//! An axum app protected by bff-proxy's tower layer, configured in code: the
//! builder, a route with rules, typed claims, optional sessions, the admin router.
//! The development IdP runs in the example's process.
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
//! curl -i http://127.0.0.1:3001/readyz                   # the admin router
//! ```

use axum::routing::get;
use axum::{Json, Router};
use bff_proxy::axum::Session;
use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings};
use bff_proxy::tower::BffLayer;
use bff_proxy::{Bff, RouteSpec};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

/// The claims this app uses, typed.
#[derive(Deserialize)]
struct Claims {
    name: String,
    email: String,
}

/// On the `/api/` route: the layer has checked the session and CSRF, refreshed the
/// tokens when needed, and added the Bearer token.
async fn me(session: Session, headers: HeaderMap) -> Result<Json<Value>, StatusCode> {
    let claims: Claims = session
        .claims()
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "));
    let expires = session
        .access_token_expires_at()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Json(json!({
        "sub": session.sub(),
        "name": claims.name,
        "email": claims.email,
        "access_token_expires_at": expires,
        "bearer_token_received": bearer,
    })))
}

/// Not a route: anyone gets here; a signed-in user is recognised.
async fn hello(user: Option<Session>) -> String {
    match user {
        Some(user) => format!("hello, {}\n", user.sub()),
        None => "hello, anyone\n".to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The development IdP, for this example only.
    let idp = DevIdp::start(DevIdpSettings {
        listen: ([127, 0, 0, 1], 9010).into(),
        clients: vec![DevClient::new(
            "axum-example",
            DevClientAuth::SecretBasic("example-secret".into()),
            "http://127.0.0.1:3000/bff/callback",
        )],
        ..DevIdpSettings::default()
    })
    .await?;

    let bff = Bff::builder()
        .issuer(idp.issuer())
        .client_id("axum-example")
        .client_secret("example-secret") // in production: "env:CLIENT_SECRET"
        .keys(["OJ93qw7Rc7dtI57AzcCR4saMKU2nWxH7AkKBxSA0LrE="]) // example only: `bff-proxy keygen`
        .public_url("http://127.0.0.1:3000")
        .set("oidc.scopes", vec!["openid", "profile", "offline_access"])
        // Rules only where the app wants them: a session and the CSRF header.
        .route(RouteSpec::new("/api/"))
        .build()
        .await?;
    let app = Router::new()
        .route("/api/me", get(me))
        .route("/hello", get(hello))
        .layer(BffLayer::new(bff.clone()));

    let admin = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    tokio::spawn(async move { axum::serve(admin, bff.admin_router::<()>()).await });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://127.0.0.1:3000 (admin: http://127.0.0.1:3001)");
    axum::serve(listener, app).await?;
    Ok(())
}
