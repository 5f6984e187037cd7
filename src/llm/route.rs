//! A model with retries and fallbacks: jittered backoff on connect errors, 429 and 5xx (honouring
//! `Retry-After`), then the next fallback model — but only while nothing has reached the client.
//! Once a delta was emitted, a failure ends the call: two attempts' outputs are never joined.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;

use super::{ChatModel, Deltas, ModelError, ModelOutput, ModelRequest};

/// Longest wait before a retry.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One model to try.
#[derive(Clone)]
pub struct Target {
    /// Provider name (`openai`, `anthropic`, `echo`).
    pub provider: String,
    /// The provider's model name.
    pub model: String,
    /// The provider.
    pub chat: Arc<dyn ChatModel>,
}

/// Targets in order (primary, then fallbacks), each retried up to `retries` times.
pub struct Route {
    targets: Vec<Target>,
    retries: u32,
}

impl Route {
    /// A route over `targets`.
    #[must_use]
    pub fn new(targets: Vec<Target>, retries: u32) -> Self {
        Self { targets, retries }
    }
}

/// The wait before retry number `attempt` (0-based): the provider's `Retry-After` when given,
/// else 250 ms · 2^attempt with ±50 % jitter.
#[must_use]
pub fn backoff(attempt: u32, error: &ModelError) -> Duration {
    if let ModelError::Status { retry_after: Some(after), .. } = error {
        return (*after).min(MAX_BACKOFF);
    }
    let base = 250.0 * f64::from(1u32 << attempt.min(6));
    let jitter = rand::rng().random_range(0.5..1.5);
    Duration::from_secs_f64(base * jitter / 1000.0).min(MAX_BACKOFF)
}

/// Whether trying a fallback model can help (not for the caller's own mistakes, 4xx but 429).
fn worth_a_fallback(error: &ModelError) -> bool {
    !matches!(error, ModelError::Status { status, .. } if (400..500).contains(status) && *status != 429)
}

impl ChatModel for Route {
    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        deltas: Deltas<'a>,
    ) -> BoxFuture<'a, Result<ModelOutput, ModelError>> {
        Box::pin(async move {
            let emitted = AtomicBool::new(false);
            let tracking = |text: &str| {
                emitted.store(true, Ordering::Relaxed);
                deltas(text);
            };
            let mut last = ModelError::Connect("no model to call".into());
            for target in &self.targets {
                let mut attempt_request = request.clone();
                attempt_request.model.clone_from(&target.model);
                for attempt in 0..=self.retries {
                    match target.chat.complete(&attempt_request, &tracking).await {
                        Ok(output) => return Ok(output),
                        Err(error) if emitted.load(Ordering::Relaxed) => return Err(error),
                        Err(error) => {
                            let again = error.retryable() && attempt < self.retries;
                            tracing::warn!(
                                provider = %target.provider, model = %target.model, attempt = attempt + 1,
                                error = %error, retrying = again, "upstream call failed"
                            );
                            let wait = backoff(attempt, &error);
                            last = error;
                            if !again {
                                break;
                            }
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
                if !worth_a_fallback(&last) {
                    break;
                }
            }
            Err(last)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::llm::{ModelOptions, Usage};

    /// Fails `failures` times with `error`, emitting `partial` first when set, then answers "ok".
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
        error: ModelError,
        partial: Option<&'static str>,
    }

    impl ChatModel for Flaky {
        fn complete<'a>(
            &'a self,
            _: &'a ModelRequest,
            deltas: Deltas<'a>,
        ) -> BoxFuture<'a, Result<ModelOutput, ModelError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                if n < self.failures {
                    if let Some(p) = self.partial {
                        deltas(p);
                    }
                    return Err(self.error.clone());
                }
                deltas("ok");
                Ok(ModelOutput { content: "ok".into(), tool_calls: vec![], usage: Usage::default() })
            })
        }
    }

    fn request() -> ModelRequest {
        ModelRequest {
            model: "m".into(),
            messages: vec![],
            tools: vec![],
            options: ModelOptions::default(),
            stream: true,
        }
    }

    fn flaky(failures: u32, status: u16, partial: Option<&'static str>) -> Arc<Flaky> {
        let error =
            ModelError::Status { status, message: "x".into(), retry_after: Some(Duration::from_millis(1)) };
        Arc::new(Flaky { failures, calls: AtomicU32::new(0), error, partial })
    }

    fn target(chat: Arc<Flaky>) -> Target {
        Target { provider: "p".into(), model: "m".into(), chat }
    }

    #[tokio::test]
    async fn retries_invisibly_before_the_first_byte() {
        let model = flaky(2, 503, None);
        let seen = Mutex::new(String::new());
        let out = Route::new(vec![target(Arc::clone(&model))], 2)
            .complete(&request(), &|d: &str| seen.lock().unwrap().push_str(d))
            .await
            .unwrap();
        assert_eq!(out.content, "ok");
        assert_eq!(*seen.lock().unwrap(), "ok");
        assert_eq!(model.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn never_retries_after_content_reached_the_client() {
        let model = flaky(1, 503, Some("partial "));
        let seen = Mutex::new(String::new());
        let out = Route::new(vec![target(Arc::clone(&model))], 3)
            .complete(&request(), &|d: &str| seen.lock().unwrap().push_str(d))
            .await;
        assert!(out.is_err());
        assert_eq!(*seen.lock().unwrap(), "partial ", "no second attempt's text appended");
        assert_eq!(model.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn falls_back_to_the_next_model_but_not_on_a_client_error() {
        let primary = flaky(10, 500, None);
        let fallback = flaky(0, 500, None);
        let out = Route::new(vec![target(Arc::clone(&primary)), target(Arc::clone(&fallback))], 1)
            .complete(&request(), &|_: &str| {})
            .await
            .unwrap();
        assert_eq!(out.content, "ok");
        assert_eq!(primary.calls.load(Ordering::SeqCst), 2);
        let bad_request = flaky(10, 400, None);
        let unused = flaky(0, 500, None);
        let out = Route::new(vec![target(Arc::clone(&bad_request)), target(Arc::clone(&unused))], 3)
            .complete(&request(), &|_: &str| {})
            .await;
        assert!(matches!(out, Err(ModelError::Status { status: 400, .. })));
        assert_eq!(bad_request.calls.load(Ordering::SeqCst), 1, "a 400 is not retried");
        assert_eq!(unused.calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn backoff_honours_retry_after_and_grows() {
        let e = ModelError::Status {
            status: 429,
            message: String::new(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(backoff(0, &e), Duration::from_secs(3));
        let plain = ModelError::Connect(String::new());
        assert!(backoff(0, &plain) <= Duration::from_millis(375));
        assert!(backoff(3, &plain) >= Duration::from_millis(1000));
    }
}
