//! What every front door shares: the header rules, the admin listener, connection
//! limits, the server lifecycle, and (for the doors built on `http` types, the tower
//! layer and the hyper engine) the hand-over to the core. The doors (`tower`,
//! `proxy`, `pingora`) only translate between their engine's types and these.

pub(crate) mod access;
pub(crate) mod admin;
pub(crate) mod conn;
pub(crate) mod headers;
pub mod lifecycle;

use bytes::Bytes;
use http::Response;

use crate::bff::error_response;
use crate::error::{Error, ErrorKind};

/// The JSON error answer of a proxying failure (502, 504) or any other error kind.
pub(crate) fn error_answer(kind: ErrorKind) -> Response<Bytes> {
    error_response(&Error::new(kind), Vec::new())
}

/// What a door built on `http` types (the tower layer, the hyper engine) does
/// next: answer, or forward with the request body it was given.
#[cfg(feature = "tower")]
pub(crate) enum Door<B> {
    /// Answer with this.
    Respond(Response<Bytes>),
    /// Send the request on, changed as the forward says.
    Forward(Box<crate::bff::Forward>, B),
}

/// An `http` request handed to the core: its head, and its body read frame by frame
/// when the core asks.
#[cfg(feature = "tower")]
struct HttpRequest<'a, B> {
    parts: &'a http::request::Parts,
    body: std::pin::Pin<&'a mut B>,
}

#[cfg(feature = "tower")]
impl<B> crate::bff::DoorRequest for HttpRequest<'_, B>
where
    B: http_body::Body<Data = Bytes> + Send,
{
    fn head(&self) -> &http::request::Parts {
        self.parts
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, ()> {
        use http_body_util::BodyExt as _;
        while let Some(frame) = self.body.frame().await {
            if let Ok(data) = frame.map_err(|_| ())?.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }
}

/// The core's decision for a request of an `http`-typed door; the request's own
/// body handed back when it goes on; what the access log says of it.
#[cfg(feature = "tower")]
pub(crate) async fn decide<B>(
    bff: &crate::bff::Bff,
    parts: &http::request::Parts,
    body: B,
    unmatched: crate::bff::Unmatched,
) -> (Door<B>, crate::bff::Note)
where
    B: http_body::Body<Data = Bytes> + Send,
{
    use crate::bff::Decision;
    if bff.wants_body(parts) {
        let body = std::pin::pin!(body);
        let mut req = HttpRequest { parts, body };
        let (decision, note) = bff.decide_for(&mut req, unmatched).await;
        return match decision {
            Decision::Respond(resp) => (Door::Respond(resp), note),
            Decision::Forward(_) => (
                Door::Respond(error_answer(ErrorKind::Internal(
                    "a body-reading endpoint forwarded",
                ))),
                note,
            ),
        };
    }
    let (decision, note) = bff.handle_with(parts, None, unmatched).await;
    match decision {
        Decision::Respond(resp) => (Door::Respond(resp), note),
        Decision::Forward(forward) => (Door::Forward(forward, body), note),
    }
}
