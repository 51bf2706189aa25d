//! `Bff::builder()`: the settings of config.toml in code, validated by the same code.

use bff_proxy::{Bff, Decision, RouteSpec, StartError};
use http::Request;

use crate::support::KEY;

fn complete() -> bff_proxy::BffBuilder {
    Bff::builder()
        .issuer("https://idp.example.com")
        .client_id("spa")
        .client_secret("s3cret")
        .keys([KEY])
        .public_url("https://app.example.com")
        .route(RouteSpec::new("/api/").upstream("http://127.0.0.1:9"))
}

#[tokio::test]
async fn a_bff_built_in_code_works_like_one_from_a_file() {
    let bff = complete().build().await.unwrap();
    assert_eq!(
        bff.config().resolved.redirect_uri.as_str(),
        "https://app.example.com/bff/callback"
    );
    let (parts, ()) = Request::get("/api/items")
        .header("x-csrf", "1")
        .body(())
        .unwrap()
        .into_parts();
    match bff.handle(&parts, None).await {
        Decision::Respond(r) => assert_eq!(r.status(), 401),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn public_url_is_required_in_code() {
    let err = Bff::builder()
        .issuer("https://idp.example.com")
        .client_id("spa")
        .client_secret("s3cret")
        .keys([KEY])
        .build()
        .await
        .unwrap_err();
    assert!(err.is_bad_setting());
    assert!(err.to_string().starts_with("server.public_url:"), "{err}");
}

async fn problem_paths(builder: bff_proxy::BffBuilder) -> Vec<String> {
    let err = builder.build().await.unwrap_err();
    assert!(err.is_bad_setting(), "{err:?}");
    let StartError::Config(e) = &err else {
        panic!("{err:?}")
    };
    e.problems.iter().map(|p| p.path.clone()).collect()
}

#[tokio::test]
async fn problems_name_the_setting_as_the_file_would() {
    let paths = problem_paths(complete().keys(["not a key"])).await;
    assert_eq!(paths, ["session.keys[0]"]);
    let paths = problem_paths(complete().set("refresh.skew", "soon")).await;
    assert_eq!(paths, ["refresh.skew"]);
    let paths =
        problem_paths(complete().route(RouteSpec::new("/bff/x").upstream("http://127.0.0.1:9")))
            .await;
    assert_eq!(paths, ["routes[1].path"]);
}
