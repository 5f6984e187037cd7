//! Open streams per service key: a chat stream or a run's live event stream (SSE or long-poll)
//! holds a slot of its key until it ends, so one key cannot hold every connection of the
//! process (HEARTH_MAX_STREAMS_PER_KEY).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{AuthError, KeyRef};

/// The open streams of every key.
#[derive(Debug)]
pub struct StreamSlots {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream's slot, given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    key: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamSlots {
    /// At most `max` open streams per key.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self { max, open: Arc::default() }
    }

    /// A slot for one more stream of `key`.
    ///
    /// # Errors
    /// 429 when the key already holds its most.
    pub fn open(&self, key: &KeyRef) -> Result<StreamSlot, AuthError> {
        let label = key.label();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(label.clone()).or_insert(0);
        if *count >= self.max {
            return Err(AuthError::RateLimited {
                message: format!(
                    "this key holds {} open streams, the most allowed (HEARTH_MAX_STREAMS_PER_KEY); close one first",
                    self.max
                ),
                retry_after: 1,
            });
        }
        *count += 1;
        Ok(StreamSlot { key: label, open: Arc::clone(&self.open) })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_slots_and_gets_them_back() {
        let slots = StreamSlots::new(2);
        let (a, b) = (slots.open(&KeyRef::Static).unwrap(), slots.open(&KeyRef::Static).unwrap());
        assert!(matches!(slots.open(&KeyRef::Static), Err(AuthError::RateLimited { .. })));
        drop(a);
        let c = slots.open(&KeyRef::Static).unwrap();
        drop((b, c));
        assert!(slots.open.lock().unwrap().is_empty(), "an idle key leaves no entry");
    }
}
