//! The one way to follow a run's durable log: the chat stream, the chat wait, `?wait=` and the
//! events endpoint (long-poll and SSE) all read through a [`Follower`].
//!
//! A follower yields committed events in order, from an offset, and knows when the log is
//! closed (its terminal event read). It is woken by the [`EventHub`]: a batch that follows on
//! from what it read is taken straight from memory; otherwise (a missed batch, the first read)
//! it reads the log from SQLite. It also re-reads every second, for writers in other processes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::hub::{EventHub, Subscription};
use crate::db::{Db, DbError, run_events};
use crate::domain::event::RunEvent;
use crate::ids::RunId;

/// Re-check interval of a follower, for events committed by another process.
const RECHECK: Duration = Duration::from_secs(1);
/// Most events one read from SQLite returns.
const PAGE: u32 = 1000;

/// Events a follower read, and where the log stands.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The events, in seq order (none when the wait ran out or the log is closed).
    pub events: Vec<RunEvent>,
    /// Whether these are the last events committed (the reader is caught up).
    pub up_to_date: bool,
    /// Whether the log is closed: its terminal event is in this batch or was read before.
    pub closed: bool,
}

/// Follows a run's durable log after an offset.
pub struct Follower {
    db: Db,
    run: RunId,
    /// Seq of the last event read (into the buffer or out of it).
    after: i64,
    /// The highest seq known to be committed.
    tail: i64,
    subscription: Subscription,
    buffer: VecDeque<RunEvent>,
    /// The terminal event has been read (it may still wait in the buffer).
    closed: bool,
    /// Whether the next step reads the log from SQLite (first read, missed batches, re-checks).
    must_read: bool,
}

impl Follower {
    /// Follows `run` after seq `after` (0: from the start).
    #[must_use]
    pub fn new(db: Db, hub: &Arc<EventHub>, run: RunId, after: i64) -> Self {
        let subscription = hub.subscribe(&run);
        Self {
            db,
            run,
            after,
            tail: after,
            subscription,
            buffer: VecDeque::new(),
            closed: false,
            must_read: true,
        }
    }

    /// Follows a run from its first event, subscribed before the run is dispatched: everything
    /// it will ever have comes through the hub, so nothing is read from SQLite unless a batch
    /// is missed.
    #[must_use]
    pub fn fresh(db: Db, hub: &Arc<EventHub>, run: RunId) -> Self {
        Self { must_read: false, ..Self::new(db, hub, run, 0) }
    }

    /// Follows `run` from the end of its log as it stands now (its `now` offset).
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn at_tail(db: Db, hub: &Arc<EventHub>, run: RunId) -> Result<Self, DbError> {
        let mut follower = Self::new(db, hub, run, i64::MAX);
        let slice = follower.read(i64::MAX).await?;
        (follower.after, follower.tail, follower.closed) = (slice.tail, slice.tail, slice.closed);
        follower.must_read = false;
        Ok(follower)
    }

    /// Seq of the last event this follower has read.
    #[must_use]
    pub fn position(&self) -> i64 {
        self.after - i64::try_from(self.buffer.len()).unwrap_or(0)
    }

    /// The highest seq known to be committed (at least [`Follower::position`]).
    #[must_use]
    pub fn tail(&self) -> i64 {
        self.tail.max(self.position())
    }

    /// The next committed event; `None` once the terminal event was returned.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn next(&mut self) -> Result<Option<RunEvent>, DbError> {
        self.fill(None).await?;
        Ok(self.buffer.pop_front())
    }

    /// The events committed after those read so far, waiting for some until `deadline` (for
    /// ever when `None`). The batch is empty when the deadline passed, or when the log was
    /// closed before. A deadline already past reads what is there without waiting.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn next_batch(&mut self, deadline: Option<Instant>) -> Result<Batch, DbError> {
        self.fill(deadline).await?;
        let events: Vec<RunEvent> = self.buffer.drain(..).collect();
        let up_to_date = events.last().is_none_or(|e| e.seq >= self.tail);
        Ok(Batch { events, up_to_date, closed: self.closed })
    }

    /// Waits until the log is closed or `deadline` passes; returns whether it is closed.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn wait_closed(&mut self, deadline: Instant) -> Result<bool, DbError> {
        while !self.closed && Instant::now() < deadline {
            self.fill(Some(deadline)).await?;
            self.buffer.clear();
        }
        Ok(self.closed)
    }

    /// Reads until the buffer holds events or the log is known closed, or `deadline` passes.
    async fn fill(&mut self, deadline: Option<Instant>) -> Result<(), DbError> {
        loop {
            if !self.buffer.is_empty() || self.closed {
                return Ok(());
            }
            if self.must_read {
                let slice = self.read(self.after).await?;
                self.tail = self.tail.max(slice.tail);
                // A full page that did not reach the tail: the next step reads on.
                self.must_read = slice.events.last().is_some_and(|e| e.seq < slice.tail);
                if slice.events.is_empty() {
                    self.closed = slice.closed;
                } else {
                    self.take(slice.events);
                }
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            self.wait(deadline).await;
        }
    }

    fn take(&mut self, events: impl IntoIterator<Item = RunEvent>) {
        for event in events {
            self.after = event.seq;
            self.closed |= event.kind().is_terminal();
            self.buffer.push_back(event);
        }
    }

    async fn read(&self, after: i64) -> Result<run_events::Slice, DbError> {
        let id = self.run.clone();
        self.db.read(move |conn| run_events::read_slice(conn, &id, after, PAGE)).await
    }

    /// Waits for news: takes a committed batch straight from memory when it follows on from
    /// what was read; otherwise marks the log to be read again.
    async fn wait(&mut self, deadline: Option<Instant>) {
        let recheck = Instant::now() + RECHECK;
        let until = deadline.map_or(recheck, |d| d.min(recheck));
        tokio::select! {
            changed = self.subscription.receiver.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(until).await;
                    self.must_read = true;
                    return;
                }
                let committed = self.subscription.receiver.borrow_and_update().clone();
                self.tail = self.tail.max(committed.seq);
                if committed.batch.first().map(|e| e.seq) == Some(self.after + 1) {
                    self.take(committed.batch.iter().cloned());
                } else {
                    self.must_read = committed.seq > self.after;
                }
            }
            () = tokio::time::sleep_until(until) => self.must_read = until == recheck,
        }
    }
}
