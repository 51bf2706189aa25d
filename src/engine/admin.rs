//! The admin listener (`/metrics`, `/healthz`, `/readyz`) and the readiness
//! warm-up, shared by both engines.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bff::Bff;

/// Loads discovery and the JWKS until it works, so `/readyz` turns ready; stops
/// trying when `stop` changes.
pub async fn warm_up(bff: Bff, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_millis(200);
    loop {
        match bff.warm_up().await {
            Ok(()) => {
                tracing::info!("discovery and JWKS loaded: ready");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "IdP not reachable yet; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `stop` changes.
pub async fn serve_admin(bff: Bff, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let bff = bff.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let bff = bff.clone();
                        async move {
                            Ok::<_, Infallible>(answer(&bff, req.method(), req.uri()).await.map(Full::new))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = stop.changed() => break,
        }
    }
}

/// The admin listener's answer for a path: `/metrics`, `/healthz`, `/readyz`, else
/// 404 (also what `Bff::admin_router` serves).
pub(crate) async fn answer(bff: &Bff, method: &http::Method, uri: &http::Uri) -> Response<Bytes> {
    let path = uri.path();
    if path == "/sessions" {
        return end_sessions(bff, method, uri).await;
    }
    if method != http::Method::GET && method != http::Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match path {
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            bff.metrics().render(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match bff.check_ready().await {
            Ok(()) => text(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// `DELETE /sessions?sub=SUB`: ends every session of a user (`Bff::end_sessions_of`).
async fn end_sessions(bff: &Bff, method: &http::Method, uri: &http::Uri) -> Response<Bytes> {
    if method != http::Method::DELETE {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "DELETE /sessions?sub=SUB\n".into(),
        );
    }
    let sub = uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "sub")
            .map(|(_, v)| v.into_owned())
    });
    let Some(sub) = sub.filter(|s| !s.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "DELETE /sessions?sub=SUB: sub is required\n".into(),
        );
    };
    match bff.end_sessions_of(&sub).await {
        Ok(n) => text(
            StatusCode::OK,
            "application/json",
            serde_json::json!({ "ended": n }).to_string(),
        ),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("the session index did not answer: {why}\n"),
        ),
    }
}
