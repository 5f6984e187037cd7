//! Pure types and rules, no I/O: run statuses, event kinds and data, resolved profiles,
//! the resolver's decision, chat messages, run outcomes and session statuses.

pub mod event;
pub mod input;
pub mod message;
pub mod outcome;
pub mod profile;
pub mod resolver;
pub mod run;
pub mod session;
pub mod version;
