//! A run's event sink: while a turn executes, it coalesces text deltas, batches writes through
//! the single writer, and publishes each committed batch to the hub.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::Drafts;
use super::hub::EventHub;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, now_ms, run_events, runs};
use crate::domain::event::{Emit, EventData, EventType, RunEvent};
use crate::ids::{RunId, WorkerId};

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
    Holding(Vec<EventData>),
    /// A flusher task writes what is sent to it.
    Writing { tx: mpsc::UnboundedSender<Msg>, flusher: tokio::task::JoinHandle<(i64, Vec<EventData>)> },
}

/// What the flusher is sent.
enum Msg {
    /// An event to write.
    Event(EventData),
    /// Write what is pending now, then answer.
    Durable(tokio::sync::oneshot::Sender<()>),
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
        holder: Option<Holder>,
    ) -> Self {
        let out = Out { db, hub, run, drafts, holder, lost: false };
        let sink = Self { state: Mutex::new(SinkState::Holding(Vec::new())), out, next_seq, mode };
        if mode == SinkMode::Eager && sink.out.drafts.is_some() {
            let writing = sink.writing(Vec::new(), true);
            *sink.state.lock().unwrap_or_else(PoisonError::into_inner) = writing;
        }
        sink
    }

    /// Starts the flusher task with `held` queued for it; `store_first`: it stores the run (if
    /// not stored yet) before any event comes.
    fn writing(&self, held: Vec<EventData>, store_first: bool) -> SinkState {
        let (tx, rx) = mpsc::unbounded_channel();
        for event in held {
            let _ = tx.send(Msg::Event(event));
        }
        let out = self.out.clone();
        // Ends when the sender is dropped in `finish`, so shutdown never waits on it alone.
        #[expect(clippy::disallowed_methods, reason = "owned by the sink and joined in finish()")]
        let flusher = tokio::spawn(flush_loop(out, self.next_seq, store_first, rx));
        SinkState::Writing { tx, flusher }
    }

    /// Stops the sink: returns the seq the next event gets and the events not yet written,
    /// which the caller writes with the terminal event.
    pub async fn finish(self, fallback_next_seq: i64) -> (i64, Vec<EventData>) {
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
    fn emit(&self, data: EventData) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *state {
            SinkState::Holding(events)
                if self.mode == SinkMode::HoldUntilTool && data.kind() != EventType::ToolStarted =>
            {
                events.push(data);
            }
            SinkState::Holding(events) => {
                let mut held = std::mem::take(events);
                held.push(data);
                *state = self.writing(held, false);
            }
            // The receiver lives until `finish`; a send can only fail after it, when nothing is
            // left to record.
            SinkState::Writing { tx, .. } => {
                let _ = tx.send(Msg::Event(data));
            }
        }
    }

    fn durable(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let sent = match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            SinkState::Writing { tx, .. } => tx.send(Msg::Durable(ack)).is_ok(),
            // Nothing is written while holding; a tool's start always starts the writing.
            SinkState::Holding(_) => false,
        };
        Box::pin(async move {
            if sent {
                let _ = done.await;
            }
        })
    }
}

fn pending_bytes(events: &[EventData]) -> usize {
    events.iter().map(|d| if let EventData::TextDelta(t) = d { t.text.len() } else { 64 }).sum()
}

/// Gathers events for up to [`COALESCE`] (less when a [`Msg::Durable`] comes: its answer waits
/// on this write); returns false when the sink was closed meanwhile.
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    pending: &mut Vec<EventData>,
    acks: &mut Vec<tokio::sync::oneshot::Sender<()>>,
) -> bool {
    let deadline = tokio::time::Instant::now() + COALESCE;
    while pending_bytes(pending) < COALESCE_BYTES && acks.is_empty() {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => take(msg, pending, acks),
                None => return false,
            },
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    true
}

fn take(msg: Msg, pending: &mut Vec<EventData>, acks: &mut Vec<tokio::sync::oneshot::Sender<()>>) {
    match msg {
        Msg::Event(event) => pending.push(event),
        Msg::Durable(ack) => acks.push(ack),
    }
}

/// Where a sink writes: the run, and the drafts its rows may still wait in.
#[derive(Clone)]
struct Out {
    db: Db,
    hub: Arc<EventHub>,
    run: RunId,
    drafts: Option<Drafts>,
    holder: Option<Holder>,
    /// The holder lost the run: nothing more is written.
    lost: bool,
}

/// Who holds the run a sink writes for. Every write is fenced on it: once the run has moved
/// on (its lease swept, given back), the sink writes nothing more and cancels the turn, so two
/// attempts' events never interleave and nothing lands after another attempt's end.
#[derive(Debug, Clone)]
pub struct Holder {
    /// The worker.
    pub worker: WorkerId,
    /// The attempt it holds.
    pub attempt: i64,
    /// Cancelled when the run turns out to have moved on.
    pub on_lost: CancellationToken,
}

async fn flush_loop(
    mut out: Out,
    mut next_seq: i64,
    store_first: bool,
    mut rx: mpsc::UnboundedReceiver<Msg>,
) -> (i64, Vec<EventData>) {
    if store_first {
        out.write(Arc::from(Vec::new())).await;
    }
    let mut eager = true;
    while let Some(first) = rx.recv().await {
        let (mut pending, mut acks) = (Vec::new(), Vec::new());
        take(first, &mut pending, &mut acks);
        let open = if eager {
            eager = false;
            // What was held when the flusher started goes together. A run stored first may
            // have had more events queue meanwhile: its first still goes alone (time to first
            // token), the others gather as usual.
            if !store_first {
                while let Ok(more) = rx.try_recv() {
                    take(more, &mut pending, &mut acks);
                }
            }
            true
        } else {
            gather(&mut rx, &mut pending, &mut acks).await
        };
        if !open {
            return (next_seq, coalesce(pending));
        }
        let now = now_ms();
        let events: Vec<RunEvent> = coalesce(pending)
            .into_iter()
            .zip(next_seq..)
            .map(|(data, seq)| RunEvent { seq, data, created_at: now })
            .collect();
        let last = next_seq + i64::try_from(events.len()).unwrap_or(0) - 1;
        if out.write(Arc::from(events)).await {
            next_seq = last + 1;
        }
        // Stored (or, on a failed write, given up on: logged, and waiting longer would not help).
        for ack in acks {
            let _ = ack.send(());
        }
    }
    (next_seq, Vec::new())
}

impl Out {
    /// Writes `events` (maybe none), storing the run with them if it is not stored yet, and
    /// publishes them once committed — after the run's dispatch events when it stored the run.
    /// Returns whether the write is done with (committed, or dropped: the holder lost the run).
    async fn write(&mut self, events: Arc<[RunEvent]>) -> bool {
        if self.lost {
            return true;
        }
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
        let (id, holder) = (self.run.clone(), self.holder.as_ref().map(|h| (h.worker.clone(), h.attempt)));
        let write = self.db.write(move |conn| {
            if let Some(draft) = &draft {
                super::drafts::store_drafted(conn, draft)?;
            }
            if let Some((worker, attempt)) = &holder
                && !runs::holds(conn, &id, worker, *attempt)?
            {
                return Ok(false);
            }
            run_events::insert_events(conn, &id, &events)?;
            Ok(true)
        });
        match write.await {
            Ok(true) => {
                self.hub.publish(&self.run, published);
                true
            }
            Ok(false) => {
                tracing::warn!(run.id = %self.run, "the run moved on (its lease was lost): stopping this attempt");
                self.lost = true;
                if let Some(holder) = &self.holder {
                    holder.on_lost.cancel();
                }
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
fn coalesce(events: Vec<EventData>) -> Vec<EventData> {
    let mut out: Vec<EventData> = Vec::with_capacity(events.len());
    for data in events {
        if let EventData::TextDelta(more) = &data
            && let Some(EventData::TextDelta(previous)) = out.last_mut()
        {
            previous.text.push_str(&more.text);
            continue;
        }
        out.push(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::ToolStarted;
    use crate::domain::outcome::Usage;

    #[test]
    fn consecutive_deltas_merge_and_others_keep_order() {
        let merged = coalesce(vec![
            EventData::text("a"),
            EventData::text("b"),
            EventData::Usage(Usage::default()),
            EventData::text("c"),
        ]);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0], EventData::text("ab"));
        assert_eq!(merged[1].kind(), EventType::Usage);
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
        let text_only = EventSink::start(
            db.clone(),
            Arc::clone(&hub),
            RunId::new(),
            3,
            SinkMode::HoldUntilTool,
            None,
            None,
        );
        text_only.emit(EventData::text("hello"));
        text_only.emit(EventData::Usage(Usage::default()));
        let (next, tail) = text_only.finish(3).await;
        assert_eq!((next, tail.len(), stored(&db).await), (3, 2, 0), "all held for the terminal transaction");

        let writing = EventSink::start(db.clone(), hub, RunId::new(), 3, SinkMode::HoldUntilTool, None, None);
        writing.emit(EventData::text("let me look"));
        let call = ToolStarted { id: "c1".into(), name: "nope".into(), arguments: "{}".into() };
        writing.emit(EventData::ToolStarted(call));
        writing.emit(EventData::Usage(Usage::default()));
        let (next, tail) = writing.finish(3).await;
        assert_eq!(
            (next, tail.len(), stored(&db).await),
            (6, 0, 3),
            "a whole-answer sink writes from the tool on"
        );
    }

    /// `durable` answers only once what was emitted before it is stored (the agent loop waits
    /// on it between a tool call's start and the call), even while a batch is gathering.
    #[tokio::test]
    async fn durable_waits_until_the_events_before_it_are_stored() {
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
        let count = || {
            let db = db.clone();
            async move {
                db.read(|c| Ok(c.query_row("SELECT count(*) FROM run_events", [], |r| r.get::<_, i64>(0))?))
                    .await
                    .unwrap()
            }
        };
        let hub = Arc::new(EventHub::default());
        let sink = EventSink::start(db.clone(), hub, RunId::new(), 1, SinkMode::Eager, None, None);
        sink.emit(EventData::text("first, written at once"));
        sink.durable().await;
        assert_eq!(count().await, 1);
        // The next events would gather for COALESCE; durable cuts that short, and waits for them.
        for i in 0..2 {
            let call = ToolStarted { id: format!("c{i}"), name: "t".into(), arguments: "{}".into() };
            sink.emit(EventData::ToolStarted(call));
        }
        sink.durable().await;
        assert_eq!(count().await, 3, "both tool starts stored before durable answered");
        let (next, tail) = sink.finish(1).await;
        assert_eq!((next, tail.len()), (4, 0));
    }
}
