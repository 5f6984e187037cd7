//! The HTTP side of providers: one pooled client with connect and read timeouts, and the
//! mapping of transport failures and error statuses to [`ModelError`].
//!
//! The client is hyper's pooled client (`hyper-util`) over rustls with the platform's trust
//! store, used directly: reqwest's layers on top of it (a redirect policy, a retry layer, its
//! own request and response types) cost ~6.5 % of a chat turn's instructions and did nothing
//! here — hearth never follows a redirect and retries at its own level (`llm::route`). What
//! it did unasked is kept: the environment's proxies ([`Egress`]), TCP keepalive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::Value;

use super::ModelError;

/// The most a whole (non-streamed) answer or an error body may hold; a bigger one is refused
/// rather than buffered.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// The most of an error body read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

type Connector = hyper_rustls::HttpsConnector<Egress>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the TCP connection of an upstream call: directly, or through the HTTP proxy the
/// environment names for the destination (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus
/// `NO_PROXY`, read as curl reads them) with a `CONNECT` tunnel, TLS then running end to end
/// inside it. Only `http://` proxies; any other scheme fails the call with a message naming it.
#[derive(Clone)]
pub struct Egress {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

impl tower::Service<Uri> for Egress {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        use tower::ServiceExt;
        let Some(proxy) = self.proxies.intercept(&dst) else {
            let connecting = self.direct.call(dst);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        if proxy.uri().scheme_str() != Some("http") {
            let scheme = proxy.uri().scheme_str().unwrap_or("none").to_owned();
            return Box::pin(async move {
                Err(format!("the proxy's scheme {scheme} is not supported (an http:// proxy is)").into())
            });
        }
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        Box::pin(async move { tunnel.oneshot(dst).await.map_err(Into::into) })
    }
}

/// The shared upstream client: pooled keep-alive connections (HTTP/1.1, or HTTP/2 when the
/// provider offers it over TLS), a connect timeout, and a read timeout applied to the response
/// headers (counted from the call) and to every later read of the body. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    read_timeout: Duration,
}

/// Builds the shared upstream client, with the proxies the environment names.
///
/// # Errors
/// When the TLS stack cannot be initialised (the platform's trust store).
pub fn client(connect_timeout: Duration, read_timeout: Duration) -> Result<Client, String> {
    client_with(connect_timeout, read_timeout, Matcher::from_env())
}

/// [`client`], with the proxies `proxies` names.
///
/// # Errors
/// As [`client`].
pub fn client_with(
    connect_timeout: Duration,
    read_timeout: Duration,
    proxies: Matcher,
) -> Result<Client, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(BuilderVerifierExt::with_platform_verifier)
        .map_err(|e| format!("cannot set up TLS for upstream calls: {e}"))?
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    // A dead peer on a pooled or long-streaming connection is noticed in under a minute
    // (reqwest's defaults, kept).
    http.set_keepalive(Some(Duration::from_secs(15)));
    http.set_keepalive_interval(Some(Duration::from_secs(15)));
    http.set_keepalive_retries(Some(3));
    #[cfg(target_os = "linux")]
    http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
    let egress = Egress { direct: http, proxies: Arc::new(proxies) };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(egress);
    let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https);
    Ok(Client { inner, read_timeout })
}

/// One upstream endpoint: `{base}/{path}`, parsed once, and the headers every call carries
/// (credentials, content type, user agent).
#[derive(Clone)]
pub struct Upstream {
    client: Client,
    base_url: String,
    uri: Uri,
    headers: HeaderMap,
}

impl Upstream {
    /// The endpoint `{base_url}/{path}` whose calls carry `headers`.
    ///
    /// # Errors
    /// When the URL does not parse (or is not http or https), or a header value is not valid
    /// in HTTP (names the header, never the value).
    pub fn new(
        client: Client,
        base_url: &str,
        path: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Self, String> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let full = format!("{base_url}/{path}");
        let uri: Uri = full.parse().map_err(|e| format!("{full} is not a valid URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("{full} is not a valid URL: an http:// or https:// URL is needed"));
        }
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        map.insert(ACCEPT, HeaderValue::from_static("*/*"));
        map.insert(USER_AGENT, HeaderValue::from_static(concat!("hearth/", env!("CARGO_PKG_VERSION"))));
        for (name, value) in headers {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value for header {name} is not valid"))?;
            value.set_sensitive(true);
            map.insert(HeaderName::from_static(name), value);
        }
        Ok(Self { client, base_url, uri, headers: map })
    }

    /// POSTs JSON to the endpoint and waits for the response headers: at most the read
    /// timeout from the call, connecting included (itself bounded by the connect timeout).
    ///
    /// # Errors
    /// Connect failures, and timeouts before the response headers.
    pub async fn post(
        &self,
        body: &(impl serde::Serialize + Sync),
        extra: &[(&'static str, &'static str)],
    ) -> Result<Response<Incoming>, ModelError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ModelError::Protocol(format!("cannot encode the request: {e}")))?;
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        for (name, value) in extra {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        match tokio::time::timeout(self.client.read_timeout, self.client.inner.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.transport_error(&e)),
            Err(_) => Err(self.timeout()),
        }
    }

    /// GETs the endpoint and waits for the response headers, bounded as [`Upstream::post`].
    ///
    /// # Errors
    /// Connect failures, and timeouts before the response headers.
    pub async fn get(&self) -> Result<Response<Incoming>, ModelError> {
        self.bodiless(Method::GET).await
    }

    /// DELETEs the endpoint and waits for the response headers, bounded as [`Upstream::post`].
    ///
    /// # Errors
    /// Connect failures, and timeouts before the response headers.
    pub async fn delete(&self) -> Result<Response<Incoming>, ModelError> {
        self.bodiless(Method::DELETE).await
    }

    async fn bodiless(&self, method: Method) -> Result<Response<Incoming>, ModelError> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.method_mut() = method;
        *request.uri_mut() = self.uri.clone();
        request.headers_mut().clone_from(&self.headers);
        request.headers_mut().remove(CONTENT_TYPE);
        match tokio::time::timeout(self.client.read_timeout, self.client.inner.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.transport_error(&e)),
            Err(_) => Err(self.timeout()),
        }
    }

    /// The next piece of a response body (`None` at its end), waiting at most the read timeout.
    ///
    /// # Errors
    /// A timeout, or the connection failing mid-body.
    pub async fn next_chunk(&self, body: &mut Incoming) -> Result<Option<Bytes>, ModelError> {
        loop {
            match tokio::time::timeout(self.client.read_timeout, body.frame()).await {
                Err(_) => return Err(self.timeout()),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(self.transport_error(&e)),
                Ok(Some(Ok(frame))) => {
                    // Trailers carry nothing hearth reads.
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// A whole response body, up to `limit` bytes.
    ///
    /// # Errors
    /// As [`Upstream::next_chunk`], and a body over `limit`.
    pub async fn read_body(&self, body: &mut Incoming, limit: usize) -> Result<Vec<u8>, ModelError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk(body).await? {
            if out.len() + chunk.len() > limit {
                return Err(ModelError::Protocol(format!(
                    "the response from {} is over {limit} bytes",
                    self.base_url
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    fn timeout(&self) -> ModelError {
        ModelError::Timeout(format!("no data from {} in time", self.base_url))
    }

    /// Maps a transport error. Never includes the URL's query or headers; the base URL is
    /// configuration, not secret.
    fn transport_error(&self, error: &(dyn std::error::Error + 'static)) -> ModelError {
        let mut timed_out = false;
        let mut connect = false;
        let mut source: &(dyn std::error::Error + 'static) = error;
        loop {
            if let Some(e) = source.downcast_ref::<hyper_util::client::legacy::Error>() {
                connect |= e.is_connect();
            }
            if let Some(e) = source.downcast_ref::<std::io::Error>() {
                timed_out |= e.kind() == std::io::ErrorKind::TimedOut;
            }
            match source.source() {
                Some(next) => source = next,
                None => break,
            }
        }
        if timed_out {
            self.timeout()
        } else if connect {
            ModelError::Connect(format!("{}: {source}", self.base_url))
        } else {
            ModelError::Protocol(format!("{}: {source}", self.base_url))
        }
    }
}

/// What a provider's answer is, once its status was 2xx.
pub enum Answer {
    /// A whole JSON body (non-streamed call), parsed into the provider's own wire type by
    /// [`whole_answer`] (no `Value` tree in between).
    Body(Vec<u8>),
    /// An SSE body, already fed frame by frame to the provider's folder.
    Streamed,
}

/// Sends a call and reads the answer: a JSON body, or an SSE stream whose frames go to
/// `on_frame` (which returns `true` at the provider's end marker, named by `end` in errors).
///
/// # Errors
/// Transport failures, error statuses, and a stream that ends before its end marker.
pub async fn call(
    upstream: &Upstream,
    body: &(impl serde::Serialize + Sync),
    extra: &[(&'static str, &'static str)],
    stream: bool,
    end: &str,
    mut on_frame: impl FnMut(&str) -> Result<bool, ModelError>,
) -> Result<Answer, ModelError> {
    let response = upstream.post(body, extra).await?;
    if !response.status().is_success() {
        return Err(status_error(upstream, response).await);
    }
    let mut body = response.into_body();
    if !stream {
        return Ok(Answer::Body(upstream.read_body(&mut body, MAX_BODY).await?));
    }
    let mut decoder = super::sse::Decoder::default();
    while let Some(chunk) = upstream.next_chunk(&mut body).await? {
        for frame in decoder.feed(&chunk).map_err(ModelError::Protocol)? {
            if on_frame(&frame.data)? {
                return Ok(Answer::Streamed);
            }
        }
    }
    Err(ModelError::Protocol(format!("the stream ended before {end}")))
}

/// A non-streamed answer: its body read as the provider's wire type `T`, turned into an output
/// by `parse`, and handed to `deltas` as one piece of text.
///
/// # Errors
/// A body that is not JSON of the expected shape, or whatever `parse` returns.
pub fn whole_answer<T: serde::de::DeserializeOwned>(
    upstream: &Upstream,
    body: &[u8],
    parse: impl FnOnce(T) -> Result<super::ModelOutput, ModelError>,
    deltas: super::Deltas<'_>,
) -> Result<super::ModelOutput, ModelError> {
    let wire: T = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() { "is not a response of the expected shape" } else { "is not valid JSON" };
        ModelError::Protocol(format!("the response from {} {what}: {e}", upstream.base_url))
    })?;
    let output = parse(wire)?;
    if !output.content.is_empty() {
        deltas(&output.content);
    }
    Ok(output)
}

/// Turns an error response into [`ModelError::Status`], with the provider's message (the
/// first 64 KiB of its body are read for it).
pub async fn status_error(upstream: &Upstream, response: Response<Incoming>) -> ModelError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(60.0)));
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ERROR_BODY {
        match upstream.next_chunk(&mut body).await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(300).collect());
    ModelError::Status { status, message, retry_after }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn quick_client() -> Client {
        client_with(Duration::from_secs(1), Duration::from_millis(300), Matcher::builder().build()).unwrap()
    }

    /// A one-tunnel HTTP `CONNECT` proxy on a free local port: returns its URL and the request
    /// line it received.
    #[expect(clippy::disallowed_methods, reason = "a test's proxy, dropped with its runtime")]
    async fn connect_proxy() -> (String, tokio::sync::oneshot::Receiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (seen, saw) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut client, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                client.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap();
            let target = head.split_whitespace().nth(1).unwrap().to_owned();
            let _ = seen.send(head.lines().next().unwrap().to_owned());
            let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        (url, saw)
    }

    #[tokio::test]
    async fn a_call_goes_through_the_proxy_named_for_its_destination_in_a_connect_tunnel() {
        let ok = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", Duration::ZERO).await;
        let (proxy, saw) = connect_proxy().await;
        let proxies = Matcher::builder().http(proxy.as_str()).build();
        let client = client_with(Duration::from_secs(1), Duration::from_secs(2), proxies).unwrap();
        let upstream = Upstream::new(client, &ok, "x", &[]).unwrap();
        let answer = call(&upstream, &serde_json::json!({}), &[], false, "end", |_| Ok(true)).await.unwrap();
        assert!(matches!(answer, Answer::Body(ref b) if b == b"{}"));
        let authority = ok.trim_start_matches("http://");
        let line = tokio::time::timeout(Duration::from_secs(5), saw).await;
        assert_eq!(line.expect("the proxy was used").unwrap(), format!("CONNECT {authority} HTTP/1.1"));

        let socks = Matcher::builder().http("socks5://127.0.0.1:9").build();
        let client = client_with(Duration::from_secs(1), Duration::from_secs(2), socks).unwrap();
        let upstream = Upstream::new(client, &ok, "x", &[]).unwrap();
        let error =
            call(&upstream, &serde_json::json!({}), &[], false, "end", |_| Ok(true)).await.err().unwrap();
        assert!(format!("{error}").contains("scheme socks5 is not supported"), "{error}");
    }

    #[test]
    fn the_endpoint_is_the_base_url_and_the_path_parsed_once() {
        let upstream =
            Upstream::new(quick_client(), "http://upstream.test/v1/", "chat/completions", &[]).unwrap();
        assert_eq!(upstream.uri.to_string(), "http://upstream.test/v1/chat/completions");
    }

    #[test]
    fn a_url_that_does_not_parse_is_refused_when_the_endpoint_is_built() {
        let error = Upstream::new(quick_client(), "not a url", "chat/completions", &[]).err().unwrap();
        assert!(error.contains("not a url/chat/completions is not a valid URL"), "{error}");
        let error = Upstream::new(quick_client(), "ftp://files.test", "chat/completions", &[]).err().unwrap();
        assert!(error.contains("an http:// or https:// URL is needed"), "{error}");
    }

    /// A one-connection server on a free local port that answers with `answer` after `delay`.
    #[expect(clippy::disallowed_methods, reason = "a test's server, dropped with its runtime")]
    async fn serve_once(answer: &'static [u8], delay: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 65536];
            let _ = socket.read(&mut buf).await;
            tokio::time::sleep(delay).await;
            let _ = socket.write_all(answer).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        base
    }

    #[tokio::test]
    async fn a_whole_answer_its_error_status_and_a_silent_upstream_map_to_their_errors() {
        let ok =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"a\": true}", Duration::ZERO).await;
        let upstream = Upstream::new(quick_client(), &ok, "x", &[]).unwrap();
        match call(&upstream, &serde_json::json!({}), &[], false, "end", |_| Ok(true)).await.unwrap() {
            Answer::Body(body) => assert_eq!(body, b"{\"a\": true}"),
            Answer::Streamed => panic!("a whole answer"),
        }

        let limited = serve_once(
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-length: 30\r\n\r\n{\"error\":{\"message\":\"slow\"}}",
            Duration::ZERO,
        )
        .await;
        let upstream = Upstream::new(quick_client(), &limited, "x", &[]).unwrap();
        let error =
            call(&upstream, &serde_json::json!({}), &[], false, "end", |_| Ok(true)).await.err().unwrap();
        match error {
            ModelError::Status { status, message, retry_after } => {
                assert_eq!(
                    (status, message.as_str(), retry_after),
                    (429, "slow", Some(Duration::from_secs(2)))
                );
            }
            other => panic!("a status error, not {other:?}"),
        }

        let silent = serve_once(b"", Duration::from_secs(5)).await;
        let upstream = Upstream::new(quick_client(), &silent, "x", &[]).unwrap();
        let error =
            call(&upstream, &serde_json::json!({}), &[], false, "end", |_| Ok(true)).await.err().unwrap();
        assert!(matches!(error, ModelError::Timeout(_)), "{error:?}");

        let stalls =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"a\"", Duration::ZERO).await;
        let upstream = Upstream::new(quick_client(), &stalls, "x", &[]).unwrap();
        let error =
            call(&upstream, &serde_json::json!({}), &[], false, "end", |_| Ok(true)).await.err().unwrap();
        assert!(matches!(error, ModelError::Timeout(_)), "a body that stops is a timeout: {error:?}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_not_buffered() {
        let big =
            serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"a\": true}", Duration::ZERO).await;
        let upstream = Upstream::new(quick_client(), &big, "x", &[]).unwrap();
        let mut body = upstream.post(&serde_json::json!({}), &[]).await.unwrap().into_body();
        let error = upstream.read_body(&mut body, 10).await.err().unwrap();
        assert!(format!("{error}").contains("is over 10 bytes"), "{error}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error_that_names_the_base_url_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let upstream =
            Upstream::new(quick_client(), &base, "x?secret=1", &[("authorization", "Bearer sk".into())])
                .unwrap();
        let error =
            call(&upstream, &serde_json::json!({}), &[], false, "end", |_| Ok(true)).await.err().unwrap();
        let ModelError::Connect(message) = &error else { panic!("a connect error, not {error:?}") };
        assert!(
            message.starts_with(&base) && !message.contains("secret") && !message.contains("sk"),
            "{message}"
        );
    }
}
