//! The `[[routes]]` and `[dev]` checks.

#![allow(clippy::wildcard_imports)]

use super::*;

pub(super) fn check_dev(c: &Sections, issuer: Option<&Url>, problems: &mut Vec<Problem>) {
    if !cfg!(feature = "dev") {
        // Configured but not built in: refused, never silently ignored.
        let built_without =
            "this build has no dev services (built without the `dev` cargo feature): remove it";
        if c.dev.idp {
            problems.push(Problem::new("dev.idp", built_without));
        }
        if c.dev.echo.is_some() {
            problems.push(Problem::new("dev.echo", built_without));
        }
    }
    if c.dev.idp {
        if let Some(url) = issuer {
            let loopback_ip = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
            if url.scheme() != "http" || !loopback_ip || url.port().is_none() {
                problems.push(Problem::new(
                    "oidc.issuer",
                    "with dev.idp = true it must be a loopback http URL with a port, like \"http://127.0.0.1:9000\" (the dev IdP listens there)",
                ));
            }
        }
    }
    if let Some(addr) = c.dev.echo {
        if !addr.ip().is_loopback() {
            problems.push(Problem::new(
                "dev.echo",
                format!("{addr} must be a loopback address: the echo upstream is for local demos and tests"),
            ));
        }
    }
}

pub(super) fn check_routes(
    c: &Sections,
    base_dir: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> (Vec<Option<Url>>, Vec<Option<PathBuf>>) {
    let prefix = c.server.prefix.as_str();
    let mut upstreams = Vec::with_capacity(c.routes.len());
    let mut static_dirs = Vec::with_capacity(c.routes.len());
    for (i, r) in c.routes.iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].{field}");
        if !r.path.starts_with('/') || r.path.contains(['?', '#', ' ']) {
            problems.push(Problem::new(
                at("path"),
                format!(
                    "{:?} must be a path starting with / (no ? # or spaces)",
                    r.path
                ),
            ));
        }
        if r.path == prefix || r.path.starts_with(&format!("{prefix}/")) {
            problems.push(Problem::new(
                at("path"),
                format!(
                    "{:?} is inside the BFF's own prefix {prefix:?} (server.prefix)",
                    r.path
                ),
            ));
        }
        if let Some(j) = c.routes[..i].iter().position(|o| o.path == r.path) {
            problems.push(Problem::new(
                at("path"),
                format!("{:?} is already the path of routes[{j}]", r.path),
            ));
        }
        let upstream = match (&r.upstream, &r.static_dir) {
            (Some(_), Some(_)) => {
                problems.push(Problem::new(
                    at("upstream"),
                    "a route has either upstream or static_dir, not both",
                ));
                None
            }
            // Served by the application behind the tower layer; the proxy binary
            // refuses such routes at start (it has nowhere to send them).
            (None, None) => None,
            (Some(text), None) => http_url(text, &at("upstream"), problems, UrlRules::ABSOLUTE),
            (None, Some(_)) => None,
        };
        let static_dir = r.static_dir.as_ref().and_then(|dir| {
            let full = base_dir.join(dir);
            if full.is_dir() {
                Some(full)
            } else {
                problems.push(Problem::new(
                    at("static_dir"),
                    format!("{} is not a folder", full.display()),
                ));
                None
            }
        });
        if r.static_dir.is_some() {
            if r.strip_prefix {
                problems.push(Problem::new(
                    at("strip_prefix"),
                    "applies to upstream routes only",
                ));
            }
            if r.auth != RouteAuth::None && r.csrf_required() {
                warnings.push(Problem::new(
                    at("csrf"),
                    "a static_dir route with auth and the CSRF check answers 403 to every page load with a session (navigations send no CSRF header): set csrf = false",
                ));
            }
        }
        if let Some(methods) = &r.methods {
            if methods.is_empty() {
                problems.push(Problem::new(
                    at("methods"),
                    "an empty allowlist would refuse everything: remove it or list methods",
                ));
            }
            for (m, method) in methods.iter().enumerate() {
                let valid = http::Method::from_bytes(method.as_bytes()).is_ok()
                    && method.bytes().all(|b| b.is_ascii_uppercase());
                if !valid {
                    problems.push(Problem::new(
                        format!("routes[{i}].methods[{m}]"),
                        format!("{method:?} is not an HTTP method in upper case, like \"GET\""),
                    ));
                } else if methods[..m].contains(method) {
                    problems.push(Problem::new(
                        format!("routes[{i}].methods[{m}]"),
                        format!("{method:?} is listed twice"),
                    ));
                }
            }
        }
        check_claim_rules(r, i, problems);
        upstreams.push(upstream);
        static_dirs.push(static_dir);
    }
    (upstreams, static_dirs)
}

/// Headers the proxy sets or the connection owns: an identity header may not be one.
const NOT_IDENTITY_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-type",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// `require_claims`, `identity_headers`, `acr` and `max_age` of `routes[i]`.
fn check_claim_rules(r: &RouteConfig, i: usize, problems: &mut Vec<Problem>) {
    let step_up = !r.acr.is_empty() || r.max_age.is_some();
    if step_up && r.auth != RouteAuth::Required {
        problems.push(Problem::new(
            format!(
                "routes[{i}].{}",
                if r.acr.is_empty() { "max_age" } else { "acr" }
            ),
            "step-up needs a session on every request: set auth = \"required\"",
        ));
    }
    for (n, acr) in r.acr.iter().enumerate() {
        if acr.len() > 128 || !crate::login::is_token_list(acr) || acr.contains(' ') {
            problems.push(Problem::new(
                format!("routes[{i}].acr[{n}]"),
                format!(
                    "{acr:?} must be 1 to 128 visible ASCII characters without spaces or quotes"
                ),
            ));
        }
    }
    if r.acr.iter().map(String::len).sum::<usize>() + r.acr.len() > crate::login::MAX_LOGIN_PARAM {
        problems.push(Problem::new(
            format!("routes[{i}].acr"),
            "together the values must fit in the 256 characters /login accepts as acr_values",
        ));
    }
    let at = |field: &str| format!("routes[{i}].{field}");
    if r.resource.is_some() && r.token_exchange.is_some() {
        problems.push(Problem::new(
            at("token_exchange"),
            "a route has either resource or token_exchange, not both",
        ));
    }
    if (r.resource.is_some() || r.token_exchange.is_some()) && r.auth == RouteAuth::None {
        problems.push(Problem::new(
            at(if r.resource.is_some() {
                "resource"
            } else {
                "token_exchange"
            }),
            "an audience of its own needs a session: set auth = \"required\" or \"optional\"",
        ));
    }
    if let Some(resource) = &r.resource {
        // RFC 8707 section 2: an absolute URI without a fragment.
        let ok = url::Url::parse(resource)
            .is_ok_and(|u| u.fragment().is_none() && !u.cannot_be_a_base())
            && resource.len() <= 512
            && !resource.contains(' ');
        if !ok {
            problems.push(Problem::new(
                at("resource"),
                format!("{resource:?} must be an absolute URI without a fragment (RFC 8707), like \"https://api.example.com\""),
            ));
        }
    }
    if let Some(x) = &r.token_exchange {
        if x.audience.is_empty()
            || x.audience.len() > 256
            || !crate::login::is_token_list(&x.audience)
            || x.audience.contains(' ')
        {
            problems.push(Problem::new(
                at("token_exchange.audience"),
                "must be 1 to 256 visible ASCII characters without spaces or quotes",
            ));
        }
        if let Some(scope) = &x.scope {
            if scope.len() > 512 || !crate::login::is_token_list(scope) {
                problems.push(Problem::new(
                    at("token_exchange.scope"),
                    "must be scope values separated by single spaces",
                ));
            }
        }
    }
    if let Some(age) = r.max_age {
        if age.as_secs() > 366 * 24 * 3600 {
            problems.push(Problem::new(
                format!("routes[{i}].max_age"),
                "must be at most a year",
            ));
        }
    }
    for (claim, values) in &r.require_claims {
        let at = format!("routes[{i}].require_claims.{claim}");
        if r.auth != RouteAuth::Required {
            problems.push(Problem::new(
                &at,
                "claim rules need a session on every request: set auth = \"required\"",
            ));
        }
        if values.is_empty() {
            problems.push(Problem::new(
                &at,
                "an empty list would refuse everyone: list the values that pass",
            ));
        }
        if values.iter().any(|v| v.is_array() || v.is_object()) {
            problems.push(Problem::new(
                &at,
                "list strings, numbers or booleans (an array claim passes when it holds one of them)",
            ));
        }
    }
    for (header, claim) in &r.identity_headers {
        let at = format!("routes[{i}].identity_headers.{header}");
        let lower = header.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            problems.push(Problem::new(&at, "not a header name"));
        } else if NOT_IDENTITY_HEADERS.contains(&lower.as_str())
            || lower.starts_with("x-forwarded-")
            || lower.starts_with("sec-")
        {
            problems.push(Problem::new(
                &at,
                "the proxy or the connection owns this header: pick another name (like X-User)",
            ));
        }
        if claim.is_empty() {
            problems.push(Problem::new(&at, "name the claim to send, like \"sub\""));
        }
        if r.auth == RouteAuth::None {
            problems.push(Problem::new(
                &at,
                "identity headers need a session: set auth = \"required\" or \"optional\"",
            ));
        }
    }
}
