//! Static files for `static_dir` routes, shared by both engines: GET and HEAD only, no path may leave the
//! folder, `index.html` for folders, and for page loads (`Accept: text/html`) of a
//! path that is no file, the folder's `index.html` (client-side routing of a SPA).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::decision::error_response;
use crate::error::{Error, ErrorKind};

/// Files larger than this are not served from a static route (it is for SPA assets).
const MAX_FILE: u64 = 64 * 1024 * 1024;

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        _ => "application/octet-stream",
    }
}

/// The file a request path names inside `dir`, or None when it would leave it.
fn resolve(dir: &Path, rel: &str) -> Option<PathBuf> {
    // The one percent-decoder of request paths (the path was checked before routing).
    let decoded = String::from_utf8(crate::paths::percent_decode(rel.as_bytes())).ok()?;
    let mut path = dir.to_path_buf();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains('\\') || s.contains('\0') => return None,
            s => path.push(s),
        }
    }
    Some(path)
}

/// Serves one static file.
pub(crate) async fn serve(
    dir: &Path,
    rel: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response<Bytes> {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = error_response(&Error::new(ErrorKind::MethodNotAllowed), Vec::new());
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let not_found = || error_response(&Error::new(ErrorKind::NotFound), Vec::new());
    let Some(mut path) = resolve(dir, rel) else {
        return not_found();
    };
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
        path.push("index.html");
    }
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => m,
        _ => {
            let page_load = headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
            path = dir.join("index.html");
            match tokio::fs::metadata(&path).await {
                Ok(m) if page_load && m.is_file() => m,
                _ => return not_found(),
            }
        }
    };
    if meta.len() > MAX_FILE {
        return not_found();
    }
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        match tokio::fs::read(&path).await {
            Ok(b) => Bytes::from(b),
            Err(_) => return not_found(),
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if path.extension().is_some_and(|e| e == "html") {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let dir = Path::new("/srv/spa");
        assert_eq!(
            resolve(dir, "/a/b.js"),
            Some(PathBuf::from("/srv/spa/a/b.js"))
        );
        assert_eq!(
            resolve(dir, "a/./b.js"),
            Some(PathBuf::from("/srv/spa/a/b.js"))
        );
        for bad in [
            "/../etc/passwd",
            "/a/../../x",
            "/%2e%2e/x",
            "/a%2f..%2f..%2fx",
            "/a\\b",
            "/%00",
        ] {
            assert_eq!(resolve(dir, bad), None, "{bad}");
        }
    }
}
