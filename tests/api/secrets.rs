//! Secrets on the command line: refused (every user of the machine can read a process's
//! arguments), read from a file with `@PATH`, and refused when too short.

use crate::support::{self, Hearth, command_in, stderr_of};

#[test]
fn a_secret_flag_with_a_value_on_the_command_line_is_refused() {
    let dir = support::data_dir();
    for args in [
        &["serve", "--admin-token", "admin-token-on-argv-0123"][..],
        &["serve", "--api-key=key-on-the-command-line-0123"],
        &["worker", "--server", "http://127.0.0.1:9", "--runner", "go", "--token", "hwk_on_the_command_line"],
    ] {
        let out = support::run(command_in(dir.path()).env("PORT", "0").args(args));
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("@FILE") && (stderr.contains("HEARTH_") || stderr.contains("GATEWAY_API_KEY")),
            "{stderr}"
        );
        assert!(
            !stderr.contains("on-argv") && !stderr.contains("on-the-command-line"),
            "the secret was echoed: {stderr}"
        );
        assert!(!stderr.contains("\"listening\""), "{args:?} started anyway");
    }
}

#[tokio::test]
async fn a_secret_flag_reads_its_value_from_a_file() {
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("api-key");
    std::fs::write(&file, "key-from-a-file-0123456789\n").unwrap();
    let hearth = Hearth::options().arg("--api-key").arg(&format!("@{}", file.display())).start().await;
    let response = hearth.get_with_key("/v1/models", "key-from-a-file-0123456789").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn short_service_admin_and_metrics_secrets_stop_start_up() {
    for setting in ["GATEWAY_API_KEY", "HEARTH_ADMIN_TOKEN", "HEARTH_METRICS_TOKEN"] {
        let dir = support::data_dir();
        let out =
            support::run(command_in(dir.path()).env("PORT", "0").env(setting, "short-0123").arg("serve"));
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{setting}: {stderr}");
        assert!(stderr.contains(setting) && stderr.contains("at least 16"), "{setting}: {stderr}");
        assert!(!stderr.contains("short-0123"), "{setting}: the secret was echoed: {stderr}");
    }
}
