//! A small JSON client of a running hearth, for the commands that drive one over HTTP
//! (`hearth run --url`, `hearth check`).

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::llm::http::{Client, Upstream};

/// Largest answer read from the server.
const MAX_BODY: usize = 64 << 20;

/// What the server answered.
pub(super) struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`[]` for a 204, a JSON string for a body that is not JSON).
    pub fn json(&self) -> Value {
        if self.status == StatusCode::NO_CONTENT {
            return json!([]);
        }
        serde_json::from_slice(&self.body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&self.body)))
    }

    /// The error message of an error answer (OpenAI's shape), else the body.
    pub fn message(&self) -> String {
        let value = self.json();
        value["error"]["message"].as_str().map_or_else(|| value.to_string(), str::to_owned)
    }
}

/// A hearth at `base`, called with `Authorization: Bearer …`.
pub(super) struct Api {
    /// The HTTP client.
    pub client: Client,
    /// The server's URL.
    pub base: String,
    /// The `Authorization` header's value.
    pub auth: String,
}

/// The request methods the commands use.
pub(super) enum Verb<'a> {
    Get,
    Post(&'a Value),
    Delete,
}

impl Api {
    /// Sends one request and reads the whole answer.
    ///
    /// # Errors
    /// A bad URL, or the server unreachable or too slow.
    pub async fn send(&self, verb: Verb<'_>, path: &str) -> anyhow::Result<Answer> {
        let endpoint =
            Upstream::new(self.client.clone(), &self.base, path, &[("authorization", self.auth.clone())])
                .map_err(|e| anyhow::anyhow!("--url / HEARTH_URL: {e}"))?;
        let response = match verb {
            Verb::Get => endpoint.get().await,
            Verb::Post(body) => endpoint.post(body, &[]).await,
            Verb::Delete => endpoint.delete().await,
        }
        .map_err(|e| anyhow::anyhow!("{}: {e}", self.base))?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = endpoint.read_body(&mut response.into_body(), MAX_BODY).await?;
        Ok(Answer { status, headers, body })
    }

    /// POSTs `body` (or GETs without one) and returns the JSON answer (`[]` for a 204); an error
    /// answer becomes an error with the server's message.
    ///
    /// # Errors
    /// As [`Api::send`], and any error answer.
    pub async fn call(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let answer = self.send(body.map_or(Verb::Get, Verb::Post), path).await?;
        if !answer.status.is_success() {
            anyhow::bail!("{} answered {}: {}", self.base, answer.status, answer.message());
        }
        Ok(answer.json())
    }
}
