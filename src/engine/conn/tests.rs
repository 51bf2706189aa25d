//! Unit tests of `conn`.

use super::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test(start_paused = true)]
async fn a_trickled_head_gets_408_at_the_header_deadline() {
    let limits = ConnLimits::new(Duration::from_secs(10), Duration::from_secs(60), 10);
    let (client, server) = tokio::io::duplex(1024);
    let (mut io, state) = limits.guard(server);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let mut total = Vec::new();
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total.extend_from_slice(&buf[..n]),
            }
        }
    });
    client_write.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        client_write.write_all(b"X-A: b\r\n").await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), state.timed_out())
        .await
        .expect("timed out at 10 s");
    let mut answer = vec![0u8; REQUEST_TIMEOUT.len()];
    client_read.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, REQUEST_TIMEOUT);
    reader.abort();
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_reads_end_of_stream_at_the_idle_deadline() {
    let limits = ConnLimits::new(Duration::from_secs(10), Duration::from_secs(60), 10);
    let (_client, server) = tokio::io::duplex(1024);
    let (mut io, state) = limits.guard(server);
    state.request_started();
    state.request_finished();
    let started = Instant::now();
    let mut buf = [0u8; 8];
    assert_eq!(io.read(&mut buf).await.unwrap(), 0);
    assert!(started.elapsed() >= Duration::from_secs(60));
    // While a request is answered, no deadline applies.
    let (_client, server) = tokio::io::duplex(1024);
    let (mut io, state) = limits.guard(server);
    state.request_started();
    let read = tokio::time::timeout(Duration::from_secs(600), io.read(&mut buf)).await;
    assert!(read.is_err(), "still waiting after 600 s");
}

/// HTTP/2: a connection is idle only when none of its requests is being
/// answered, and frames read between requests start no head deadline.
#[tokio::test(start_paused = true)]
async fn a_multiplexed_connection_is_idle_only_without_requests() {
    let limits = ConnLimits::new(Duration::from_secs(10), Duration::from_secs(60), 10);
    let (_client, server) = tokio::io::duplex(1024);
    let (_io, state) = limits.guard(server);
    state.multiplexed();
    state.request_started();
    state.request_started();
    state.request_finished();
    assert_eq!(state.phase(), Phase::Busy, "one request still answered");
    state.request_finished();
    assert_eq!(state.phase(), Phase::Idle);
    // More finishes than starts (a dropped body) never underflow.
    state.request_finished();
    state.request_started();
    assert_eq!(state.phase(), Phase::Busy);
}

#[tokio::test(start_paused = true)]
async fn a_multiplexed_connection_reading_frames_keeps_its_idle_deadline() {
    let limits = ConnLimits::new(Duration::from_secs(10), Duration::from_secs(60), 10);
    let (client, server) = tokio::io::duplex(1024);
    let (mut io, state) = limits.guard(server);
    state.multiplexed();
    state.request_started();
    state.request_finished();
    let (_client_read, mut client_write) = tokio::io::split(client);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let started = tokio::time::Instant::now();
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    });
    // A ping every 20 s: frames, not a request head.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        client_write.write_all(b"PING").await.unwrap();
    }
    let closed_after = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("closed at the idle deadline")
        .unwrap();
    assert!(
        closed_after >= Duration::from_secs(59) && closed_after <= Duration::from_secs(61),
        "{closed_after:?}"
    );
}
