//! [`Secret`]: a setting (API key, token) whose `Debug` never shows its value, given in the
//! environment or read from a file (`@PATH`) — never on the command line, where every user of
//! the machine sees it (`ps`, `/proc/PID/cmdline`): [`on_command_line`] refuses that.

use std::fmt;
use std::str::FromStr;

/// A secret setting (API key, token). Its `Debug` never shows the value (it has no `Display`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself; use only to compare or hash, never to log.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix('@') {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            return text.trim_end_matches(['\n', '\r']).parse();
        }
        if s.is_empty() {
            Err("must not be empty".into())
        } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err("must not contain whitespace or control characters".into())
        } else {
            Ok(Self(s.to_owned()))
        }
    }
}

impl Secret {
    /// Refuses a secret shorter than `min` characters, naming `setting`.
    ///
    /// # Errors
    /// A message naming the setting and the minimum.
    pub fn at_least(&self, min: usize, setting: &str) -> Result<(), String> {
        if self.0.chars().count() < min {
            return Err(format!("{setting} must be at least {min} characters (a short secret is guessable)"));
        }
        Ok(())
    }
}

/// The long flags that take secrets (`--admin-token`, …), by their argument ids.
pub const SECRET_ARGS: [&str; 8] = [
    "api_key",
    "admin_token",
    "jwt_secret",
    "metrics_token",
    "openai_api_key",
    "anthropic_api_key",
    "token",
    "mcp_signing_key",
];

/// The first secret flag given a value on the command line (rather than `@FILE`), with the
/// environment variable to use instead, looked up in `matches` and its subcommands'.
#[must_use]
pub fn on_command_line(
    command: &clap::Command,
    matches: &clap::ArgMatches,
) -> Option<(String, Option<String>)> {
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if !SECRET_ARGS.contains(&id)
            || matches.value_source(id) != Some(clap::parser::ValueSource::CommandLine)
        {
            continue;
        }
        let raw = matches.get_raw(id).into_iter().flatten().next();
        if raw.is_some_and(|v| !v.to_string_lossy().starts_with('@')) {
            let flag = format!("--{}", arg.get_long().unwrap_or(id));
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            return Some((flag, env));
        }
    }
    let (name, sub) = matches.subcommand()?;
    on_command_line(command.find_subcommand(name)?, sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let secret: Secret = "hk_verysecret".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(secret)).contains("verysecret"));
    }

    #[test]
    fn a_secret_may_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-a-file-0123456789\n").unwrap();
        let secret: Secret = format!("@{}", path.display()).parse().unwrap();
        assert_eq!(secret.expose(), "from-a-file-0123456789");
        assert!(format!("@{}", dir.path().join("missing").display()).parse::<Secret>().is_err());
        assert!(secret.at_least(16, "X").is_ok());
        assert!(secret.at_least(64, "HEARTH_X").unwrap_err().contains("HEARTH_X"));
    }
}
