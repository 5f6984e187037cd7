//! Test harness: runs the real `hearth` binary on a free port with its own data directory.
//!
//! Every [`Hearth`] owns a temporary data directory and a child process listening on
//! 127.0.0.1 (or the default address, see [`Options::default_host`]) with port 0; its stderr is read continuously by a thread and kept line by line,
//! so tests can read the first-run credentials and the JSON logs. Set `TEST_LOG=1` to echo the
//! child's stderr to the test's stderr.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long `serve` may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a CLI subcommand (or a `serve` expected to fail) may run.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Variables (besides every `HEARTH_*`) that would change how hearth starts if they leaked in
/// from the developer's shell.
const LEAKY_VARS: &[&str] = &[
    "PORT",
    "DATABASE_URL",
    "GATEWAY_API_KEY",
    "MESHI_RUNTIME_API_KEY",
    "RUST_LOG",
    "TEST_LOG",
    "MCP_CONFIG_PATH",
    "MCP_CONFIG_JSON",
];

/// A fresh, empty data directory.
pub fn data_dir() -> TempDir {
    tempfile::Builder::new().prefix("hearth-test-").tempdir().expect("create a temp data dir")
}

/// The database file hearth uses inside a data directory.
pub fn db_in(dir: &Path) -> PathBuf {
    dir.join("hearth.db")
}

/// A `hearth --db DB` command with a clean environment and JSON logs, run in the db's directory.
pub fn command(db: &Path) -> Command {
    let mut cmd = command_in(db.parent().unwrap_or(Path::new(".")));
    cmd.arg("--db").arg(db);
    cmd
}

/// A `hearth` command naming no database, with a clean environment and JSON logs, run in `dir`
/// (so its default database would be `dir/data/hearth.db`).
pub fn command_in(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("HEARTH_") || LEAKY_VARS.contains(&text.as_ref()) {
            cmd.env_remove(&name);
        }
    }
    cmd.env("HEARTH_LOG_FORMAT", "json").env("HEARTH_LOG", "info").current_dir(dir);
    cmd
}

/// Runs a CLI subcommand against `db` and captures its output.
pub fn hearth_cmd(db: &Path, args: &[&str]) -> Output {
    run(command(db).args(args))
}

/// Runs a command to completion, capturing its output; fails the test if it takes over 30 s.
pub fn run(cmd: &mut Command) -> Output {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn hearth");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll hearth") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL);
    };
    let output = Output {
        status: status.unwrap_or_else(|| child.wait().expect("reap hearth")),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(status.is_some(), "{cmd:?} still ran after {CLI_TIMEOUT:?}; stderr:\n{}", stderr_of(&output));
    output
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// A command's stdout as text.
pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A command's stderr as text.
pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Extra settings for a [`Hearth`]: environment variables and `serve` flags.
#[derive(Debug, Default, Clone)]
pub struct Options {
    env: Vec<(String, String)>,
    args: Vec<String>,
    default_host: bool,
}

impl Options {
    /// Sets an environment variable of the server.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a flag after `serve`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Leaves `--host` at its default instead of 127.0.0.1 (the tests still talk to 127.0.0.1).
    pub fn default_host(mut self) -> Self {
        self.default_host = true;
        self
    }

    /// Starts a server with a fresh data directory.
    pub async fn start(self) -> Hearth {
        self.start_in(data_dir()).await
    }

    /// Starts a server on an existing data directory (prepared with [`hearth_cmd`], say).
    pub async fn start_in(self, dir: TempDir) -> Hearth {
        let (child, reader, lines) = spawn(&self, &db_in(dir.path()));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy() // a developer's HTTP_PROXY must not see test traffic to 127.0.0.1
            .build()
            .expect("http client");
        let mut hearth = Hearth {
            options: self,
            dir,
            child,
            reader: Some(reader),
            lines,
            base_url: String::new(),
            client,
        };
        hearth.wait_listening().await;
        hearth
    }
}

type Lines = Arc<Mutex<Vec<String>>>;

fn spawn(options: &Options, db: &Path) -> (Child, JoinHandle<()>, Lines) {
    let mut cmd = command(db);
    cmd.arg("serve");
    if !options.default_host {
        cmd.args(["--host", "127.0.0.1"]);
    }
    let mut child = cmd
        .args(["--port", "0"])
        .args(&options.args)
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hearth serve");
    let lines = Lines::default();
    let stderr = child.stderr.take().expect("piped stderr");
    (child, read_lines(stderr, Arc::clone(&lines)), lines)
}

/// Keeps every stderr line (lossily decoded), echoing it when TEST_LOG is set.
fn read_lines(pipe: ChildStderr, lines: Lines) -> JoinHandle<()> {
    let echo = std::env::var_os("TEST_LOG").is_some();
    std::thread::spawn(move || {
        for chunk in BufReader::new(pipe).split(b'\n') {
            let Ok(chunk) = chunk else { break };
            let line = String::from_utf8_lossy(&chunk).into_owned();
            if echo {
                eprintln!("[hearth] {line}");
            }
            lines.lock().unwrap_or_else(PoisonError::into_inner).push(line);
        }
    })
}

/// A running `hearth serve` child process; killed on drop.
pub struct Hearth {
    options: Options,
    dir: TempDir,
    child: Child,
    reader: Option<JoinHandle<()>>,
    lines: Lines,
    base_url: String,
    client: reqwest::Client,
}

impl Hearth {
    /// Starts a server with default settings and a fresh data directory.
    pub async fn start() -> Self {
        Options::default().start().await
    }

    /// Settings for a server to start.
    pub fn options() -> Options {
        Options::default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// A `GET` of `path`.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// A `GET` of `path` with `Authorization: Bearer KEY`.
    pub fn get_with_key(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.get(path).bearer_auth(key)
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        db_in(self.dir.path())
    }

    /// Every stderr line of the current process so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The current process's stderr so far, as one text.
    pub fn stderr(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// The stderr lines of the current process that are JSON log objects.
    pub fn log_lines(&self) -> Vec<Value> {
        self.stderr_lines().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits up to `timeout` for a JSON log line matching `pred`.
    pub async fn wait_for_log(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching log line within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The API key printed by a first run of this process, if any.
    pub fn api_key(&self) -> Option<String> {
        self.printed("API key: ")
    }

    /// The admin token printed by a first run of this process, if any.
    pub fn admin_token(&self) -> Option<String> {
        self.printed("admin token: ")
    }

    fn printed(&self, label: &str) -> Option<String> {
        self.stderr_lines().iter().find_map(|l| l.trim().strip_prefix(label).map(|s| s.trim().to_owned()))
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL hearth");
        self.child.wait().expect("reap hearth");
        self.join_reader();
    }

    /// Waits for the process to exit; fails the test after `timeout`. All stderr is read after.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll hearth") {
                self.join_reader();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hearth still ran after {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sets an environment variable for the next [`Hearth::restart`] (a later value wins).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.options.env.push((name.to_owned(), value.to_owned()));
    }

    /// Starts the server again on the same data directory with the same settings (stopping it
    /// with SIGTERM first if it still runs). Stderr lines start afresh.
    pub async fn restart(&mut self) {
        if self.child.try_wait().expect("poll hearth").is_none() {
            self.sigterm();
            self.wait_exit(START_TIMEOUT).await;
        }
        let (child, reader, lines) = spawn(&self.options, &self.db_path());
        self.child = child;
        self.reader = Some(reader);
        self.lines = lines;
        self.wait_listening().await;
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(port) = self.stderr_lines().iter().find_map(|l| listening_port(l)) {
                self.base_url = format!("http://127.0.0.1:{port}");
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll hearth") {
                self.join_reader();
                panic!("hearth exited ({status}) before listening; stderr:\n{}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "hearth did not listen within {START_TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The port of a `{"message":"listening","addr":"HOST:PORT"}` log line.
fn listening_port(line: &str) -> Option<u16> {
    let value: Value = serde_json::from_str(line).ok()?;
    if value["message"] != "listening" {
        return None;
    }
    value["addr"].as_str()?.rsplit(':').next()?.parse().ok()
}

impl Drop for Hearth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `hearth worker` child process (an external worker of `hearth`); killed on drop.
pub struct WorkerProcess {
    child: Child,
    reader: Option<JoinHandle<()>>,
    lines: Lines,
}

impl WorkerProcess {
    /// Starts `hearth worker --server <hearth> --token TOKEN --runner RUNNER NAME` with `args`
    /// and `env` (e.g. `HEARTH_TEST_TOOLS=true`).
    pub fn start(
        hearth: &Hearth,
        token: &str,
        runner: &str,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = command_in(hearth.dir.path());
        let mut child = cmd
            .args(["worker", "--server", hearth.base_url(), "--runner", runner, "--name", name])
            .args(args)
            .env("HEARTH_WORKER_TOKEN", token)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hearth worker");
        let lines = Lines::default();
        let stderr = child.stderr.take().expect("piped stderr");
        let reader = read_lines(stderr, Arc::clone(&lines));
        Self { child, reader: Some(reader), lines }
    }

    /// The worker's JSON log lines so far.
    pub fn log_lines(&self) -> Vec<Value> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner).clone();
        lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Sends a signal (`TERM`, `QUIT`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} failed");
    }

    /// Kills the worker with SIGKILL (a crash) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Waits for the worker to exit; fails the test after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll hearth worker") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hearth worker still ran after {timeout:?}: {:?}",
                self.log_lines()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
