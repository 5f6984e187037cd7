//! The integration tests: each starts the compiled `hearth` binary and talks to it over HTTP.
#![expect(
    clippy::disallowed_methods,
    reason = "tests spawn and join their own tasks; the TaskTracker rule is for the server"
)]

// `cfg(test)` always holds in this test binary; it marks the modules as test code for clippy, so
// `allow-unwrap-in-tests` and friends (clippy.toml) cover their helpers as well as their tests.
#[cfg(test)]
mod admin_api;
#[cfg(test)]
mod admin_pages;
#[cfg(test)]
mod auth;
#[cfg(test)]
mod chat;
#[cfg(test)]
mod cli;
#[cfg(test)]
mod cli_check;
#[cfg(test)]
mod cli_orgs;
#[cfg(test)]
mod cli_run;
#[cfg(test)]
mod cli_workers;
#[cfg(test)]
mod connections;
#[cfg(test)]
mod faults;
#[cfg(test)]
mod foundation;
#[cfg(test)]
mod idempotency;
#[cfg(test)]
mod jwt;
#[cfg(test)]
mod mcp;
#[cfg(test)]
mod packaging;
#[cfg(test)]
mod roles;
#[cfg(test)]
mod rollback;
#[cfg(test)]
mod runs;
#[cfg(test)]
mod secrets;
#[cfg(test)]
mod sessions;
#[cfg(test)]
mod streams;
#[cfg(test)]
mod stress;
#[cfg(test)]
mod support;
#[cfg(test)]
mod worker_cli;
#[cfg(test)]
mod workers;
