//! The in-memory hub that wakes live readers once a run's events are committed.
//!
//! Live readers never get an event that is not yet durable: the hub carries each batch only after
//! its commit. A caught-up reader takes the batch from memory; one that fell behind reads the log
//! from SQLite (see [`super::follow::Follower`]). So a stream read live and a stream replayed
//! after a restart are the same events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::domain::event::RunEvent;
use crate::ids::RunId;

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
    /// Subscribes to a run's committed batches.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EventData;
    use crate::domain::outcome::Usage;

    #[test]
    fn the_last_subscription_removes_the_entry() {
        let hub = Arc::new(EventHub::default());
        let run = RunId::new();
        let a = hub.subscribe(&run);
        let b = hub.subscribe(&run);
        let event = RunEvent { seq: 3, data: EventData::Usage(Usage::default()), created_at: 0 };
        hub.publish(&run, Arc::from(vec![event]));
        assert_eq!(a.receiver.borrow().seq, 3);
        drop(a);
        assert_eq!(hub.watched_runs(), 1);
        drop(b);
        assert_eq!(hub.watched_runs(), 0);
    }
}
