//! The HTTP side of an MCP client session: rmcp's Streamable HTTP transport over hearth's one
//! reqwest client, with a fresh user assertion on every request to a server that wants one.
//!
//! [`Asserting`] wraps `reqwest::Client` as rmcp's `StreamableHttpClient`: it replaces the
//! `Authorization` of each request by a JWT minted for that request (so a long session never
//! carries an expired one) and otherwise delegates. Nothing the caller sent to hearth — its API
//! key or JWT — is ever among these headers: they come from the server's configuration only.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse,
};
use sse_stream::Sse;

use super::keys::Signer;
use crate::config::McpServerConfig;

/// Who a session's assertions name.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Signs them.
    pub signer: Arc<Signer>,
    /// `sub`: the user.
    pub user: String,
    /// `org`: the organization.
    pub org: String,
    /// `aud`: the server's URL.
    pub audience: String,
}

/// `reqwest::Client` with a fresh assertion per request (or none: a plain client).
#[derive(Debug, Clone)]
pub struct Asserting {
    http: reqwest::Client,
    identity: Option<Arc<Identity>>,
}

impl Asserting {
    /// The bearer token of the next request: a fresh assertion when this session asserts a user.
    fn auth(&self, configured: Option<String>) -> Option<String> {
        let Some(id) = &self.identity else { return configured };
        match id.signer.assertion(&id.user, &id.org, &id.audience) {
            Ok(token) => Some(token),
            Err(e) => {
                // Cannot happen with a key that loaded; the server then refuses the request.
                tracing::error!(error = %e, "could not sign an MCP user assertion");
                None
            }
        }
    }
}

impl StreamableHttpClient for Asserting {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let auth = self.auth(auth_header);
        self.http.post_message(uri, message, session_id, auth, custom_headers).await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let auth = self.auth(auth_header);
        self.http
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        let auth = self.auth(auth_header);
        self.http.delete_session(uri, session_id, auth, custom_headers).await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let auth = self.auth(auth_header);
        self.http.get_stream(uri, session_id, last_event_id, auth, custom_headers).await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let auth = self.auth(auth_header);
        self.http
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}

/// The transport of one session with `server`, asserting `identity` when given.
#[must_use]
pub fn transport(
    http: &reqwest::Client,
    server: &McpServerConfig,
    identity: Option<Arc<Identity>>,
) -> StreamableHttpClientTransport<Asserting> {
    let headers = server
        .headers
        .iter()
        .filter_map(|h| {
            // Checked when the configuration was parsed.
            let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
            Some((name, HeaderValue::from_str(&h.value).ok()?))
        })
        .collect();
    let config = StreamableHttpClientTransportConfig::with_uri(server.url.clone())
        .custom_headers(headers)
        .reinit_on_expired_session(true);
    StreamableHttpClientTransport::with_client(Asserting { http: http.clone(), identity }, config)
}
