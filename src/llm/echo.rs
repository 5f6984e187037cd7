//! The built-in `echo` model: deterministic, no network; for tests and demos.
//!
//! It answers with exactly the text of the last user message, streamed word by word. Its usage
//! is an honest estimate: one token per four characters, rounded up. Tool mode: when the last
//! message is a user message `call:TOOL {json}` (or a tool result of that form) and TOOL is one
//! of the tools offered, it calls that tool with those arguments instead; after tool results it
//! answers with their text, joined by newlines.

use futures::future::BoxFuture;

use super::{ChatModel, Deltas, ModelError, ModelOutput, ModelRequest, Usage};
use crate::domain::message::{Message, Role, ToolCall};

/// The echo model.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

/// Estimated tokens of a text: ⌈chars / 4⌉.
#[must_use]
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

fn prompt_text_len(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| {
            let calls: usize = m.tool_calls.iter().map(|c| c.name.len() + c.arguments.len()).sum();
            m.content.as_deref().map_or(0, |c| c.chars().count()) + calls
        })
        .sum::<usize>() as u64
}

/// Parses `call:NAME {json}` when NAME is offered.
fn tool_directive(text: &str, request: &ModelRequest, step: usize) -> Option<ToolCall> {
    let rest = text.trim().strip_prefix("call:")?;
    let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, "{}"));
    let args = if args.trim().is_empty() { "{}" } else { args.trim() };
    request.tools.iter().any(|t| t.name == name).then(|| ToolCall {
        id: format!("call_echo_{step}"),
        name: name.to_owned(),
        arguments: args.to_owned(),
    })
}

/// What echo answers to a request: (text, tool call).
fn answer(request: &ModelRequest) -> (String, Option<ToolCall>) {
    let step = request.messages.iter().filter(|m| m.role == Role::Assistant).count() + 1;
    let tail: Vec<&Message> =
        request.messages.iter().rev().take_while(|m| m.role == Role::Tool).collect::<Vec<_>>();
    if !tail.is_empty() {
        let results: Vec<&str> = tail.iter().rev().filter_map(|m| m.content.as_deref()).collect();
        let text = results.join("\n");
        return match tool_directive(&text, request, step) {
            Some(call) => (String::new(), Some(call)),
            None => (text, None),
        };
    }
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .and_then(|m| m.content.clone())
        .unwrap_or_default();
    match tool_directive(&last_user, request, step) {
        Some(call) => (String::new(), Some(call)),
        None => (last_user, None),
    }
}

impl ChatModel for Echo {
    fn complete<'a>(
        &'a self,
        request: &'a ModelRequest,
        deltas: Deltas<'a>,
    ) -> BoxFuture<'a, Result<ModelOutput, ModelError>> {
        Box::pin(async move {
            let (text, call) = answer(request);
            for piece in text.split_inclusive(' ') {
                deltas(piece);
            }
            let completion = estimate_tokens(&text)
                + call.as_ref().map_or(0, |c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments));
            let prompt = prompt_text_len(&request.messages).div_ceil(4);
            Ok(ModelOutput {
                content: text,
                tool_calls: call.into_iter().collect(),
                usage: Usage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: prompt + completion,
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::domain::message::ToolSpec;
    use crate::llm::ModelOptions;

    fn request(messages: Vec<Message>, tools: &[&str]) -> ModelRequest {
        ModelRequest {
            model: "echo".into(),
            messages,
            tools: tools
                .iter()
                .map(|n| ToolSpec {
                    name: (*n).into(),
                    description: String::new(),
                    parameters: serde_json::json!({}),
                })
                .collect(),
            options: ModelOptions::default(),
            stream: false,
        }
    }

    #[tokio::test]
    async fn echoes_the_last_user_message_with_honest_usage() {
        let seen = Mutex::new(String::new());
        let push = |d: &str| seen.lock().unwrap().push_str(d);
        let req = request(
            vec![Message::text(Role::System, "be brief"), Message::text(Role::User, "hello there world")],
            &[],
        );
        let out = Echo.complete(&req, &push).await.unwrap();
        assert_eq!(out.content, "hello there world");
        assert_eq!(*seen.lock().unwrap(), "hello there world");
        assert_eq!(out.usage.completion_tokens, 5); // 17 chars
        assert_eq!(out.usage.prompt_tokens, 7); // 8 + 17 = 25 chars
        assert!(out.tool_calls.is_empty());
    }

    #[tokio::test]
    async fn calls_offered_tools_and_answers_with_their_results() {
        let none = |_: &str| {};
        let req =
            request(vec![Message::text(Role::User, r#"call:get_weather {"city":"Oslo"}"#)], &["get_weather"]);
        let out = Echo.complete(&req, &none).await.unwrap();
        assert_eq!(out.tool_calls[0].name, "get_weather");
        assert_eq!(out.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
        // Not offered: plain echo.
        let plain = request(vec![Message::text(Role::User, "call:get_weather {}")], &[]);
        assert_eq!(Echo.complete(&plain, &none).await.unwrap().content, "call:get_weather {}");
        let mut with_result = req.messages.clone();
        with_result.push(Message {
            role: Role::Assistant,
            content: None,
            tool_calls: out.tool_calls.clone(),
            tool_call_id: None,
        });
        with_result
            .push(Message { tool_call_id: Some("call_echo_1".into()), ..Message::text(Role::Tool, "sunny") });
        let after = Echo.complete(&request(with_result, &["get_weather"]), &none).await.unwrap();
        assert_eq!(after.content, "sunny");
    }
}
