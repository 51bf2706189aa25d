//! The embedded development IdP, driven over HTTP with a plain client (not through the
//! proxy): each refresh-token semantic, PKCE, client authentication, fault injection,
//! counters, key rotation, revocation and logout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::support::{Http, Reply, jwt_claims, jwt_header, pkce};
use bff_proxy::devidp::{DevClient, DevClientAuth, DevIdp, DevIdpSettings, RefreshPolicy};
use serde_json::Value;

const CLIENT: &str = "bff";
const SECRET: &str = "s3cret with spaces & symbols";
const REDIRECT: &str = "http://127.0.0.1:1/bff/callback";

async fn idp_with(policy: RefreshPolicy) -> DevIdp {
    let mut settings = DevIdpSettings {
        refresh: policy,
        ..DevIdpSettings::default()
    };
    settings.clients.push(DevClient::new(
        CLIENT,
        DevClientAuth::SecretBasic(SECRET.into()),
        REDIRECT,
    ));
    DevIdp::start(settings).await.unwrap()
}

/// Logs in through authorize + token; returns the token response.
async fn login(http: &Http, idp: &DevIdp) -> Value {
    let code = authorize(http, idp, CLIENT).await;
    let reply = exchange(http, idp, &code.0, &code.1).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Runs the authorization request; returns (code, verifier).
async fn authorize(http: &Http, idp: &DevIdp, client_id: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let url = authorize_url(idp, client_id, &challenge, "openid profile offline_access");
    let reply = http.get(&url).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let loc = reply.location();
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], idp.issuer());
    (q["code"].clone(), verifier)
}

fn authorize_url(idp: &DevIdp, client_id: &str, challenge: &str, scope: &str) -> String {
    let mut url = url::Url::parse(&format!("{}/authorize", idp.issuer())).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", "st-1")
        .append_pair("nonce", "n-1")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    url.to_string()
}

async fn exchange(http: &Http, idp: &DevIdp, code: &str, verifier: &str) -> Reply {
    http.post_form(
        &format!("{}/token", idp.issuer()),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
        Some((CLIENT, SECRET)),
    )
    .await
}

async fn refresh(http: &Http, idp: &DevIdp, token: &str) -> Reply {
    http.post_form(
        &format!("{}/token", idp.issuer()),
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
        Some((CLIENT, SECRET)),
    )
    .await
}

fn rt(v: &Value) -> String {
    v["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn discovery_and_jwks_describe_the_provider() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let d = http
        .get(&format!(
            "{}/.well-known/openid-configuration",
            idp.issuer()
        ))
        .await
        .json();
    assert_eq!(d["issuer"], idp.issuer());
    for k in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "end_session_endpoint",
    ] {
        assert!(d[k].as_str().unwrap().starts_with(idp.issuer()), "{k}");
    }
    assert_eq!(d["code_challenge_methods_supported"][0], "S256");
    let jwks = http.get(d["jwks_uri"].as_str().unwrap()).await.json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    let stats = idp.stats();
    assert_eq!((stats.discovery, stats.jwks), (1, 1));
    idp.shutdown().await;
}

#[tokio::test]
async fn login_issues_signed_tokens_that_verify_with_the_jwks() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let tokens = login(&http, &idp).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 300);
    let id_token = tokens["id_token"].as_str().unwrap();
    let jwks = http.get(&format!("{}/jwks", idp.issuer())).await.json();
    let key = &jwks["keys"][0];
    assert_eq!(jwt_header(id_token)["kid"], key["kid"]);
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[CLIENT]);
    validation.set_issuer(&[idp.issuer()]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &decoding, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["sub"], "dev-user-1");
    assert!(claims["sid"].is_string());
    let access = tokens["access_token"].as_str().unwrap();
    jsonwebtoken::decode::<Value>(access, &decoding, &validation).unwrap();
    idp.shutdown().await;
}

#[tokio::test]
async fn rotation_returns_a_new_token_and_the_old_one_then_fails() {
    // Reuse detection off, to see the plain rotation rule on its own.
    let idp = idp_with(RefreshPolicy {
        reuse_detection: false,
        ..RefreshPolicy::default()
    })
    .await;
    let http = Http::new();
    let first = rt(&login(&http, &idp).await);
    let reply = refresh(&http, &idp, &first).await;
    assert_eq!(reply.status, 200);
    let second = rt(&reply.json());
    assert_ne!(first, second);
    let again = refresh(&http, &idp, &first).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.oauth_error(), "invalid_grant");
    // Without reuse detection the newest token still works.
    assert_eq!(refresh(&http, &idp, &second).await.status, 200);
    idp.shutdown().await;
}

#[tokio::test]
async fn within_the_grace_window_the_old_token_still_works_and_after_it_reuse_revokes_the_family() {
    let idp = idp_with(RefreshPolicy {
        grace: Duration::from_secs(30),
        ..RefreshPolicy::default()
    })
    .await;
    let http = Http::new();
    let first = rt(&login(&http, &idp).await);
    let second = rt(&refresh(&http, &idp, &first).await.json());
    idp.advance_clock(Duration::from_secs(20));
    let in_grace = refresh(&http, &idp, &first).await;
    assert_eq!(in_grace.status, 200, "{}", in_grace.text());
    let third = rt(&in_grace.json());

    idp.advance_clock(Duration::from_secs(11)); // 31 s after the rotation
    let late = refresh(&http, &idp, &first).await;
    assert_eq!(late.oauth_error(), "invalid_grant");
    assert_eq!(idp.stats().reuse_detected, 1);
    // The whole family is revoked: the newest tokens fail too.
    assert_eq!(
        refresh(&http, &idp, &second).await.oauth_error(),
        "invalid_grant"
    );
    assert_eq!(
        refresh(&http, &idp, &third).await.oauth_error(),
        "invalid_grant"
    );
    assert_eq!(idp.stats().families_revoked, 1);
    idp.shutdown().await;
}

#[tokio::test]
async fn reuse_without_grace_revokes_the_family_at_once() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let first = rt(&login(&http, &idp).await);
    let second = rt(&refresh(&http, &idp, &first).await.json());
    assert_eq!(
        refresh(&http, &idp, &first).await.oauth_error(),
        "invalid_grant"
    );
    assert_eq!(
        refresh(&http, &idp, &second).await.oauth_error(),
        "invalid_grant"
    );
    let stats = idp.stats();
    assert_eq!((stats.reuse_detected, stats.families_revoked), (1, 1));
    assert_eq!((stats.refresh_ok, stats.refresh_invalid_grant), (1, 2));
    idp.shutdown().await;
}

#[tokio::test]
async fn two_concurrent_refreshes_with_one_token_give_one_success_and_revoke_the_family() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let token = rt(&login(&http, &idp).await);
    let (a, b) = tokio::join!(refresh(&http, &idp, &token), refresh(&http, &idp, &token));
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400]);
    let (ok, failed) = if a.status == 200 { (a, b) } else { (b, a) };
    assert_eq!(failed.oauth_error(), "invalid_grant");
    // The winner's new token is dead too: the race logged the user out.
    let winner = rt(&ok.json());
    assert_eq!(
        refresh(&http, &idp, &winner).await.oauth_error(),
        "invalid_grant"
    );
    assert_eq!(idp.stats().families_revoked, 1);
    idp.shutdown().await;
}

#[tokio::test]
async fn without_rotation_the_same_token_or_none_comes_back() {
    let idp = idp_with(RefreshPolicy {
        rotate: false,
        ..RefreshPolicy::default()
    })
    .await;
    let http = Http::new();
    let token = rt(&login(&http, &idp).await);
    for _ in 0..3 {
        let reply = refresh(&http, &idp, &token).await.json();
        assert_eq!(rt(&reply), token);
    }
    idp.set_refresh_policy(RefreshPolicy {
        rotate: false,
        return_unrotated: false,
        ..RefreshPolicy::default()
    });
    let reply = refresh(&http, &idp, &token).await.json();
    assert!(reply.get("refresh_token").is_none(), "{reply}");
    assert!(reply["access_token"].is_string());
    assert_eq!(refresh(&http, &idp, &token).await.status, 200);
    idp.shutdown().await;
}

#[tokio::test]
async fn the_rolling_maximum_lifetime_ends_refreshing() {
    let idp = idp_with(RefreshPolicy {
        max_lifetime: Some(Duration::from_secs(3600)),
        ..RefreshPolicy::default()
    })
    .await;
    let http = Http::new();
    let mut token = rt(&login(&http, &idp).await);
    for _ in 0..3 {
        idp.advance_clock(Duration::from_secs(1000));
        let reply = refresh(&http, &idp, &token).await;
        assert_eq!(reply.status, 200);
        token = rt(&reply.json());
    }
    idp.advance_clock(Duration::from_secs(601)); // 3601 s after login
    let reply = refresh(&http, &idp, &token).await;
    assert_eq!(reply.oauth_error(), "invalid_grant");
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("maximum lifetime")
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn each_refresh_token_expires_after_its_own_lifetime() {
    let idp = idp_with(RefreshPolicy {
        token_lifetime: Some(Duration::from_secs(600)),
        ..RefreshPolicy::default()
    })
    .await;
    let http = Http::new();
    let token = rt(&login(&http, &idp).await);
    idp.advance_clock(Duration::from_secs(500));
    let fresh = rt(&refresh(&http, &idp, &token).await.json());
    idp.advance_clock(Duration::from_secs(500)); // the new one is 500 s old: fine
    let newer = rt(&refresh(&http, &idp, &fresh).await.json());
    idp.advance_clock(Duration::from_secs(601));
    assert_eq!(
        refresh(&http, &idp, &newer).await.oauth_error(),
        "invalid_grant"
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn the_maximum_refresh_count_ends_refreshing() {
    let idp = idp_with(RefreshPolicy {
        max_refreshes: Some(2),
        ..RefreshPolicy::default()
    })
    .await;
    let http = Http::new();
    let mut token = rt(&login(&http, &idp).await);
    for _ in 0..2 {
        let reply = refresh(&http, &idp, &token).await;
        assert_eq!(reply.status, 200);
        token = rt(&reply.json());
    }
    let reply = refresh(&http, &idp, &token).await;
    assert_eq!(reply.oauth_error(), "invalid_grant");
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("refreshes")
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn narrower_scope_on_refresh_is_granted_and_wider_is_refused() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let token = rt(&login(&http, &idp).await);
    let url = format!("{}/token", idp.issuer());
    let narrow = http
        .post_form(
            &url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &token),
                ("scope", "openid offline_access"),
            ],
            Some((CLIENT, SECRET)),
        )
        .await;
    assert_eq!(narrow.status, 200);
    let narrow = narrow.json();
    assert_eq!(narrow["scope"], "openid offline_access");
    assert_eq!(
        jwt_claims(narrow["access_token"].as_str().unwrap())["scope"],
        "openid offline_access"
    );
    let wide = http
        .post_form(
            &url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt(&narrow)),
                ("scope", "openid admin"),
            ],
            Some((CLIENT, SECRET)),
        )
        .await;
    assert_eq!(
        (wide.status.as_u16(), wide.oauth_error().as_str()),
        (400, "invalid_scope")
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn pkce_mismatch_and_a_replayed_code_are_refused() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let (code, _verifier) = authorize(&http, &idp, CLIENT).await;
    let (other_verifier, _) = pkce();
    let reply = exchange(&http, &idp, &code, &other_verifier).await;
    assert_eq!(
        (reply.status.as_u16(), reply.oauth_error().as_str()),
        (400, "invalid_grant")
    );

    let (code, verifier) = authorize(&http, &idp, CLIENT).await;
    let first = exchange(&http, &idp, &code, &verifier).await;
    assert_eq!(first.status, 200);
    let replay = exchange(&http, &idp, &code, &verifier).await;
    assert_eq!(replay.oauth_error(), "invalid_grant");
    // The replay revoked what the code issued.
    assert_eq!(
        refresh(&http, &idp, &rt(&first.json())).await.oauth_error(),
        "invalid_grant"
    );

    // PKCE is required at the authorization request.
    let url = authorize_url(&idp, CLIENT, "", "openid").replace("code_challenge=&", "");
    let reply = http.get(&url).await;
    let q: std::collections::HashMap<_, _> = reply.location().query_pairs().into_owned().collect();
    assert_eq!(q["error"], "invalid_request");
    idp.shutdown().await;
}

#[tokio::test]
async fn authorization_errors_go_back_to_the_client_or_are_shown() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    // Unknown client: shown, not redirected.
    let (_, challenge) = pkce();
    let reply = http
        .get(&authorize_url(&idp, "nobody", &challenge, "openid"))
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.headers.get("location").is_none());
    // A refusal on request comes back as error= with the state.
    idp.deny_next_authorization("access_denied");
    let reply = http
        .get(&authorize_url(&idp, CLIENT, &challenge, "openid"))
        .await;
    let q: std::collections::HashMap<_, _> = reply.location().query_pairs().into_owned().collect();
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "st-1")
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn the_login_form_is_shown_when_asked_and_posting_it_logs_in() {
    let mut settings = DevIdpSettings {
        login_form: true,
        ..DevIdpSettings::default()
    };
    settings.clients.push(DevClient::new(
        CLIENT,
        DevClientAuth::SecretBasic(SECRET.into()),
        REDIRECT,
    ));
    let idp = DevIdp::start(settings).await.unwrap();
    let http = Http::new();
    let (_, challenge) = pkce();
    let url = authorize_url(&idp, CLIENT, &challenge, "openid");
    let page = http.get(&url).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text()
            .contains("<form method=\"post\" action=\"/authorize\">")
    );
    let query: Vec<(String, String)> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let mut pairs: Vec<(&str, &str)> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.push(("username", "dev"));
    let reply = http
        .post_form(&format!("{}/authorize", idp.issuer()), &pairs, None)
        .await;
    assert_eq!(reply.status, 302);
    assert!(reply.location().query_pairs().any(|(k, _)| k == "code"));
    idp.shutdown().await;
}

/// Each client authentication method succeeds with the right credentials and fails
/// with wrong ones.
#[tokio::test]
async fn every_client_authentication_method() {
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let public_pem = rsa_key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let private_pem = rsa_key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let other_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let other_pem = other_key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();

    let settings = DevIdpSettings {
        clients: vec![
            DevClient::new(
                "basic",
                DevClientAuth::SecretBasic("b-secret".into()),
                REDIRECT,
            ),
            DevClient::new(
                "post",
                DevClientAuth::SecretPost("p-secret".into()),
                REDIRECT,
            ),
            DevClient::new(
                "jwt",
                DevClientAuth::PrivateKeyJwt {
                    public_key_pem: public_pem,
                },
                REDIRECT,
            ),
            DevClient::new("public", DevClientAuth::None, REDIRECT),
        ],
        ..DevIdpSettings::default()
    };
    let idp = DevIdp::start(settings).await.unwrap();
    let http = Http::new();
    let token_url = format!("{}/token", idp.issuer());

    // Each case: (client, extra form pairs, basic credentials) → expected status.
    async fn try_code(
        http: &Http,
        idp: &DevIdp,
        client: &str,
        extra: Vec<(String, String)>,
        basic: Option<(&str, &str)>,
    ) -> Reply {
        let (code, verifier) = authorize(http, idp, client).await;
        let mut pairs: Vec<(String, String)> = vec![
            ("grant_type".into(), "authorization_code".into()),
            ("code".into(), code),
            ("redirect_uri".into(), REDIRECT.into()),
            ("code_verifier".into(), verifier),
        ];
        pairs.extend(extra);
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http.post_form(&format!("{}/token", idp.issuer()), &pairs, basic)
            .await
    }
    let s = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let assertion = |pem: &str, jti: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({"iss": "jwt", "sub": "jwt", "aud": token_url, "iat": now, "exp": now + 60, "jti": jti});
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .unwrap()
    };
    const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

    // client_secret_basic
    assert_eq!(
        try_code(&http, &idp, "basic", vec![], Some(("basic", "b-secret")))
            .await
            .status,
        200
    );
    let bad = try_code(&http, &idp, "basic", vec![], Some(("basic", "wrong"))).await;
    assert_eq!(
        (bad.status.as_u16(), bad.oauth_error().as_str()),
        (401, "invalid_client")
    );
    assert!(bad.headers.contains_key("www-authenticate"));
    // client_secret_post
    let ok = try_code(
        &http,
        &idp,
        "post",
        vec![s("client_id", "post"), s("client_secret", "p-secret")],
        None,
    )
    .await;
    assert_eq!(ok.status, 200);
    let bad = try_code(
        &http,
        &idp,
        "post",
        vec![s("client_id", "post"), s("client_secret", "nope")],
        None,
    )
    .await;
    assert_eq!(bad.oauth_error(), "invalid_client");
    // A secret client may not pass as public.
    let bad = try_code(&http, &idp, "post", vec![s("client_id", "post")], None).await;
    assert_eq!(bad.oauth_error(), "invalid_client");
    // private_key_jwt
    let ok = try_code(
        &http,
        &idp,
        "jwt",
        vec![
            s("client_assertion_type", JWT_BEARER),
            s("client_assertion", &assertion(&private_pem, "j1")),
        ],
        None,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let wrong_key = try_code(
        &http,
        &idp,
        "jwt",
        vec![
            s("client_assertion_type", JWT_BEARER),
            s("client_assertion", &assertion(&other_pem, "j2")),
        ],
        None,
    )
    .await;
    assert_eq!(wrong_key.oauth_error(), "invalid_client");
    let replayed = try_code(
        &http,
        &idp,
        "jwt",
        vec![
            s("client_assertion_type", JWT_BEARER),
            s("client_assertion", &assertion(&private_pem, "j1")),
        ],
        None,
    )
    .await;
    assert_eq!(replayed.oauth_error(), "invalid_client");
    // none (public client)
    assert_eq!(
        try_code(&http, &idp, "public", vec![s("client_id", "public")], None)
            .await
            .status,
        200
    );
    let bad = try_code(
        &http,
        &idp,
        "public",
        vec![s("client_id", "public"), s("client_secret", "x")],
        None,
    )
    .await;
    assert_eq!(bad.oauth_error(), "invalid_client");
    // Two methods at once are a malformed request.
    let both = try_code(
        &http,
        &idp,
        "basic",
        vec![s("client_secret", "b-secret")],
        Some(("basic", "b-secret")),
    )
    .await;
    assert_eq!(both.oauth_error(), "invalid_request");

    assert_eq!(idp.stats().invalid_client, 6);
    idp.shutdown().await;
}

#[tokio::test]
async fn errors_follow_rfc_6749() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let url = format!("{}/token", idp.issuer());
    type Case<'a> = (&'a [(&'a str, &'a str)], (&'a str, &'a str), u16, &'a str);
    let cases: [Case; 5] = [
        (
            &[("grant_type", "password")],
            (CLIENT, SECRET),
            400,
            "unsupported_grant_type",
        ),
        (
            &[("grant_type", "refresh_token")],
            (CLIENT, SECRET),
            400,
            "invalid_request",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "made-up"),
            ],
            (CLIENT, SECRET),
            400,
            "invalid_grant",
        ),
        (
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
            ("nobody", "x"),
            401,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
            ],
            (CLIENT, SECRET),
            400,
            "invalid_request",
        ),
    ];
    for (form, basic, status, error) in cases {
        let reply = http.post_form(&url, form, Some(basic)).await;
        assert_eq!(
            (reply.status.as_u16(), reply.oauth_error().as_str()),
            (status, error),
            "{form:?}"
        );
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
    idp.shutdown().await;
}

#[tokio::test]
async fn fault_injection_and_counters() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let token = rt(&login(&http, &idp).await);
    idp.reset_stats();

    idp.fail_next_token_requests(2, 503);
    for _ in 0..2 {
        let reply = refresh(&http, &idp, &token).await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.oauth_error(), "temporarily_unavailable");
    }
    idp.fail_next_token_requests(1, 429);
    let reply = refresh(&http, &idp, &token).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.headers["retry-after"], "1");
    idp.fail_next_token_requests_with(1, 400, "");
    let reply = refresh(&http, &idp, &token).await;
    assert_eq!((reply.status.as_u16(), reply.body.len()), (400, 0));
    // The token was never consumed by the failures.
    let ok = refresh(&http, &idp, &token).await;
    assert_eq!(ok.status, 200);

    let stats = idp.stats();
    assert_eq!(stats.token_requests, 5);
    assert_eq!(stats.token_refresh, 5);
    assert_eq!(stats.injected_failures, 4);
    assert_eq!(stats.refresh_ok, 1);

    // Latency: the request takes at least as long as asked.
    idp.set_token_latency(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let reply = refresh(&http, &idp, &rt(&ok.json())).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.status, 200);
    idp.set_token_latency(Duration::ZERO);

    // Down: connections are refused; up: served again on the same address.
    idp.set_down(true).await;
    let down = Http::new()
        .try_post_form(
            &format!("{}/token", idp.issuer()),
            &[("grant_type", "refresh_token")],
            None,
        )
        .await;
    assert!(down.is_err(), "{down:?}");
    idp.set_down(false).await;
    let up = Http::new().get(&format!("{}/jwks", idp.issuer())).await;
    assert_eq!(up.status, 200);
    idp.shutdown().await;
}

#[tokio::test]
async fn signing_key_rotation_gives_a_new_kid_and_keeps_the_old_in_the_jwks() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let before = login(&http, &idp).await;
    let old_kid = jwt_header(before["id_token"].as_str().unwrap())["kid"].clone();
    let new_kid = idp.rotate_signing_key().await.unwrap();
    assert_ne!(old_kid, new_kid.as_str());
    let after = refresh(&http, &idp, &rt(&before)).await.json();
    assert_eq!(
        jwt_header(after["id_token"].as_str().unwrap())["kid"],
        new_kid.as_str()
    );
    let jwks = http.get(&format!("{}/jwks", idp.issuer())).await.json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&new_kid.as_str()) && kids.contains(&old_kid.as_str().unwrap()));
    idp.shutdown().await;
}

#[tokio::test]
async fn revocation_kills_the_token_family() {
    let idp = idp_with(RefreshPolicy::default()).await;
    let http = Http::new();
    let token = rt(&login(&http, &idp).await);
    let url = format!("{}/revoke", idp.issuer());
    let reply = http
        .post_form(
            &url,
            &[("token", &token), ("token_type_hint", "refresh_token")],
            Some((CLIENT, SECRET)),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        refresh(&http, &idp, &token).await.oauth_error(),
        "invalid_grant"
    );
    // Unknown tokens are fine (RFC 7009 2.2); bad client credentials are not.
    assert_eq!(
        http.post_form(&url, &[("token", "nope")], Some((CLIENT, SECRET)))
            .await
            .status,
        200
    );
    assert_eq!(
        http.post_form(&url, &[("token", "nope")], Some((CLIENT, "wrong")))
            .await
            .status,
        401
    );
    let stats = idp.stats();
    assert_eq!(
        (stats.revocation, stats.revocations, stats.families_revoked),
        (3, 1, 1)
    );
    idp.shutdown().await;
}

/// RP-initiated logout redirects to the registered URI and sends a signed
/// back-channel logout token to the client.
#[tokio::test]
async fn end_session_redirects_and_sends_a_backchannel_logout_token() {
    use http_body_util::BodyExt as _;
    // A receiver for the back-channel logout, on an ephemeral port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            tx.send(String::from_utf8_lossy(&body).into_owned())
                                .await
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let mut client = DevClient::new(CLIENT, DevClientAuth::SecretBasic(SECRET.into()), REDIRECT);
    client
        .post_logout_redirect_uris
        .push("http://127.0.0.1:1/".into());
    client.backchannel_logout_uri = Some(format!("http://{receiver_addr}/bff/backchannel-logout"));
    let idp = DevIdp::start(DevIdpSettings {
        clients: vec![client],
        ..DevIdpSettings::default()
    })
    .await
    .unwrap();
    let http = Http::new();
    let tokens = login(&http, &idp).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let sid = jwt_claims(id_token)["sid"].as_str().unwrap().to_owned();

    // An unregistered post-logout URI is refused.
    let mut url = url::Url::parse(&format!("{}/end_session", idp.issuer())).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", id_token)
        .append_pair("post_logout_redirect_uri", "http://evil.example/");
    assert_eq!(http.get(url.as_str()).await.status, 400);

    let mut url = url::Url::parse(&format!("{}/end_session", idp.issuer())).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", id_token)
        .append_pair("post_logout_redirect_uri", "http://127.0.0.1:1/")
        .append_pair("state", "bye");
    let reply = http.get(url.as_str()).await;
    assert_eq!(reply.status, 302);
    assert_eq!(reply.location().as_str(), "http://127.0.0.1:1/?state=bye");

    let body = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let token = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(jwt_header(&token)["typ"], "logout+jwt");
    let claims = jwt_claims(&token);
    assert_eq!(claims["sid"], sid.as_str());
    assert_eq!(claims["aud"], CLIENT);
    assert_eq!(claims["iss"], idp.issuer());
    assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(claims.get("nonce").is_none());
    let stats = idp.stats();
    assert_eq!((stats.end_session, stats.backchannel_sent), (2, 1));
    // End-session does not revoke refresh tokens here (like providers that leave
    // them alive): a BFF must revoke them itself.
    assert_eq!(refresh(&http, &idp, &rt(&tokens)).await.status, 200);
    idp.shutdown().await;
}

/// The root config.toml's `[dev] idp = true` registers its client with the dev IdP:
/// a login with the config's own client credentials and redirect URI works. (The
/// listen address is moved to port 0 so the test never needs port 9000.)
#[tokio::test]
async fn the_root_config_drives_the_dev_idp() {
    use bff_proxy::config::{Config, Env};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let config = Config::load(&path, &Env::default()).unwrap();
    assert!(config.dev.idp);
    let mut settings = DevIdpSettings::for_config(&config).unwrap();
    assert_eq!(settings.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(settings.access_token_ttl, Duration::from_secs(20));
    settings.listen.set_port(0);
    let idp = DevIdp::start(settings).await.unwrap();
    let http = Http::new();
    let (verifier, challenge) = pkce();
    let redirect = config.resolved.redirect_uri.to_string();
    let mut url = url::Url::parse(&format!("{}/authorize", idp.issuer())).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &config.oidc.client_id)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", &config.oidc.scopes.join(" "))
        .append_pair("state", "s")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let reply = http.get(url.as_str()).await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    let code = reply
        .location()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let secret = config
        .resolved
        .client_secret
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    let tokens = http
        .post_form(
            &format!("{}/token", idp.issuer()),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect),
                ("code_verifier", &verifier),
            ],
            Some((&config.oidc.client_id, &secret)),
        )
        .await;
    assert_eq!(tokens.status, 200, "{}", tokens.text());
    let tokens = tokens.json();
    assert_eq!(tokens["expires_in"], 20);
    assert!(
        tokens["refresh_token"].is_string(),
        "offline_access gives a refresh token"
    );
    idp.shutdown().await;
}
