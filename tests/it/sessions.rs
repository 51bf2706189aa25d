//! Session management: a user sees their sessions (`GET /bff/sessions`) and ends
//! one (`DELETE /bff/sessions/{sid}`, CSRF header required): its refresh token is
//! revoked at the IdP, its next request is refused. The admin listener's
//! `DELETE /sessions?sub=` ends them all. (Across replicas on Redis:
//! `scaleout.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::Http;
use crate::support::browser::Browser;
use crate::support::stack::{Front, Options, start};

async fn sid_of(b: &Browser) -> String {
    let user = b.api("/bff/user").await;
    assert_eq!(user.status, 200);
    user.json()["session"]["sid"].as_str().unwrap().to_owned()
}

async fn sessions(front: Front) {
    let s = start(front, Options::default()).await;
    let (a, b) = (s.browser(), s.browser());
    assert_eq!(a.api("/bff/sessions").await.status, 401);
    a.login("/").await;
    b.login("/").await;
    let (sid_a, sid_b) = (sid_of(&a).await, sid_of(&b).await);
    assert_ne!(sid_a, sid_b);

    // Both listed, this one marked.
    let listed = a.api("/bff/sessions").await;
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    let list = listed["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{listed}");
    for entry in list {
        assert_eq!(entry["current"], entry["sid"] == sid_a.as_str(), "{listed}");
        assert!(entry["created"].as_u64().unwrap() > 0);
        assert!(entry["last_seen"].as_u64().unwrap() > 0);
        assert!(entry.get("user_agent").is_some());
    }

    // Ending the other one: CSRF first; then 204, its refresh token revoked at
    // the IdP, its next request refused.
    let path = format!("/bff/sessions/{sid_b}");
    assert_eq!(a.request("DELETE", &path, &[]).await.status, 403);
    s.idp.reset_stats();
    let ended = a.request("DELETE", &path, &[("x-csrf", "1")]).await;
    assert_eq!(ended.status, 204, "{}", ended.text());
    assert_eq!(s.idp.stats().revocation, 1);
    assert_eq!(b.api("/api/x").await.status, 401);
    assert_eq!(a.api("/api/x").await.status, 200, "this one lives on");
    assert_eq!(
        a.api("/bff/sessions").await.json()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Unknown or foreign sids: 404.
    assert_eq!(
        a.request("DELETE", &path, &[("x-csrf", "1")]).await.status,
        404
    );
    assert_eq!(
        a.request("DELETE", "/bff/sessions/not-a-sid", &[("x-csrf", "1")])
            .await
            .status,
        404
    );

    // The admin listener ends every session of the user.
    if let Some(admin) = &s.admin {
        let c = s.browser();
        c.login("/").await;
        let req = http::Request::delete(format!("{admin}/sessions?sub=dev-user-1"))
            .body(http_body_util::Full::default())
            .unwrap();
        let r = Http::new().send(req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["ended"], 2);
        assert_eq!(a.api("/api/x").await.status, 401);
        assert_eq!(c.api("/api/x").await.status, 401);
    }
    s.stop().await;
}

#[tokio::test]
async fn sessions_hyper() {
    sessions(Front::Hyper).await;
}

#[tokio::test]
async fn sessions_pingora() {
    sessions(Front::Pingora).await;
}

#[tokio::test]
async fn sessions_tower_layer() {
    sessions(Front::Axum).await;
}
