//! `GET /v1/runs/{id}/events`: a run's event log over the Durable Streams read protocol.
//!
//! Offsets are event seqs: `offset=N` returns the events after seq N (`-1` and `0`: from the
//! start; `now`: the tail), and `Stream-Next-Offset` is the seq of the last event returned.
//! Plain GET answers a JSON array; `live=long-poll` waits up to 30 s (204 when nothing came);
//! `live=sse` streams `data` and `control` frames, each `data` frame with `id:` = its next
//! offset so `Last-Event-ID` resumes exactly there. Everything is read from SQLite, so a live
//! read and a replay after a restart are the same.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;

use super::extract::{Path, Query};
use crate::app::AppState;
use crate::db::run_events::Slice;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::ids::RunId;

/// Most events in one response or SSE frame.
const PAGE: u32 = 1000;
/// Longest a long-poll waits.
const LONG_POLL: Duration = Duration::from_secs(30);
/// Re-check interval while waiting, for events written by another process.
const RECHECK: Duration = Duration::from_secs(1);
/// SSE heartbeat comment interval.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Query of the events endpoint.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// `-1`, `0`, a seq, or `now`.
    pub offset: Option<String>,
    /// `long-poll` or `sse`.
    pub live: Option<String>,
    /// Echo of `Stream-Cursor` (CDN collapsing).
    pub cursor: Option<String>,
}

enum Live {
    No,
    LongPoll,
    Sse,
}

/// The Durable Streams cursor: 20-second intervals since 2024-10-09, never going backwards.
fn cursor(client: Option<&str>) -> String {
    const EPOCH_S: u64 = 1_728_432_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let interval = now.saturating_sub(EPOCH_S) / 20;
    let floor = client.and_then(|c| c.parse::<u64>().ok()).map_or(0, |c| c + 1);
    interval.max(floor).to_string()
}

fn parse_offset(text: Option<&str>) -> Result<Option<i64>, ApiError> {
    match text {
        None | Some("-1" | "0") => Ok(Some(0)),
        Some("now") => Ok(None),
        Some(n) => n
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(Some("offset"), "offset must be -1, now, or an event seq")),
    }
}

async fn read(state: &AppState, run: &RunId, after: i64) -> Result<Slice, ApiError> {
    let id = run.clone();
    Ok(state.db().read(move |conn| crate::db::run_events::read_slice(conn, &id, after, PAGE)).await?)
}

fn stream_headers(headers: &mut HeaderMap, next: i64, up_to_date: bool, closed: bool, cursor: Option<&str>) {
    headers.insert("stream-next-offset", HeaderValue::from(next));
    if up_to_date {
        headers.insert("stream-up-to-date", HeaderValue::from_static("true"));
    }
    if closed {
        headers.insert("stream-closed", HeaderValue::from_static("true"));
    }
    if let Some(c) = cursor.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert("stream-cursor", c);
    }
}

/// `GET /v1/runs/{id}/events`.
pub async fn run_events(
    State(state): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = state.turns().find_run(&principal, &id).await?;
    let live = match query.live.as_deref() {
        None | Some("false" | "") => Live::No,
        Some("long-poll") => Live::LongPoll,
        Some("sse") => Live::Sse,
        Some(other) => {
            return Err(ApiError::invalid(
                Some("live"),
                format!("live must be long-poll or sse, not `{other}`"),
            ));
        }
    };
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let offset = parse_offset(last_event_id.or(query.offset.as_deref()))?;
    let after = match offset {
        Some(after) => after,
        None => read(&state, &run.id, i64::MAX).await?.tail,
    };
    match live {
        Live::No => catch_up(&state, &run.id, after, offset.is_none(), &headers).await,
        Live::LongPoll => long_poll(&state, &run.id, after, query.cursor.as_deref()).await,
        Live::Sse => Ok(sse(state, run.id, after).into_response()),
    }
}

async fn catch_up(
    state: &AppState,
    run: &RunId,
    after: i64,
    at_now: bool,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let slice = read(state, run, after).await?;
    let next = slice.events.last().map_or(after, |e| e.seq);
    let etag = format!("\"{run}:{after}:{next}\"");
    let up_to_date = next >= slice.tail;
    let closed = slice.closed && up_to_date;
    if !at_now && request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        stream_headers(response.headers_mut(), next, up_to_date, closed, None);
        return Ok(response);
    }
    let mut response = axum::Json(&slice.events).into_response();
    let h = response.headers_mut();
    stream_headers(h, next, up_to_date, closed, None);
    if at_now {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    } else {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=60, stale-while-revalidate=300"),
        );
        if let Ok(value) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, value);
        }
    }
    Ok(response)
}

async fn long_poll(
    state: &AppState,
    run: &RunId,
    after: i64,
    client_cursor: Option<&str>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    let mut subscription = state.queue().hub().subscribe(run);
    let cursor = cursor(client_cursor);
    loop {
        let slice = read(state, run, after).await?;
        if let Some(last) = slice.events.last() {
            let next = last.seq;
            let up_to_date = next >= slice.tail;
            let mut response = axum::Json(&slice.events).into_response();
            stream_headers(
                response.headers_mut(),
                next,
                up_to_date,
                slice.closed && up_to_date,
                Some(&cursor),
            );
            return Ok(response);
        }
        let now = tokio::time::Instant::now();
        if slice.closed || now >= deadline {
            let mut response = StatusCode::NO_CONTENT.into_response();
            stream_headers(response.headers_mut(), after.max(slice.tail), true, slice.closed, Some(&cursor));
            return Ok(response);
        }
        tokio::select! {
            _ = subscription.receiver.changed() => {}
            () = tokio::time::sleep_until(deadline.min(now + RECHECK)) => {}
            () = state.shutdown().cancelled() => {
                let mut response = StatusCode::NO_CONTENT.into_response();
                stream_headers(response.headers_mut(), after, true, false, Some(&cursor));
                return Ok(response);
            }
        }
    }
}

fn control(next: i64, up_to_date: bool, closed: bool) -> Event {
    let mut body =
        json!({"streamNextOffset": next.to_string(), "streamCursor": cursor(None), "upToDate": up_to_date});
    if closed {
        body["streamClosed"] = json!(true);
    }
    Event::default().event("control").data(body.to_string())
}

/// Where an SSE reader is.
struct SseCursor {
    state: AppState,
    run: RunId,
    after: i64,
    subscription: crate::queue::hub::Subscription,
    pending: std::collections::VecDeque<Event>,
    announced_up_to_date: bool,
    done: bool,
}

impl SseCursor {
    /// Produces the next frames: data read after `after`, or a wait for more.
    async fn fill(&mut self) {
        loop {
            let Ok(slice) = read(&self.state, &self.run, self.after).await else {
                // Already logged; end the stream so the client reconnects from its offset.
                self.done = true;
                return;
            };
            if let Some(last) = slice.events.last() {
                let next = last.seq;
                let up_to_date = next >= slice.tail;
                let closed = slice.closed && up_to_date;
                let data = serde_json::to_string(&slice.events).unwrap_or_else(|_| "[]".into());
                self.pending.push_back(Event::default().event("data").id(next.to_string()).data(data));
                self.pending.push_back(control(next, up_to_date, closed));
                self.after = next;
                self.announced_up_to_date = up_to_date;
                self.done = closed;
                return;
            }
            if slice.closed || !self.announced_up_to_date {
                self.pending.push_back(control(self.after.max(slice.tail), true, slice.closed));
                self.announced_up_to_date = true;
                self.done = slice.closed;
                return;
            }
            tokio::select! {
                _ = self.subscription.receiver.changed() => {}
                () = tokio::time::sleep(RECHECK) => {}
                () = self.state.shutdown().cancelled() => {
                    self.done = true;
                    return;
                }
            }
        }
    }
}

fn sse(state: AppState, run: RunId, after: i64) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let subscription = state.queue().hub().subscribe(&run);
    let cursor = SseCursor {
        state,
        run,
        after,
        subscription,
        pending: std::collections::VecDeque::new(),
        announced_up_to_date: false,
        done: false,
    };
    let stream = futures::stream::unfold(cursor, |mut cursor| async move {
        if cursor.pending.is_empty() && !cursor.done {
            cursor.fill().await;
        }
        let event = cursor.pending.pop_front()?;
        Some((Ok(event), cursor))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
}
