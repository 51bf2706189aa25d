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
    let (parts, body) = resp.into_parts();
    let mut head = ResponseHeader::build(parts.status, Some(parts.headers.len() + 2))?;
    for (name, value) in &parts.headers {
        head.append_header(name.clone(), value.clone())?;
    }
    crate::engine::access::set_on_response(&mut head, id);
    head.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    let empty = body.is_empty();
    session.write_response_header(Box::new(head), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
