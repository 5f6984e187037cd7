//! hearth: a single-binary agent runtime appliance (OpenAI-compatible chat API, durable runs,
//! runner pools, one SQLite file). `main.rs` only parses the command line and calls in here.

pub mod admin;
pub mod agent;
pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod fleet;
pub mod http;
pub mod ids;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod orgs;
pub mod queue;
pub mod replication;
pub mod runner;
pub mod server;
pub mod telemetry;
pub mod turns;
pub mod worker;
