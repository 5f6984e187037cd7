//! `live=sse` reads of a run's event log: `data` and `control` frames, produced from the run's
//! follower until the stream closes.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{HEARTBEAT, cursor, offset};
use crate::domain::event::RunEvent;
use crate::queue::follow::{Batch, Follower};

/// A `data` frame: a batch of events, with `id:` = the offset after its last one.
fn data_frame(events: &[RunEvent], next: i64) -> Event {
    let data = serde_json::to_string(events).unwrap_or_else(|_| "[]".into());
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

/// What an SSE reader has announced.
#[derive(Debug, Clone, Copy, Default)]
struct Announced {
    up_to_date: bool,
    closed: bool,
}

impl Announced {
    /// The frames owed for `batch` (read after `after`, the log's tail at `tail`); none means
    /// wait.
    fn frames(&mut self, batch: &Batch, after: i64, tail: i64, cursor: &str) -> Vec<Event> {
        if let Some(last) = batch.events.last() {
            let next = last.seq;
            *self = Self { up_to_date: batch.up_to_date, closed: batch.closed };
            return vec![
                data_frame(&batch.events, next),
                control_frame(next, batch.up_to_date, batch.closed, cursor),
            ];
        }
        if batch.closed || !self.up_to_date {
            *self = Self { up_to_date: true, closed: batch.closed };
            return vec![control_frame(after.max(tail), true, batch.closed, cursor)];
        }
        Vec::new()
    }
}

/// An SSE reader: its follower, what it announced, the frames not yet sent.
struct Reader {
    follower: Follower,
    shutdown: CancellationToken,
    announced: Announced,
    /// The `cursor` the client echoed, which the stream's cursor must pass.
    client_cursor: Option<String>,
    pending: VecDeque<Event>,
    done: bool,
}

impl Reader {
    /// Reads until there are frames to send (or the stream must end).
    async fn fill(&mut self) {
        loop {
            let after = self.follower.position();
            // Until it has said the reader is up to date, it reads what is there without waiting.
            let deadline = (!self.announced.up_to_date).then(Instant::now);
            let batch = tokio::select! {
                batch = self.follower.next_batch(deadline) => batch,
                () = self.shutdown.cancelled() => {
                    self.done = true;
                    return;
                }
            };
            let Ok(batch) = batch else {
                // Already logged; end the stream so the client reconnects from its offset.
                self.done = true;
                return;
            };
            let cursor = cursor(self.client_cursor.as_deref());
            let frames = self.announced.frames(&batch, after, self.follower.tail(), &cursor);
            self.pending.extend(frames);
            self.done = self.announced.closed;
            if !self.pending.is_empty() || self.done {
                return;
            }
        }
    }
}

/// The SSE response of `follower`'s run, for a client that echoed `client_cursor`; it ends with
/// the stream, or at shutdown.
pub(super) fn stream(
    follower: Follower,
    shutdown: CancellationToken,
    client_cursor: Option<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let reader = Reader {
        follower,
        shutdown,
        announced: Announced::default(),
        client_cursor,
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
