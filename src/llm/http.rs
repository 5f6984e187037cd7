//! The HTTP side of providers: one pooled client with connect and read timeouts, and the
//! mapping of transport failures and error statuses to [`ModelError`].

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::ModelError;

/// Builds the shared upstream client.
///
/// # Errors
/// When the TLS stack cannot be initialised.
pub fn client(connect_timeout: Duration, read_timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        // Provider APIs answer where they are asked; following redirects would only cost.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hearth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the upstream HTTP client: {e}"))
}

/// One upstream endpoint: `{base}/{path}`, parsed once (parsing it on every call cost ~1 % of
/// a turn's instructions), and the headers every call carries (credentials).
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    base_url: String,
    url: reqwest::Url,
    headers: HeaderMap,
}

impl Upstream {
    /// The endpoint `{base_url}/{path}` whose calls carry `headers`.
    ///
    /// # Errors
    /// When the URL does not parse, or a header value is not valid in HTTP (names the header,
    /// never the value).
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        path: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Self, String> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&format!("{base_url}/{path}"))
            .map_err(|e| format!("{base_url}/{path} is not a valid URL: {e}"))?;
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("the value for header {name} is not valid"))?;
            value.set_sensitive(true);
            map.insert(HeaderName::from_static(name), value);
        }
        Ok(Self { client, base_url, url, headers: map })
    }

    /// POSTs JSON to the endpoint.
    ///
    /// # Errors
    /// Connect failures and timeouts before the response headers.
    pub async fn post(
        &self,
        body: &(impl serde::Serialize + Sync),
        extra: &[(&'static str, &'static str)],
    ) -> Result<reqwest::Response, ModelError> {
        let mut request = self.client.post(self.url.clone()).headers(self.headers.clone()).json(body);
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.map_err(|e| self.body_error(&e))
    }

    /// Maps a transport error.
    #[must_use]
    pub fn body_error(&self, error: &reqwest::Error) -> ModelError {
        // Never include the URL's query or headers; the base URL is configuration, not secret.
        if error.is_timeout() {
            ModelError::Timeout(format!("no data from {} in time", self.base_url))
        } else if error.is_connect() {
            ModelError::Connect(format!("{}: {}", self.base_url, root_cause(error)))
        } else if error.is_decode() {
            ModelError::Protocol(format!("the response from {} is not valid JSON", self.base_url))
        } else {
            ModelError::Protocol(format!("{}: {}", self.base_url, root_cause(error)))
        }
    }
}

fn root_cause(error: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
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
    use futures::StreamExt;
    let response = upstream.post(body, extra).await?;
    if !response.status().is_success() {
        return Err(status_error(response).await);
    }
    if !stream {
        let body = response.bytes().await.map_err(|e| upstream.body_error(&e))?;
        return Ok(Answer::Body(body.to_vec()));
    }
    let mut decoder = super::sse::Decoder::default();
    let mut bytes = response.bytes_stream();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| upstream.body_error(&e))?;
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

/// Turns an error response into [`ModelError::Status`], with the provider's message.
pub async fn status_error(response: reqwest::Response) -> ModelError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(60.0)));
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.chars().take(300).collect());
    ModelError::Status { status, message, retry_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_base_url_and_the_path_parsed_once() {
        let upstream =
            Upstream::new(reqwest::Client::new(), "http://upstream.test/v1/", "chat/completions", &[])
                .unwrap();
        assert_eq!(upstream.url.as_str(), "http://upstream.test/v1/chat/completions");
    }

    #[test]
    fn a_url_that_does_not_parse_is_refused_when_the_endpoint_is_built() {
        let error =
            Upstream::new(reqwest::Client::new(), "not a url", "chat/completions", &[]).err().unwrap();
        assert!(error.contains("not a url/chat/completions is not a valid URL"), "{error}");
    }
}
