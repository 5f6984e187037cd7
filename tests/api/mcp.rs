//! MCP settings through the binary: a malformed servers config stops start-up naming the server
//! and field, and the user-assertion key is generated once, stored, and published as a JWKS.
//! (Tool calls against a real MCP server are in tests/e2e/test_mcp.py.)

use serde_json::Value;

use crate::support::{self, Hearth, command_in, stderr_of};

/// `serve` with these settings must refuse to start (exit 2); returns its stderr.
fn refused_with(env: &[(&str, &str)]) -> String {
    let dir = support::data_dir();
    let mut cmd = command_in(dir.path());
    cmd.env("PORT", "0").env("HEARTH_HOST", "127.0.0.1").env("HEARTH_DB", dir.path().join("h.db"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = support::run(cmd.arg("serve"));
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("\"listening\""), "started anyway: {stderr}");
    stderr
}

#[test]
fn a_malformed_mcp_config_stops_start_up_naming_the_server_and_field() {
    let stderr = refused_with(&[(
        "MCP_CONFIG_JSON",
        r#"{"mcpServers": {"search": {"url": "http://h/mcp", "timeout_ms": "5s"}}}"#,
    )]);
    assert!(
        stderr.contains("MCP_CONFIG_JSON") && stderr.contains("mcpServers.search.timeout_ms"),
        "{stderr}"
    );

    let stderr = refused_with(&[(
        "MCP_CONFIG_JSON",
        r#"{"mcpServers": {"crm": {"url": "http://h/mcp", "headers": {"X-Key": "${HEARTH_TEST_UNSET_VAR}"}}}}"#,
    )]);
    assert!(
        stderr.contains("mcpServers.crm.headers") && stderr.contains("HEARTH_TEST_UNSET_VAR"),
        "{stderr}"
    );

    let dir = support::data_dir();
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, "{not json").unwrap();
    let stderr = refused_with(&[("MCP_CONFIG_PATH", path.to_str().unwrap())]);
    assert!(stderr.contains("MCP_CONFIG_PATH") && stderr.contains("not valid JSON"), "{stderr}");
}

#[test]
fn an_agent_naming_an_unconfigured_mcp_server_stops_start_up() {
    let dir = support::data_dir();
    let path = dir.path().join("hearth.toml");
    std::fs::write(&path, "[agents.a]\nmodel = \"echo\"\nmcp_servers = [\"search\"]\n").unwrap();
    let stderr = refused_with(&[("HEARTH_CONFIG", path.to_str().unwrap())]);
    assert!(stderr.contains("[agents.a]") && stderr.contains("`search`"), "{stderr}");
}

#[test]
fn a_bad_signing_key_is_named() {
    let pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----";
    let stderr = refused_with(&[("HEARTH_MCP_SIGNING_KEY", pem)]);
    assert!(stderr.contains("HEARTH_MCP_SIGNING_KEY"), "{stderr}");
}

async fn jwks(hearth: &Hearth) -> Value {
    let response = hearth.get("/.well-known/jwks.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_generated_signing_key_is_stored_and_published_across_restarts() {
    let mut hearth = Hearth::start().await;
    let first = jwks(&hearth).await;
    let keys = first["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_eq!(key["x"].as_str().unwrap().len(), 43, "32 bytes, base64url");
    assert!(key.get("d").is_none(), "the private part is never published");
    hearth.restart().await;
    assert_eq!(jwks(&hearth).await, first, "the stored key is reused, not regenerated");
}

#[tokio::test]
async fn a_configured_signing_key_is_the_published_one() {
    // `openssl genpkey -algorithm ed25519` (a throwaway test key), with `\n` escapes as an
    // environment variable often carries it; its public half is checked below (from `openssl pkey -pubout`).
    let pem = "-----BEGIN PRIVATE KEY-----\\nMC4CAQAwBQYDK2VwBCIEILGY6fprH4VzKVnDZiVKVHllX42IPUnsbnnHgcnA5Ojq\\n-----END PRIVATE KEY-----";
    let hearth = Hearth::options().env("HEARTH_MCP_SIGNING_KEY", pem).start().await;
    let published = jwks(&hearth).await;
    assert_eq!(published["keys"].as_array().unwrap().len(), 1);
    assert_eq!(published["keys"][0]["x"], "bNQO1hU_rkuDtNQknqiIwrblkrSJabS5abQ3lQtUUcU");
}

#[test]
fn a_worker_needs_the_signing_key_for_a_server_with_user_assertions() {
    let dir = support::data_dir();
    let mut cmd = command_in(dir.path());
    cmd.env("HEARTH_WORKER_TOKEN", "hwk_not_used_before_the_check").env(
        "MCP_CONFIG_JSON",
        r#"{"mcpServers": {"crm": {"url": "http://127.0.0.1:9/mcp", "user_assertion": true}}}"#,
    );
    let out = support::run(cmd.args(["worker", "--server", "http://127.0.0.1:9", "--runner", "ts"]));
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HEARTH_MCP_SIGNING_KEY") && stderr.contains("`crm`"), "{stderr}");
}
