//! `hearth check --url URL` against a live `hearth serve`: every step passes and the temporary
//! key ends revoked; a wrong admin token or an unknown model fails the check (exit 1); no
//! admin token at all is a settings error (exit 2).

use serde_json::Value;

use crate::support::{self, Hearth, command_in, stderr_of, stdout_of};

const ADMIN: &str = "check-admin-token-0123456789";

fn check(hearth: &Hearth, admin: Option<&str>, extra: &[&str]) -> std::process::Output {
    let dir = support::data_dir();
    let mut cmd = command_in(dir.path());
    if let Some(admin) = admin {
        cmd.env("HEARTH_ADMIN_TOKEN", admin);
    }
    support::run(cmd.args(["check", "--url", hearth.base_url()]).args(extra))
}

#[tokio::test]
async fn check_passes_against_a_live_server_and_leaves_its_key_revoked() {
    let hearth = Hearth::options().env("HEARTH_ADMIN_TOKEN", ADMIN).start().await;
    let out = check(&hearth, Some(ADMIN), &[]);
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", stderr_of(&out));
    for step in [
        "ready",
        "mint a temporary API key",
        "chat turn answered whole",
        "chat turn streamed",
        "read the run",
        "read the run's event log",
        "read the session",
        "revoke the temporary key",
        "the revoked key is refused",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with("ok") && l.contains(step)), "step {step:?}:\n{stdout}");
    }
    assert!(stdout.contains("hearth check passed: 9 passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains(ADMIN), "the admin token was printed");
    let keys = support::hearth_cmd(&hearth.db_path(), &["keys", "list", "--json"]);
    let keys: Value = serde_json::from_str(&stdout_of(&keys)).unwrap();
    let mine: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"].as_str().unwrap_or("").starts_with("hearth-check-"))
        .collect();
    assert_eq!(mine.len(), 1, "{keys}");
    assert!(!mine[0]["revoked_at"].is_null(), "the temporary key is still live: {keys}");
}

#[tokio::test]
async fn check_fails_with_a_wrong_admin_token_or_an_unknown_model() {
    let hearth = Hearth::options().env("HEARTH_ADMIN_TOKEN", ADMIN).start().await;
    let out = check(&hearth, Some("not-the-admin-token-0123"), &[]);
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  mint a temporary API key") && stdout.contains("401"), "{stdout}");

    let out = check(&hearth, Some(ADMIN), &["--model", "no-such/model"]);
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  chat turn answered whole") && stdout.contains("404"), "{stdout}");
    // The key is revoked even though the turns failed.
    assert!(stdout.contains("ok    revoke the temporary key"), "{stdout}");

    let out = check(&hearth, None, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("HEARTH_ADMIN_TOKEN"));
}
