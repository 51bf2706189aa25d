//! An app that serves public pages and protects only its API: the layer has one
//! route, `/api/`, where it requires a session and the CSRF header and adds the
//! Bearer token; every other path is the app's own, reached by anyone, with the
//! user's session when there is one (`Option<Session>`). The development IdP runs
//! in the example's process.
//!
//! ```text
//! cargo run --example axum_public_pages
//! ```
//!
//! ```text
//! curl -i http://127.0.0.1:3002/                      # the home page, for anyone
//! curl -i http://127.0.0.1:3002/account               # "not signed in", a login link
//! curl -i http://127.0.0.1:3002/api/orders -H 'X-CSRF: 1'   # 401: the API needs a session
//! ```

use axum::Router;
use axum::response::Html;
use axum::routing::{get, post};
use bff_proxy::axum::Session;
use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings};
use bff_proxy::tower::BffLayer;
use bff_proxy::{Bff, RouteSpec};

async fn home() -> Html<&'static str> {
    Html("<h1>Welcome</h1><p>A public page.</p>")
}

/// A page that shows who is signed in, or how to sign in.
async fn account(user: Option<Session>) -> Html<String> {
    Html(match user {
        Some(user) => format!(
            "<p>Signed in as {}.</p><form method=post action=/bff/logout>…</form>",
            user.sub()
        ),
        None => "<p>Not signed in. <a href=/bff/login?returnUrl=/account>Sign in</a></p>".into(),
    })
}

/// The API: only reached with a session and the CSRF header (the layer's rule).
async fn orders(user: Session) -> String {
    format!("[] (no orders yet for {})\n", user.sub())
}

async fn place_order(user: Session) -> String {
    format!("order placed for {}\n", user.sub())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The development IdP, for this example only.
    let idp = DevIdp::start(DevIdpSettings {
        listen: ([127, 0, 0, 1], 9011).into(),
        clients: vec![DevClient::new(
            "pages-example",
            DevClientAuth::SecretBasic("example-secret".into()),
            "http://127.0.0.1:3002/bff/callback",
        )],
        ..DevIdpSettings::default()
    })
    .await?;

    let bff = Bff::builder()
        .issuer(idp.issuer())
        .client_id("pages-example")
        .client_secret("example-secret") // in production: "env:CLIENT_SECRET"
        .keys(["OJ93qw7Rc7dtI57AzcCR4saMKU2nWxH7AkKBxSA0LrE="]) // example only: `bff-proxy keygen`
        .public_url("http://127.0.0.1:3002")
        .route(RouteSpec::new("/api/").set("methods", vec!["GET", "POST"]))
        .build()
        .await?;
    let app = Router::new()
        .route("/", get(home))
        .route("/account", get(account))
        .route("/api/orders", get(orders).post(place_order))
        .route("/contact", post(|| async { "thanks: a public form\n" }))
        .layer(BffLayer::new(bff));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
    println!("listening on http://127.0.0.1:3002");
    axum::serve(listener, app).await?;
    Ok(())
}
