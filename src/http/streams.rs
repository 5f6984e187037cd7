//! `GET /v1/runs/{id}/events`: a run's event log over the Durable Streams read protocol.
//!
//! Offsets name the position after an event seq: `offset=X` returns the events after X (`-1`
//! and `0`: from the start; `now`: the tail), and `Stream-Next-Offset` is the offset of the last
//! event returned. Offsets handed out are zero-padded so they sort as text ([`offset`]); bare
//! seqs are still read. Plain GET answers a JSON array; `live=long-poll` waits up to 30 s (204
//! when nothing came); `live=sse` streams `data` and `control` frames ([`sse`]), each `data`
//! frame with `id:` = its next offset so `Last-Event-ID` resumes exactly there. Live reads follow
//! the run through the turn service's one follower (`queue::follow`), which reads SQLite when
//! behind, so a live read and a replay after a restart are the same. `HEAD` answers the
//! stream's headers alone (tail offset, closed), uncached.

mod offset;
mod sse;

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use self::offset::Start;
use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Path, Query};
use crate::app::AppState;
use crate::db::run_events::Slice;
use crate::queue::RunRow;
use crate::turns::Offset;

/// Most events in one response or SSE frame.
const PAGE: u32 = 1000;
/// Longest a long-poll waits.
const LONG_POLL: Duration = Duration::from_secs(30);
/// SSE heartbeat comment interval.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Query of the events endpoint.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// `-1`, `0`, `now`, an offset handed out, or a bare event seq.
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

fn parse_live(live: Option<&str>) -> Result<Live, ApiError> {
    match live {
        None | Some("false" | "") => Ok(Live::No),
        Some("long-poll") => Ok(Live::LongPoll),
        Some("sse") => Ok(Live::Sse),
        Some(other) => {
            Err(ApiError::invalid(Some("live"), format!("live must be long-poll or sse, not `{other}`")))
        }
    }
}

/// The Durable Streams cursor: 20-second intervals since 2024-10-09, never going backwards.
fn cursor(client: Option<&str>) -> String {
    const EPOCH_S: u64 = 1_728_432_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let interval = now.saturating_sub(EPOCH_S) / 20;
    let floor = client.and_then(|c| c.parse::<u64>().ok()).map_or(0, |c| c + 1);
    interval.max(floor).to_string()
}

/// Where the read starts: `Last-Event-ID` (an SSE reconnect) wins over `offset`. A plain read
/// with neither starts at the beginning; a live read must say where (Durable Streams).
fn start(query: &EventsQuery, live: &Live, headers: &HeaderMap) -> Result<Start, ApiError> {
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    match (last_event_id.or(query.offset.as_deref()), live) {
        (Some(text), _) => offset::parse(text),
        (None, Live::No) => Ok(Start::After(0)),
        (None, Live::LongPoll | Live::Sse) => Err(ApiError::invalid(
            Some("offset"),
            "a live read needs an offset: -1 for the start, now for the tail, or the last Stream-Next-Offset",
        )),
    }
}

async fn read(state: &AppState, run: &RunRow, after: i64) -> Result<Slice, ApiError> {
    Ok(state.turns().read_events(run, after, PAGE).await?)
}

impl From<Start> for Offset {
    fn from(start: Start) -> Self {
        match start {
            Start::After(after) => Self::After(after),
            Start::Tail => Self::Now,
        }
    }
}

fn stream_headers(headers: &mut HeaderMap, next: i64, up_to_date: bool, closed: bool, cursor: Option<&str>) {
    if let Ok(next) = HeaderValue::from_str(&offset::format(next)) {
        headers.insert("stream-next-offset", next);
    }
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

/// `GET /v1/runs/{id}/events` (and `HEAD`, which axum routes here too).
pub async fn run_events(
    State(state): State<AppState>,
    Caller(principal): Caller,
    method: Method,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = state.turns().find_run(&principal, &id).await?;
    if method == Method::HEAD {
        return head(&state, &run).await;
    }
    let live = parse_live(query.live.as_deref())?;
    let start = start(&query, &live, &headers)?;
    match live {
        Live::No => {
            let after = match start {
                Start::After(after) => after,
                Start::Tail => read(&state, &run, i64::MAX).await?.tail,
            };
            catch_up(&state, &run, after, start == Start::Tail, &headers).await
        }
        Live::LongPoll => {
            let _slot = state.auth().open_stream(&principal)?;
            long_poll(&state, &run, start, query.cursor.as_deref()).await
        }
        Live::Sse => {
            let slot = state.auth().open_stream(&principal)?;
            let follower = state.turns().follow(&run, start.into()).await?;
            let response = sse::stream(follower, state.shutdown().clone(), query.cursor).into_response();
            Ok(super::auth::holding(response, slot))
        }
    }
}

/// `HEAD`: the stream's metadata (its tail offset, closed or not), never cached; the query is
/// not read, as a HEAD names no position.
async fn head(state: &AppState, run: &RunRow) -> Result<Response, ApiError> {
    let slice = read(state, run, i64::MAX).await?;
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    stream_headers(h, slice.tail, false, slice.closed, None);
    Ok(response)
}

async fn catch_up(
    state: &AppState,
    run: &RunRow,
    after: i64,
    at_now: bool,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let slice = read(state, run, after).await?;
    let next = slice.events.last().map_or(after, |e| e.seq);
    let etag = format!("\"{}:{after}:{next}\"", run.id);
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

/// `live=long-poll`: the events after `start` as soon as there are any, or 204 after
/// [`LONG_POLL`] (or at once when the stream is closed, or when the server shuts down).
async fn long_poll(
    state: &AppState,
    run: &RunRow,
    start: Start,
    client_cursor: Option<&str>,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    let cursor = cursor(client_cursor);
    let mut follower = state.turns().follow(run, start.into()).await?;
    let after = follower.position();
    let batch = tokio::select! {
        batch = follower.next_batch(Some(deadline)) => batch.map_err(crate::turns::TurnError::from)?,
        () = state.shutdown().cancelled() => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            stream_headers(response.headers_mut(), after, true, false, Some(&cursor));
            return Ok(response);
        }
    };
    let response = match batch.events.last() {
        Some(last) => {
            let next = last.seq;
            let mut response = axum::Json(&batch.events).into_response();
            stream_headers(response.headers_mut(), next, batch.up_to_date, batch.closed, Some(&cursor));
            response
        }
        None => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            stream_headers(response.headers_mut(), follower.tail(), true, batch.closed, Some(&cursor));
            response
        }
    };
    Ok(response)
}
