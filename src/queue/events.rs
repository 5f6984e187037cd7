//! Run events: the writer that coalesces and persists them, and the in-memory hub that wakes
//! live readers once they are committed.
//!
//! Live readers never get an event that is not yet durable: the hub carries each batch only after
//! its commit. A caught-up reader takes the batch from memory; one that fell behind reads the log
//! from SQLite. So a stream read live and a stream replayed after a restart are the same events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::agent::Emit;
use crate::db::{Db, now_ms, run_events};
use crate::domain::event::{EventType, RunEvent};
use crate::ids::RunId;

use super::Drafts;

/// The latest committed batch of a run's events: its last seq, and the events themselves so
/// live readers that are caught up need not read them back from SQLite.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// Seq of the last committed event.
    pub seq: i64,
    /// The batch committed last (in seq order).
    pub batch: Arc<[RunEvent]>,
}

/// Where committed batches are published, per run.
#[derive(Default)]
pub struct EventHub {
    runs: Mutex<HashMap<RunId, watch::Sender<Committed>>>,
}

/// A live reader's subscription to a run; unsubscribes on drop.
pub struct Subscription {
    hub: Arc<EventHub>,
    run: RunId,
    /// Receives the last committed batch.
    pub receiver: watch::Receiver<Committed>,
}

impl EventHub {
    /// Subscribes to a run's committed seq.
    pub fn subscribe(self: &Arc<Self>, run: &RunId) -> Subscription {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = runs.entry(run.clone()).or_insert_with(|| watch::channel(Committed::default()).0);
        Subscription { hub: Arc::clone(self), run: run.clone(), receiver: sender.subscribe() }
    }

    /// Announces a committed batch of the run's events (in seq order).
    pub fn publish(&self, run: &RunId, batch: Arc<[RunEvent]>) {
        let Some(seq) = batch.last().map(|e| e.seq) else { return };
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = runs.get(run) {
            sender.send_replace(Committed { seq, batch });
        }
    }

    /// Whether `run` has live readers.
    #[must_use]
    pub fn watched(&self, run: &RunId) -> bool {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner).contains_key(run)
    }

    /// How many runs have live readers (for metrics and tests).
    #[must_use]
    pub fn watched_runs(&self) -> usize {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut runs = self.hub.runs.lock().unwrap_or_else(PoisonError::into_inner);
        // This subscription's receiver is still alive here, so one receiver left means it was the last.
        if runs.get(&self.run).is_some_and(|s| s.receiver_count() <= 1) {
            runs.remove(&self.run);
        }
    }
}

/// Writes a run's events while it executes: coalesces text deltas, batches writes through the
/// single writer, publishes each committed batch. A streamed turn's first event is written at
/// once (time to first token); later events gather for up to [`COALESCE`] or [`COALESCE_BYTES`]
/// per write. A turn answered whole keeps its events in memory until a tool starts (from then
/// on they are written as they come, so a long turn shows its progress); a turn that needs no
/// tool thus writes everything with its terminal event, in one transaction. What is still
/// pending when the turn ends is written with the terminal event. The first write of a run
/// not stored yet ([`super::Drafts`]) stores the run with it, and publishes its dispatch
/// events with its own; a streamed turn's sink makes that write at once, alone, while the
/// turn starts.
pub struct EventSink {
    state: Mutex<SinkState>,
    out: Out,
    next_seq: i64,
    mode: SinkMode,
}

/// When an [`EventSink`] starts writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// From the first event on, the first without waiting (a streamed turn).
    Eager,
    /// Once a tool starts (a turn answered whole: a long turn shows its progress).
    HoldUntilTool,
}

enum SinkState {
    /// Nothing written yet: events wait here.
    Holding(Vec<(EventType, Value)>),
    /// A flusher task writes what is sent to it.
    Writing {
        tx: mpsc::UnboundedSender<(EventType, Value)>,
        flusher: tokio::task::JoinHandle<(i64, Vec<(EventType, Value)>)>,
    },
}

/// Longest an event waits for company before it is written.
pub const COALESCE: std::time::Duration = std::time::Duration::from_millis(5);
/// Pending text that triggers a write at once.
pub const COALESCE_BYTES: usize = 512;

impl EventSink {
    /// Starts a sink for `run` whose next event gets `next_seq`, writing as `mode` says; `drafts`
    /// when the run may not be stored yet (its first write then stores it). An eager sink of a
    /// run not stored yet stores it at once, while the turn starts: its upstream call does not
    /// wait on that commit, and its first event's write stays small (time to first token).
    #[must_use]
    pub fn start(
        db: Db,
        hub: Arc<EventHub>,
        run: RunId,
        next_seq: i64,
        mode: SinkMode,
        drafts: Option<Drafts>,
    ) -> Self {
        let out = Out { db, hub, run, drafts };
        let sink = Self { state: Mutex::new(SinkState::Holding(Vec::new())), out, next_seq, mode };
        if mode == SinkMode::Eager && sink.out.drafts.is_some() {
            let writing = sink.writing(Vec::new(), true);
            *sink.state.lock().unwrap_or_else(PoisonError::into_inner) = writing;
        }
        sink
    }

    /// Starts the flusher task with `held` queued for it; `store_first`: it stores the run (if
    /// not stored yet) before any event comes.
    fn writing(&self, held: Vec<(EventType, Value)>, store_first: bool) -> SinkState {
        let (tx, rx) = mpsc::unbounded_channel();
        for event in held {
            let _ = tx.send(event);
        }
        let out = self.out.clone();
        // Ends when the sender is dropped in `finish`, so shutdown never waits on it alone.
        #[expect(clippy::disallowed_methods, reason = "owned by the sink and joined in finish()")]
        let flusher = tokio::spawn(flush_loop(out, self.next_seq, store_first, rx));
        SinkState::Writing { tx, flusher }
    }

    /// Stops the sink: returns the seq the next event gets and the events not yet written,
    /// which the caller writes with the terminal event.
    pub async fn finish(self, fallback_next_seq: i64) -> (i64, Vec<(EventType, Value)>) {
        let state = self.state.into_inner().unwrap_or_else(PoisonError::into_inner);
        match state {
            SinkState::Holding(events) => (self.next_seq, coalesce(events)),
            SinkState::Writing { tx, flusher } => {
                drop(tx);
                flusher.await.unwrap_or((fallback_next_seq, Vec::new()))
            }
        }
    }
}

impl Emit for EventSink {
    fn emit(&self, kind: EventType, data: Value) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            SinkState::Holding(events)
                if self.mode == SinkMode::HoldUntilTool && kind != EventType::ToolStarted =>
            {
                events.push((kind, data));
            }
            SinkState::Holding(events) => {
                let mut held = std::mem::take(events);
                held.push((kind, data));
                *state = self.writing(held, false);
            }
            // The receiver lives until `finish`; a send can only fail after it, when nothing is
            // left to record.
            SinkState::Writing { tx, .. } => {
                let _ = tx.send((kind, data));
            }
        }
    }
}

fn pending_bytes(events: &[(EventType, Value)]) -> usize {
    events.iter().map(|(_, d)| d.get("text").and_then(Value::as_str).map_or(64, str::len)).sum()
}

/// Gathers events for up to [`COALESCE`]; returns false when the sink was closed meanwhile.
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<(EventType, Value)>,
    pending: &mut Vec<(EventType, Value)>,
) -> bool {
    let deadline = tokio::time::Instant::now() + COALESCE;
    while pending_bytes(pending) < COALESCE_BYTES {
        tokio::select! {
            event = rx.recv() => match event {
                Some(event) => pending.push(event),
                None => return false,
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    true
}

/// Where a sink writes: the run, and the drafts its rows may still wait in.
#[derive(Clone)]
struct Out {
    db: Db,
    hub: Arc<EventHub>,
    run: RunId,
    drafts: Option<Drafts>,
}

async fn flush_loop(
    mut out: Out,
    mut next_seq: i64,
    store_first: bool,
    mut rx: mpsc::UnboundedReceiver<(EventType, Value)>,
) -> (i64, Vec<(EventType, Value)>) {
    if store_first {
        out.write(Arc::from(Vec::new())).await;
    }
    let mut eager = true;
    while let Some(first) = rx.recv().await {
        let mut pending = vec![first];
        let open = if eager {
            eager = false;
            // What was held when the flusher started goes together. A run stored first may
            // have had more events queue meanwhile: its first still goes alone (time to first
            // token), the others gather as usual.
            if !store_first {
                while let Ok(more) = rx.try_recv() {
                    pending.push(more);
                }
            }
            true
        } else {
            gather(&mut rx, &mut pending).await
        };
        if !open {
            return (next_seq, coalesce(pending));
        }
        let now = now_ms();
        let events: Vec<RunEvent> = coalesce(pending)
            .into_iter()
            .zip(next_seq..)
            .map(|((kind, data), seq)| RunEvent { seq, kind, data, created_at: now })
            .collect();
        let last = next_seq + i64::try_from(events.len()).unwrap_or(0) - 1;
        if out.write(Arc::from(events)).await {
            next_seq = last + 1;
        }
    }
    (next_seq, Vec::new())
}

impl Out {
    /// Writes `events` (maybe none), storing the run with them if it is not stored yet, and
    /// publishes them once committed — after the run's dispatch events when it stored the run.
    /// Returns whether the write committed.
    async fn write(&mut self, events: Arc<[RunEvent]>) -> bool {
        let drafts = self.drafts.take();
        let draft = drafts.as_ref().and_then(|d| d.take(&self.run));
        if draft.is_none() && events.is_empty() {
            return true;
        }
        // Put back if this write fails, so a later write, or the run's end, still stores it.
        let keep = draft.clone().zip(drafts);
        let published: Arc<[RunEvent]> = match &draft {
            Some(d) => d.events.iter().chain(events.iter()).cloned().collect(),
            None => Arc::clone(&events),
        };
        let id = self.run.clone();
        let write = self.db.write(move |conn| {
            if let Some(draft) = &draft {
                super::dispatch::store_drafted(conn, draft)?;
            }
            run_events::insert_events(conn, &id, &events)
        });
        match write.await {
            Ok(()) => {
                self.hub.publish(&self.run, published);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, run.id = %self.run, "could not store run events");
                if let Some((draft, drafts)) = keep {
                    drafts.insert(draft);
                    self.drafts = Some(drafts);
                }
                false
            }
        }
    }
}

/// Merges consecutive text deltas into one event.
fn coalesce(events: Vec<(EventType, Value)>) -> Vec<(EventType, Value)> {
    let mut out: Vec<(EventType, Value)> = Vec::with_capacity(events.len());
    for (kind, data) in events {
        if kind == EventType::TextDelta
            && let Some((EventType::TextDelta, previous)) = out.last_mut()
            && let (Some(Value::String(text)), Some(more)) =
                (previous.get_mut("text"), data.get("text").and_then(Value::as_str))
        {
            text.push_str(more);
            continue;
        }
        out.push((kind, data));
    }
    out
}

/// Follows a run's durable log from an offset: yields committed events in order and ends after
/// the terminal one. Woken by the hub; re-checks every second for writers in other processes.
pub struct Follower {
    db: Db,
    run: RunId,
    after: i64,
    subscription: Subscription,
    buffer: std::collections::VecDeque<RunEvent>,
    closed: bool,
    /// Whether the next step reads the log from SQLite (first read, missed batches, re-checks).
    must_read: bool,
}

/// Re-check interval of a follower, for events committed by another process.
const FOLLOW_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl Follower {
    /// Follows `run` after seq `after`.
    #[must_use]
    pub fn new(db: Db, hub: &Arc<EventHub>, run: RunId, after: i64) -> Self {
        let subscription = hub.subscribe(&run);
        Self {
            db,
            run,
            after,
            subscription,
            buffer: std::collections::VecDeque::new(),
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

    /// The next committed event; `None` once the terminal event was returned.
    ///
    /// # Errors
    /// On a storage failure.
    pub async fn next(&mut self) -> Result<Option<RunEvent>, crate::db::DbError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.closed = event.kind.is_terminal();
                return Ok(Some(event));
            }
            if self.closed {
                return Ok(None);
            }
            if self.must_read {
                let (id, after) = (self.run.clone(), self.after);
                let events =
                    self.db.read(move |conn| run_events::list_events_after(conn, &id, after, 1000)).await?;
                self.must_read = false;
                if let Some(last) = events.last() {
                    self.after = last.seq;
                    self.buffer.extend(events);
                    continue;
                }
            }
            self.wait().await;
        }
    }
}

impl Follower {
    /// Waits for news: takes a committed batch straight from memory when it follows on from
    /// what was read; otherwise marks the log to be read again.
    async fn wait(&mut self) {
        tokio::select! {
            changed = self.subscription.receiver.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(FOLLOW_RECHECK).await;
                    self.must_read = true;
                    return;
                }
                let committed = self.subscription.receiver.borrow_and_update().clone();
                if committed.batch.first().map(|e| e.seq) == Some(self.after + 1) {
                    self.after = committed.seq;
                    self.buffer.extend(committed.batch.iter().cloned());
                } else {
                    self.must_read = committed.seq > self.after;
                }
            }
            () = tokio::time::sleep(FOLLOW_RECHECK) => self.must_read = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn consecutive_deltas_merge_and_others_keep_order() {
        let merged = coalesce(vec![
            (EventType::TextDelta, json!({"text": "a"})),
            (EventType::TextDelta, json!({"text": "b"})),
            (EventType::Usage, json!({})),
            (EventType::TextDelta, json!({"text": "c"})),
        ]);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].1, json!({"text": "ab"}));
        assert_eq!(merged[1].0, EventType::Usage);
    }

    /// A turn answered whole keeps its events until a tool starts, then writes as they come.
    #[tokio::test]
    async fn a_whole_answer_sink_writes_nothing_until_a_tool_starts() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("s.db"), 2).unwrap();
        db.write(|c| {
            Ok(c.execute_batch(
                "CREATE TABLE run_events (run_id TEXT, seq INTEGER, type TEXT, data TEXT, created_at INTEGER,
                                          PRIMARY KEY (run_id, seq))",
            )?)
        })
        .await
        .unwrap();
        let stored = |db: &Db| {
            let db = db.clone();
            async move {
                db.read(|c| Ok(c.query_row("SELECT count(*) FROM run_events", [], |r| r.get::<_, i64>(0))?))
                    .await
                    .unwrap()
            }
        };
        let hub = Arc::new(EventHub::default());
        let text_only =
            EventSink::start(db.clone(), Arc::clone(&hub), RunId::new(), 3, SinkMode::HoldUntilTool, None);
        text_only.emit(EventType::TextDelta, json!({"text": "hello"}));
        text_only.emit(EventType::Usage, json!({}));
        let (next, tail) = text_only.finish(3).await;
        assert_eq!((next, tail.len(), stored(&db).await), (3, 2, 0), "all held for the terminal transaction");

        let writing = EventSink::start(db.clone(), hub, RunId::new(), 3, SinkMode::HoldUntilTool, None);
        writing.emit(EventType::TextDelta, json!({"text": "let me look"}));
        writing.emit(EventType::ToolStarted, json!({"id": "c1", "name": "nope", "arguments": "{}"}));
        writing.emit(EventType::ToolFinished, json!({"id": "c1", "error": "not offered"}));
        let (next, tail) = writing.finish(3).await;
        assert_eq!(
            (next, tail.len(), stored(&db).await),
            (6, 0, 3),
            "a whole-answer sink writes from the tool on"
        );
    }

    #[test]
    fn the_last_subscription_removes_the_entry() {
        let hub = Arc::new(EventHub::default());
        let run = RunId::new();
        let a = hub.subscribe(&run);
        let b = hub.subscribe(&run);
        let event = RunEvent { seq: 3, kind: EventType::Usage, data: serde_json::json!({}), created_at: 0 };
        hub.publish(&run, Arc::from(vec![event]));
        assert_eq!(a.receiver.borrow().seq, 3);
        drop(a);
        assert_eq!(hub.watched_runs(), 1);
        drop(b);
        assert_eq!(hub.watched_runs(), 0);
    }
}
