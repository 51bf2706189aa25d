//! What every front door shares: the header rules, static files, the admin
//! listener, connection limits, the server lifecycle, and the few steps of a door
//! that are the same whatever the engine (the bounded back-channel body, the answer
//! for a target the engine serves itself). The doors (`tower`, `proxy`, `pingora`)
//! only translate between their engine's types and these.

pub(crate) mod admin;
pub(crate) mod conn;
pub(crate) mod headers;
pub mod lifecycle;
pub(crate) mod static_files;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response};

use crate::bff::{Forward, MAX_BACKCHANNEL_BODY, Target, error_response};
use crate::error::{Error, ErrorKind};

/// The body of a request the core wants to read (the back-channel logout), taken
/// chunk by chunk as the engine reads it, and refused past the bound.
#[derive(Debug, Default)]
pub(crate) struct BoundedBody {
    bytes: BytesMut,
}

impl BoundedBody {
    /// Adds a chunk; an error (413-like 400) once the body is over the bound.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<(), Response<Bytes>> {
        if self.bytes.len() + chunk.len() > MAX_BACKCHANNEL_BODY {
            return Err(error_response(
                &Error::new(ErrorKind::BadRequest("body too large")),
                Vec::new(),
            ));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// The whole body.
    pub(crate) fn finish(self) -> Bytes {
        self.bytes.freeze()
    }
}

/// The answer of an engine (hyper, pingora) for a forward it serves itself: a
/// static file, or 404 for a route meant for an application behind the tower layer
/// (the binary refuses such routes at start). None for an upstream.
pub(crate) async fn serve_locally(
    forward: &Forward,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response<Bytes>> {
    let mut resp = match forward.target() {
        Target::Upstream { .. } => return None,
        Target::Static { dir, path } => static_files::serve(dir, path, method, headers).await,
        Target::Application => error_response(&Error::new(ErrorKind::NotFound), Vec::new()),
    };
    headers::add_set_cookies(resp.headers_mut(), forward);
    Some(resp)
}

/// The JSON error answer of a proxying failure (502, 504) or any other error kind.
pub(crate) fn error_answer(kind: ErrorKind) -> Response<Bytes> {
    error_response(&Error::new(kind), Vec::new())
}

/// What a door built on `http` types (the tower layer, the hyper engine) does
/// next: answer, or forward with the request body it was given.
pub(crate) enum Door<B> {
    /// Answer with this.
    Respond(Response<Bytes>),
    /// Send the request on, changed as the forward says.
    Forward(Box<Forward>, B),
}

/// The core's decision for a request of an `http`-typed door: the back-channel
/// body read (bounded) when the core wants it, the request's own body handed back
/// otherwise.
pub(crate) async fn decide<B>(
    bff: &crate::bff::Bff,
    parts: &http::request::Parts,
    body: B,
) -> Door<B>
where
    B: http_body::Body<Data = Bytes>,
{
    use crate::bff::Decision;
    use http_body_util::BodyExt as _;
    if !bff.wants_body(parts) {
        return match bff.handle(parts, None).await {
            Decision::Respond(resp) => Door::Respond(resp),
            Decision::Forward(forward) => Door::Forward(forward, body),
        };
    }
    let mut body = std::pin::pin!(body);
    let mut read = BoundedBody::default();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Door::Respond(error_answer(ErrorKind::BadRequest("body unreadable")));
        };
        if let Some(chunk) = frame.data_ref() {
            if let Err(resp) = read.push(chunk) {
                return Door::Respond(resp);
            }
        }
    }
    match bff.handle(parts, Some(read.finish())).await {
        Decision::Respond(resp) => Door::Respond(resp),
        // The body-reading endpoint always answers itself.
        Decision::Forward(_) => Door::Respond(error_answer(ErrorKind::Internal(
            "a body-reading endpoint forwarded",
        ))),
    }
}
