//! `live=sse` reads of a run's event log: `data` and `control` frames, and the reader that
//! produces them until the stream closes.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;

use super::{HEARTBEAT, RECHECK, cursor, offset, read};
use crate::app::AppState;
use crate::db::run_events::Slice;
use crate::ids::RunId;
use crate::queue::events::Subscription;

/// A `data` frame: a batch of events, with `id:` = the offset after its last one.
fn data_frame(slice: &Slice, next: i64) -> Event {
    let data = serde_json::to_string(&slice.events).unwrap_or_else(|_| "[]".into());
    Event::default().event("data").id(offset::format(next)).data(data)
}

/// A `control` frame after reading up to `next`, with the stream's `cursor`. The frame that
/// closes the stream carries no cursor: there is nothing left to collapse requests onto.
fn control_frame(next: i64, up_to_date: bool, closed: bool, cursor: &str) -> Event {
    let mut body = json!({"streamNextOffset": offset::format(next), "upToDate": up_to_date});
    if closed {
        body["streamClosed"] = json!(true);
    } else {
        body["streamCursor"] = json!(cursor);
    }
    Event::default().event("control").data(body.to_string())
}

/// Where an SSE reader is in the log, and what it has announced.
#[derive(Debug, Clone, Copy)]
struct Position {
    after: i64,
    announced_up_to_date: bool,
    closed: bool,
}

impl Position {
    /// The frames owed for `slice` (read after `self.after`), moving past it; none means wait.
    fn frames(&mut self, slice: &Slice, cursor: &str) -> Vec<Event> {
        if let Some(last) = slice.events.last() {
            let next = last.seq;
            let up_to_date = next >= slice.tail;
            let closed = slice.closed && up_to_date;
            *self = Self { after: next, announced_up_to_date: up_to_date, closed };
            return vec![data_frame(slice, next), control_frame(next, up_to_date, closed, cursor)];
        }
        if slice.closed || !self.announced_up_to_date {
            self.announced_up_to_date = true;
            self.closed = slice.closed;
            return vec![control_frame(self.after.max(slice.tail), true, slice.closed, cursor)];
        }
        Vec::new()
    }
}

/// An SSE reader: its position, the frames not yet sent, and its wake-ups.
struct Reader {
    state: AppState,
    run: RunId,
    position: Position,
    /// The `cursor` the client echoed, which the stream's cursor must pass.
    client_cursor: Option<String>,
    subscription: Subscription,
    pending: VecDeque<Event>,
    done: bool,
}

impl Reader {
    /// Reads until there are frames to send (or the stream must end).
    async fn fill(&mut self) {
        loop {
            let Ok(slice) = read(&self.state, &self.run, self.position.after).await else {
                // Already logged; end the stream so the client reconnects from its offset.
                self.done = true;
                return;
            };
            let cursor = cursor(self.client_cursor.as_deref());
            self.pending.extend(self.position.frames(&slice, &cursor));
            self.done = self.position.closed;
            if !self.pending.is_empty() || self.done {
                return;
            }
            if !self.wait().await {
                self.done = true;
                return;
            }
        }
    }

    /// Waits for news of the run (or a re-check); false when the server is shutting down.
    async fn wait(&mut self) -> bool {
        tokio::select! {
            _ = self.subscription.receiver.changed() => true,
            () = tokio::time::sleep(RECHECK) => true,
            () = self.state.shutdown().cancelled() => false,
        }
    }
}

/// The SSE response reading `run` after seq `after`, for a client that echoed `client_cursor`.
pub(super) fn stream(
    state: AppState,
    run: RunId,
    after: i64,
    client_cursor: Option<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let subscription = state.queue().hub().subscribe(&run);
    let reader = Reader {
        state,
        run,
        position: Position { after, announced_up_to_date: false, closed: false },
        client_cursor,
        subscription,
        pending: VecDeque::new(),
        done: false,
    };
    let frames = futures::stream::unfold(reader, |mut reader| async move {
        if reader.pending.is_empty() && !reader.done {
            reader.fill().await;
        }
        let event = reader.pending.pop_front()?;
        Some((Ok(event), reader))
    });
    Sse::new(frames).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
}
