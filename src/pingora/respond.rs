//! Writing a whole response the core made (JSON, a redirect, a static file) to a
//! pingora session.

use bytes::Bytes;
use http::Response;
use pingora::Result;
use pingora::http::ResponseHeader;
use pingora::prelude::Session;

use crate::engine::access::RequestId;

/// Writes a whole response from the core, with the request's id.
pub(super) async fn write(
    session: &mut Session,
    resp: Response<Bytes>,
    id: &RequestId,
) -> Result<()> {
    let (mut parts, body) = resp.into_parts();
    crate::engine::access::set_on_response(&mut parts.headers, id);
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, body.len().into());
    // Without pingora's case map: see `plain_request` in the module above.
    let head = ResponseHeader::from(parts);
    let empty = body.is_empty();
    session.write_response_header(Box::new(head), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
