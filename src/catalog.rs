//! `hearth.toml` (HEARTH_CONFIG): model aliases with fallbacks, and agents.
//!
//! ```toml
//! [models.fast]
//! target = "openai/gpt-4o-mini"
//! fallbacks = ["anthropic/claude-haiku-4-5"]
//!
//! [agents.researcher]
//! model = "fast"
//! system = "You research carefully."
//! mcp_servers = ["search"]
//! max_steps = 8
//! temperature = 0.2
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// An example configuration, printed by the docs and checked by a test.
pub const EXAMPLE: &str = include_str!("../hearth.example.toml");

/// A model alias.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// `provider/model` (or `echo`).
    pub target: String,
    /// Tried in order when the target fails before any output.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// An agent: a model with a system prompt, tools and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// An alias or `provider/model`.
    pub model: String,
    /// System prompt put before the conversation.
    pub system: Option<String>,
    /// MCP servers whose tools the agent is offered (default: none).
    #[serde(default)]
    pub mcp_servers: Vec<String>,
    /// Model calls per turn.
    pub max_steps: Option<u32>,
    /// Default temperature.
    pub temperature: Option<f64>,
}

/// The parsed file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Aliases by name.
    #[serde(default)]
    pub models: BTreeMap<String, Alias>,
    /// Agents by name.
    #[serde(default)]
    pub agents: BTreeMap<String, Agent>,
}

fn is_direct(model: &str) -> bool {
    model == "echo" || model.split_once('/').is_some_and(|(p, m)| !p.is_empty() && !m.is_empty())
}

impl Catalog {
    /// Reads and validates the file.
    ///
    /// # Errors
    /// A message naming HEARTH_CONFIG and what is wrong.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("HEARTH_CONFIG: cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("HEARTH_CONFIG ({}): {e}", path.display()))
    }

    /// Parses and validates a configuration text.
    ///
    /// # Errors
    /// What is wrong, naming the entry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let catalog: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, alias) in &catalog.models {
            if name.contains('/') || name.starts_with("agent:") || name == "echo" {
                return Err(format!(
                    "[models.{name}]: an alias name may not contain '/', start with agent: or be echo"
                ));
            }
            for target in std::iter::once(&alias.target).chain(&alias.fallbacks) {
                if !is_direct(target) {
                    return Err(format!("[models.{name}]: `{target}` is not provider/model"));
                }
            }
        }
        for (name, agent) in &catalog.agents {
            if !is_direct(&agent.model) && !catalog.models.contains_key(&agent.model) {
                return Err(format!(
                    "[agents.{name}]: model `{}` is neither an alias nor provider/model",
                    agent.model
                ));
            }
            if agent.max_steps.is_some_and(|s| !(1..=100).contains(&s)) {
                return Err(format!("[agents.{name}]: max_steps must be 1 to 100"));
            }
            if agent.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                return Err(format!("[agents.{name}]: temperature must be 0 to 2"));
            }
        }
        Ok(catalog)
    }
}

impl Catalog {
    /// Checks that every agent's `mcp_servers` names a configured MCP server (`servers`).
    ///
    /// # Errors
    /// A message naming the agent, the server and the settings.
    pub fn check_mcp_servers(&self, servers: &[&str]) -> Result<(), String> {
        for (name, agent) in &self.agents {
            if let Some(missing) =
                agent.mcp_servers.iter().find(|s| *s != "test" && !servers.contains(&s.as_str()))
            {
                return Err(format!(
                    "[agents.{name}]: mcp_servers names `{missing}`, which MCP_CONFIG_PATH / MCP_CONFIG_JSON does not configure"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses() {
        let catalog = Catalog::parse(EXAMPLE).unwrap();
        assert!(catalog.models.contains_key("fast"));
        assert!(catalog.agents.contains_key("researcher"));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = Catalog::parse("[models.fast]\ntarget = \"gpt-4o\"\n").unwrap_err();
        assert!(err.contains("[models.fast]"), "{err}");
        let err = Catalog::parse("[agents.a]\nmodel = \"nope\"\n").unwrap_err();
        assert!(err.contains("[agents.a]"), "{err}");
        assert!(Catalog::parse("[modles.x]\ntarget = \"a/b\"\n").is_err());
    }

    #[test]
    fn agents_may_name_only_configured_mcp_servers() {
        let catalog =
            Catalog::parse("[agents.a]\nmodel = \"echo\"\nmcp_servers = [\"calc\", \"test\"]\n").unwrap();
        assert!(catalog.check_mcp_servers(&["calc"]).is_ok());
        let err = catalog.check_mcp_servers(&["other"]).unwrap_err();
        assert!(err.contains("[agents.a]") && err.contains("`calc`") && err.contains("MCP_CONFIG"), "{err}");
    }
}
