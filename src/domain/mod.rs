//! Pure types and rules, no I/O: run statuses, event kinds, resolved profiles,
//! the resolver's decision, chat messages.

pub mod event;
pub mod message;
pub mod profile;
pub mod resolver;
pub mod run;
