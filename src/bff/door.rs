//! How a front door hands a request to the core: its head, and its body on demand.
//! The core reads a body only for the back-channel logout, and at most
//! [`MAX_BACKCHANNEL_BODY`] bytes of it.

use std::future::Future;

use bytes::{Bytes, BytesMut};
use http::Response;
use http::request::Parts;

use super::decision::error_response;
use crate::error::{Error, ErrorKind};

/// The largest back-channel logout body read.
pub(crate) const MAX_BACKCHANNEL_BODY: usize = 64 * 1024;

/// A request as a front door holds it.
pub trait DoorRequest: Send {
    /// The request head.
    fn head(&self) -> &Parts;

    /// The next chunk of the body (None at its end; Err when it cannot be read).
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, ()>> + Send;
}

/// Reads a body chunk by chunk, refusing it past the bound.
pub(crate) async fn read_bounded<R: DoorRequest>(req: &mut R) -> Result<Bytes, Response<Bytes>> {
    let mut bytes = BytesMut::new();
    loop {
        match req.next_chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > MAX_BACKCHANNEL_BODY {
                    return Err(error_response(
                        &Error::new(ErrorKind::BadRequest("body too large")),
                        Vec::new(),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes.freeze()),
            Err(()) => {
                return Err(error_response(
                    &Error::new(ErrorKind::BadRequest("body unreadable")),
                    Vec::new(),
                ));
            }
        }
    }
}
