//! The resolved profile (SPEC §6): how a session's runs execute, fixed at dispatch.

use serde::{Deserialize, Serialize};

/// How the request was authenticated, as recorded in the profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMode {
    /// A service key without a user.
    #[default]
    #[serde(rename = "api-key")]
    ApiKey,
    /// A service key with a user JWT (`X-Runtime-User`).
    #[serde(rename = "user-jwt")]
    UserJwt,
}

/// Everything a worker needs to know about how to run a turn, stamped on the session and the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResolvedProfile {
    /// The runner pool that executes the run.
    pub runner: String,
    /// The model as requested (`echo`, `provider/model`, alias or `agent:NAME`).
    pub model: String,
    /// The provider that serves the model (`echo`, `openai`, `anthropic`).
    pub provider: String,
    /// Server-side tools offered to the model.
    pub tools: Vec<String>,
    /// Model calls allowed before the run fails.
    pub max_steps: u32,
    /// `api-key` or `user-jwt`.
    pub auth_mode: AuthMode,
    /// Why this runner: flag, ramp, default, or failure-closed and why.
    pub runner_reason: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A profile for tests of other modules.
    pub(crate) fn profile(runner: &str) -> ResolvedProfile {
        ResolvedProfile {
            runner: runner.into(),
            model: "echo".into(),
            provider: "echo".into(),
            tools: Vec::new(),
            max_steps: 8,
            auth_mode: AuthMode::ApiKey,
            runner_reason: "default".into(),
        }
    }
}
