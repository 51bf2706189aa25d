//! An open-loop HTTP/1.1 load generator for `benches/load/run.sh`'s fixed-rate run
//! (what `wrk2` does; Debian has no `wrk2`).
//!
//! Requests are sent at a constant rate whatever the answers' speed: request `i` is
//! due at `start + i / rate`, spread over keep-alive connections in turn, and when
//! its connection was still busy at that time its latency is measured from when it
//! was due, not from when the connection got round to sending it, so a stall shows
//! in the latencies instead of lowering the rate (no "coordinated omission").
//!
//! ```text
//! cargo run --release --example openload -- --rate 15000 --duration 10 \
//!     --connections 64 -H 'Cookie: …' -H 'X-CSRF: 1' http://127.0.0.1:8080/api/x
//! ```
//!
//! Prints one line: `rate=<asked> sent=<n> ok=<2xx> errors=<n> p50_ms=… p99_ms=…
//! p999_ms=… max_ms=…`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Args {
    url: Uri,
    rate: f64,
    duration: Duration,
    connections: usize,
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn usage() -> ! {
    eprintln!(
        "usage: openload --rate REQ_PER_S --duration SECONDS [--connections N] [-H 'Name: value']... URL"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut url = None;
    let mut rate = None;
    let mut duration = None;
    let mut connections = 64usize;
    let mut headers = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--rate" => rate = value().parse::<f64>().ok().filter(|r| *r > 0.0),
            "--duration" => {
                duration = value()
                    .parse::<f64>()
                    .ok()
                    .filter(|d| *d > 0.0)
                    .map(Duration::from_secs_f64);
            }
            "--connections" => {
                connections = value()
                    .parse()
                    .ok()
                    .filter(|c| *c > 0)
                    .unwrap_or_else(|| usage());
            }
            "-H" => {
                let line = value();
                let Some((name, v)) = line.split_once(':') else {
                    usage()
                };
                let (Ok(name), Ok(v)) = (
                    HeaderName::try_from(name.trim()),
                    HeaderValue::try_from(v.trim()),
                ) else {
                    usage()
                };
                headers.push((name, v));
            }
            _ if url.is_none() && !arg.starts_with('-') => url = arg.parse::<Uri>().ok(),
            _ => usage(),
        }
    }
    match (url, rate, duration) {
        (Some(url), Some(rate), Some(duration)) if url.authority().is_some() => Args {
            url,
            rate,
            duration,
            connections,
            headers,
        },
        _ => usage(),
    }
}

/// What one connection saw: latencies in µs of the answered requests, and failures.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u64>,
    ok: u64,
    errors: u64,
}

/// One keep-alive connection: its share of the schedule (requests `index`,
/// `index + connections`, …), reconnecting after a failure.
async fn connection(args: &Args, index: usize, start: Instant, total: u64) -> Seen {
    let mut seen = Seen::default();
    let authority = args
        .url
        .authority()
        .map(ToString::to_string)
        .unwrap_or_default();
    let path = args
        .url
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
    let mut i = index as u64;
    while i < total {
        #[allow(clippy::cast_precision_loss)]
        let due = start + Duration::from_secs_f64(i as f64 / args.rate);
        // Latency runs from when the request was due when the connection was still
        // busy then (the server's delay); from when the timer woke us when it was
        // idle (tokio's timer wakes up to a millisecond late: our slack, not the
        // server's).
        let sent_from = if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        };
        // A server may close a keep-alive connection after so many requests (nginx's
        // `keepalive_requests`): a closed connection is replaced, not counted.
        if sender.as_ref().is_some_and(|s| s.is_closed()) {
            sender = None;
        }
        if let Some(s) = sender.as_mut() {
            if s.ready().await.is_err() {
                sender = None;
            }
        }
        if sender.is_none() {
            sender = connect(&authority).await;
        }
        let Some(s) = sender.as_mut() else {
            seen.errors += 1;
            i += args.connections as u64;
            continue;
        };
        let mut req = Request::get(path.as_str())
            .header(http::header::HOST, authority.as_str())
            .body(Empty::<Bytes>::new())
            .unwrap_or_default();
        for (name, value) in &args.headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        let answered = async {
            let resp = s.send_request(req).await.ok()?;
            let ok = resp.status().is_success();
            resp.into_body().collect().await.ok()?;
            Some(ok)
        }
        .await;
        match answered {
            Some(ok) => {
                let us = u64::try_from(sent_from.elapsed().as_micros()).unwrap_or(u64::MAX);
                seen.latencies_us.push(us);
                if ok {
                    seen.ok += 1;
                } else {
                    seen.errors += 1;
                }
            }
            None => {
                seen.errors += 1;
                sender = None;
            }
        }
        i += args.connections as u64;
    }
    seen
}

async fn connect(authority: &str) -> Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(authority).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    #[allow(clippy::cast_precision_loss)]
    let ms = sorted[at] as f64 / 1000.0;
    ms
}

fn main() {
    let args = parse_args();
    // One thread: the generator takes one core, like `wrk -t1`.
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("openload: cannot start a runtime");
        std::process::exit(1);
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let total = (args.rate * args.duration.as_secs_f64()) as u64;
    let seen = runtime.block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let args = &args;
        let tasks = (0..args.connections).map(|c| connection(args, c, start, total));
        futures_util::future::join_all(tasks).await
    });
    let mut latencies: Vec<u64> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let (mut ok, mut errors) = (0, 0);
    for s in seen {
        latencies.extend(s.latencies_us);
        ok += s.ok;
        errors += s.errors;
    }
    latencies.sort_unstable();
    println!(
        "rate={} sent={} ok={ok} errors={errors} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        args.rate,
        total,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0),
    );
}
