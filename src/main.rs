//! The `hearth` binary: parse the command line, start logging, run, and map errors to exit codes.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use hearth::cli::{Cli, ConfigError, Exit};

/// mimalloc: fewer cycles per allocation than glibc's malloc on the request path (measured with
/// scripts/bench; docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = Cli::command();
    let matches = match command.clone().try_get_matches() {
        Ok(matches) => matches,
        Err(error) => return clap_error(&error),
    };
    if let Some((flag, env)) = hearth::config::secret::on_command_line(&command, &matches) {
        let instead = env.map_or_else(String::new, |env| format!("set {env}, or "));
        let _ = writeln!(
            std::io::stderr(),
            "error: {flag} takes no secret on the command line, where every user of this machine can read it (ps): {instead}pass {flag} @FILE to read it from a file"
        );
        return ExitCode::from(2);
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => return clap_error(&error),
    };
    if let Err(e) = hearth::telemetry::init(&cli.global.log, cli.global.log_format) {
        let _ = writeln!(std::io::stderr(), "error: {e}");
        return ExitCode::from(2);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.global.threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hearth::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<Exit>() => ExitCode::from(error.downcast_ref::<Exit>().map_or(1, |e| e.0)),
        Err(error) => {
            let code = if error.is::<ConfigError>() { 2 } else { 1 };
            if code == 1 {
                // Runtime failures also go to the log stream; setting errors only to the terminal.
                tracing::error!(error = format!("{error:#}"), "hearth stopped with an error");
            }
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::from(code)
        }
    }
}

/// Prints a clap error, adding the environment variable of the offending flag, so a bad
/// value names the setting however it was given.
fn clap_error(error: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue};
    let mut text = error.render().to_string();
    if let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) {
        let long = arg.split_whitespace().next().unwrap_or_default().trim_start_matches("--");
        let command = Cli::command();
        if let (Some(ContextValue::String(value)), true) =
            (error.get(ContextKind::InvalidValue), is_secret(&command, long))
        {
            // Never echo a secret back, even a malformed one.
            text = text.replace(value.as_str(), "***");
        }
        if let Some(env) = find_env(&command, long) {
            text = format!(
                "{}\n  (this setting is --{long} or the environment variable {env})\n",
                text.trim_end()
            );
        }
    }
    if !error.use_stderr() {
        // --help and --version: clap prints them to stdout.
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
    ExitCode::from(2)
}

fn is_secret(command: &clap::Command, long: &str) -> bool {
    command.get_arguments().any(|a| a.get_long() == Some(long) && a.is_hide_env_values_set())
        || command.get_subcommands().any(|sub| is_secret(sub, long))
}

fn find_env(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|sub| find_env(sub, long)))
}
