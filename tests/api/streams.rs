//! A run's event log over the Durable Streams read protocol: replay, offsets, long-poll, SSE,
//! `Last-Event-ID` resumption, and replay after a crash.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::runs::{Api, PATIENCE, assert_error, echo, header, options, terminal_count, types};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Frame {
    event: String,
    id: Option<String>,
    data: String,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {self:?}"))
    }
}

/// Reads an SSE response frame by frame.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// Opens `GET /v1/runs/{id}/events?offset=OFFSET&live=sse`, optionally with `Last-Event-ID`.
    async fn open(api: &Api, id: &str, offset: &str, last_event_id: Option<&str>) -> Self {
        Self::open_query(api, id, &format!("offset={offset}&live=sse"), last_event_id).await
    }

    /// Opens `GET /v1/runs/{id}/events?QUERY` (an SSE read), optionally with `Last-Event-ID`.
    async fn open_query(api: &Api, id: &str, query: &str, last_event_id: Option<&str>) -> Self {
        let mut request = api.request(Method::GET, &format!("/v1/runs/{id}/events?{query}"));
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last);
        }
        let response = request.send().await.expect("open SSE");
        assert_eq!(response.status(), 200);
        let content_type = header(response.headers(), "content-type").unwrap_or_default().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { response, buffer: String::new() }
    }

    /// The next frame (comments skipped), or `None` when the server closed the stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(frame) = parse_frame(&block) {
                    return Some(frame);
                }
                continue;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no SSE bytes within {PATIENCE:?}; so far: {}", self.buffer))
                .expect("read SSE");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes).replace("\r\n", "\n")),
                None => {
                    assert!(self.buffer.trim().is_empty(), "stream ended mid-frame: {}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// Every frame until the server closes the stream.
    async fn read_until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            frames.push(frame);
            assert!(frames.len() < 10_000, "the stream never closed");
        }
        frames
    }
}

fn parse_frame(block: &str) -> Option<Frame> {
    let (mut event, mut id, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(Frame { event: event.unwrap_or_else(|| "message".into()), id, data: data.join("\n") })
}

/// Checks the framing of a complete SSE read and returns the events of its `data` frames.
fn sse_events(frames: &[Frame]) -> Vec<Value> {
    let mut events = Vec::new();
    let mut last_id: Option<String> = None;
    for frame in frames {
        match frame.event.as_str() {
            "data" => {
                let batch = frame.json();
                let batch = batch.as_array().expect("a data frame holds an array");
                assert!(!batch.is_empty(), "empty data frame: {frame:?}");
                let last_seq = offset(batch.last().unwrap()["seq"].as_i64().unwrap());
                assert_eq!(
                    frame.id.as_deref(),
                    Some(last_seq.as_str()),
                    "id = the offset after it: {frame:?}"
                );
                last_id = frame.id.clone();
                events.extend(batch.iter().cloned());
            }
            "control" => {
                let control = frame.json();
                assert!(control["streamNextOffset"].is_string(), "{control}");
                // Every control frame carries a cursor except the one that closes the stream.
                let closing = control["streamClosed"] == true;
                assert_eq!(control.get("streamCursor").is_none(), closing, "{control}");
                assert!(closing || control["streamCursor"].is_string(), "{control}");
                assert!(control["upToDate"].is_boolean(), "{control}");
                if let Some(id) = &last_id {
                    assert_eq!(control["streamNextOffset"], json!(id), "{control}");
                }
            }
            other => panic!("unexpected SSE event `{other}`: {frame:?}"),
        }
    }
    let last = frames.last().expect("at least one frame");
    assert_eq!(last.event, "control", "the stream ends with a control frame: {frames:?}");
    let control = last.json();
    assert_eq!(control["streamClosed"], true, "{control}");
    assert_eq!(control["upToDate"], true, "{control}");
    events
}

/// The offset handed out for the position after event `seq`: 20 zero-padded digits.
fn offset(seq: i64) -> String {
    format!("{seq:020}")
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().expect("a seq")).collect()
}

/// Starts a run and waits for it to end; returns its id.
async fn finished_run(api: &Api, text: &str) -> String {
    let run = api.start(&echo(text)).await;
    let id = run["id"].as_str().unwrap().to_owned();
    assert_eq!(api.wait_end(&id).await["status"], "completed");
    id
}

#[tokio::test]
async fn replay_from_the_start_numbers_events_from_1_and_closes_on_the_terminal_event() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let id = finished_run(&api, "alpha beta gamma").await;

    let (headers, events) = api.events(&id, "offset=-1").await;
    let n = i64::try_from(events.len()).unwrap();
    assert_eq!(seqs(&events), (1..=n).collect::<Vec<_>>(), "{events:?}");
    let kinds = types(&events);
    assert_eq!(kinds[0], "run.queued", "{kinds:?}");
    assert_eq!(terminal_count(&kinds), 1, "{kinds:?}");
    assert_eq!(*kinds.last().unwrap(), "run.completed", "{kinds:?}");
    for event in &events {
        assert!(event["created_at"].as_i64().is_some_and(|t| t > 1_577_836_800_000), "{event}");
        assert!(event.get("data").is_some(), "{event}");
    }
    assert_eq!(header(&headers, "stream-next-offset"), Some(offset(n).as_str()));
    assert_eq!(header(&headers, "stream-up-to-date"), Some("true"));
    assert_eq!(header(&headers, "stream-closed"), Some("true"));

    let (_, from_zero) = api.events(&id, "offset=0").await;
    assert_eq!(from_zero, events, "offset=0 also reads from the start");
    let (_, no_offset) = api.events(&id, "").await;
    assert_eq!(no_offset, events);
}

#[tokio::test]
async fn offsets_resume_after_a_seq_and_now_reads_the_tail() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let id = finished_run(&api, "one two three four").await;
    let full = api.all_events(&id).await;
    let n = i64::try_from(full.len()).unwrap();
    assert!(n > 3, "{full:?}");

    let (headers, rest) = api.events(&id, "offset=2").await;
    assert_eq!(rest, full[2..], "offset=2 returns the events after seq 2");
    assert!(seqs(&rest).iter().all(|s| *s > 2));
    assert_eq!(header(&headers, "stream-next-offset"), Some(offset(n).as_str()));
    assert_eq!(header(&headers, "stream-closed"), Some("true"));

    let (headers, none) = api.events(&id, &format!("offset={n}")).await;
    assert_eq!(none, Vec::<Value>::new());
    assert_eq!(header(&headers, "stream-next-offset"), Some(offset(n).as_str()));
    assert_eq!(header(&headers, "stream-up-to-date"), Some("true"));
    assert_eq!(header(&headers, "stream-closed"), Some("true"));

    let (headers, tail) = api.events(&id, "offset=now").await;
    assert_eq!(tail, Vec::<Value>::new());
    assert_eq!(header(&headers, "stream-next-offset"), Some(offset(n).as_str()));
    assert_eq!(header(&headers, "stream-closed"), Some("true"));

    for bad in ["offset=abc", "offset=-2", "live=forever"] {
        let response = api.request(Method::GET, &format!("/v1/runs/{id}/events?{bad}")).send().await.unwrap();
        assert_error(response, 400, "invalid_request").await;
    }
    let missing = api.request(Method::GET, "/v1/runs/run_nosuchrun/events").send().await.unwrap();
    assert_error(missing, 404, "not_found").await;
}

#[tokio::test]
async fn long_poll_answers_at_once_when_an_event_arrives() {
    // Every run goes to `go`, which has no worker here: nothing happens unless we act.
    let hearth = options().env("HEARTH_RUNNER_RAMP", "go=100").start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo("waiting")).await;
    let id = run["id"].as_str().unwrap();

    // Available events are answered without waiting.
    let response = api
        .request(Method::GET, &format!("/v1/runs/{id}/events?offset=-1&live=long-poll"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events: Vec<Value> = response.json().await.unwrap();
    assert_eq!(types(&events), ["run.queued"]);

    let (headers, tail) = api.events(id, "offset=now").await;
    assert_eq!(tail, Vec::<Value>::new());
    assert_eq!(header(&headers, "stream-next-offset"), Some(offset(1).as_str()));
    assert_eq!(header(&headers, "stream-closed"), None, "a queued run's stream is open");

    // A long-poll waiting at the tail is answered as soon as the run is cancelled.
    let started = Instant::now();
    let poll = async {
        api.request(Method::GET, &format!("/v1/runs/{id}/events?offset=1&live=long-poll"))
            .send()
            .await
            .unwrap()
    };
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        api.cancel(id).await
    };
    let (response, (cancel_status, _)) = tokio::join!(poll, cancel);
    let elapsed = started.elapsed();
    assert_eq!(cancel_status, 200);
    assert_eq!(response.status(), 200);
    assert!(elapsed < Duration::from_secs(20), "the long-poll was not woken by the event: {elapsed:?}");
    let headers = response.headers().clone();
    let events: Vec<Value> = response.json().await.unwrap();
    assert_eq!(types(&events), ["run.cancelled"], "{events:?}");
    assert_eq!(events[0]["seq"], 2);
    assert_eq!(header(&headers, "stream-next-offset"), Some(offset(2).as_str()));
    assert_eq!(header(&headers, "stream-closed"), Some("true"));
    assert!(header(&headers, "stream-cursor").is_some(), "{headers:?}");

    // At the end of a closed stream there is nothing to wait for: 204 at once.
    let started = Instant::now();
    let response = api
        .request(Method::GET, &format!("/v1/runs/{id}/events?offset=2&live=long-poll"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(header(response.headers(), "stream-closed"), Some("true"));
    assert_eq!(header(response.headers(), "stream-next-offset"), Some(offset(2).as_str()));
}

#[tokio::test]
async fn long_poll_without_news_answers_204_after_its_wait() {
    let hearth = options().env("HEARTH_RUNNER_RAMP", "go=100").start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo("nobody will run this")).await;
    let id = run["id"].as_str().unwrap();
    let started = Instant::now();
    let response = api
        .request(Method::GET, &format!("/v1/runs/{id}/events?offset=now&live=long-poll"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // It waited (up to 30 s by the protocol) rather than answering at once.
    assert!(started.elapsed() >= Duration::from_secs(20), "{:?}", started.elapsed());
    let headers = response.headers();
    assert_eq!(header(headers, "stream-next-offset"), Some(offset(1).as_str()));
    assert_eq!(header(headers, "stream-up-to-date"), Some("true"));
    assert_eq!(header(headers, "stream-closed"), None);
    assert!(header(headers, "stream-cursor").is_some(), "{headers:?}");
}

#[tokio::test]
async fn sse_streams_a_live_run_from_the_start_until_it_closes() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo(r#"call:test__sleep {"ms":1000}"#)).await;
    let id = run["id"].as_str().unwrap();
    let stream_url = run["stream_url"].as_str().unwrap();
    assert_eq!(stream_url, format!("/v1/runs/{id}/events?offset=-1&live=sse"));

    let mut reader = SseReader::open(&api, id, "-1", None).await;
    let frames = reader.read_until_closed().await;
    let streamed = sse_events(&frames);
    let replay = api.all_events(id).await;
    assert_eq!(streamed, replay, "SSE delivers exactly the event log");
    let kinds = types(&streamed);
    assert_eq!(terminal_count(&kinds), 1);
    assert_eq!(*kinds.last().unwrap(), "run.completed", "{kinds:?}");
    assert!(kinds.contains(&"tool.started") && kinds.contains(&"tool.finished"), "{kinds:?}");

    // A finished run streams its whole log at once and closes.
    let frames = SseReader::open(&api, id, "-1", None).await.read_until_closed().await;
    assert_eq!(sse_events(&frames), replay);
}

#[tokio::test]
async fn sse_reconnect_with_last_event_id_resumes_exactly_after_it() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);

    // A finished run: Last-Event-ID wins over the URL's offset (what EventSource resends).
    let done = finished_run(&api, "resume me from the middle").await;
    let full = api.all_events(&done).await;
    let frames = SseReader::open(&api, &done, "-1", Some("2")).await.read_until_closed().await;
    let resumed = sse_events(&frames);
    assert_eq!(resumed, full[2..], "events after seq 2");

    // A live run: read the first data frame, drop the connection, reconnect with its id.
    let run = api.start(&echo(r#"call:test__sleep {"ms":2000}"#)).await;
    let id = run["id"].as_str().unwrap();
    let mut first = SseReader::open(&api, id, "-1", None).await;
    let data = loop {
        let frame = first.next().await.expect("a data frame before the stream ends");
        if frame.event == "data" {
            break frame;
        }
    };
    drop(first);
    let last_id = data.id.clone().expect("data frames carry an id");
    let before: Vec<Value> = data.json().as_array().unwrap().clone();
    assert_eq!(offset(before.last().unwrap()["seq"].as_i64().unwrap()), last_id);

    let frames = SseReader::open(&api, id, "-1", Some(&last_id)).await.read_until_closed().await;
    let after = sse_events(&frames);
    if let Some(first_after) = after.first() {
        assert_eq!(first_after["seq"].as_i64(), Some(last_id.parse::<i64>().unwrap() + 1), "{after:?}");
    }
    let mut joined = before;
    joined.extend(after);
    assert_eq!(joined, api.all_events(id).await, "no event lost or repeated across the reconnect");
    assert_eq!(types(&joined).last(), Some(&"run.completed"));
}

#[tokio::test]
async fn a_finished_runs_stream_replays_identically_after_a_crash() {
    let mut hearth = options().start().await;
    let api = Api::new(&hearth);
    let tool_run = api.start(&echo(r#"call:test__echo {"text":"kept"}"#)).await;
    let tool_id = tool_run["id"].as_str().unwrap().to_owned();
    let text_id = finished_run(&api, "survive the crash").await;
    assert_eq!(api.wait_end(&tool_id).await["status"], "completed");

    let mut before = Vec::new();
    for id in [&tool_id, &text_id] {
        let (headers, events) = api.events(id, "offset=-1").await;
        assert_eq!(header(&headers, "stream-closed"), Some("true"));
        before.push((api.run(id).await, events));
    }

    hearth.kill9();
    hearth.restart().await;
    let api = Api::new(&hearth);
    for (id, (run, events)) in [&tool_id, &text_id].into_iter().zip(&before) {
        let (headers, replay) = api.events(id, "offset=-1").await;
        assert_eq!(&replay, events, "run {id}'s log changed across the crash");
        assert_eq!(header(&headers, "stream-closed"), Some("true"));
        let n = offset(i64::try_from(events.len()).unwrap());
        assert_eq!(header(&headers, "stream-next-offset"), Some(n.as_str()));
        assert_eq!(&api.run(id).await, run, "run {id} changed across the crash");
        let frames = SseReader::open(&api, id, "-1", None).await.read_until_closed().await;
        assert_eq!(&sse_events(&frames), events);
    }
}

/// A chat turn answered whole on a new session is stored only when it ends (one transaction,
/// docs/ARCHITECTURE.md), but always before its answer: killed right after the answer, the
/// server comes back with the run, its session, its events and its messages, and the session
/// continues.
#[tokio::test]
async fn a_chat_turn_answered_whole_is_stored_before_its_answer_and_survives_a_crash() {
    let mut hearth = options().start().await;
    let api = Api::new(&hearth);
    let response =
        api.request(Method::POST, "/v1/chat/completions").json(&echo("kept whole")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let run_id = header(response.headers(), "x-run-id").unwrap().to_owned();
    let session_id = header(response.headers(), "x-session-id").unwrap().to_owned();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "kept whole");
    hearth.kill9();
    hearth.restart().await;

    let api = Api::new(&hearth);
    let run = api.run(&run_id).await;
    assert_eq!(
        (run["status"].as_str(), run["session_id"].as_str()),
        (Some("completed"), Some(session_id.as_str()))
    );
    assert_eq!(run["output"]["content"], "kept whole");
    let events = api.all_events(&run_id).await;
    assert_eq!(types(&events).first(), Some(&"run.queued"));
    assert_eq!(types(&events).last(), Some(&"run.completed"));
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=i64::try_from(events.len()).unwrap()).collect::<Vec<_>>());
    let (status, session) = api.get(&format!("/v1/sessions/{session_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["status"], "idle");
    let contents: Vec<&str> =
        session["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["kept whole", "kept whole"]);
    let next = api
        .request(Method::POST, "/v1/chat/completions")
        .header("x-session-id", &session_id)
        .json(&echo("and after"))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    let (_, session) = api.get(&format!("/v1/sessions/{session_id}")).await;
    assert_eq!(session["messages"].as_array().unwrap().len(), 4);
}

/// A whole answer in OpenAI's `chat.completion` shape: text with `finish_reason: stop`, or client
/// tool calls with `content: null` and `finish_reason: tool_calls`; usage and ids always.
#[tokio::test]
async fn a_whole_answer_has_openais_completion_shape() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let post = |body: Value| api.request(Method::POST, "/v1/chat/completions").json(&body).send();
    let text: Value = post(echo("plain words")).await.unwrap().json().await.unwrap();
    assert_eq!(text["object"], "chat.completion");
    assert!(text["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(text["model"], "echo");
    let choice = &text["choices"][0];
    assert_eq!((choice["index"].as_u64(), choice["finish_reason"].as_str()), (Some(0), Some("stop")));
    assert_eq!(choice["message"], json!({"role": "assistant", "content": "plain words"}));
    assert!(choice.as_object().unwrap().contains_key("logprobs"));
    assert!(text["usage"]["total_tokens"].as_u64().is_some(), "{text}");

    let tools =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let body = json!({"model": "echo", "tools": tools,
                      "messages": [{"role": "user", "content": r#"call:get_weather {"city":"Oslo"}"#}]});
    let called: Value = post(body).await.unwrap().json().await.unwrap();
    let choice = &called["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(
        (call["type"].as_str(), call["function"]["name"].as_str()),
        (Some("function"), Some("get_weather"))
    );
    assert_eq!(call["function"]["arguments"], r#"{"city":"Oslo"}"#);
}

/// Starts a run and waits for it to end, however it ends; returns its id and its events.
async fn ended_run(api: &Api, text: &str) -> (String, Vec<Value>) {
    let run = api.start(&echo(text)).await;
    let id = run["id"].as_str().unwrap().to_owned();
    api.wait_end(&id).await;
    let events = api.all_events(&id).await;
    (id, events)
}

/// Offsets handed to clients (`Stream-Next-Offset`, SSE `id:` and `streamNextOffset`) are 20
/// zero-padded digits whose text order is the event order, across runs of fewer and more than
/// 10 events; bare numbers (`offset=3`, `Last-Event-ID: 3`) are still read as seqs.
#[tokio::test]
async fn offsets_are_zero_padded_and_sort_as_text_in_event_order() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let nested = r#"call:test__echo {"text":"call:test__echo {\"text\":\"done\"}"}"#;
    // (seq, offset) pairs handed out, from runs of different lengths and a live SSE read.
    let mut handed: Vec<(i64, String)> = Vec::new();
    let mut longest = (String::new(), Vec::new());
    for text in ["short", r#"call:test__echo {"text":"once"}"#, nested, "call:test__loop {}"] {
        let (id, events) = ended_run(&api, text).await;
        let n = i64::try_from(events.len()).unwrap();
        let (headers, _) = api.events(&id, "offset=-1").await;
        handed.push((n, header(&headers, "stream-next-offset").unwrap().to_owned()));
        if events.len() > longest.1.len() {
            longest = (id, events);
        }
    }
    let live = api.start(&echo(r#"call:test__sleep {"ms":500}"#)).await;
    let frames =
        SseReader::open(&api, live["id"].as_str().unwrap(), "-1", None).await.read_until_closed().await;
    for frame in &frames {
        let (seq, text) = match frame.event.as_str() {
            "data" => {
                (frame.json().as_array().unwrap().last().unwrap()["seq"].as_i64().unwrap(), frame.id.clone())
            }
            _ => {
                let text = frame.json()["streamNextOffset"].as_str().map(str::to_owned);
                (text.as_deref().unwrap().trim_start_matches('0').parse().unwrap_or(0), text)
            }
        };
        handed.push((seq, text.expect("an offset")));
    }

    for (seq, text) in &handed {
        assert_eq!(text, &offset(*seq), "offsets are 20 zero-padded digits");
    }
    assert!(handed.iter().any(|(s, _)| *s < 10) && handed.iter().any(|(s, _)| *s >= 10), "{handed:?}");
    let mut by_text = handed.clone();
    by_text.sort_by(|a, b| a.1.cmp(&b.1));
    let mut by_seq = handed.clone();
    by_seq.sort_by_key(|(seq, _)| *seq);
    assert_eq!(by_text, by_seq, "text order of offsets = event order");

    // Input: bare numbers, padded offsets and the sentinels all still work.
    let (id, full) = longest;
    assert!(full.len() >= 10, "{full:?}");
    let (_, bare) = api.events(&id, "offset=3").await;
    let (_, padded) = api.events(&id, &format!("offset={}", offset(3))).await;
    assert_eq!((&bare, &padded), (&full[3..].to_vec(), &full[3..].to_vec()));
    let (_, from_zero) = api.events(&id, "offset=0").await;
    assert_eq!(from_zero, full);
    let (headers, tail) = api.events(&id, "offset=now").await;
    assert!(tail.is_empty());
    let n = i64::try_from(full.len()).unwrap();
    assert_eq!(header(&headers, "stream-next-offset"), Some(offset(n).as_str()));
    let frames = SseReader::open(&api, &id, "-1", Some("3")).await.read_until_closed().await;
    assert_eq!(sse_events(&frames), full[3..], "Last-Event-ID: 3 (bare) resumes after seq 3");
    for bad in ["+3", "3.0", "1e1", "123456789012345678901"] {
        let response =
            api.request(Method::GET, &format!("/v1/runs/{id}/events?offset={bad}")).send().await.unwrap();
        assert_error(response, 400, "invalid_request").await;
    }
}
/// Durable Streams requires an offset for live reads: `live=long-poll` or `live=sse` without one
/// is a 400 naming `offset`; an SSE reconnect's `Last-Event-ID` counts as one.
#[tokio::test]
async fn live_reads_without_an_offset_are_refused() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let id = finished_run(&api, "needs an offset").await;
    for live in ["long-poll", "sse"] {
        let response =
            api.request(Method::GET, &format!("/v1/runs/{id}/events?live={live}")).send().await.unwrap();
        let body = assert_error(response, 400, "invalid_request").await;
        assert_eq!(body["error"]["param"], "offset", "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    let full = api.all_events(&id).await;
    let frames = SseReader::open_query(&api, &id, "live=sse", Some("2")).await.read_until_closed().await;
    assert_eq!(sse_events(&frames), full[2..], "Last-Event-ID is the offset of an SSE reconnect");
    // A plain read still defaults to the start.
    assert_eq!(api.events(&id, "").await.1, full);
}
/// SSE echoes the client's `cursor` as long-poll does (every `streamCursor` is greater than the
/// client's), and the control frame that closes the stream carries no `streamCursor`.
#[tokio::test]
async fn sse_honours_the_cursor_and_its_closing_control_frame_has_none() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let client_cursor: u64 = 900_000_000_000;
    let run = api.start(&echo(r#"call:test__sleep {"ms":1000}"#)).await;
    let id = run["id"].as_str().unwrap();
    let query = format!("offset=-1&live=sse&cursor={client_cursor}");
    let frames = SseReader::open_query(&api, id, &query, None).await.read_until_closed().await;
    sse_events(&frames);
    let controls: Vec<Value> = frames.iter().filter(|f| f.event == "control").map(Frame::json).collect();
    let (closing, open) = controls.split_last().unwrap();
    assert!(!open.is_empty(), "a live run has control frames before the closing one: {controls:?}");
    for control in open {
        let cursor: u64 = control["streamCursor"].as_str().unwrap().parse().unwrap();
        assert!(cursor > client_cursor, "the stream's cursor must pass the client's: {control}");
    }
    assert_eq!(closing["streamClosed"], true, "{closing}");
    assert!(closing.get("streamCursor").is_none(), "{closing}");

    // Long-poll, for comparison, already honours it.
    let response = api
        .request(
            Method::GET,
            &format!("/v1/runs/{id}/events?offset=-1&live=long-poll&cursor={client_cursor}"),
        )
        .send()
        .await
        .unwrap();
    let cursor: u64 = header(response.headers(), "stream-cursor").unwrap().parse().unwrap();
    assert!(cursor > client_cursor);
}
/// `HEAD` answers the stream's headers (the tail offset, closed or not) with
/// `Cache-Control: no-store` and no body, whatever the query asks.
#[tokio::test]
async fn head_answers_the_stream_headers_without_a_body() {
    let hearth = options().env("HEARTH_RUNNER_RAMP", "go=100").start().await;
    let api = Api::new(&hearth);
    let queued = api.start(&echo("never runs")).await;
    let id = queued["id"].as_str().unwrap();

    let head = |query: String| api.request(Method::HEAD, &format!("/v1/runs/{id}/events{query}")).send();
    for query in ["", "?offset=-1", "?offset=now", "?offset=-1&live=sse"] {
        let response = head(query.to_owned()).await.unwrap();
        assert_eq!(response.status(), 200, "{query}");
        let headers = response.headers().clone();
        assert_eq!(header(&headers, "stream-next-offset"), Some(offset(1).as_str()), "{query}");
        assert_eq!(header(&headers, "stream-closed"), None, "{query}: a queued run's stream is open");
        assert_eq!(header(&headers, "cache-control"), Some("no-store"), "{query}");
        assert_eq!(header(&headers, "etag"), None, "{query}");
        assert!(header(&headers, "content-type").unwrap().starts_with("application/json"), "{query}");
        assert!(response.bytes().await.unwrap().is_empty());
    }
    api.cancel(id).await;
    let response = head(String::new()).await.unwrap();
    assert_eq!(header(response.headers(), "stream-next-offset"), Some(offset(2).as_str()));
    assert_eq!(header(response.headers(), "stream-closed"), Some("true"));
    assert_eq!(header(response.headers(), "cache-control"), Some("no-store"));

    let missing = api.request(Method::HEAD, "/v1/runs/run_nosuchrun/events").send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// A method a route does not serve is 405 with an `Allow` header, in OpenAI's error shape.
#[tokio::test]
async fn unsupported_methods_are_405_with_allow() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let id = finished_run(&api, "not to be deleted").await;
    let cases = [
        (Method::DELETE, "/v1/chat/completions".to_owned(), "POST"),
        (Method::PUT, format!("/v1/runs/{id}/events"), "GET,HEAD,POST"),
        (Method::PATCH, "/health".to_owned(), "GET,HEAD"),
    ];
    for (method, path, allow) in cases {
        let response = api.request(method.clone(), &path).send().await.unwrap();
        assert_eq!(header(response.headers(), "allow"), Some(allow), "{method} {path}");
        let body = assert_error(response, 405, "method_not_allowed").await;
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(method.as_str()) && message.contains(&path), "{body}");
    }
}

/// Every response says `X-Content-Type-Options: nosniff`: API answers, errors, health,
/// metrics, SSE, HEAD, 404 and 405.
#[tokio::test]
async fn every_response_says_nosniff() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let id = finished_run(&api, "sniff not").await;
    let requests = [
        (api.request(Method::GET, "/health"), 200),
        (api.request(Method::GET, "/metrics"), 200),
        (api.request(Method::GET, "/v1/models"), 200),
        (api.request(Method::GET, &format!("/v1/runs/{id}/events?offset=-1")), 200),
        (api.request(Method::GET, &format!("/v1/runs/{id}/events?offset=-1&live=sse")), 200),
        (api.request(Method::HEAD, &format!("/v1/runs/{id}/events")), 200),
        (api.request(Method::GET, &format!("/v1/runs/{id}/events?offset=xyz")), 400),
        (api.anonymous().request(Method::GET, "/v1/models"), 401),
        (api.request(Method::GET, "/no/such/route"), 404),
        (api.request(Method::DELETE, "/v1/runs"), 405),
    ];
    for (request, status) in requests {
        let response = request.send().await.unwrap();
        let url = response.url().clone();
        assert_eq!(response.status(), status, "{url}");
        assert_eq!(header(response.headers(), "x-content-type-options"), Some("nosniff"), "{url}");
    }
}
