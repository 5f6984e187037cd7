//! The OpenAI dialect: wire types of chat requests and their conversion into a run's input.

pub mod chat;
pub mod types;
