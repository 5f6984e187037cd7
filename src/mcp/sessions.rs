//! Users' MCP client sessions: one per (server, organization, user), never shared between
//! users, opened on a user's first call and kept for the next ones.
//!
//! Bounded so that callers cannot exhaust memory: at most HEARTH_MCP_MAX_SESSIONS are open (the
//! least recently used is closed past it) and a session unused for HEARTH_MCP_SESSION_IDLE_S is
//! closed by [`Sessions::close_idle`]. A session whose transport broke is forgotten, so the next
//! call opens a new one. Closing a session drops its rmcp service, which ends its HTTP session
//! (`DELETE`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rmcp::RoleClient;
use rmcp::service::RunningService;
use tokio::sync::OnceCell;

use super::catalog::Watcher;

/// An open client session.
pub type Client = RunningService<RoleClient, Watcher>;

/// Whose session: the server (by index), the organization and the user (`None`: the
/// organization's service key, with no user).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The server's index in the configuration.
    pub server: usize,
    /// The organization.
    pub org: String,
    /// The user.
    pub user: Option<String>,
}

struct Slot {
    cell: Arc<OnceCell<Arc<Client>>>,
    last_used: Instant,
}

/// The open sessions.
pub struct Sessions {
    slots: Mutex<HashMap<SessionKey, Slot>>,
    max: usize,
    idle: Duration,
}

impl Sessions {
    /// At most `max` sessions, each closed after `idle` unused.
    #[must_use]
    pub fn new(max: usize, idle: Duration) -> Self {
        Self { slots: Mutex::new(HashMap::new()), max: max.max(1), idle }
    }

    /// The session of `key`, opened with `open` if there is none (concurrent first calls of one
    /// key wait for one opening; a failed opening is tried again by the next call).
    ///
    /// # Errors
    /// `open`'s error.
    pub async fn get<F, Fut, E>(&self, key: &SessionKey, open: F) -> Result<Arc<Client>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Client, E>>,
    {
        let cell = self.slot(key);
        let client = cell.get_or_try_init(|| async { open().await.map(Arc::new) }).await?;
        if client.is_closed() {
            // Its transport ended (the server went away): open a fresh one next time.
            self.forget(key, client);
        }
        Ok(Arc::clone(client))
    }

    /// The cell of `key`, created (and the least recently used evicted past the bound) if new.
    fn slot(&self, key: &SessionKey) -> Arc<OnceCell<Arc<Client>>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(key) {
            slot.last_used = Instant::now();
            return Arc::clone(&slot.cell);
        }
        if slots.len() >= self.max
            && let Some(oldest) = slots.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| k.clone())
        {
            slots.remove(&oldest);
        }
        let cell = Arc::new(OnceCell::new());
        slots.insert(key.clone(), Slot { cell: Arc::clone(&cell), last_used: Instant::now() });
        cell
    }

    /// Forgets `key`'s session if it is still `client` (a broken one), so the next call reopens.
    pub fn forget(&self, key: &SessionKey, client: &Arc<Client>) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let same = slots.get(key).and_then(|s| s.cell.get()).is_some_and(|c| Arc::ptr_eq(c, client));
        if same {
            slots.remove(key);
        }
    }

    /// Closes the sessions unused for longer than the idle limit; returns how many.
    pub fn close_idle(&self) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let before = slots.len();
        slots.retain(|_, s| s.last_used.elapsed() < self.idle);
        before - slots.len()
    }

    /// How many sessions are open (or opening).
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether none is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> SessionKey {
        SessionKey { server: 0, org: "org_1".into(), user: Some(user.into()) }
    }

    #[test]
    fn the_least_recently_used_session_is_evicted_past_the_bound() {
        let sessions = Sessions::new(2, Duration::from_secs(60));
        let a = sessions.slot(&key("a"));
        sessions.slot(&key("b"));
        assert!(Arc::ptr_eq(&a, &sessions.slot(&key("a"))), "one slot per key");
        sessions.slot(&key("c")); // evicts b, the least recently used
        assert_eq!(sessions.len(), 2);
        let slots = sessions.slots.lock().unwrap();
        assert!(slots.contains_key(&key("a")) && slots.contains_key(&key("c")));
    }

    #[test]
    fn users_never_share_a_slot_and_idle_ones_close() {
        let sessions = Sessions::new(10, Duration::ZERO);
        let a = sessions.slot(&key("a"));
        let b = sessions.slot(&key("b"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(sessions.close_idle(), 2);
        assert!(sessions.is_empty());
    }
}
