//! What one client connection may hold (slowloris): a header-read deadline that also closes idle
//! keep-alive connections, a body deadline answered with 408, and a cap on open connections.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::Hearth;

async fn connect(hearth: &Hearth) -> TcpStream {
    let addr = hearth.base_url().trim_start_matches("http://").to_owned();
    TcpStream::connect(addr).await.unwrap()
}

/// Reads until the peer closes (or `within` passes, which fails the test); returns what came.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the connection was still open after {within:?}; got {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a complete `GET /health` on a kept-alive connection and reads its answer.
async fn get_health(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let hearth = Hearth::options().env("HEARTH_HEADER_TIMEOUT_S", "1").start().await;
    // Half a request line, then nothing.
    let mut slow = connect(&hearth).await;
    slow.write_all(b"GET /hea").await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the deadline");

    // A connection that never sends a byte.
    let mut silent = connect(&hearth).await;
    read_until_closed(&mut silent, Duration::from_secs(5)).await;

    // A kept-alive connection is served, then closed once idle past the deadline.
    let mut idle = connect(&hearth).await;
    assert!(get_health(&mut idle).await.starts_with("HTTP/1.1 200"));
    read_until_closed(&mut idle, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_body_slower_than_its_deadline_is_408_in_openai_shape() {
    let hearth = Hearth::options().env("HEARTH_BODY_TIMEOUT_S", "1").start().await;
    let key = hearth.api_key().unwrap();
    let mut stream = connect(&hearth).await;
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(json["error"]["code"], "request_timeout", "{json}");
    assert!(json["error"]["message"].as_str().unwrap().contains("HEARTH_BODY_TIMEOUT_S"), "{json}");
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let hearth = Hearth::options().env("HEARTH_MAX_CONNECTIONS", "2").start().await;
    let mut first = connect(&hearth).await;
    let mut second = connect(&hearth).await;
    assert!(get_health(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(get_health(&mut second).await.starts_with("HTTP/1.1 200"));

    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut third = connect(&hearth).await;
    third.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = vec![0; 4096];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await;
    assert!(early.is_err(), "a connection past the cap was served");
    hearth
        .wait_for_log(Duration::from_secs(5), |l| {
            l["level"] == "WARN"
                && l["message"].as_str().is_some_and(|m| m.contains("HEARTH_MAX_CONNECTIONS"))
        })
        .await;

    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "served once a slot freed");
}

#[tokio::test]
async fn a_long_poll_outlives_the_header_deadline() {
    // No worker: the run stays queued, so `?wait=3` waits its whole 3 s.
    let hearth =
        crate::runs::options().env("HEARTH_HEADER_TIMEOUT_S", "1").env("HEARTH_WORKERS", "0").start().await;
    let api = crate::runs::Api::new(&hearth);
    let run = api.start(&crate::runs::echo("waits")).await;
    let started = Instant::now();
    let (status, body) = api.get(&format!("/v1/runs/{}?wait=3", run["id"].as_str().unwrap())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "queued", "{body}");
    assert!(started.elapsed() >= Duration::from_millis(2900), "the wait was cut short");
}

#[tokio::test]
async fn a_key_holds_at_most_its_open_streams() {
    let hearth = crate::runs::options().env("HEARTH_MAX_STREAMS_PER_KEY", "2").start().await;
    let api = crate::runs::Api::new(&hearth);
    let run = api.start(&crate::runs::echo(r#"call:test__sleep {"ms": 5000}"#)).await;
    let path = format!("/v1/runs/{}/events?offset=-1&live=sse", run["id"].as_str().unwrap());
    let open = || api.request(reqwest::Method::GET, &path).send();
    let (one, two) = (open().await.unwrap(), open().await.unwrap());
    assert_eq!((one.status().as_u16(), two.status().as_u16()), (200, 200));
    let third = open().await.unwrap();
    let body = crate::runs::assert_error(third, 429, "rate_limit_exceeded").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("HEARTH_MAX_STREAMS_PER_KEY"), "{body}");
    let chat = api
        .request(reqwest::Method::POST, "/v1/chat/completions")
        .json(&crate::runs::with(crate::runs::echo("x"), &serde_json::json!({"stream": true})))
        .send()
        .await
        .unwrap();
    crate::runs::assert_error(chat, 429, "rate_limit_exceeded").await;
    // Another key has its own slots; a closed stream gives its slot back.
    let key = crate::runs::cli(&hearth, &["keys", "create", "--org", "default", "--name", "other"]);
    let other = crate::runs::Api::with_key(&hearth, key.lines().last().unwrap().trim());
    assert_eq!(other.request(reqwest::Method::GET, &path).send().await.unwrap().status(), 200);
    drop(one);
    let mut reopened = None;
    for _ in 0..50 {
        let response = open().await.unwrap();
        if response.status() == 200 {
            reopened = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "the closed stream's slot never came back");
}
